//! A fleet of devices for the end-to-end tests: each checks, downloads and reports through the
//! headers the real client sends (docs/protocol.md §1.1, §1.2, §8.4).

use serde_json::Value;

use super::{device_headers, get, with};

/// The embedded update id `device_headers` sends.
pub const EMBEDDED: &str = "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b";

const RV: &str = "1.0.0";

/// Device `i`'s `EAS-Client-ID`, upper-case as iOS sends it.
pub fn client_id(i: usize) -> String {
    format!("{i:08X}-0000-4000-8000-00000000F1EE")
}

/// What a device sends: its id, what it runs, the updates it reports failed, a fatal error.
pub struct Device<'a> {
    pub id: String,
    pub channel: &'a str,
    pub running: &'a str,
    pub failed: Vec<&'a str>,
    pub fatal: Option<&'a str>,
    /// Whether the build has a code signing certificate (and sends `expo-expect-signature`).
    pub signed: bool,
}

impl<'a> Device<'a> {
    pub fn new(i: usize, running: &'a str) -> Self {
        Self {
            id: client_id(i),
            channel: "production",
            running,
            failed: Vec::new(),
            fatal: None,
            signed: true,
        }
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        let mut h = with(device_headers("ios", RV, self.channel), "EAS-Client-ID", &self.id);
        h = with(h, "Expo-Current-Update-ID", self.running);
        h = with(h, "Accept", "application/expo+json");
        if !self.signed {
            h = super::without(h, "expo-expect-signature");
        }
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
    pub async fn check(&self, base: &str) -> Option<Value> {
        let reply = get(&format!("{base}/apps/demo/manifest"), &self.headers()).await;
        match reply.status {
            200 => Some(serde_json::from_slice(&reply.body).unwrap()),
            204 => None,
            other => panic!("check answered {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }

    /// Downloads the launch asset of `manifest`, with the headers of an asset request (§1.2).
    pub async fn install(&self, manifest: &Value) {
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

/// The value of the Prometheus series `name` whose labels include all of `labels`.
pub async fn series(base: &str, name: &str, labels: &[&str]) -> u64 {
    let text = String::from_utf8(get(&format!("{base}/metrics"), &[]).await.body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in\n{text}"))
}
