//! Webhooks end to end: the real binary sends an app's events to a receiver in this test (a
//! loopback HTTP/1.1 listener that records every request), on the backend under test
//! (`ALOFT_TEST_BACKEND`). Signatures are checked with the `openssl` command line.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::receiver::{Answer, Receiver, openssl_hmac};
use support::*;

const RV: &str = "1.0.0";

fn webhooks(setup: &Setup, args: &[&str]) -> String {
    let mut all = vec!["webhooks"];
    all.extend(args);
    all.extend(["--server", &setup.server.base, "--token", &setup.token, "--app", "demo"]);
    aloft_ok(&all)
}

fn add(setup: &Setup, url: &str, events: &str, secret: Option<&str>) -> Value {
    let mut args = vec!["add", url, "--events", events, "--json"];
    if let Some(secret) = secret {
        args.extend(["--secret", secret]);
    }
    serde_json::from_str(&webhooks(setup, &args)).unwrap()
}

fn deliveries(setup: &Setup) -> Vec<Value> {
    let out = webhooks(setup, &["deliveries", "--json"]);
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

#[test]
fn a_publish_is_delivered_once_signed_to_the_webhooks_subscribed_to_it() {
    let setup = Setup::new();
    let receiver = Receiver::start(Answer::FailFirst(0));
    let other = Receiver::start(Answer::FailFirst(0));
    let hook = add(&setup, &receiver.url, "publish,rollback", Some("s3cret value"));
    assert_eq!(hook["secret"], "s3cret value");
    assert_eq!(hook["webhook"]["events"], serde_json::json!(["publish", "rollback"]));
    // Without --secret, one is made and shown once.
    let rollbacks_only = add(&setup, &other.url, "rollback", None);
    let made = rollbacks_only["secret"].as_str().unwrap();
    assert!(
        made.len() == 64 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );

    let published = setup.publish(&make_export(setup.dir.path(), "one", RV), "production", false, &[]);
    let got = receiver.wait_for(1, Duration::from_secs(15));
    let request = &got[0];
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["aloft-event"], "publish");
    let expected = format!("sha256={}", openssl_hmac("s3cret value", &request.body));
    assert_eq!(request.headers["aloft-signature"], expected);
    let payload: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(payload["id"], request.headers["aloft-delivery"].as_str());
    uuid::Uuid::parse_str(&request.headers["aloft-delivery"]).unwrap();
    assert_eq!(payload["event"], "publish");
    assert_eq!(payload["app"], "demo");
    assert_eq!(payload["action"], "publish");
    assert_eq!(payload["target"], "production");
    assert_eq!(payload["details"]["published_group"], published["group_id"]);
    assert!(payload["actor"].as_str().unwrap().contains("admin"), "{payload}");
    assert!(payload["occurred_at"].as_str().unwrap().ends_with('Z'), "{payload}");
    let text = payload["text"].as_str().unwrap();
    assert!(text.starts_with("[demo] publish by ") && !text.contains('\n'), "{text}");
    assert!(text.ends_with(payload["summary"].as_str().unwrap()), "{text}");

    // The log says delivered, with the receiver's status; nothing more comes, and a webhook
    // subscribed only to rollbacks gets nothing for a publish.
    let log = deliveries(&setup);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["id"], payload["id"]);
    assert_eq!(log[0]["state"], "delivered");
    assert_eq!(log[0]["attempts"][0]["status"], 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.received().len(), 1, "delivered exactly once");
    assert!(other.received().is_empty(), "a rollback-only webhook got a publish");

    // A rollback reaches both.
    let again = setup.publish(&make_export(setup.dir.path(), "two", RV), "production", false, &[]);
    aloft_ok(&[
        "rollback",
        "--channel",
        "production",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
    ]);
    let rollback = other.wait_for(1, Duration::from_secs(15));
    let payload: Value = serde_json::from_slice(&rollback[0].body).unwrap();
    assert_eq!(payload["event"], "rollback");
    let expected = format!("sha256={}", openssl_hmac(made, &rollback[0].body));
    assert_eq!(rollback[0].headers["aloft-signature"], expected);
    let got = receiver.wait_for(3, Duration::from_secs(15));
    // Deliveries due together are sent in parallel, in no promised order.
    let mut events: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    events.sort();
    assert_eq!(events, ["publish", "publish", "rollback"]);
    assert_ne!(again["group_id"], published["group_id"]);

    // Listing and removing.
    let list: Value = serde_json::from_str(&webhooks(&setup, &["list", "--json"])).unwrap();
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!list.to_string().contains("s3cret"), "a listing shows no secret");
    let other_id = rollbacks_only["webhook"]["id"].as_i64().unwrap().to_string();
    assert!(webhooks(&setup, &["remove", &other_id]).contains("removed"));
    let list: Value = serde_json::from_str(&webhooks(&setup, &["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let audit = aloft_ok(&[
        "audit",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
    ]);
    assert!(
        audit.contains("webhook.add") && audit.contains("webhook.remove"),
        "{audit}"
    );
}

#[test]
fn a_failed_delivery_is_retried_and_the_log_shows_every_attempt() {
    let setup = Setup::new();
    let receiver = Receiver::start(Answer::FailFirst(1));
    add(&setup, &receiver.url, "publish", Some("k"));
    setup.publish(&make_export(setup.dir.path(), "one", RV), "production", false, &[]);
    let first = receiver.wait_for(1, Duration::from_secs(15));
    let log = deliveries(&setup);
    assert_eq!(log[0]["state"], "pending", "{log:?}");
    assert_eq!(log[0]["attempts"][0]["status"], 500);
    assert!(log[0]["next_attempt_at"].is_string());
    // The first retry comes 10 s later.
    let got = receiver.wait_for(2, Duration::from_secs(25));
    assert_eq!(got.len(), 2);
    for header in ["aloft-delivery", "aloft-signature"] {
        assert_eq!(
            got[1].headers[header], first[0].headers[header],
            "{header} changed on a retry"
        );
    }
    assert_eq!(got[1].body, first[0].body);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = deliveries(&setup);
        if log[0]["state"] != "pending" || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(log[0]["state"], "delivered", "{log:?}");
    let statuses: Vec<Value> = log[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [500, 200]);
    assert_eq!(log[0]["attempts"][1]["attempt"], 2);
    let table = webhooks(&setup, &["deliveries"]);
    assert!(table.contains("500, 200") && table.contains("delivered"), "{table}");
}

#[test]
fn a_receiver_that_never_answers_does_not_delay_a_publish_or_a_check() {
    let setup = Setup::new();
    let receiver = Receiver::start(Answer::Never);
    add(&setup, &receiver.url, "publish", None);
    setup.publish(&make_export(setup.dir.path(), "one", RV), "production", false, &[]);
    // The delivery is now stuck in the receiver, which read it and keeps the connection open.
    receiver.wait_for(1, Duration::from_secs(15));
    let export = make_export(setup.dir.path(), "two", RV);
    let started = Instant::now();
    setup.publish(&export, "production", false, &[]);
    let publish_took = started.elapsed();
    let started = Instant::now();
    let check = tokio::runtime::Runtime::new().unwrap().block_on(get(
        &setup.server.manifest_url("demo"),
        &without(device_headers("ios", RV, "production"), "expo-expect-signature"),
    ));
    let check_took = started.elapsed();
    eprintln!("publish with a stuck webhook: {publish_took:?}; check: {check_took:?}");
    assert!(publish_took < Duration::from_secs(3), "publish took {publish_took:?}");
    assert_eq!(check.status, 200);
    assert!(check_took < Duration::from_secs(1), "check took {check_took:?}");
    // The second publish's delivery is sent too, beside the stuck one.
    receiver.wait_for(2, Duration::from_secs(15));
}

#[test]
fn a_webhook_url_must_be_http_and_events_known() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let args = |url: &'static str, events: &'static str| {
        vec![
            "webhooks",
            "add",
            url,
            "--events",
            events,
            "--server",
            &base,
            "--token",
            &setup.token,
            "--app",
            "demo",
        ]
    };
    let out = aloft(&args("ftp://example.com/hook", "publish"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http:// or https://") && err.contains("invalid_webhook_url"),
        "{err}"
    );
    let out = aloft(&args("https://example.com/hook", "publish,deploy"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"deploy\"") && err.contains("publish, rollout, halt, rollback, disable"),
        "{err}"
    );
}

#[test]
fn two_replicas_on_one_database_send_each_event_once() {
    let setup = Setup::new();
    // A second server on the same database, running the same delivery job (a data folder of
    // its own: one folder is one server's).
    let mut shared = setup.server.backend_args.clone();
    if !shared.iter().any(|a| a == "--database-url") {
        let db = setup.server.data_dir.join("aloft.db");
        shared.extend(["--database-url".to_owned(), format!("sqlite://{}", db.display())]);
    }
    let replica = Server::start_on(&setup.path("replica"), "127.0.0.1:0", shared);
    let receiver = Receiver::start(Answer::FailFirst(0));
    add(&setup, &receiver.url, "publish", Some("k"));
    for tag in ["one", "two", "three"] {
        setup.publish(&make_export(setup.dir.path(), tag, RV), "production", false, &[]);
    }
    receiver.wait_for(3, Duration::from_secs(15));
    // Both jobs have looked several times since.
    std::thread::sleep(Duration::from_secs(3));
    let got = receiver.received();
    let mut ids: Vec<&str> = got.iter().map(|r| r.headers["aloft-delivery"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (3, 3), "each event once, to one webhook");
    let log = deliveries(&setup);
    assert_eq!(log.len(), 3);
    assert!(
        log.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"].as_array().unwrap().len() == 1),
        "{log:?}"
    );
    drop(replica);
}
