//! Fleet insights end to end: the real binary, devices that check, download, launch and fail
//! through the real headers, and the counts read back with `aloft insights` (on the backend
//! under test, `ALOFT_TEST_BACKEND`).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use futures::future::join_all;
use serde_json::Value;
use support::*;

const RV: &str = "1.0.0";
/// The embedded update id `device_headers` sends.
const EMBEDDED: &str = "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b";

/// Device `i`'s `EAS-Client-ID`, upper-case as iOS sends it.
fn client_id(i: usize) -> String {
    format!("{i:08X}-0000-4000-8000-00000000F1EE")
}

/// What a device sends: its id, what it runs, the updates it reports failed, a fatal error.
struct Device<'a> {
    id: String,
    channel: &'a str,
    running: &'a str,
    failed: Vec<&'a str>,
    fatal: Option<&'a str>,
}

impl<'a> Device<'a> {
    fn new(i: usize, running: &'a str) -> Self {
        Self {
            id: client_id(i),
            channel: "production",
            running,
            failed: Vec::new(),
            fatal: None,
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut h = with(device_headers("ios", RV, self.channel), "EAS-Client-ID", &self.id);
        h = with(h, "Expo-Current-Update-ID", self.running);
        h = with(h, "Accept", "application/expo+json");
        if !self.failed.is_empty() {
            let list: Vec<String> = self.failed.iter().map(|id| format!("\"{id}\"")).collect();
            h = with(h, "Expo-Recent-Failed-Update-IDs", &list.join(", "));
        }
        if let Some(fatal) = self.fatal {
            h = with(h, "Expo-Fatal-Error", fatal);
        }
        h
    }

    /// Checks; the manifest when one is sent, `None` on 204.
    async fn check(&self, base: &str) -> Option<Value> {
        let reply = get(&format!("{base}/apps/demo/manifest"), &self.headers()).await;
        match reply.status {
            200 => Some(serde_json::from_slice(&reply.body).unwrap()),
            204 => None,
            other => panic!("check answered {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }

    /// Downloads the launch asset of `manifest`, with the headers of an asset request (§1.2).
    async fn install(&self, manifest: &Value) {
        let url = manifest["launchAsset"]["url"].as_str().unwrap();
        let headers = vec![
            ("Accept".to_owned(), "*/*".to_owned()),
            ("Accept-Encoding".to_owned(), "br, gzip".to_owned()),
            ("Expo-Platform".to_owned(), "ios".to_owned()),
            ("Expo-Runtime-Version".to_owned(), RV.to_owned()),
            ("EAS-Client-ID".to_owned(), self.id.clone()),
            ("Expo-Current-Update-ID".to_owned(), self.running.to_owned()),
            ("Expo-Embedded-Update-ID".to_owned(), EMBEDDED.to_owned()),
            (
                "Expo-Requested-Update-ID".to_owned(),
                manifest["id"].as_str().unwrap().to_owned(),
            ),
        ];
        assert_eq!(get(url, &headers).await.status, 200);
    }
}

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
    assert!(
        text.contains("devices 200  installs 200  launches 150  failures 50  failure rate 25.00 %"),
        "{text}"
    );
    assert!(text.contains("TypeError: undefined is not a function"), "{text}");
}
