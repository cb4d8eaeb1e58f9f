//! A real headless browser for the dashboard's tests: Debian's `chromium`, driven through its
//! `chromedriver` over WebDriver (the `fantoccini` crate), plus checks that run inside the page.
//!
//! ```ignore
//! let browser = Browser::start().await;
//! browser.goto(&format!("{}/", server.base)).await;
//! browser.fill("#token", &token).await;
//! browser.click("button[type=submit]").await;
//! browser.wait_for("h1").await;
//! browser.assert_accessible_in_both_schemes("apps").await;
//! browser.close().await;
//! ```
//!
//! Each test starts its own [`Browser`] (a chromedriver on a free loopback port, one session,
//! about half a second); it is shut down by [`Browser::close`] or, failing that, when dropped,
//! which on a panic first saves a screenshot named after the test.
//!
//! The helpers panic with the page's address in the message, like the rest of `support`: a test
//! that drives a browser fails on the first surprise. [`Browser::client`] gives the raw
//! `fantoccini` client for anything not covered here.
//!
//! Chromium and chromedriver are never optional: when they are missing the start fails and says
//! what to install (`.ci/run` installs them). `ALOFT_CHROMEDRIVER` and `ALOFT_CHROMIUM` name other
//! binaries; `ALOFT_SCREENSHOTS` another folder for screenshots.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};

/// How long [`Browser::wait_for`] and the dialog helpers wait by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The flags Chromium is started with. `--no-sandbox` because tests and CI run as root, where
/// Chromium's sandbox refuses to start; `--disable-dev-shm-usage` because containers often have a
/// small /dev/shm.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=1280,900",
];

const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver; .ci/run does";

/// One accessibility problem found by [`Browser::a11y_check`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct A11yProblem {
    /// Which check: `name` (a control or link without an accessible name), `alt` (an image
    /// without alt text), `contrast`, `main`, `h1`, `lang`, `title` or `focus-visible`.
    pub rule: String,
    /// The element, written like a CSS selector with its first words of text
    /// (`input#q[name="q"][type="text"]`), or `document`.
    pub element: String,
    /// What is wrong, with the figures (colours and ratio for contrast).
    pub detail: String,
}

impl fmt::Display for A11yProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.element, self.detail)
    }
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None` when the server said so.
    pub same_site: Option<String>,
}

/// A headless Chromium session behind its own chromedriver.
pub struct Browser {
    client: Client,
    driver: tokio::process::Child,
    port: u16,
    session_id: String,
    /// chromedriver's output, shown when it fails to start.
    _driver_log: tempfile::NamedTempFile,
    closed: AtomicBool,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session on it.
    ///
    /// Panics, saying what to install, when chromedriver or Chromium is missing.
    pub async fn start() -> Self {
        let driver_bin = find_binary("ALOFT_CHROMEDRIVER", "chromedriver");
        let chromium_override = std::env::var_os("ALOFT_CHROMIUM").filter(|v| !v.is_empty());
        // Without the override chromedriver picks Debian's /usr/lib/chromium/chromium by itself;
        // the lookup is only there to fail early and clearly.
        let chromium_bin = find_binary("ALOFT_CHROMIUM", "chromium");

        let mut last_error = String::new();
        // A free port is found by binding and releasing it; another process may take it in
        // between, so a driver that dies on start is retried on a new port.
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("temporary file for chromedriver's log");
            let mut driver = tokio::process::Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("reopen chromedriver's log"))
                .stderr(log.reopen().expect("reopen chromedriver's log"))
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {} ({e}): {INSTALL_HINT}", driver_bin.display()));
            match wait_until_ready(&mut driver, port).await {
                Ok(()) => {}
                Err(why) => {
                    let _ = driver.start_kill();
                    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
                    last_error = format!("{why}\nchromedriver said:\n{output}");
                    continue;
                }
            }

            let mut options = json!({ "args": CHROMIUM_ARGS });
            if chromium_override.is_some() {
                options["binary"] = json!(chromium_bin.display().to_string());
            }
            let mut capabilities = serde_json::Map::new();
            capabilities.insert("browserName".into(), json!("chrome"));
            capabilities.insert("goog:chromeOptions".into(), options);
            let connect = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            let client = match connect {
                Ok(client) => client,
                Err(e) => {
                    blocking_request(port, "GET", "/shutdown");
                    let _ = driver.start_kill();
                    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
                    panic!(
                        "chromedriver could not start {} ({e}); {INSTALL_HINT}\nchromedriver said:\n{output}",
                        chromium_bin.display()
                    );
                }
            };
            let session_id = client
                .session_id()
                .await
                .expect("session id")
                .expect("chromedriver gave the session an id");
            return Browser {
                client,
                driver,
                port,
                session_id,
                _driver_log: log,
                closed: AtomicBool::new(false),
            };
        }
        panic!("chromedriver ({}) did not start: {last_error}", driver_bin.display());
    }

    /// The underlying WebDriver client, for anything these helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session (Chromium quits) and stops chromedriver. Dropping the browser does the
    /// same, less gracefully; call this at the end of a test that passed.
    pub async fn close(self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.clone().close().await;
        let port = self.port;
        let _ = tokio::task::spawn_blocking(move || blocking_request(port, "GET", "/shutdown")).await;
        let mut this = self;
        if tokio::time::timeout(Duration::from_secs(5), this.driver.wait())
            .await
            .is_err()
        {
            let _ = this.driver.start_kill();
        }
    }

    // ----- navigation and the page -----

    /// Loads `url` and waits for it (the load event).
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("cannot load {url}: {e}");
        }
    }

    /// The address of the page shown now.
    pub async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The page's `<title>`.
    pub async fn title(&self) -> String {
        self.client.title().await.expect("page title")
    }

    /// Clicks the first element matching `css` (as a person would: it must be visible and not
    /// covered). A click that submits a form returns once the next page has loaded.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        if let Err(e) = element.click().await {
            let at = self.whereabouts().await;
            panic!("cannot click `{css}` {at}: {e}");
        }
    }

    /// Replaces the text of the input or textarea matching `css` by `text`, typed key by key.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let typed = async {
            element.clear().await?;
            element.send_keys(text).await
        };
        if let Err(e) = typed.await {
            let at = self.whereabouts().await;
            panic!("cannot type into `{css}` {at}: {e}");
        }
    }

    /// Chooses the `<option>` whose value is `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let element = self.find(css).await;
        if let Err(e) = element.select_by_value(value).await {
            let at = self.whereabouts().await;
            panic!("cannot select value {value:?} in `{css}` {at}: {e}");
        }
    }

    /// The rendered text of the first element matching `css` (what a person sees: hidden parts
    /// left out, whitespace collapsed).
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Whether some element matches `css` now (shown or not).
    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find elements")
            .is_empty()
    }

    /// Waits up to [`DEFAULT_WAIT`] for an element matching `css` to be shown.
    pub async fn wait_for(&self, css: &str) {
        if let Err(e) = self.try_wait_for(css, DEFAULT_WAIT).await {
            panic!("{e}");
        }
    }

    /// Waits up to [`DEFAULT_WAIT`] for the element matching `css` to show a text containing
    /// `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            let seen = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.ok(),
                Err(_) => None,
            };
            if seen.as_deref().is_some_and(|text| text.contains(needle)) {
                return;
            }
            if Instant::now() >= deadline {
                let at = self.whereabouts().await;
                match seen {
                    Some(text) => {
                        panic!("`{css}` {at} shows {text:?}, still without {needle:?} after {DEFAULT_WAIT:?}")
                    }
                    None => panic!("no element matches `{css}` {at} after {DEFAULT_WAIT:?} (waiting for {needle:?})"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for an element matching `css` to be shown; the error says what the
    /// page had instead.
    pub async fn try_wait_for(&self, css: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map_err(|e| format!("`{css}`: {e}"))?;
            let mut shown = false;
            for element in &found {
                if element.is_displayed().await.unwrap_or(false) {
                    shown = true;
                    break;
                }
            }
            if shown {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let state = if found.is_empty() {
                    "no element matches it".to_owned()
                } else {
                    format!("{} match it but none is shown", found.len())
                };
                let at = self.whereabouts().await;
                let text = self
                    .execute("return document.body ? document.body.innerText : ''")
                    .await
                    .as_str()
                    .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                let excerpt: String = text.chars().take(300).collect();
                return Err(format!(
                    "timed out after {timeout:?} waiting for `{css}` {at}: {state}; the page reads: {excerpt:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `js` as the body of a function in the page and returns what it returns (`return`
    /// is needed), as JSON; DOM elements come back as WebDriver references.
    pub async fn execute(&self, js: &str) -> Value {
        self.execute_with(js, Vec::new()).await
    }

    /// [`Browser::execute`] with arguments, read in the script as `arguments[0]`, `arguments[1]`…
    pub async fn execute_with(&self, js: &str, args: Vec<Value>) -> Value {
        match self.client.execute(js, args).await {
            Ok(value) => value,
            Err(e) => panic!("script failed: {e}\n--- script ---\n{js}"),
        }
    }

    // ----- cookies -----

    /// The cookies the browser holds for the current page (HttpOnly ones included).
    pub async fn cookies(&self) -> Vec<BrowserCookie> {
        let cookies = self.client.get_all_cookies().await.expect("read cookies");
        cookies
            .iter()
            .map(|c| BrowserCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                path: c.path().map(str::to_owned),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
            })
            .collect()
    }

    /// The cookie called `name` for the current page, if any.
    pub async fn cookie(&self, name: &str) -> Option<BrowserCookie> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Forgets the current site's cookies (a signed-out browser).
    pub async fn delete_all_cookies(&self) {
        self.client.delete_all_cookies().await.expect("delete cookies");
    }

    // ----- dialogs -----

    /// Waits for a `window.confirm` (or alert/prompt) dialog, accepts it and returns its text.
    /// Use it right after the click that opens the dialog; the page goes on (a form is
    /// submitted) once it is accepted.
    pub async fn accept_confirm(&self) -> String {
        let text = self.dialog_text().await;
        self.client.accept_alert().await.expect("accept the dialog");
        text
    }

    /// Waits for a `window.confirm` dialog, cancels it and returns its text.
    pub async fn dismiss_confirm(&self) -> String {
        let text = self.dialog_text().await;
        self.client.dismiss_alert().await.expect("dismiss the dialog");
        text
    }

    async fn dialog_text(&self) -> String {
        let deadline = Instant::now() + DEFAULT_WAIT;
        loop {
            match self.client.get_alert_text().await {
                Ok(text) => return text,
                Err(e) if Instant::now() >= deadline => {
                    panic!("no dialog opened within {DEFAULT_WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    // ----- screenshots -----

    /// Saves what the window shows (1280×900) as `<name>.png` in `$ALOFT_SCREENSHOTS` or
    /// `<workspace>/target/screenshots/`; the name is reduced to letters, digits, `-`, `_` and
    /// `.`. Returns the file's path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let path = screenshot_dir().join(screenshot_file_name(name));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    // ----- colour scheme -----

    /// Makes the page see `prefers-color-scheme: dark` (or `light`), as a person's system
    /// setting would, through the DevTools command `Emulation.setEmulatedMedia`. It lasts for
    /// the session, across navigations; media queries apply at once, without a reload.
    pub async fn set_color_scheme(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.devtools(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        )
        .await;
        let matches = self
            .execute(&format!(
                "return matchMedia('(prefers-color-scheme: {scheme})').matches"
            ))
            .await;
        assert_eq!(
            matches,
            json!(true),
            "the page does not see prefers-color-scheme: {scheme}"
        );
    }

    /// Sends a Chrome DevTools Protocol command to the page through chromedriver
    /// (`POST /session/{id}/goog/cdp/execute`) and returns its result.
    pub async fn devtools(&self, command: &str, params: Value) -> Value {
        let cmd = DevTools {
            command: command.to_owned(),
            params,
        };
        match self.client.issue_cmd(cmd).await {
            Ok(value) => value,
            Err(e) => panic!("DevTools command {command} failed: {e}"),
        }
    }

    // ----- keyboard -----

    /// Presses Tab up to `max_tabs` times from the top of the page and says whether the element
    /// matching `css` got the keyboard focus on the way.
    pub async fn keyboard_reaches(&self, css: &str, max_tabs: usize) -> bool {
        let present = self
            .execute_with("return document.querySelector(arguments[0]) !== null", vec![json!(css)])
            .await;
        if present != json!(true) {
            let at = self.whereabouts().await;
            panic!("no element matches `{css}` {at}");
        }
        self.tab_through(max_tabs, Some(css)).await.reached
    }

    /// Presses Tab `max_tabs` times from the top of the page and returns the elements that got
    /// the focus, in order (written as in [`A11yProblem::element`]).
    pub async fn tab_order(&self, max_tabs: usize) -> Vec<String> {
        self.tab_through(max_tabs, None).await.order
    }

    /// Presses Tab from the top of the page; records what gets the focus and whether it looks
    /// any different focused (with CSS transitions off, so no fade hides the change).
    async fn tab_through(&self, max_tabs: usize, target: Option<&str>) -> Traversal {
        self.execute(&format!("{JS_PRELUDE}\n{JS_TAB_START}")).await;
        if max_tabs > 0 {
            let mut keys = KeyActions::new("keyboard".to_owned());
            for _ in 0..max_tabs {
                keys = keys
                    .then(KeyAction::Down { value: Key::Tab.into() })
                    .then(KeyAction::Up { value: Key::Tab.into() });
            }
            if let Err(e) = self.client.perform_actions(keys).await {
                let at = self.whereabouts().await;
                panic!("cannot press Tab {at}: {e}");
            }
        }
        let result = self
            .execute_with(&format!("{JS_PRELUDE}\n{JS_TAB_END}"), vec![json!(target)])
            .await;
        serde_json::from_value(result).expect("keyboard traversal result")
    }

    // ----- accessibility -----

    /// Checks the page as it is now, in the current colour scheme, and returns every problem:
    /// accessible names of form controls, links and images; text contrast (WCAG 2.x: 4.5:1, or
    /// 3:1 for large text); one `<main>`, exactly one `<h1>`, `lang` on `<html>`, a `<title>`;
    /// and a visible focus indicator on everything Tab reaches.
    ///
    /// Contrast is measured against the background colours behind the text (blending
    /// translucent ones); text over a background image or gradient is not measured, and
    /// `opacity` is not taken into account. Disabled controls are exempt, as WCAG says.
    /// Accessible names come from `<label>` (for= or wrapping), `aria-label`, `aria-labelledby`,
    /// a button's text, or the `value` of input buttons; `title` alone does not count.
    pub async fn a11y_check(&self) -> Vec<A11yProblem> {
        let found = self.execute(&format!("{JS_PRELUDE}\n{JS_A11Y}")).await;
        let mut problems: Vec<A11yProblem> = serde_json::from_value(found).expect("accessibility check result");
        let focusable = self
            .execute(&format!("{JS_PRELUDE}\nreturn focusableCandidates().length"))
            .await;
        let focusable = focusable.as_u64().expect("count of focusable elements") as usize;
        // A full round from the top, through the browser's own stop after the last element.
        let traversal = self.tab_through((focusable + 2).min(500), None).await;
        problems.extend(traversal.problems);
        problems
    }

    /// Panics listing every problem [`Browser::a11y_check`] finds (and saves a screenshot).
    pub async fn assert_accessible(&self, page_name: &str) {
        let problems = self.a11y_check().await;
        if problems.is_empty() {
            return;
        }
        let scheme = self.scheme().await;
        let shot = self.screenshot(&format!("a11y-{page_name}-{scheme}")).await;
        let at = self.whereabouts().await;
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        panic!(
            "{} accessibility problem(s) on the {page_name} page {at}, {scheme} colour scheme (screenshot: {}):\n{}",
            problems.len(),
            shot.display(),
            list.join("\n")
        );
    }

    /// [`Browser::assert_accessible`] with `prefers-color-scheme: light`, then `dark`; the
    /// browser is left in light.
    pub async fn assert_accessible_in_both_schemes(&self, page_name: &str) {
        self.set_color_scheme(false).await;
        self.assert_accessible(page_name).await;
        self.set_color_scheme(true).await;
        self.assert_accessible(page_name).await;
        self.set_color_scheme(false).await;
    }

    // ----- internals -----

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => {
                let at = self.whereabouts().await;
                panic!("no element matches `{css}` {at}: {e}");
            }
        }
    }

    /// "on <url> ("<title>")", for messages.
    async fn whereabouts(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        let title = self.client.title().await.unwrap_or_default();
        format!("on {url} ({title:?})")
    }

    async fn scheme(&self) -> &'static str {
        let dark = self
            .execute("return matchMedia('(prefers-color-scheme: dark)').matches")
            .await;
        if dark == json!(true) { "dark" } else { "light" }
    }
}

impl Drop for Browser {
    /// A browser that was not closed (a test that panicked, most likely) saves a screenshot
    /// named after the test, then asks chromedriver to quit Chromium and itself: killing
    /// chromedriver alone would leave Chromium running (and its profile in /tmp). The driver is
    /// killed in any case.
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if std::thread::panicking() {
            let test = std::thread::current().name().unwrap_or("test").to_owned();
            let shot = blocking_request(self.port, "GET", &format!("/session/{}/screenshot", self.session_id))
                .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
                .and_then(|v| v["value"].as_str().map(str::to_owned))
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
            if let Some(png) = shot {
                let path = screenshot_dir().join(screenshot_file_name(&format!("failed-{test}")));
                if std::fs::write(&path, png).is_ok() {
                    eprintln!("browser screenshot at the failure: {}", path.display());
                }
            }
        }
        // Ending the session first makes chromedriver wait for Chromium to quit and remove its
        // temporary profile; /shutdown alone returns at once, and a kill then would leave both.
        blocking_request(self.port, "DELETE", &format!("/session/{}", self.session_id));
        blocking_request(self.port, "GET", "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.start_kill();
    }
}

/// What a Tab traversal found.
#[derive(Deserialize)]
struct Traversal {
    order: Vec<String>,
    reached: bool,
    problems: Vec<A11yProblem>,
}

/// A Chrome DevTools Protocol command sent through chromedriver's vendor endpoint.
#[derive(Debug)]
struct DevTools {
    command: String,
    params: Value,
}

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.command, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// `$ALOFT_SCREENSHOTS`, or `<workspace>/target/screenshots/`; created if missing.
pub fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("ALOFT_SCREENSHOTS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .and_then(Path::parent)
            .expect("the workspace is two levels above the crate")
            .join("target")
            .join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `name` reduced to `[A-Za-z0-9._-]` (anything else becomes one `-`), at most 100 characters,
/// never hidden or empty, ending in `.png`.
pub fn screenshot_file_name(name: &str) -> String {
    let mut clean = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            clean.push(c);
        } else if !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let clean = clean.strip_suffix(".png").unwrap_or(&clean);
    let mut clean: String = clean.trim_matches(|c| c == '-' || c == '.').chars().take(100).collect();
    if clean.is_empty() {
        clean = "screenshot".to_owned();
    }
    format!("{clean}.png")
}

/// The binary named by `env_var`, or `name` on the PATH; panics with the install hint.
fn find_binary(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var} names {}, which does not exist ({INSTALL_HINT})",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on the PATH (nor set by {env_var}): {INSTALL_HINT}"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Polls chromedriver's `/status` until it says it is ready (20 s at most).
async fn wait_until_ready(driver: &mut tokio::process::Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = reqwest::Client::new();
    loop {
        if let Some(exit) = driver.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("chromedriver exited ({exit}) before answering on port {port}"));
        }
        let answer = status
            .get(format!("http://127.0.0.1:{port}/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = answer {
            let body: Value = response.json().await.unwrap_or_default();
            if body["value"]["ready"] == json!(true) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("chromedriver did not answer on port {port} within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request to chromedriver from synchronous code (the drop), short time-outs;
/// returns the body.
fn blocking_request(port: u16, method: &str, path: &str) -> Option<Vec<u8>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        // chromedriver answers with a Content-Length: stop there rather than wait for it to hang up.
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length.filter(|length| received.len() >= end + 4 + length) {
                return Some(received[end + 4..end + 4 + length].to_vec());
            }
        }
    }
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(received[end + 4..].to_vec())
}

// ----- the scripts run in the page -----

/// Helpers shared by the scripts below.
const JS_PRELUDE: &str = r##"
"use strict";
const nonEmpty = (s) => typeof s === "string" && s.trim() !== "";
const clip = (s, n) => (s.length > n ? s.slice(0, n) + "…" : s);

// Text a person or a screen reader gets from an element: text nodes and image alts, leaving out
// aria-hidden parts and the options of embedded controls.
function textOf(el) {
  let text = "";
  for (const node of el.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      text += node.textContent;
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.getAttribute("aria-hidden") === "true") continue;
      const tag = node.tagName;
      if (tag === "IMG") text += " " + (node.getAttribute("alt") || "") + " ";
      else if (tag === "SELECT" || tag === "TEXTAREA" || tag === "INPUT" || tag === "SCRIPT" || tag === "STYLE") continue;
      else text += " " + textOf(node) + " ";
    }
  }
  return text;
}

// An element written like a CSS selector, with the start of its text.
function describe(el) {
  if (!el || el.nodeType !== Node.ELEMENT_NODE) return "document";
  let s = el.tagName.toLowerCase();
  if (el.id) s += "#" + el.id;
  for (const c of el.classList) s += "." + c;
  for (const attr of ["name", "type", "href", "for", "role"]) {
    const v = el.getAttribute(attr);
    if (v !== null && v !== "") s += `[${attr}="${clip(v, 40)}"]`;
  }
  const text = textOf(el).trim().replace(/\s+/g, " ");
  if (text) s += ` "${clip(text, 40)}"`;
  return s;
}

function labelledBy(el) {
  const ids = el.getAttribute("aria-labelledby");
  if (!ids) return false;
  return ids.split(/\s+/).some((id) => {
    const ref = id && document.getElementById(id);
    return ref && nonEmpty(textOf(ref));
  });
}

function rendered(el) {
  if (el.getClientRects().length === 0) return false;
  return el.checkVisibility({ opacityProperty: true, visibilityProperty: true, contentVisibilityAuto: true });
}

// What Tab could reach: links, form controls, tabindex >= 0, shown and enabled.
function focusableCandidates() {
  const selector = "a[href], area[href], button, input, select, textarea, summary, iframe, [tabindex], [contenteditable]";
  return [...document.querySelectorAll(selector)].filter((el) => {
    if (el.matches(":disabled") || el.getAttribute("tabindex") === "-1") return false;
    if (el.tagName === "INPUT" && el.type === "hidden") return false;
    return rendered(el);
  });
}

// What may show keyboard focus on an element (or its parent, for :focus-within designs).
function focusLook(el) {
  const one = (e) => {
    if (!e) return "";
    const cs = getComputedStyle(e);
    const outline =
      cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) > 0
        ? [cs.outlineStyle, cs.outlineWidth, cs.outlineColor, cs.outlineOffset].join(" ")
        : "none";
    return [
      outline, cs.boxShadow, cs.borderTopColor, cs.borderRightColor, cs.borderBottomColor, cs.borderLeftColor,
      cs.borderTopWidth, cs.borderBottomWidth, cs.backgroundColor, cs.backgroundImage, cs.color, cs.textDecorationLine,
    ].join("|");
  };
  return one(el) + "||" + one(el.parentElement);
}
"##;

/// Starts a Tab traversal: transitions off, focus on the top of the page, every element's
/// unfocused look noted, a listener recording each element that gets the focus.
const JS_TAB_START: &str = r##"
if (window.__aloftTab) document.removeEventListener("focusin", window.__aloftTab.listener, true);
const noMotion = document.createElement("style");
noMotion.textContent = "*, *::before, *::after { transition: none !important; animation: none !important; }";
document.head.append(noMotion);
// Sequential focus navigation starts from the element last focused: focus the body so the first
// Tab goes to the first focusable element.
if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
const hadTabindex = document.body.getAttribute("tabindex");
document.body.setAttribute("tabindex", "-1");
document.body.focus({ preventScroll: true });
if (hadTabindex === null) document.body.removeAttribute("tabindex"); else document.body.setAttribute("tabindex", hadTabindex);
window.scrollTo(0, 0);
const unfocused = new Map(focusableCandidates().map((el) => [el, focusLook(el)]));
const state = { noMotion, unfocused, seen: [] };
state.listener = (event) => {
  const el = event.target;
  if (el && el.nodeType === Node.ELEMENT_NODE) state.seen.push({ el, look: focusLook(el) });
};
document.addEventListener("focusin", state.listener, true);
window.__aloftTab = state;
return true;
"##;

/// Ends a Tab traversal: arguments[0] is a selector to look for among the focused elements, or
/// null.
const JS_TAB_END: &str = r##"
const state = window.__aloftTab;
delete window.__aloftTab;
document.removeEventListener("focusin", state.listener, true);
const target = arguments[0] === null ? null : document.querySelector(arguments[0]);
const problems = [];
const reported = new Set();
for (const { el, look } of state.seen) {
  if (reported.has(el) || !state.unfocused.has(el)) continue;
  if (state.unfocused.get(el) === look) {
    reported.add(el);
    problems.push({
      rule: "focus-visible",
      element: describe(el),
      detail: "looks the same focused by the keyboard: no outline, shadow, border, background, colour or underline change",
    });
  }
}
if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
state.noMotion.remove();
window.scrollTo(0, 0);
return {
  order: state.seen.map((s) => describe(s.el)),
  reached: target !== null && state.seen.some((s) => s.el === target),
  problems,
};
"##;

/// The static checks: names, alt text, structure, contrast. Returns a list of problems.
const JS_A11Y: &str = r##"
const problems = [];
const report = (rule, el, detail) => problems.push({ rule, element: describe(el), detail });

// ---- accessible names ----
for (const el of document.querySelectorAll("input, select, textarea, button")) {
  const type = (el.getAttribute("type") || "").toLowerCase();
  if (el.tagName === "INPUT" && type === "hidden") continue;
  let named = nonEmpty(el.getAttribute("aria-label")) || labelledBy(el) || [...(el.labels || [])].some((l) => nonEmpty(textOf(l)));
  if (!named && el.tagName === "BUTTON") named = nonEmpty(textOf(el));
  if (!named && el.tagName === "INPUT" && ["submit", "reset", "button"].includes(type)) named = nonEmpty(el.getAttribute("value"));
  if (!named && el.tagName === "INPUT" && type === "image") named = nonEmpty(el.getAttribute("alt"));
  if (!named) {
    const what = el.tagName === "BUTTON" || ["submit", "reset", "button", "image"].includes(type) ? "button" : "form control";
    report("name", el, `${what} has no accessible name (no <label>, aria-label, aria-labelledby${what === "button" ? " or text" : ""})`);
  }
}
for (const el of document.querySelectorAll("a[href]")) {
  if (!(nonEmpty(el.getAttribute("aria-label")) || labelledBy(el) || nonEmpty(textOf(el)))) {
    report("name", el, "link has no text (nor aria-label, nor an image with alt text)");
  }
}
for (const el of document.querySelectorAll("img:not([alt])")) {
  report("alt", el, `image has no alt attribute (src ${clip(el.getAttribute("src") || "", 60)}); use alt="" if it is decoration`);
}

// ---- structure ----
if (!nonEmpty(document.documentElement.getAttribute("lang"))) report("lang", document.documentElement, "<html> has no lang attribute");
if (!nonEmpty(document.title)) report("title", null, "the page has no <title> (or an empty one)");
const mains = [...document.querySelectorAll("main, [role=main]")].filter((el) => !el.hidden);
if (mains.length !== 1) report("main", null, `the page has ${mains.length} <main> landmarks; it needs exactly one`);
const h1s = [...document.querySelectorAll("h1")].filter((el) => !el.hidden);
if (h1s.length !== 1) report("h1", null, `the page has ${h1s.length} <h1> headings; it needs exactly one`);

// ---- contrast ----
const canvas = document.createElement("canvas");
canvas.width = canvas.height = 1;
const paint = canvas.getContext("2d", { willReadFrequently: true });

// A computed colour as [r, g, b, alpha]: rgb()/rgba() are parsed; any other syntax (color(),
// oklch()…) is converted by drawing it on a canvas.
function parseColor(value) {
  const m = value.match(/^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)\s*(?:[,/]\s*([\d.]+)(%?)\s*)?\)$/);
  if (m) {
    const alpha = m[4] === undefined ? 1 : m[5] === "%" ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
    return [parseFloat(m[1]), parseFloat(m[2]), parseFloat(m[3]), alpha];
  }
  if (value === "transparent") return [0, 0, 0, 0];
  paint.clearRect(0, 0, 1, 1);
  paint.fillStyle = "#000";
  paint.fillStyle = value;
  paint.fillRect(0, 0, 1, 1);
  const d = paint.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], d[3] / 255];
}

// `top` (possibly translucent) painted over the opaque `bottom`.
const blend = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);

function luminance(rgb) {
  const [r, g, b] = rgb.slice(0, 3).map((v) => {
    const c = v / 255;
    return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

const ratio = (a, b) => {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
};

// The page's own base colour (white, or dark when the page opts into a dark colour-scheme).
const probe = document.createElement("div");
probe.style.backgroundColor = "Canvas";
document.documentElement.append(probe);
const canvasColor = parseColor(getComputedStyle(probe).backgroundColor);
probe.remove();

// The opaque colour behind an element's text, or null when an image or gradient is in the way.
function backgroundOf(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const cs = getComputedStyle(e);
    if (cs.backgroundImage !== "none") return null;
    const color = parseColor(cs.backgroundColor);
    if (color[3] > 0) layers.push(color);
    if (color[3] >= 1) break;
  }
  let behind = canvasColor[3] >= 1 ? canvasColor : [255, 255, 255, 1];
  for (const layer of layers.reverse()) behind = blend(layer, behind);
  return behind;
}

const textFields = "input:not([type=hidden]):not([type=checkbox]):not([type=radio]):not([type=range]):not([type=color]):not([type=file]):not([type=image]), select, textarea";
const skipped = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "OPTION", "OPTGROUP", "TITLE", "HEAD"]);
const dark = matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
const fmt = (c) => `rgb(${c.slice(0, 3).map((v) => Math.round(v)).join(", ")})`;
for (const el of document.body ? document.body.querySelectorAll("*") : []) {
  if (skipped.has(el.tagName)) continue;
  const hasText = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() !== "") ||
    (el.matches(textFields) && (nonEmpty(el.value) || nonEmpty(el.getAttribute("placeholder"))));
  if (!hasText || !rendered(el)) continue;
  const box = el.getBoundingClientRect();
  if (box.width <= 1 || box.height <= 1) continue; // visually hidden, for screen readers only
  if (el.closest(":disabled") || el.matches(":disabled")) continue; // inactive controls are exempt
  const cs = getComputedStyle(el);
  const fg = parseColor(cs.color);
  if (fg[3] === 0) continue;
  const bg = backgroundOf(el);
  if (bg === null) continue;
  const text = blend(fg, bg);
  const size = parseFloat(cs.fontSize);
  const bold = parseInt(cs.fontWeight, 10) >= 700;
  const large = size >= 24 || (size >= 18.66 && bold);
  const needed = large ? 3 : 4.5;
  const r = ratio(text, bg);
  if (r < needed) {
    report("contrast", el,
      `contrast ${r.toFixed(2)}:1 is below ${needed}:1 — ${fmt(text)} on ${fmt(bg)}, ${cs.fontSize}${bold ? " bold" : ""}, ${dark} scheme`);
  }
}
return problems;
"##;
