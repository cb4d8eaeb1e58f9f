//! The browser-test harness (support/browser.rs) tested on itself: tiny pages served from a
//! loopback listener in this test, each made to pass or to fail one check, in a real headless
//! Chromium. Needs Debian's chromium and chromium-driver (.ci/run installs them).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::browser::{A11yProblem, Browser, screenshot_file_name};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ----- the pages -----

const BAD: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bad</title></head>
<body><main>
  <h1>Two problems</h1>
  <label for="named">Name</label> <input id="named" name="named">
  <input type="text" id="q" name="q">
  <p id="faint" style="color: #aaaaaa">Hard to read</p>
  <p>Easy to read</p>
  <button type="button">Go</button>
</main></body></html>"##;

/// Every way of naming things, large text at 3.5:1, translucent backgrounds, a disabled button
/// in a faint colour, a visually hidden span; light and dark themes.
const CLEAN: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clean</title>
<style>
  :root { color-scheme: light dark; }
  body { font: 16px sans-serif; background: #ffffff; color: #1a1a1a; margin: 2rem; }
  a { color: #0645ad; }
  .muted { color: #595959; }
  .big { font-size: 24px; color: #888888; }
  .note { background: rgba(0, 0, 0, 0.05); color: #333333; }
  button, input, select, textarea { font: inherit; color: #1a1a1a; background: #ffffff; border: 1px solid #767676; }
  :focus-visible { outline: 3px solid #1f6feb; outline-offset: 2px; }
  .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
  @media (prefers-color-scheme: dark) {
    body { background: #121212; color: #e6e6e6; }
    a { color: #8ab4f8; }
    .muted { color: #a0a0a0; }
    .big { color: #6a6a6a; }
    .note { background: rgba(255, 255, 255, 0.08); color: #dddddd; }
    button, input, select, textarea { color: #e6e6e6; background: #1e1e1e; border-color: #8a8a8a; }
    :focus-visible { outline-color: #8ab4f8; }
  }
</style></head>
<body>
<header><a href="#main">Skip to the content</a></header>
<main id="main">
  <h1>Clean page</h1>
  <p class="muted">Muted but readable</p>
  <p class="big">Large text at 3.5:1</p>
  <div class="note">A note on a translucent background</div>
  <form action="/echo">
    <label for="app">App</label> <input id="app" name="app" value="demo">
    <label>Channel <select name="channel"><option>production</option></select></label>
    <textarea aria-label="Notes" name="notes"></textarea>
    <span id="pct-label">Rollout percentage</span>
    <input type="number" aria-labelledby="pct-label" name="pct" value="10">
    <input type="submit" value="Save">
    <button type="button"><img src="/dot.svg" alt="Delete"></button>
    <button type="button" disabled style="color: #bbbbbb">Disabled</button>
  </form>
  <a href="/other"><img src="/dot.svg" alt="Other page"></a>
  <img src="/dot.svg" alt="">
  <span class="sr-only">Only for screen readers</span>
</main></body></html>"##;

/// Fine in light; in dark the hint is dark grey on near-black.
const DARK_BAD: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dark bad</title>
<style>
  body { background: #ffffff; color: #222222; }
  @media (prefers-color-scheme: dark) { body { background: #121212; color: #e6e6e6; } .hint { color: #444444; } }
</style></head>
<body><main><h1>Themes</h1><p class="hint">Only readable in light</p></main></body></html>"##;

/// No lang, no title, no main, two h1, and nameless things.
const STRUCTURE: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"></head>
<body>
  <h1>One</h1><h1>Two</h1>
  <a href="/x"></a>
  <img src="/dot.svg">
  <button type="button"></button>
  <input type="submit">
  <select name="s"><option>a</option></select>
</body></html>"##;

/// One button hides its focus ring with nothing in its place.
const FOCUS_BAD: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Focus</title>
<style>
  #plain:focus { outline: none; }
  #ringed:focus-visible { outline: none; box-shadow: 0 0 0 3px #1f6feb; transition: box-shadow 2s; }
</style></head>
<body><main><h1>Focus</h1>
  <button id="default">Browser's ring</button>
  <button id="plain">No ring</button>
  <button id="ringed">Own ring, faded in</button>
</main></body></html>"##;

const KEYBOARD: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyboard</title></head>
<body><main><h1>Keyboard</h1>
  <button id="reach">Reachable</button>
  <button id="skip" tabindex="-1">Not by Tab</button>
  <a id="link" href="/elsewhere">Elsewhere</a>
</main></body></html>"##;

const CONFIRM: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Confirm</title></head>
<body><main><h1>Delete</h1>
  <form action="/deleted" method="get" onsubmit="return confirm('Delete app demo?')">
    <input type="hidden" name="app" value="demo">
    <button id="delete">Delete demo</button>
  </form>
</main></body></html>"##;

const DELETED: &str = r##"<!doctype html>
<html lang="en"><head><title>Deleted</title></head><body><main><h1 id="gone">Deleted</h1></main></body></html>"##;

const FORM: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Form</title></head>
<body><main><h1>Form</h1>
  <form action="/echo" method="get">
    <label for="name">Name</label> <input id="name" name="name" value="old">
    <label for="channel">Channel</label>
    <select id="channel" name="channel"><option value="production">Production</option><option value="staging">Staging</option></select>
    <button id="send">Send</button>
  </form>
</main></body></html>"##;

const LATE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Late</title></head>
<body><main><h1>Waiting</h1><p>Something comes.</p>
<script>setTimeout(() => { const p = document.createElement("p"); p.id = "late"; p.textContent = "Arrived"; document.querySelector("main").append(p); }, 300);</script>
</main></body></html>"##;

const DOT: &str =
    r##"<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><circle cx="8" cy="8" r="6"/></svg>"##;

// ----- a minimal HTTP/1.1 server for them -----

/// Serves the pages above on a loopback port until the test's runtime ends.
async fn site() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    base
}

async fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header).await {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let html = "text/html; charset=utf-8";
    let mut extra = String::new();
    let (status, content_type, body) = match path {
        "/bad" => ("200 OK", html, BAD.to_owned()),
        "/clean" => ("200 OK", html, CLEAN.to_owned()),
        "/dark-bad" => ("200 OK", html, DARK_BAD.to_owned()),
        "/structure" => ("200 OK", html, STRUCTURE.to_owned()),
        "/focus-bad" => ("200 OK", html, FOCUS_BAD.to_owned()),
        "/keyboard" => ("200 OK", html, KEYBOARD.to_owned()),
        "/confirm" => ("200 OK", html, CONFIRM.to_owned()),
        "/deleted" => ("200 OK", html, DELETED.to_owned()),
        "/late" => ("200 OK", html, LATE.to_owned()),
        "/dot.svg" => ("200 OK", "image/svg+xml", DOT.to_owned()),
        "/form" => {
            extra.push_str("Set-Cookie: aloft_session=abc123; Path=/; HttpOnly; SameSite=Strict\r\n");
            ("200 OK", html, FORM.to_owned())
        }
        "/echo" => {
            let escaped = query.replace('&', "&amp;").replace('<', "&lt;");
            let page = format!(
                r#"<!doctype html><html lang="en"><head><title>Echo</title></head><body><main><h1>Echo</h1><p id="got">{escaped}</p></main></body></html>"#
            );
            ("200 OK", html, page)
        }
        _ => ("404 Not Found", "text/plain", "not found".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn rules(problems: &[A11yProblem]) -> Vec<&str> {
    let mut rules: Vec<&str> = problems.iter().map(|p| p.rule.as_str()).collect();
    rules.sort_unstable();
    rules
}

fn listed(problems: &[A11yProblem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

// ----- the tests -----

#[tokio::test]
async fn a11y_check_reports_exactly_the_unlabelled_input_and_the_faint_paragraph() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/bad")).await;
    let problems = browser.a11y_check().await;
    assert_eq!(rules(&problems), ["contrast", "name"], "{}", listed(&problems));
    let name = problems.iter().find(|p| p.rule == "name").unwrap();
    assert!(name.element.starts_with("input#q"), "{name}");
    let contrast = problems.iter().find(|p| p.rule == "contrast").unwrap();
    assert!(contrast.element.starts_with("p#faint"), "{contrast}");
    // #aaaaaa on white is 2.32:1.
    assert!(contrast.detail.contains("2.32:1 is below 4.5:1"), "{contrast}");
    assert!(
        contrast.detail.contains("rgb(170, 170, 170) on rgb(255, 255, 255)"),
        "{contrast}"
    );

    // assert_accessible fails, listing both.
    let run = tokio::spawn(async move { browser.assert_accessible("bad").await }).await;
    let Err(failed) = run else {
        panic!("assert_accessible did not panic")
    };
    let message = *failed.into_panic().downcast::<String>().unwrap();
    assert!(
        message.contains("2 accessibility problem(s) on the bad page"),
        "{message}"
    );
    assert!(
        message.contains("[name] input#q") && message.contains("[contrast] p#faint"),
        "{message}"
    );
}

#[tokio::test]
async fn a_clean_page_passes_in_light_and_in_dark() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/clean")).await;
    for dark in [false, true] {
        browser.set_color_scheme(dark).await;
        let background = browser
            .execute("return getComputedStyle(document.body).backgroundColor")
            .await;
        let expected = if dark { "rgb(18, 18, 18)" } else { "rgb(255, 255, 255)" };
        assert_eq!(
            background,
            json!(expected),
            "the page's own theme applies (dark: {dark})"
        );
        let problems = browser.a11y_check().await;
        assert!(problems.is_empty(), "dark: {dark}{}", listed(&problems));
    }
    browser.assert_accessible_in_both_schemes("clean").await;
    // The theme survives a navigation.
    browser.set_color_scheme(true).await;
    browser.goto(&format!("{base}/clean")).await;
    let dark = browser
        .execute("return matchMedia('(prefers-color-scheme: dark)').matches")
        .await;
    assert_eq!(dark, json!(true));
    browser.close().await;
}

#[tokio::test]
async fn contrast_is_checked_in_the_scheme_in_force() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/dark-bad")).await;
    browser.set_color_scheme(false).await;
    let light = browser.a11y_check().await;
    assert!(light.is_empty(), "{}", listed(&light));
    browser.set_color_scheme(true).await;
    let dark = browser.a11y_check().await;
    assert_eq!(rules(&dark), ["contrast"], "{}", listed(&dark));
    assert!(dark[0].element.starts_with("p.hint"), "{}", dark[0]);
    assert!(dark[0].detail.contains("dark scheme"), "{}", dark[0]);
    browser.close().await;
}

#[tokio::test]
async fn structure_names_and_alt_text_are_checked() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/structure")).await;
    let problems = browser.a11y_check().await;
    assert_eq!(
        rules(&problems),
        ["alt", "h1", "lang", "main", "name", "name", "name", "name", "title"],
        "{}",
        listed(&problems)
    );
    let named: Vec<&str> = problems
        .iter()
        .filter(|p| p.rule == "name")
        .map(|p| p.element.as_str())
        .collect();
    assert!(named.iter().any(|e| e.starts_with("a[href=\"/x\"]")), "{named:?}");
    assert!(
        named.iter().any(|e| e.starts_with("button[type=\"button\"]")),
        "{named:?}"
    );
    assert!(
        named.iter().any(|e| e.starts_with("input[type=\"submit\"]")),
        "{named:?}"
    );
    assert!(named.iter().any(|e| e.starts_with("select[name=\"s\"]")), "{named:?}");
    assert!(
        problems.iter().any(|p| p.rule == "h1" && p.detail.contains("2 <h1>")),
        "{}",
        listed(&problems)
    );
    browser.close().await;
}

#[tokio::test]
async fn a_hidden_focus_ring_is_reported_and_a_faded_in_one_is_not() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/focus-bad")).await;
    let problems = browser.a11y_check().await;
    assert_eq!(rules(&problems), ["focus-visible"], "{}", listed(&problems));
    assert!(problems[0].element.starts_with("button#plain"), "{}", problems[0]);
    browser.close().await;
}

#[tokio::test]
async fn keyboard_reaches_a_button_but_not_one_out_of_the_tab_order() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/keyboard")).await;
    assert!(browser.keyboard_reaches("#reach", 5).await);
    assert!(browser.keyboard_reaches("#link", 5).await);
    assert!(!browser.keyboard_reaches("#skip", 10).await);
    // Not reached with too few presses: the count is honoured.
    assert!(!browser.keyboard_reaches("#link", 1).await);
    let order = browser.tab_order(2).await;
    assert_eq!(
        order,
        [
            "button#reach \"Reachable\"",
            "a#link[href=\"/elsewhere\"] \"Elsewhere\""
        ]
    );
    browser.close().await;
}

#[tokio::test]
async fn confirm_dialogs_can_be_dismissed_and_accepted() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/confirm")).await;
    browser.click("#delete").await;
    assert_eq!(browser.dismiss_confirm().await, "Delete app demo?");
    assert_eq!(
        browser.current_url().await.path(),
        "/confirm",
        "cancelled: nothing submitted"
    );
    browser.click("#delete").await;
    assert_eq!(browser.accept_confirm().await, "Delete app demo?");
    browser.wait_for("#gone").await;
    let url = browser.current_url().await;
    assert_eq!((url.path(), url.query()), ("/deleted", Some("app=demo")));
    browser.close().await;
}

#[tokio::test]
async fn forms_cookies_text_and_waiting() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/form")).await;
    assert_eq!(browser.title().await, "Form");
    let cookie = browser.cookie("aloft_session").await.expect("the server's cookie");
    assert_eq!(cookie.value, "abc123");
    assert!(cookie.http_only);
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    assert_eq!(cookie.path.as_deref(), Some("/"));

    assert!(browser.exists("#name").await);
    assert!(!browser.exists("#nothing").await);
    browser.fill("#name", "new name").await;
    browser.select("#channel", "staging").await;
    browser.click("#send").await;
    browser.wait_for("#got").await;
    assert_eq!(browser.text("#got").await, "name=new+name&channel=staging");
    assert_eq!(browser.current_url().await.path(), "/echo");

    browser.delete_all_cookies().await;
    assert!(browser.cookies().await.is_empty());

    assert_eq!(browser.execute("return 6 * 7").await, json!(42));
    assert_eq!(
        browser
            .execute_with("return arguments[0] + '!'", vec![json!("hi")])
            .await,
        json!("hi!")
    );

    browser.goto(&format!("{base}/late")).await;
    assert!(!browser.exists("#late").await, "the element comes after 300 ms");
    browser.wait_for("#late").await;
    browser.wait_for_text("#late", "Arrived").await;
    let started = Instant::now();
    let error = browser
        .try_wait_for("#never", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        error.contains("`#never`") && error.contains("no element matches it"),
        "{error}"
    );
    assert!(error.contains("/late") && error.contains("Something comes."), "{error}");
    browser.close().await;
}

#[tokio::test]
async fn screenshots_are_png_files_with_safe_names() {
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/clean")).await;
    let path = browser.screenshot("harness: clean page / light").await;
    assert_eq!(path.file_name().unwrap(), "harness-clean-page-light.png");
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is no PNG", path.display());
    assert!(png.len() > 1000, "{} is {} bytes", path.display(), png.len());
    browser.close().await;

    assert_eq!(screenshot_file_name("../../etc/passwd"), "etc-passwd.png");
    assert_eq!(screenshot_file_name("apps page (dark).png"), "apps-page-dark.png");
    assert_eq!(screenshot_file_name("///"), "screenshot.png");
    assert_eq!(screenshot_file_name(&"x".repeat(300)).len(), 104);
}

/// Run in a child process by the next test, with a binary missing.
#[tokio::test]
#[ignore = "run by missing_binaries_fail_with_what_to_install, in a child process"]
async fn child_start_browser() {
    Browser::start().await;
}

#[test]
fn missing_binaries_fail_with_what_to_install() {
    let this = std::env::current_exe().unwrap();
    let child = || {
        let mut command = Command::new(&this);
        command.args(["child_start_browser", "--exact", "--ignored", "--nocapture"]);
        command.env_remove("ALOFT_CHROMEDRIVER").env_remove("ALOFT_CHROMIUM");
        command
    };
    // Nothing on the PATH.
    let no_driver = child().env("PATH", "/nonexistent").output().unwrap();
    // A browser override that names nothing.
    let no_browser = child().env("ALOFT_CHROMIUM", "/nonexistent/chromium").output().unwrap();
    for (out, expected) in [
        (
            no_driver,
            "`chromedriver` is not on the PATH (nor set by ALOFT_CHROMEDRIVER)",
        ),
        (
            no_browser,
            "ALOFT_CHROMIUM names /nonexistent/chromium, which does not exist",
        ),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the start did not fail\n{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains("install Debian's chromium and chromium-driver; .ci/run does"),
            "{stderr}"
        );
    }
}
