//! The dashboard's sessions, CSRF and access rules, over plain HTTP against the real binary:
//! sign-in links work once, forms are refused without their session's token, with another
//! session's token or after sign-out, a viewer cannot change anything by posting anyway, failed
//! sign-ins are limited, and dashboard changes are audited with the user's email.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use support::*;

/// A browser-like client: its own cookie jar, no redirects followed (the tests look at them).
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: Mutex<HashMap<String, String>>,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(),
            base: base.to_owned(),
            cookies: Mutex::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.lock().unwrap();
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps the cookies a response sets, as a browser would (`Max-Age=0` removes one).
    async fn finish(&self, r: reqwest::Response) -> (StatusCode, String, Option<String>) {
        {
            let mut jar = self.cookies.lock().unwrap();
            for value in r.headers().get_all("set-cookie") {
                let value = value.to_str().unwrap();
                let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
                let (name, v) = pair.split_once('=').unwrap();
                if attributes.contains("Max-Age=0") {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_owned(), v.to_owned());
                }
            }
        }
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), location)
    }

    async fn get(&self, path: &str) -> (StatusCode, String, Option<String>) {
        let r = self
            .client
            .get(self.url(path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .client
            .post(self.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// Opens a sign-in link and sets the password; the browser is then signed in.
    async fn accept_link(&self, link: &str, password: &str) {
        let (status, page, _) = self.get(link).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let csrf = csrf_of(&page);
        let (status, body, location) = self.post(link, &[("csrf", &csrf), ("password", password)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        assert_eq!(location.as_deref(), Some("/"));
    }

    /// Posts the sign-in form (with the token of its page), as a person would.
    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        next: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let (_, page, _) = self.get("/sign-in").await;
        let pre = csrf_of(&page);
        let mut fields = vec![("csrf", pre.as_str()), ("email", email), ("password", password)];
        fields.extend(next);
        self.post("/sign-in", &fields).await
    }

    /// The CSRF token of this browser's session, from a page.
    async fn csrf(&self) -> String {
        let (status, page, _) = self.get("/").await;
        assert_eq!(status, StatusCode::OK);
        csrf_of(&page)
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a csrf token");
    page[at + 19..at + 19 + 64].to_owned()
}

/// A user made offline (like the first admin of a fresh install): their sign-in link.
fn create_user(setup: &Setup, email: &str, role: &str, apps: &[&str]) -> String {
    let mut args = vec![
        "users",
        "create",
        email,
        "--role",
        role,
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ];
    for app in apps {
        args.extend(["--app", app]);
    }
    aloft_ok(&args).trim().to_owned()
}

fn audit(setup: &Setup) -> Vec<Value> {
    let out = aloft_ok(&[
        "audit",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn a_sign_in_link_works_once_and_sessions_guard_every_form() {
    let setup = Setup::new();
    // The first admin, written offline into the server's database.
    let data = setup.path("data");
    let location_args: Vec<String> = match setup.server.backend_args.iter().position(|a| a == "--database-url") {
        // The server's own database: the URL it was started with...
        Some(i) => vec!["--database-url".into(), setup.server.backend_args[i + 1].clone()],
        // ...or its data folder.
        None => vec!["--data-dir".into(), data.to_str().unwrap().into()],
    };
    let mut args = vec![
        "users",
        "create",
        "Ann@Example.com",
        "--role",
        "admin",
        "--public-url",
        &setup.server.base,
    ];
    args.extend(location_args.iter().map(String::as_str));
    let link = aloft_ok(&args).trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/sign-in/link/", setup.server.base)),
        "{link}"
    );

    // Signed out, pages send the browser to sign in (and back).
    let ann = Browser::new(&setup.server.base);
    let (status, _, location) = ann.get("/apps/demo").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/sign-in?next=%2Fapps%2Fdemo"));

    // The password form without its token is refused, and the link still works after that.
    let (status, _, _) = ann.post(&link, &[("password", "abcdefghijk")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // So is a password that is too short, and the link still works after that too.
    let (_, page, _) = ann.get(&link).await;
    let (status, page, _) = ann
        .post(&link, &[("csrf", &csrf_of(&page)), ("password", "short")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at least 10 characters"), "{page}");
    ann.accept_link(&link, "a long enough password").await;
    let (status, page, _) = ann.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("ann@example.com (admin)"), "{page}");
    assert!(page.contains("href=\"/apps/demo\""), "{page}");

    // Used once: the link is gone, for anyone.
    let eve = Browser::new(&setup.server.base);
    let (status, page, _) = eve.get(&link).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("link_not_valid"), "{page}");

    // Signing in with the password works; a wrong one does not.
    let other = Browser::new(&setup.server.base);
    let (status, _, _) = other.sign_in("ann@example.com", "wrong password!", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, location) = other
        .sign_in("ANN@example.com", "a long enough password", &[("next", "/audit")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/audit"));

    // A form with another session's token is refused, and so is one with none.
    let ann_csrf = ann.csrf().await;
    let other_csrf = other.csrf().await;
    assert_ne!(ann_csrf, other_csrf);
    let (status, page, _) = ann
        .post(
            "/apps/demo/channels/production",
            &[("csrf", &other_csrf), ("branch", "production"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("csrf_refused"));
    let (status, _, _) = ann
        .post(
            "/apps/demo/channels/production",
            &[("branch", "production"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // With its own token it goes through; the audit log names the user.
    aloft_ok(&[
        "branches",
        "create",
        "next",
        "--app",
        "demo",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ]);
    let (status, page, _) = ann
        .post(
            "/apps/demo/channels/production",
            &[("csrf", &ann_csrf), ("branch", "next")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a confirmation page first");
    assert!(page.contains("will point at branch next"), "{page}");
    let (status, _, location) = ann
        .post(
            "/apps/demo/channels/production",
            &[("csrf", &ann_csrf), ("branch", "next"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/apps/demo?notice=repointed"));
    let entry = audit(&setup)
        .into_iter()
        .find(|e| e["action"] == "channel.edit")
        .expect("audited");
    assert_eq!(entry["actor"], "ann@example.com");

    // After sign-out the session's cookie and token are worth nothing.
    let (status, _, location) = ann.post("/sign-out", &[("csrf", &ann_csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/sign-in"));
    let (status, _, _) = ann
        .post(
            "/apps/demo/channels/production",
            &[("csrf", &ann_csrf), ("branch", "production"), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The other session lives on until "sign out everywhere".
    let (status, _, _) = other.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = other.post("/sign-out/everywhere", &[("csrf", &other_csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = other.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_viewer_sees_no_controls_and_cannot_post_its_way_past_them() {
    let setup = Setup::new();
    let export = make_export(&setup.path("export"), "v1", "1.0.0");
    let published = setup.publish(&export, "production", false, &["--rollout-percentage", "10"]);
    let group = published["group_id"].as_str().unwrap().to_owned();
    let link = create_user(&setup, "vic@example.com", "viewer", &["demo"]);
    let vic = Browser::new(&setup.server.base);
    vic.accept_link(&link, "viewer password 1").await;
    let csrf = vic.csrf().await;

    let (status, page, _) = vic.get(&format!("/apps/demo/groups/{group}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("rolling out"), "{page}");
    for control in ["/rollout\"", "/complete\"", "/revert\"", "/disable\"", "/republish\""] {
        assert!(!page.contains(control), "a viewer sees the control {control}");
    }
    let (_, app_page, _) = vic.get("/apps/demo").await;
    assert!(!app_page.contains("/channels/production\""), "no re-point form");
    assert!(!app_page.contains("/rollback\""), "no rollback form");

    // Posting anyway, with the viewer's own valid token: refused, and nothing changed.
    for (path, fields) in [
        (
            format!("/apps/demo/groups/{group}/rollout"),
            vec![("percentage", "50"), ("confirmed", "yes")],
        ),
        (
            format!("/apps/demo/groups/{group}/complete"),
            vec![("confirmed", "yes")],
        ),
        (
            "/apps/demo/channels/production".to_owned(),
            vec![("branch", "production"), ("confirmed", "yes")],
        ),
        ("/tokens".to_owned(), vec![("name", "mine"), ("scope", "admin")]),
    ] {
        let mut fields = fields;
        fields.push(("csrf", &csrf));
        let (status, page, _) = vic.post(&path, &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {page}");
    }
    let status = aloft_ok(&[
        "rollout",
        "status",
        &group,
        "--app",
        "demo",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--json",
    ]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["percentage"], 10);
    // An app the viewer is not for does not exist for them.
    aloft_ok(&[
        "apps",
        "create",
        "other",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ]);
    let (status, _, _) = vic.get("/apps/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failed_sign_ins_are_limited_and_links_are_replaced() {
    let setup = Setup::new();
    let first = create_user(&setup, "pat@example.com", "publisher", &["demo"]);
    // A new link replaces the first, through the API.
    let out = aloft_ok(&[
        "users",
        "reset",
        "pat@example.com",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ]);
    let second = out.trim().to_owned();
    let pat = Browser::new(&setup.server.base);
    let (status, _, _) = pat.get(&first).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the replaced link is dead");
    pat.accept_link(&second, "publisher pass 1").await;
    let listed = aloft_ok(&["users", "list", "--server", &setup.server.base, "--token", &setup.token]);
    assert!(
        listed.contains("pat@example.com") && listed.contains("publisher") && listed.contains("set"),
        "{listed}"
    );

    let guess = Browser::new(&setup.server.base);
    for _ in 0..5 {
        let (status, _, _) = guess.sign_in("pat@example.com", "not it at all", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The sixth try is not even checked, right password or not.
    let (status, page, _) = guess.sign_in("pat@example.com", "publisher pass 1", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("try again in"), "{page}");

    // Removing a user ends their session.
    aloft_ok(&[
        "users",
        "remove",
        "pat@example.com",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
    ]);
    let (status, _, _) = pat.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let actions: Vec<String> = audit(&setup)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["user.create", "user.reset", "user.password", "user.remove"] {
        assert!(actions.contains(&action.to_owned()), "{action} in {actions:?}");
    }
}

#[test]
fn users_create_says_where_to_write_when_it_is_not_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["users", "create", "ann@example.com", "--role", "admin"])
        .current_dir(dir.path())
        .env_remove("ALOFT_SERVER")
        .env_remove("ALOFT_DATA_DIR")
        .env_remove("ALOFT_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--data-dir") && err.contains("--server"), "{err}");
    // With the default data folder of `aloft serve` present, that is where the user goes.
    let data = dir.path().join("aloft-data");
    aloft_ok(&["migrate", "--data-dir", data.to_str().unwrap()]);
    let out = std::process::Command::new(BIN)
        .args([
            "users",
            "create",
            "ann@example.com",
            "--role",
            "viewer",
            "--app",
            "demo",
        ])
        .current_dir(dir.path())
        .env_remove("ALOFT_SERVER")
        .env_remove("ALOFT_DATA_DIR")
        .env_remove("ALOFT_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("http://127.0.0.1:3000/sign-in/link/"));
}

#[test]
fn the_dashboard_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--dashboard", "off"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reply = get(&format!("{}/", server.base), &[]).await;
        assert_eq!(reply.status, 404);
        let reply = get(&format!("{}/sign-in", server.base), &[]).await;
        assert_eq!(reply.status, 404);
        // The API and the device routes are untouched.
        let reply = get(&format!("{}/api/v1/openapi.json", server.base), &[]).await;
        assert_eq!(reply.status, 200);
    });
}
