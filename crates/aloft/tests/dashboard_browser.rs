//! The dashboard in a real browser (Debian's headless Chromium through chromedriver): an admin
//! signs in through a link, sees what the CLI published, raises a rollout from 10 % to 30 % and
//! reverts it, re-points a channel, rolls back, makes and revokes a token, adds a viewer, and
//! signs out; after each step, devices are asked what they now get. A viewer sees no controls
//! and a forged POST from their page is refused. Every page is screenshotted (into
//! `target/screenshots/`, or `$ALOFT_SCREENSHOTS`) and checked for the accessibility basics in
//! both themes: labels, contrast, landmarks, a visible focus, the keyboard.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use serde_json::Value;
use support::browser::Browser;
use support::fleet::{self, Device};
use support::*;

/// `count` devices on `running`, without a code-signing certificate (the app is unsigned).
fn devices(count: usize, running: &str) -> Vec<Device<'_>> {
    (0..count)
        .map(|i| {
            let mut d = Device::new(i, running);
            d.signed = false;
            d
        })
        .collect()
}

/// The devices (by index) whose check is answered with `update`.
async fn getting(base: &str, fleet: &[Device<'_>], update: &str) -> Vec<usize> {
    let mut got = Vec::new();
    for (i, d) in fleet.iter().enumerate() {
        if d.check(base).await.is_some_and(|m| m["id"] == update) {
            got.push(i);
        }
    }
    got
}

/// Whether the device is told to roll back to its embedded update (a directive, which only a
/// multipart answer carries).
async fn told_to_roll_back(base: &str, device: &Device<'_>) -> bool {
    let headers = with(device.headers(), "Accept", "multipart/mixed");
    let reply = get(&format!("{base}/apps/demo/manifest"), &headers).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    String::from_utf8_lossy(&reply.body).contains("\"type\":\"rollBackToEmbedded\"")
}

/// The status `GET /api/v1/apps` answers with this token.
async fn apps_status(base: &str, token: &str) -> u16 {
    let r = reqwest::Client::new()
        .get(format!("{base}/api/v1/apps"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

fn launch_hash(manifest: &Value) -> String {
    manifest["launchAsset"]["hash"].as_str().unwrap().to_owned()
}

/// What a page weighs, as the browser loaded it: its HTML, and the stylesheet and script (the
/// same two files on every page), decoded.
async fn weigh(browser: &Browser, name: &str) {
    let sizes = browser
        .execute(
            r#"const nav = performance.getEntriesByType("navigation")[0];
               const rest = performance.getEntriesByType("resource").reduce((n, r) => n + r.decodedBodySize, 0);
               return [nav.decodedBodySize, rest];"#,
        )
        .await;
    let (html, rest) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    println!("page weight: {name}: {html} bytes of HTML, {rest} bytes of CSS and script");
    assert!(html < 64 * 1024, "{name}: {html} bytes of HTML");
    assert!(rest < 12 * 1024, "{name}: {rest} bytes of CSS and script");
}

/// Opens a page, screenshots it in both themes and checks the accessibility basics in both.
async fn page(browser: &Browser, url: &str, name: &str) {
    browser.goto(url).await;
    browser.wait_for("main h1").await;
    weigh(browser, name).await;
    browser.screenshot(name).await;
    browser.set_color_scheme(true).await;
    browser.screenshot(&format!("{name}-dark")).await;
    browser.set_color_scheme(false).await;
    browser.assert_accessible_in_both_schemes(name).await;
}

/// Clicks `button`, expects the confirmation page (which says what devices get), screenshots it
/// and confirms.
async fn confirm(browser: &Browser, button: &str, says: &str, name: &str) {
    browser.click(button).await;
    browser.wait_for("#confirm").await;
    browser.wait_for_text("main", says).await;
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
    browser.click("#confirm").await;
    browser.wait_for("main h1").await;
}

#[tokio::test]
async fn an_admin_steers_a_release_from_the_browser() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &base, "--token", &setup.token]);
        aloft_ok(&all)
    };
    let link = cli(&["users", "create", "ann@example.com", "--role", "admin"])
        .trim()
        .to_owned();
    let browser = Browser::start().await;

    // Signed out: the sign-in page.
    page(&browser, &format!("{base}/"), "sign-in").await;
    assert!(browser.current_url().await.path().ends_with("/sign-in"));
    assert!(browser.keyboard_reaches("#email", 10).await);
    assert!(browser.keyboard_reaches("#password", 12).await);

    // The link: set a password, and be signed in.
    page(&browser, &link, "set-password").await;
    browser.fill("#password", "a good long password").await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("main h1", "Apps").await;
    let session = browser.cookie("aloft_session").await.expect("a session cookie");
    assert!(session.http_only, "the session cookie is HttpOnly");
    assert_eq!(session.same_site.as_deref(), Some("Lax"));

    // Publish with the CLI: U1 for everyone, then U2 as a 10 % rollout.
    let v1 = make_export(&setup.path("v1"), "v1", "1.0.0");
    let u1 = setup.publish(&v1, "production", false, &["--message", "first"]);
    let u2 = setup.publish(
        &make_export(&setup.path("v2"), "v2", "1.0.0"),
        "production",
        false,
        &["--message", "second", "--rollout-percentage", "10"],
    );
    let (u1_ios, u2_ios) = (ios_id(&u1), ios_id(&u2));
    let group = u2["group_id"].as_str().unwrap().to_owned();

    page(&browser, &format!("{base}/"), "apps").await;
    assert!(
        browser.text("main").await.contains("second"),
        "the newest group is listed"
    );
    page(&browser, &format!("{base}/apps/demo"), "app").await;
    page(&browser, &format!("{base}/apps/demo/branches/production"), "branch").await;
    let branch = browser.text("main table").await;
    assert!(
        branch.contains("first") && branch.contains("second") && branch.contains("rolling out"),
        "{branch}"
    );
    page(&browser, &format!("{base}/apps/demo/groups/{group}"), "group").await;
    // (The live section is refreshed by the page's script; waiting reads survive a refresh.)
    browser.wait_for_text("#group-state", "rolling out").await;
    browser.wait_for_text("#rollout-percentage", "10%").await;
    assert!(browser.exists(".qr svg").await, "the development-build QR code");
    assert!(
        browser.keyboard_reaches("#raise", 40).await,
        "the controls are reachable by keyboard"
    );

    // 10 % → 30 %: devices that had the update keep it, and about 30 % get it.
    let fleet = devices(200, &u1_ios);
    let at_10 = getting(&base, &fleet, &u2_ios).await;
    browser.fill("#percentage", "30").await;
    confirm(&browser, "#raise", "30% of the devices", "confirm-rollout").await;
    browser.wait_for_text("#rollout-percentage", "30%").await;
    let at_30 = getting(&base, &fleet, &u2_ios).await;
    assert!(
        at_10.iter().all(|i| at_30.contains(i)),
        "a device that had the update keeps it"
    );
    assert!(
        (30..=90).contains(&at_30.len()),
        "about 30% of 200 devices get the group at 30%: {} (at 10%: {})",
        at_30.len(),
        at_10.len()
    );

    // Revert: every device is moved back to U1's content.
    confirm(&browser, "#revert", "moved back", "confirm-revert").await;
    browser.wait_for_text("#group-state", "reverted").await;
    for d in fleet.iter().take(20) {
        let got = d.check(&base).await;
        if let Some(m) = got {
            assert_ne!(m["id"], u2_ios.as_str(), "nobody gets the reverted group");
        }
    }
    let newcomer = devices(1, fleet::EMBEDDED);
    let after_revert = newcomer[0].check(&base).await.expect("an update");
    assert_eq!(launch_hash(&after_revert), ios_bundle_hash(&v1), "U1's bundle again");

    // Re-point the channel at a new branch with a newer group.
    cli(&["branches", "create", "staging", "--app", "demo"]);
    let u3 = {
        let export = make_export(&setup.path("v3"), "v3", "1.0.0");
        let mut args = vec![
            "publish",
            "--server",
            &base,
            "--token",
            &setup.token,
            "--app",
            "demo",
            "--branch",
            "staging",
        ];
        let input = export.to_str().unwrap().to_owned();
        args.extend(["--input", &input, "--message", "third", "--json"]);
        serde_json::from_str::<Value>(&aloft_ok(&args)).unwrap()
    };
    browser.goto(&format!("{base}/apps/demo")).await;
    browser.select("#repoint-production", "staging").await;
    browser
        .click("form[action='/apps/demo/channels/production'] button")
        .await;
    browser.wait_for("#confirm").await;
    browser.wait_for_text("main", "will point at branch staging").await;
    browser.screenshot("confirm-repoint").await;
    browser.click("#confirm").await;
    browser.wait_for_text("main", "now points at the new branch").await;
    let got = newcomer[0].check(&base).await.expect("an update");
    assert_eq!(got["id"], ios_id(&u3).as_str(), "the channel serves the new branch");

    // Roll back to the embedded update.
    browser.select("#rb-production", "embedded").await;
    browser.click("form[action='/apps/demo/rollback'] button").await;
    browser.wait_for("#confirm").await;
    browser.wait_for_text("main", "embedded in their build").await;
    browser.screenshot("confirm-rollback").await;
    browser.click("#confirm").await;
    browser.wait_for_text("main", "rolled back").await;
    let u3_ios = ios_id(&u3);
    assert!(
        told_to_roll_back(&base, &devices(1, &u3_ios)[0]).await,
        "devices roll back to embedded"
    );

    // A token: made on the page (the secret shown once), then revoked.
    page(&browser, &format!("{base}/tokens"), "tokens").await;
    browser.fill("#token-name", "ci").await;
    browser.select("#token-scope", "read").await;
    browser.fill("#token-apps", "demo").await;
    browser.click("form[action='/tokens'] button").await;
    browser.wait_for("#secret").await;
    browser.screenshot("token-created").await;
    let secret = browser.text("#secret").await;
    assert_eq!(apps_status(&base, &secret).await, 200, "the new token works");
    browser.goto(&format!("{base}/tokens")).await;
    browser.click("button[aria-label^='Revoke token ci']").await;
    browser.wait_for_text("main", "was revoked").await;
    assert_eq!(apps_status(&base, &secret).await, 401, "the revoked token is refused");

    // Users, webhooks, the audit log (which names the user for every dashboard change).
    page(&browser, &format!("{base}/users"), "users").await;
    browser.fill("#user-email", "vic@example.com").await;
    browser.select("#user-role", "viewer").await;
    browser.fill("#user-apps", "demo").await;
    browser.click("form[action='/users'] button").await;
    browser.wait_for("#secret").await;
    browser.screenshot("user-link").await;
    let viewer_link = browser.text("#secret").await;
    page(&browser, &format!("{base}/apps/demo/webhooks"), "webhooks").await;
    page(&browser, &format!("{base}/audit?app=demo"), "audit").await;
    let audit = browser.text("main table").await;
    for action in ["rollout.set", "rollout.revert", "channel.edit", "rollback.embedded"] {
        assert!(audit.contains(action), "{action} in the audit log:\n{audit}");
    }
    assert!(audit.contains("ann@example.com"), "{audit}");

    // An error page is a page too.
    page(&browser, &format!("{base}/apps/nope"), "error").await;

    // Sign out: the pages send the browser back to sign in.
    browser.goto(&format!("{base}/")).await;
    browser.click("form[action='/sign-out'] button").await;
    browser.wait_for_text("main h1", "Sign in").await;
    browser.goto(&format!("{base}/apps/demo")).await;
    browser.wait_for_text("main h1", "Sign in").await;

    // The viewer: no controls anywhere, and a POST forged from their own page is refused.
    browser.goto(&viewer_link).await;
    browser.fill("#password", "viewer password!").await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("main h1", "Apps").await;
    page(&browser, &format!("{base}/apps/demo/groups/{group}"), "group-as-viewer").await;
    for control in ["#raise", "#revert", "#complete", "#republish", "#disable"] {
        assert!(!browser.exists(control).await, "a viewer sees {control}");
    }
    page(&browser, &format!("{base}/apps/demo"), "app-as-viewer").await;
    assert!(!browser.exists("#repoint-production").await);
    let status = browser
        .execute(
            r#"const csrf = document.querySelector("input[name=csrf]").value;
               return fetch("/apps/demo/channels/production", {method: "POST",
                 headers: {"content-type": "application/x-www-form-urlencoded"},
                 body: "csrf=" + csrf + "&branch=production&confirmed=yes"}).then(r => r.status);"#,
        )
        .await;
    assert_eq!(status, 403, "a forged POST is refused");
    assert!(
        told_to_roll_back(&base, &devices(1, &u3_ios)[0]).await,
        "nothing changed"
    );
    browser.close().await;
}

/// The hash of an export's iOS bundle, as a manifest names it.
fn ios_bundle_hash(export: &std::path::Path) -> String {
    let dir = export.join("_expo/static/js/ios");
    let bundle = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    sha256_b64url(&std::fs::read(bundle).unwrap())
}
