//! Fleet insights end to end: the real binary, devices that check, download, launch and fail
//! through the real headers, and the counts read back with `aloft insights` (on the backend
//! under test, `ALOFT_TEST_BACKEND`).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use futures::future::join_all;
use serde_json::Value;
use support::fleet::{Device, EMBEDDED, series};
use support::receiver::{Answer, Receiver, openssl_hmac};
use support::*;

const RV: &str = "1.0.0";

fn insights(setup: &Setup, args: &[&str]) -> Value {
    let mut all = vec![
        "insights",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
        "--json",
    ];
    all.extend(args);
    serde_json::from_str(&aloft_ok(&all)).unwrap()
}

fn platform<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == name)
        .unwrap()
}

/// 200 devices take update 2 from the embedded update; 150 launch it, 50 fail on it (10 with a
/// fatal error) and fall back. The counts read back exactly, the devices that failed are never
/// offered update 2 again, and a build with a misspelt channel shows up.
#[tokio::test]
async fn devices_reports_become_exact_insights() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let first = setup.publish(
        &make_export(setup.dir.path(), "insights-1", RV),
        "production",
        true,
        &[],
    );
    let second = setup.publish(
        &make_export(setup.dir.path(), "insights-2", RV),
        "production",
        true,
        &[],
    );
    let (u1, u2) = (update_id(&first, "ios"), update_id(&second, "ios"));
    let group2 = second["group_id"].as_str().unwrap().to_owned();
    let group1 = first["group_id"].as_str().unwrap().to_owned();

    let u2_ref = u2.as_str();
    // Every device checks from its embedded update, gets update 2 and downloads it.
    for chunk in (0..200).collect::<Vec<_>>().chunks(25) {
        join_all(chunk.iter().map(|&i| {
            let base = base.clone();
            async move {
                let device = Device::new(i, EMBEDDED);
                let manifest = device
                    .check(&base)
                    .await
                    .expect("an update for a device on its embedded update");
                assert_eq!(manifest["id"].as_str().unwrap(), u2_ref);
                device.install(&manifest).await;
            }
        }))
        .await;
    }
    // 150 launch it and check again: nothing newer.
    join_all((0..150).map(|i| {
        let base = base.clone();
        async move { assert!(Device::new(i, u2_ref).check(&base).await.is_none()) }
    }))
    .await;
    // 50 fail on it and are back on the embedded update; they are offered update 1, never 2.
    let offered = join_all((150..200).map(|i| {
        let base = base.clone();
        async move {
            let mut device = Device::new(i, EMBEDDED);
            device.failed = vec![u2_ref];
            if i < 160 {
                device.fatal = Some("TypeError: undefined is not a function (near 'boom')");
            }
            device.check(&base).await.map(|m| m["id"].as_str().unwrap().to_owned())
        }
    }))
    .await;
    assert!(
        offered.iter().all(|id| id.as_deref() == Some(u1.as_str())),
        "{offered:?}"
    );
    // Running update 1 with update 2 reported failed: nothing to offer.
    let mut on_u1 = Device::new(170, &u1);
    on_u1.failed = vec![u2_ref];
    assert!(on_u1.check(&base).await.is_none());
    // A build whose channel nobody created.
    for i in 0..3 {
        let mut typo = Device::new(900 + i, EMBEDDED);
        typo.channel = "prodution";
        assert!(typo.check(&base).await.is_none());
    }

    let report = insights(&setup, &[&group2]);
    let ios = platform(&report, "ios");
    let numbers = |p: &Value| ["devices", "installs", "launches", "failures"].map(|k| p[k].as_u64().unwrap());
    assert_eq!(numbers(ios), [200, 200, 150, 50], "{report:#}");
    assert_eq!(ios["updateId"].as_str().unwrap(), u2);
    assert_eq!(ios["exact"], true);
    assert_eq!(ios["failureRate"].as_f64().unwrap(), 25.0);
    assert_eq!(
        ios["fatalErrors"],
        serde_json::json!([{"message": "TypeError: undefined is not a function (near 'boom')", "count": 10}])
    );
    let daily = ios["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0]["devices"], 200);
    assert_eq!(numbers(platform(&report, "android")), [0, 0, 0, 0]);
    assert!(platform(&report, "android")["failureRate"].is_null());

    let report = insights(&setup, &[&group1]);
    assert_eq!(numbers(platform(&report, "ios")), [50, 0, 1, 0], "{report:#}");

    let fleet = insights(&setup, &["--channel", "production"]);
    let runtimes = fleet["runtimes"].as_array().unwrap();
    assert_eq!(runtimes.len(), 1, "{fleet:#}");
    assert_eq!(runtimes[0]["runtimeVersion"], RV);
    // Every device was seen on its embedded update today; 150 also on update 2, one on update 1.
    assert_eq!(runtimes[0]["embedded"], 200);
    let updates: Vec<(String, u64)> = runtimes[0]["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["updateId"].as_str().unwrap().to_owned(),
                u["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(updates, vec![(u2.clone(), 150), (u1.clone(), 1)]);
    assert_eq!(
        fleet["unknownChannels"],
        serde_json::json!([{"channel": "prodution", "checks": 3}])
    );

    // Prometheus: low-cardinality series per app and platform.
    let demo_ios = ["app=\"demo\"", "platform=\"ios\""];
    let checks = |outcome: &'static str| {
        let base = base.clone();
        async move {
            let outcome = format!("outcome=\"{outcome}\"");
            series(
                &base,
                "aloft_device_checks_total",
                &[demo_ios[0], demo_ios[1], &outcome],
            )
            .await
        }
    };
    assert_eq!(checks("update").await, 250);
    assert_eq!(checks("no_update").await, 151);
    assert_eq!(checks("unknown_channel").await, 3);
    assert_eq!(series(&base, "aloft_device_installs_total", &demo_ios).await, 200);
    assert_eq!(series(&base, "aloft_device_failure_reports_total", &demo_ios).await, 51);

    // The same, in words.
    let text = aloft_ok(&[
        "insights",
        &group2,
        "--server",
        &base,
        "--token",
        &setup.token,
        "--app",
        "demo",
    ]);
    println!("aloft insights {group2}:\n{text}");
    assert!(
        text.contains("devices 200  installs 200  launches 150  failures 50  failure rate 25.00 %"),
        "{text}"
    );
    assert!(text.contains("TypeError: undefined is not a function"), "{text}");
}

/// The `rollout.halt` entries of app `demo`'s audit log.
fn halts_in_audit(setup: &Setup) -> Vec<Value> {
    let audit: Value = serde_json::from_str(&aloft_ok(&[
        "audit",
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
        "--json",
    ]))
    .unwrap();
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rollout.halt")
        .cloned()
        .collect()
}

fn rollout_status(setup: &Setup, group: &str) -> Value {
    serde_json::from_str(&aloft_ok(&[
        "rollout",
        "status",
        group,
        "--server",
        &setup.server.base,
        "--token",
        &setup.token,
        "--app",
        "demo",
        "--json",
    ]))
    .unwrap()
}

/// Update 2 goes to half of 200 devices with a policy of 20 % once 40 devices installed it.
/// 39 installers fail: below the minimum, the rollout goes on. The rest launch it: past the
/// threshold, the rollout halts by itself within seconds, exactly as a revert (every device
/// ends on update 1's content), once, with the figures in the audit log. A device that reported
/// update 2 failed is never offered it.
#[tokio::test]
async fn a_rollout_that_crashes_halts_itself() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    // The server signs, so it can republish when it halts.
    let key = setup.key();
    aloft_ok(&[
        "apps",
        "set-signing-key",
        "demo",
        "--private-key",
        &key,
        "--keyid",
        "main",
        "--server",
        &base,
        "--token",
        &setup.token,
    ]);
    // A receiver for `halt` events.
    let receiver = Receiver::start(Answer::FailFirst(0));
    let secret = "halt-test-secret";
    aloft_ok(&[
        "webhooks",
        "add",
        &receiver.url,
        "--events",
        "halt",
        "--secret",
        secret,
        "--server",
        &base,
        "--token",
        &setup.token,
        "--app",
        "demo",
    ]);
    let first = setup.publish(&make_export(setup.dir.path(), "halt-1", RV), "production", false, &[]);
    let u1 = update_id(&first, "ios");
    let second = setup.publish(
        &make_export(setup.dir.path(), "halt-2", RV),
        "production",
        false,
        &[
            "--rollout-percentage",
            "50",
            "--halt-on-failure-rate",
            "20",
            "--halt-min-devices",
            "40",
        ],
    );
    let (u2, group2) = (
        update_id(&second, "ios"),
        second["group_id"].as_str().unwrap().to_owned(),
    );

    // Every device checks while running update 1; half are in the rollout.
    let u1_ref = u1.as_str();
    let answers = join_all((0..200).map(|i| {
        let base = base.clone();
        async move { (i, Device::new(i, u1_ref).check(&base).await) }
    }))
    .await;
    let rolled: Vec<(usize, Value)> = answers.into_iter().filter_map(|(i, m)| Some((i, m?))).collect();
    assert!(
        (70..130).contains(&rolled.len()),
        "{} devices in a 50 % rollout",
        rolled.len()
    );
    assert!(rolled.iter().all(|(_, m)| m["id"].as_str().unwrap() == u2));
    let u1_bundle = {
        // A device outside the rollout that runs its embedded update gets update 1.
        let outside = (0..200).find(|i| !rolled.iter().any(|(r, _)| r == i)).unwrap();
        let manifest = Device::new(outside, EMBEDDED).check(&base).await.unwrap();
        assert_eq!(manifest["id"].as_str().unwrap(), u1);
        manifest["launchAsset"]["hash"].as_str().unwrap().to_owned()
    };

    // 39 install it and fail: below the minimum of 40 installs.
    let u2_ref = u2.as_str();
    let report = |devices: &[(usize, Value)], fail: bool| {
        let base = base.clone();
        let devices: Vec<(usize, Value)> = devices.to_vec();
        async move {
            join_all(devices.iter().map(|(i, manifest)| {
                let base = base.clone();
                async move {
                    let device = Device::new(*i, u1_ref);
                    device.install(manifest).await;
                    let mut after = Device::new(*i, if fail { u1_ref } else { u2_ref });
                    if fail {
                        after.failed = vec![u2_ref];
                    }
                    let offered = after.check(&base).await;
                    // Failed there: never offered update 2 again.
                    if fail {
                        assert!(offered.is_none_or(|m| m["id"].as_str().unwrap() != u2_ref));
                    }
                }
            }))
            .await;
        }
    };
    report(&rolled[..39], true).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let status = rollout_status(&setup, &group2);
    assert_eq!(status["state"], "rolling_out", "{status:#}");
    let ios = status["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "ios")
        .unwrap();
    assert_eq!(
        (ios["installs"].as_u64(), ios["failures"].as_u64()),
        (Some(39), Some(39)),
        "{status:#}"
    );
    assert_eq!(ios["past_policy"], false);

    // The rest launch it: 39 failures of all that ran it is past 20 % with enough installs.
    report(&rolled[39..], false).await;
    let crossed = std::time::Instant::now();
    let halted = loop {
        let status = rollout_status(&setup, &group2);
        if status["state"] == "halted" {
            break crossed.elapsed();
        }
        assert!(
            crossed.elapsed() < std::time::Duration::from_secs(10),
            "not halted in 10 s: {status:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    println!("halted {halted:?} after the threshold was crossed");

    // Every device ends on update 1's content: those on update 2 and those on update 1 alike.
    for (i, _) in &rolled {
        let on_u2 = Device::new(*i, u2_ref)
            .check(&base)
            .await
            .expect("a way back from update 2");
        assert_eq!(on_u2["launchAsset"]["hash"].as_str().unwrap(), u1_bundle);
    }
    for i in 0..200 {
        let mut device = Device::new(i, u1_ref);
        if rolled[..39].iter().any(|(r, _)| *r == i) {
            device.failed = vec![u2_ref];
        }
        if let Some(m) = device.check(&base).await {
            assert_ne!(m["id"].as_str().unwrap(), u2);
            assert_eq!(m["launchAsset"]["hash"].as_str().unwrap(), u1_bundle);
        }
    }

    // Once, with the figures that triggered it.
    let halts = halts_in_audit(&setup);
    assert_eq!(halts.len(), 1, "{halts:#?}");
    let trigger = &halts[0]["details"]["trigger"];
    assert_eq!(trigger["failures"], 39, "{:#}", halts[0]);
    assert_eq!(trigger["installs"].as_u64().unwrap(), rolled.len() as u64);
    assert_eq!(halts[0]["details"]["policy"]["min_devices"], 40);
    assert_eq!(series(&base, "aloft_rollout_halts_total", &["app=\"demo\""]).await, 1);
    // The webhook got the halt, signed, with the figures.
    let got = receiver.wait_for(1, std::time::Duration::from_secs(10));
    assert_eq!(got.len(), 1, "only the halt event was subscribed to");
    let event = &got[0];
    assert_eq!(event.headers["aloft-event"], "halt");
    assert_eq!(
        event.headers["aloft-signature"],
        format!("sha256={}", openssl_hmac(secret, &event.body))
    );
    let payload: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(payload["action"], "rollout.halt");
    assert_eq!(payload["details"]["trigger"]["failures"], 39, "{payload:#}");
    // A halted rollout stays halted: nothing more happens on the next passes.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(halts_in_audit(&setup).len(), 1);
}

/// A channel's branch rollout halts by itself too: half the devices get branch `next`'s update,
/// a third of those fail on it, and the split ends, the devices on `next` moving back to the
/// channel branch's content.
#[tokio::test]
async fn a_branch_rollout_that_crashes_halts_itself() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let key = setup.key();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &base, "--token", &setup.token]);
        aloft_ok(&all)
    };
    cli(&[
        "apps",
        "set-signing-key",
        "demo",
        "--private-key",
        &key,
        "--keyid",
        "main",
    ]);
    let first = setup.publish(
        &make_export(setup.dir.path(), "branch-halt-1", RV),
        "production",
        false,
        &[],
    );
    let u1 = update_id(&first, "ios");
    let export = make_export(setup.dir.path(), "branch-halt-2", RV);
    let mut args = publish_args(&base, &setup.token, "production", &export);
    let at = args.iter().position(|a| *a == "--channel").unwrap();
    args[at] = "--branch";
    args[at + 1] = "next";
    args.push("--json");
    let second: Value = serde_json::from_str(&aloft_ok(&args)).unwrap();
    let u2 = update_id(&second, "ios");
    // Update 1's content, as a device on its embedded update gets it before the split.
    let before = Device::new(100_000, EMBEDDED).check(&base).await.unwrap();
    assert_eq!(before["id"].as_str().unwrap(), u1);
    let u1_bundle = before["launchAsset"]["hash"].as_str().unwrap().to_owned();
    cli(&[
        "channels",
        "rollout",
        "production",
        "--branch",
        "next",
        "--percentage",
        "50",
        "--halt-on-failure-rate",
        "20",
        "--halt-min-devices",
        "20",
        "--app",
        "demo",
    ]);

    let (u1_ref, u2_ref) = (u1.as_str(), u2.as_str());
    let rolled: Vec<(usize, Value)> = join_all((0..120).map(|i| {
        let base = base.clone();
        async move { Some((i, Device::new(i, u1_ref).check(&base).await?)) }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(rolled.len() >= 30, "{} devices on the rollout side", rolled.len());
    assert!(rolled.iter().all(|(_, m)| m["id"].as_str().unwrap() == u2));
    let failing = rolled.len() / 3;
    join_all(rolled.iter().enumerate().map(|(n, (i, manifest))| {
        let base = base.clone();
        async move {
            Device::new(*i, u1_ref).install(manifest).await;
            let mut after = Device::new(*i, if n < failing { u1_ref } else { u2_ref });
            if n < failing {
                after.failed = vec![u2_ref];
            }
            let _ = after.check(&base).await;
        }
    }))
    .await;

    let start = std::time::Instant::now();
    loop {
        let channels: Value = serde_json::from_str(&cli(&["channels", "list", "--app", "demo", "--json"])).unwrap();
        let production = channels
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "production")
            .unwrap();
        if production["rollout"].is_null() {
            assert_eq!(
                production["branch"], "production",
                "a halt reverts; it does not promote"
            );
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "not halted: {channels:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Devices on `next`'s update move back to the channel branch's content.
    for (i, _) in &rolled[failing..] {
        let back = Device::new(*i, u2_ref)
            .check(&base)
            .await
            .expect("a way back from next");
        assert_eq!(back["launchAsset"]["hash"].as_str().unwrap(), u1_bundle);
    }
    let halts = halts_in_audit(&setup);
    assert_eq!(halts.len(), 1, "{halts:#?}");
    assert_eq!(halts[0]["target"], "production");
}

/// When only the publisher can sign (no server-side key), a halt cannot republish: it stops the
/// rollout instead, so devices that had not taken the update no longer get it, and says so.
#[tokio::test]
async fn a_halt_without_the_signing_key_stops_the_rollout() {
    let setup = Setup::new();
    let base = setup.server.base.clone();
    let first = setup.publish(
        &make_export(setup.dir.path(), "signed-halt-1", RV),
        "production",
        true,
        &[],
    );
    let u1 = update_id(&first, "ios");
    let second = setup.publish(
        &make_export(setup.dir.path(), "signed-halt-2", RV),
        "production",
        true,
        &[
            "--rollout-percentage",
            "30",
            "--halt-on-failure-rate",
            "10",
            "--halt-min-devices",
            "10",
        ],
    );
    let (u2, group2) = (
        update_id(&second, "ios"),
        second["group_id"].as_str().unwrap().to_owned(),
    );
    let (u1_ref, u2_ref) = (u1.as_str(), u2.as_str());
    let answers = join_all((0..120).map(|i| {
        let base = base.clone();
        async move { (i, Device::new(i, u1_ref).check(&base).await) }
    }))
    .await;
    let (rolled, outside): (Vec<_>, Vec<_>) = answers.into_iter().partition(|(_, m)| m.is_some());
    assert!(rolled.len() >= 15, "{} devices in a 30 % rollout", rolled.len());
    // Every device in the rollout installs it and half fail.
    join_all(rolled.iter().enumerate().map(|(n, (i, manifest))| {
        let base = base.clone();
        async move {
            Device::new(*i, u1_ref).install(manifest.as_ref().unwrap()).await;
            let mut after = Device::new(*i, if n % 2 == 0 { u1_ref } else { u2_ref });
            if n % 2 == 0 {
                after.failed = vec![u2_ref];
            }
            let _ = after.check(&base).await;
        }
    }))
    .await;
    let start = std::time::Instant::now();
    while rollout_status(&setup, &group2)["state"] != "halted" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "not halted in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Nothing was republished: the newest group is still update 2's, withdrawn, and devices
    // outside the rollout keep update 1 (204), as do the ones that failed.
    for (i, _) in outside.iter().take(20) {
        assert!(Device::new(*i, u1_ref).check(&base).await.is_none());
    }
    let halts = halts_in_audit(&setup);
    let halt = halts.first().expect("a halt in the audit log");
    let summary = halt["details"]["summary"].as_str().unwrap();
    assert!(summary.contains("without republishing"), "{summary}");
    assert!(halt["details"]["published_group"].is_null(), "{halt:#}");
    // Two groups still: the halt published nothing; update 2's group is no longer served.
    let groups: Value = serde_json::from_str(&aloft_ok(&[
        "updates",
        "list",
        "--server",
        &base,
        "--token",
        &setup.token,
        "--app",
        "demo",
        "--json",
    ]))
    .unwrap();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:#?}");
    let halted = groups.iter().find(|g| g["id"] == group2.as_str()).unwrap();
    assert_eq!(halted["disabled"], "rollout_halted", "{halted:#}");
}
