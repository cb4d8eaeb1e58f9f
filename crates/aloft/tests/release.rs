//! Release management end to end: the real binary, every release command through the real CLI
//! (signed with the key from `aloft keys generate` wherever a command publishes), and devices
//! that ask for updates exactly as expo-updates does (docs/protocol.md §1.1) and then decide what to
//! download and launch as the client does (§8.2: only a strictly newer `createdAt` is taken;
//! §2.5: a `rollBackToEmbedded` directive is taken when its `commitTime` is newer). Multipart
//! bodies are parsed by Python's `email` package and every manifest and directive signature is
//! verified with the `openssl` command line.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use futures::StreamExt;
use serde_json::Value;
use support::*;
use uuid::Uuid;

const RV: &str = "1.0.0";
/// The embedded update id `device_headers` sends.
const EMBEDDED_ID: &str = "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b";
/// The commit time of the embedded update: when the build was made, long ago.
const BUILD_TIME: &str = "2000-01-01T00:00:00.000Z";
const PLATFORMS: [&str; 2] = ["ios", "android"];
const PRODUCTION: &[&str] = &["--channel", "production"];

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// `args` plus the server and token, and `--app demo` and the signing key when asked.
fn cli_args(setup: &Setup, args: &[&str], app: bool, signed: bool) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    v.extend([
        "--server".to_owned(),
        setup.server.base.clone(),
        "--token".to_owned(),
        setup.token.clone(),
    ]);
    if app {
        v.extend(["--app".to_owned(), "demo".to_owned()]);
    }
    if signed {
        v.extend([
            "--signing-key".to_owned(),
            setup.key(),
            "--keyid".to_owned(),
            "main".to_owned(),
        ]);
    }
    v
}

fn run(setup: &Setup, args: &[&str], app: bool, signed: bool) -> Output {
    let v = cli_args(setup, args, app, signed);
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    aloft(&refs)
}

fn expect_ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "aloft {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An app-scoped command that changes nothing on devices; must succeed. Its stdout.
fn ok(setup: &Setup, args: &[&str]) -> String {
    expect_ok(run(setup, args, true, false), args)
}

/// An app-scoped command that may publish, signed with the generated key; must succeed.
fn ok_signed(setup: &Setup, args: &[&str]) -> String {
    expect_ok(run(setup, args, true, true), args)
}

/// A release operation with `--json`, signed: its `Outcome` (`{summary, published}`).
fn op(setup: &Setup, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let outcome = json(&ok_signed(setup, &args));
    assert!(outcome["summary"].as_str().is_some_and(|s| !s.is_empty()), "{outcome}");
    if let Some(published) = outcome["published"].as_object() {
        for u in published["updates"].as_array().unwrap() {
            assert_eq!(u["signed"], true, "{outcome}");
        }
    }
    outcome
}

/// An app-scoped command that must fail; its stderr.
fn refused(setup: &Setup, args: &[&str], signed: bool) -> String {
    let out = run(setup, args, true, signed);
    assert!(
        !out.status.success(),
        "aloft {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refusal must say what is wrong, not hide it behind an internal error.
fn assert_clear_refusal(err: &str, must_mention: &[&str]) {
    // The CLI prints server refusals as "the server refused (STATUS CODE): message". Only the
    // status is checked for a 5xx: ids in the message are random hex and may contain "500".
    for (at, _) in err.match_indices("the server refused (") {
        let status = &err[at + "the server refused (".len()..];
        assert!(status.starts_with('4'), "a refusal surfaced as a server error: {err}");
    }
    assert!(
        !err.contains(" internal)") && !err.contains("see the server log"),
        "a refusal surfaced as an internal server error: {err}"
    );
    for word in must_mention {
        assert!(err.contains(word), "the refusal does not mention {word:?}: {err}");
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `aloft publish --json` of a synthetic export, signed. `target` is `--channel C` or
/// `--branch B`.
fn publish_export(setup: &Setup, export: &Path, target: &[&str], extra: &[&str]) -> Value {
    let mut args = vec!["publish", "--input", export.to_str().unwrap(), "--json"];
    args.extend(target);
    args.extend(extra);
    let published = json(&ok_signed(setup, &args));
    for u in published["updates"].as_array().unwrap() {
        assert_eq!(u["signed"], true, "{published}");
    }
    published
}

fn publish(setup: &Setup, tag: &str, target: &[&str], extra: &[&str]) -> Value {
    publish_export(setup, &make_export(setup.dir.path(), tag, RV), target, extra)
}

fn publish_args<'a>(export: &'a Path, target: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["publish", "--input", export.to_str().unwrap()];
    args.extend(target);
    args
}

/// The update id of one platform in a `PublishedGroup`.
fn update_id(published: &Value, platform: &str) -> String {
    published["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["platform"] == platform && u["runtime_version"] == RV)
        .unwrap_or_else(|| panic!("no {platform} {RV} update in {published}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn group_id(published: &Value) -> String {
    published["group_id"].as_str().unwrap().to_owned()
}

fn created_at(v: &Value) -> String {
    v["created_at"].as_str().unwrap().to_owned()
}

/// `aloft updates list --json`: `GroupInfo`s, newest first.
fn groups(setup: &Setup, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["updates", "list", "--json"];
    args.extend(extra);
    json(&ok(setup, &args)).as_array().unwrap().clone()
}

fn group<'a>(groups: &'a [Value], id: &str) -> &'a Value {
    groups
        .iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no group {id} in {groups:?}"))
}

fn ids_of(groups: &[Value]) -> Vec<String> {
    groups.iter().map(|g| g["id"].as_str().unwrap().to_owned()).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn is_iso_millis(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19, 20..23]
            .into_iter()
            .all(|r| s[r].bytes().all(|c| c.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

/// How the client sends its EAS-Client-ID: iOS upper-case, Android lower-case (§1.1).
fn client_id(platform: &str, id: &Uuid) -> String {
    if platform == "ios" {
        id.to_string().to_uppercase()
    } else {
        id.to_string()
    }
}

/// A manifest request as the client sends it.
fn request_headers(
    platform: &str,
    runtime_version: &str,
    channel: &str,
    client_id: Option<&str>,
    current: &str,
) -> Vec<(String, String)> {
    let headers = device_headers(platform, runtime_version, channel);
    let headers = match client_id {
        Some(id) => with(headers, "EAS-Client-ID", id),
        None => without(headers, "EAS-Client-ID"),
    };
    with(headers, "Expo-Current-Update-ID", current)
}

/// One part of a served multipart body, parsed by Python, its signature verified by openssl.
fn verified_part(certificate: &Path, content_type: &str, body: &[u8]) -> (String, Vec<u8>, Value) {
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    let parts = parse_multipart(content_type, body);
    assert_eq!(parts.len(), 1, "{parts:?}");
    let part = &parts[0];
    let header = part
        .header("expo-signature")
        .unwrap_or_else(|| panic!("the {} part is unsigned", part.name));
    let sig = parse_signature_header(header);
    assert_eq!(sig.get("keyid").map(String::as_str), Some("main"));
    assert_eq!(sig.get("alg").map(String::as_str), Some("rsa-v1_5-sha256"));
    assert!(
        openssl_verify(certificate, &part.body, &sig["sig"]),
        "openssl rejects the signature of the {} part",
        part.name
    );
    let value: Value = serde_json::from_slice(&part.body).unwrap();
    (part.name.clone(), part.body.clone(), value)
}

/// What a manifest request got.
#[derive(Debug)]
enum Answer {
    /// 204 with `expo-protocol-version: 1`.
    NoUpdate,
    Manifest(Value),
    Directive {
        value: Value,
        body: Vec<u8>,
    },
}

impl Answer {
    fn manifest(&self) -> &Value {
        match self {
            Answer::Manifest(m) => m,
            other => panic!("expected a manifest, got {other:?}"),
        }
    }

    fn id(&self) -> &str {
        self.manifest()["id"].as_str().unwrap()
    }
}

/// Checks a reply the way the client would before acting on it.
fn answer(certificate: &Path, reply: &Reply, runtime_version: &str) -> Answer {
    match reply.status {
        204 => {
            assert_eq!(reply.header("expo-protocol-version"), Some("1"));
            assert!(reply.body.is_empty());
            Answer::NoUpdate
        }
        200 => {
            assert_eq!(reply.header("expo-protocol-version"), Some("1"));
            let (name, body, value) = verified_part(certificate, reply.header("content-type").unwrap(), &reply.body);
            match name.as_str() {
                "manifest" => {
                    assert!(Uuid::parse_str(value["id"].as_str().unwrap()).is_ok(), "{value}");
                    assert!(is_iso_millis(value["createdAt"].as_str().unwrap()), "{value}");
                    assert_eq!(value["runtimeVersion"], runtime_version);
                    Answer::Manifest(value)
                }
                "directive" => Answer::Directive { value, body },
                other => panic!("unexpected part {other}"),
            }
        }
        other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&reply.body)),
    }
}

/// Every file of a manifest: (url, hash, key), launch asset first.
fn files_of(m: &Value) -> Vec<(String, String, String)> {
    std::iter::once(&m["launchAsset"])
        .chain(m["assets"].as_array().unwrap())
        .map(|a| {
            (
                a["url"].as_str().unwrap().to_owned(),
                a["hash"].as_str().unwrap().to_owned(),
                a["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn hashes_of(m: &Value) -> BTreeSet<String> {
    files_of(m).into_iter().map(|(_, h, _)| h).collect()
}

fn launch_of(m: &Value) -> (String, String) {
    (
        m["launchAsset"]["hash"].as_str().unwrap().to_owned(),
        m["launchAsset"]["key"].as_str().unwrap().to_owned(),
    )
}

/// Downloads every file of a manifest as the client does and checks hash and key.
async fn download_all(m: &Value) {
    for (url, hash, key) in files_of(m) {
        let reply = get(&url, &[("accept".into(), "*/*".into())]).await;
        assert_eq!(reply.status, 200, "{url}");
        assert_eq!(sha256_b64url(&reply.body), hash, "{url}");
        assert_eq!(md5_hex(&reply.body), key, "{url}");
    }
}

async fn asset_status(url: &str) -> u16 {
    get(url, &[("accept".into(), "*/*".into())]).await.status
}

/// What a device runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Running {
    Embedded {
        commit_time: String,
    },
    Update {
        id: String,
        created_at: String,
        launch: String,
    },
}

/// An installed app: platform, EAS-Client-ID, channel and runtime version baked in, and what it
/// runs now.
struct Device {
    platform: &'static str,
    runtime_version: String,
    client_id: Option<String>,
    channel: String,
    running: Running,
}

impl Device {
    fn new(platform: &'static str, channel: &str) -> Self {
        Self::with_id(platform, channel, Some(Uuid::new_v4()))
    }

    fn with_id(platform: &'static str, channel: &str, id: Option<Uuid>) -> Self {
        Self {
            platform,
            runtime_version: RV.to_owned(),
            client_id: id.map(|u| client_id(platform, &u)),
            channel: channel.to_owned(),
            running: Running::Embedded {
                commit_time: BUILD_TIME.to_owned(),
            },
        }
    }

    fn runtime(mut self, rv: &str) -> Self {
        self.runtime_version = rv.to_owned();
        self
    }

    fn current_id(&self) -> &str {
        match &self.running {
            Running::Embedded { .. } => EMBEDDED_ID,
            Running::Update { id, .. } => id,
        }
    }

    fn running_id(&self) -> Option<&str> {
        match &self.running {
            Running::Embedded { .. } => None,
            Running::Update { id, .. } => Some(id),
        }
    }

    fn running_launch(&self) -> Option<&str> {
        match &self.running {
            Running::Embedded { .. } => None,
            Running::Update { launch, .. } => Some(launch),
        }
    }

    fn commit_time(&self) -> &str {
        match &self.running {
            Running::Embedded { commit_time } => commit_time,
            Running::Update { created_at, .. } => created_at,
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        request_headers(
            self.platform,
            &self.runtime_version,
            &self.channel,
            self.client_id.as_deref(),
            self.current_id(),
        )
    }

    /// One update check, verified, without acting on it.
    async fn check(&self, setup: &Setup) -> Answer {
        let reply = get(&setup.server.manifest_url("demo"), &self.headers()).await;
        answer(&setup.certificate(), &reply, &self.runtime_version)
    }

    /// An update check acted upon as the client does: a strictly newer manifest is downloaded
    /// and launched next; a newer `rollBackToEmbedded` sends it back to the embedded update.
    async fn sync(&mut self, setup: &Setup) -> Answer {
        let answer = self.check(setup).await;
        match &answer {
            Answer::NoUpdate => {}
            Answer::Manifest(m) => {
                let created = m["createdAt"].as_str().unwrap();
                if created > self.commit_time() {
                    download_all(m).await;
                    self.running = Running::Update {
                        id: m["id"].as_str().unwrap().to_owned(),
                        created_at: created.to_owned(),
                        launch: m["launchAsset"]["hash"].as_str().unwrap().to_owned(),
                    };
                }
            }
            Answer::Directive { value, .. } => {
                assert_eq!(value["type"], "rollBackToEmbedded", "{value}");
                let commit_time = value["parameters"]["commitTime"].as_str().unwrap();
                if commit_time > self.commit_time() {
                    self.running = Running::Embedded {
                        commit_time: commit_time.to_owned(),
                    };
                }
            }
        }
        answer
    }
}

/// Fast update checks for many devices: one pooled HTTP client, and each distinct body parsed
/// (by Python) and verified (by openssl) once, then recognised by its bytes.
struct Probe {
    client: reqwest::Client,
    url: String,
    certificate: PathBuf,
    known: Mutex<HashMap<Vec<u8>, String>>,
}

impl Probe {
    fn new(setup: &Setup) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: setup.server.manifest_url("demo"),
            certificate: setup.certificate(),
            known: Mutex::default(),
        }
    }

    /// The id of the manifest a device running its embedded update is offered (`directive` for
    /// a directive), or `None` for "nothing new".
    async fn served(&self, platform: &str, client_id: Option<&str>, channel: &str) -> Option<String> {
        self.served_to(platform, client_id, channel, EMBEDDED_ID).await
    }

    async fn served_to(&self, platform: &str, client_id: Option<&str>, channel: &str, current: &str) -> Option<String> {
        let mut request = self.client.get(&self.url);
        for (k, v) in request_headers(platform, RV, channel, client_id, current) {
            request = request.header(k, v);
        }
        let response = request.send().await.expect("manifest request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("body").to_vec();
        match status {
            204 => None,
            200 => {
                let hit = self.known.lock().unwrap().get(&body).cloned();
                if let Some(id) = hit {
                    return Some(id);
                }
                let (name, _, value) = verified_part(&self.certificate, &content_type.unwrap(), &body);
                let id = if name == "directive" {
                    "directive".to_owned()
                } else {
                    value["id"].as_str().unwrap().to_owned()
                };
                self.known.lock().unwrap().insert(body, id.clone());
                Some(id)
            }
            other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// For each id (alternately an iOS and an Android device), the update it is offered.
    async fn offered(&self, ids: &[Uuid], channel: &str) -> Vec<Option<String>> {
        let mut out: Vec<(usize, Option<String>)> = futures::stream::iter(ids.iter().enumerate())
            .map(|(i, id)| async move {
                let platform = PLATFORMS[i % 2];
                (i, self.served(platform, Some(&client_id(platform, id)), channel).await)
            })
            .buffer_unordered(64)
            .collect()
            .await;
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, id)| id).collect()
    }
}

/// For ids checked with `Probe::offered`: which got `new` (by platform), insisting that every
/// other one got `old`.
fn split(offered: &[Option<String>], new: &Value, old: Option<&Value>) -> Vec<bool> {
    offered
        .iter()
        .enumerate()
        .map(|(i, got)| {
            let platform = PLATFORMS[i % 2];
            let got = got.as_deref();
            if got == Some(update_id(new, platform).as_str()) {
                true
            } else {
                let expected = old.map(|o| update_id(o, platform));
                assert_eq!(got, expected.as_deref(), "device {i} ({platform}) got something else");
                false
            }
        })
        .collect()
}

fn share(inside: &[bool]) -> f64 {
    inside.iter().filter(|x| **x).count() as f64 * 100.0 / inside.len() as f64
}

/// A client id that is in the rollout that serves `new`, and one that is not.
async fn one_in_one_out(probe: &Probe, new: &Value, channel: &str) -> (Uuid, Uuid) {
    let new_id = update_id(new, "ios");
    let (mut inside, mut outside) = (None, None);
    for _ in 0..1000 {
        let id = Uuid::new_v4();
        let got = probe.served("ios", Some(&client_id("ios", &id)), channel).await;
        if got.as_deref() == Some(new_id.as_str()) {
            inside.get_or_insert(id);
        } else {
            outside.get_or_insert(id);
        }
        if inside.is_some() && outside.is_some() {
            break;
        }
    }
    (inside.unwrap(), outside.unwrap())
}

// ---------------------------------------------------------------------------------------------
// 1. Channels
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn channel_edit_repoints_devices_without_republishing() {
    let setup = Setup::new();
    let out = ok(&setup, &["channels", "create", "staging-x", "--branch", "b2"]);
    assert!(out.contains("staging-x") && out.contains("b2"), "{out}");
    let on_b2 = publish(&setup, "on-b2", &["--branch", "b2"], &["--message", "b2 build"]);
    let on_b1 = publish(&setup, "on-b1", &["--branch", "b1"], &["--message", "b1 build"]);
    assert_eq!(on_b2["branch"], "b2");
    assert_eq!(on_b1["branch"], "b1");

    // Before: the channel serves b2.
    let mut devices: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "staging-x")).collect();
    for d in &mut devices {
        let a = d.sync(&setup).await;
        assert_eq!(a.id(), update_id(&on_b2, d.platform));
        assert_eq!(d.running_id(), Some(update_id(&on_b2, d.platform).as_str()));
    }
    // A device on production sees none of it.
    assert!(matches!(
        Device::new("ios", "production").check(&setup).await,
        Answer::NoUpdate
    ));
    let before = groups(&setup, &[]);
    assert_eq!(before.len(), 2);

    let out = ok(&setup, &["channels", "edit", "staging-x", "--branch", "b1"]);
    assert!(out.contains("staging-x") && out.contains("b1"), "{out}");

    // After: the same devices, and new ones, get b1's update at their next check.
    for d in &mut devices {
        let a = d.sync(&setup).await;
        assert_eq!(a.id(), update_id(&on_b1, d.platform));
        assert_eq!(d.running_id(), Some(update_id(&on_b1, d.platform).as_str()));
        // Then nothing new.
        assert!(matches!(d.sync(&setup).await, Answer::NoUpdate));
    }
    for platform in PLATFORMS {
        let a = Device::new(platform, "staging-x").check(&setup).await;
        assert_eq!(a.id(), update_id(&on_b1, platform));
    }
    // Nothing was republished.
    assert_eq!(ids_of(&groups(&setup, &[])), ids_of(&before));

    let channels = json(&ok(&setup, &["channels", "list", "--json"]));
    assert_eq!(named(&channels, "staging-x")["branch"], "b1");
    assert_eq!(named(&channels, "staging-x")["rollout"], Value::Null);
    assert_eq!(named(&channels, "production")["branch"], "production");
    let table = ok(&setup, &["channels", "list"]);
    assert!(
        table.lines().any(|l| l.starts_with("staging-x") && l.contains("b1")),
        "{table}"
    );
    let branches = json(&ok(&setup, &["branches", "list", "--json"]));
    assert_eq!(named(&branches, "b1")["channels"], serde_json::json!(["staging-x"]));
    assert_eq!(named(&branches, "b1")["groups"], 1);
    assert_eq!(named(&branches, "b2")["channels"], serde_json::json!([]));
    assert_eq!(named(&branches, "b2")["groups"], 1);
    assert_eq!(
        named(&branches, "production")["channels"],
        serde_json::json!(["production"])
    );

    // Pointing at a branch that does not exist is refused and changes nothing.
    let err = refused(&setup, &["channels", "edit", "staging-x", "--branch", "nope"], false);
    assert_clear_refusal(&err, &["branch"]);
    let channels = json(&ok(&setup, &["channels", "list", "--json"]));
    assert_eq!(named(&channels, "staging-x")["branch"], "b1");
}

// ---------------------------------------------------------------------------------------------
// 2. Per-group rollouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_group_rollout_is_deterministic_monotonic_and_evenly_spread() {
    let setup = Setup::new();
    let g1 = publish(&setup, "g1", PRODUCTION, &[]);
    assert_eq!(g1["rollout_percentage"], Value::Null);
    let g2 = publish(&setup, "g2", PRODUCTION, &["--rollout-percentage", "30"]);
    assert_eq!(g2["rollout_percentage"], 30);
    let g2_group = group_id(&g2);
    assert_eq!(group(&groups(&setup, &[]), &g2_group)["rollout_percentage"], 30);
    let probe = Probe::new(&setup);

    // Determinism: the same device always gets the same answer, whatever the case of its id
    // and whichever platform sends it (one salt per group).
    let (inside, outside) = one_in_one_out(&probe, &g2, "production").await;
    for (id, expected) in [(inside, &g2), (outside, &g1)] {
        for platform in PLATFORMS {
            let want = update_id(expected, platform);
            for form in [id.to_string().to_uppercase(), id.to_string()] {
                for _ in 0..3 {
                    let got = probe.served(platform, Some(&form), "production").await;
                    assert_eq!(got.as_deref(), Some(want.as_str()), "{platform} {form}");
                }
            }
        }
    }
    // As full devices: inside downloads and launches G2, outside G1 (the control).
    for platform in PLATFORMS {
        let mut d = Device::with_id(platform, "production", Some(inside));
        assert_eq!(d.sync(&setup).await.id(), update_id(&g2, platform));
        assert!(matches!(d.sync(&setup).await, Answer::NoUpdate));
        let mut d = Device::with_id(platform, "production", Some(outside));
        assert_eq!(d.sync(&setup).await.id(), update_id(&g1, platform));
        assert!(matches!(d.sync(&setup).await, Answer::NoUpdate));
        // A device already running G1 is offered G2 only when it is in.
        let g1_id = update_id(&g1, platform);
        let got = probe
            .served_to(platform, Some(&client_id(platform, &inside)), "production", &g1_id)
            .await;
        assert_eq!(got, Some(update_id(&g2, platform)));
        let got = probe
            .served_to(platform, Some(&client_id(platform, &outside)), "production", &g1_id)
            .await;
        assert_eq!(got, None);
        // Without an EAS-Client-ID: the control.
        let mut d = Device::with_id(platform, "production", None);
        assert_eq!(d.sync(&setup).await.id(), update_id(&g1, platform));
    }

    // Distribution: 100,000 random devices, half iOS (upper-case ids), half Android.
    let ids: Vec<Uuid> = (0..100_000).map(|_| Uuid::new_v4()).collect();
    let started = std::time::Instant::now();
    let offered = probe.offered(&ids, "production").await;
    let at_30 = split(&offered, &g2, Some(&g1));
    let overall = share(&at_30);
    let ios: Vec<bool> = at_30.iter().step_by(2).copied().collect();
    let android: Vec<bool> = at_30.iter().skip(1).step_by(2).copied().collect();
    println!(
        "per-group rollout at 30%: {overall:.3}% of 100000 devices got G2 (iOS {:.3}%, Android {:.3}%) in {:.1?}",
        share(&ios),
        share(&android),
        started.elapsed()
    );
    assert!((overall - 30.0).abs() <= 2.0, "30% rollout gave {overall:.3}%");

    // Publishing to the branch during the rollout is refused, and publishes nothing.
    let export = make_export(setup.dir.path(), "during", RV);
    let err = refused(&setup, &publish_args(&export, PRODUCTION), true);
    assert_clear_refusal(&err, &["rollout"]);
    assert_eq!(groups(&setup, &[]).len(), 2);

    // Monotonicity: every device that was in at 30% is still in at 60%.
    let sample = &ids[..2000];
    let out = ok(&setup, &["rollout", "set", &g2_group, "60"]);
    assert!(out.contains("60"), "{out}");
    assert_eq!(group(&groups(&setup, &[]), &g2_group)["rollout_percentage"], 60);
    let at_60 = split(&probe.offered(sample, "production").await, &g2, Some(&g1));
    let dropped = at_30[..2000]
        .iter()
        .zip(&at_60)
        .filter(|(was, is)| **was && !**is)
        .count();
    assert_eq!(dropped, 0, "raising the rollout took G2 away from {dropped} devices");
    println!(
        "per-group rollout at 60%: {:.2}% of the first 2000 devices (they were {:.2}% at 30%)",
        share(&at_60),
        share(&at_30[..2000])
    );
    assert!((share(&at_60) - 60.0).abs() <= 5.0, "{}", share(&at_60));

    // Lowering it is refused: devices that have G2 keep it.
    let err = refused(&setup, &["rollout", "set", &g2_group, "40"], false);
    assert_clear_refusal(&err, &["60%"]);
    assert_eq!(group(&groups(&setup, &[]), &g2_group)["rollout_percentage"], 60);

    // Complete: everyone gets G2, the devices outside and those without an id included.
    let out = ok(&setup, &["rollout", "complete", &g2_group]);
    assert!(out.contains("complete"), "{out}");
    assert_eq!(
        group(&groups(&setup, &[]), &g2_group)["rollout_percentage"],
        Value::Null
    );
    for platform in PLATFORMS {
        for id in [Some(outside), Some(inside), None] {
            let mut d = Device::with_id(platform, "production", id);
            assert_eq!(d.sync(&setup).await.id(), update_id(&g2, platform));
        }
    }
    let after = split(&probe.offered(&ids[..2000], "production").await, &g2, None);
    assert!(after.iter().all(|x| *x));
    // There is no rollout left to raise.
    let err = refused(&setup, &["rollout", "set", &g2_group, "80"], false);
    assert_clear_refusal(&err, &["rollout"]);
}

#[tokio::test]
async fn publishing_with_force_completes_the_rollout_in_progress() {
    let setup = Setup::new();
    let g1 = publish(&setup, "f1", PRODUCTION, &[]);
    let g2 = publish(&setup, "f2", PRODUCTION, &["--rollout-percentage", "10"]);
    let probe = Probe::new(&setup);
    let (_, outside) = one_in_one_out(&probe, &g2, "production").await;
    let mut d = Device::with_id("android", "production", Some(outside));
    assert_eq!(d.sync(&setup).await.id(), update_id(&g1, "android"));

    let export = make_export(setup.dir.path(), "f3", RV);
    let err = refused(&setup, &publish_args(&export, PRODUCTION), true);
    assert_clear_refusal(&err, &["rollout", "--force"]);
    let g3 = publish_export(&setup, &export, PRODUCTION, &["--force"]);
    let list = groups(&setup, &[]);
    assert_eq!(list.len(), 3);
    assert_eq!(group(&list, &group_id(&g2))["rollout_percentage"], Value::Null);
    assert_eq!(d.sync(&setup).await.id(), update_id(&g3, "android"));
    let ids: Vec<Uuid> = (0..400).map(|_| Uuid::new_v4()).collect();
    assert!(
        split(&probe.offered(&ids, "production").await, &g3, None)
            .iter()
            .all(|x| *x)
    );
}

/// The (platform, runtime version) of each update in a `PublishedGroup`.
fn platforms_and_runtimes(published: &Value) -> BTreeSet<(String, String)> {
    published["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["platform"].as_str().unwrap().to_owned(),
                u["runtime_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The manifest id a device of `platform` and `rv` with `client` is offered, if any.
async fn offered_id(setup: &Setup, platform: &str, rv: &str, client: &str) -> Option<String> {
    let headers = with(device_headers(platform, rv, "production"), "EAS-Client-ID", client);
    let reply = get(&setup.server.manifest_url("demo"), &headers).await;
    if reply.status == 204 {
        return None;
    }
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    let manifest: Value = serde_json::from_slice(&parts[0].body).unwrap();
    manifest["id"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_rollout_blocks_only_its_own_branch_platform_and_runtime_version() {
    let setup = Setup::new();
    let dir = setup.dir.path();
    let g1 = publish(&setup, "k1", PRODUCTION, &[]);
    let ios_only = ["--platform", "ios"];
    let g2 = publish_export(&setup, &make_export(dir, "k2", "2.0.0"), PRODUCTION, &ios_only);
    let g3 = publish_export(
        &setup,
        &make_export(dir, "k3", "2.0.0"),
        PRODUCTION,
        &["--platform", "ios", "--rollout-percentage", "10"],
    );

    // A hotfix of the older binary (both platforms, 1.0.0) goes through, and so does Android on
    // 2.0.0: neither replaces the rolled-out update (iOS 2.0.0).
    let hotfix = publish(&setup, "k4", PRODUCTION, &[]);
    let android_2 = publish_export(
        &setup,
        &make_export(dir, "k5", "2.0.0"),
        PRODUCTION,
        &["--platform", "android"],
    );
    // Republishing a 1.0.0 group goes through too.
    let republished = op(&setup, &["republish", &group_id(&g1)]);
    assert!(republished["published"].is_object(), "{republished}");

    // What would replace iOS 2.0.0 is refused, and the refusal names what blocks it.
    let ios_2 = make_export(dir, "k6", "2.0.0");
    for extra in [&["--platform", "ios"][..], &[][..]] {
        let mut args = publish_args(&ios_2, PRODUCTION);
        args.extend(extra);
        let err = refused(&setup, &args, true);
        assert_clear_refusal(&err, &["rollout", "ios 2.0.0", &group_id(&g3), "--force"]);
    }
    // A rollback of the whole channel would replace it too; limited to 1.0.0 it goes through.
    let err = refused(&setup, &["rollback", "--channel", "production"], true);
    assert_clear_refusal(&err, &["rollout", "ios 2.0.0", "--runtime-version"]);
    let err = refused(&setup, &["rollback", "--channel", "production", "--to-embedded"], true);
    assert_clear_refusal(&err, &["rollout", "ios 2.0.0"]);
    let err = refused(
        &setup,
        &[
            "rollback",
            "--channel",
            "production",
            "--runtime-version",
            "2.0.0",
            "--platform",
            "ios",
        ],
        true,
    );
    assert_clear_refusal(&err, &["rollout", "ios 2.0.0"]);
    let rolled_back = op(
        &setup,
        &["rollback", "--channel", "production", "--runtime-version", "1.0.0"],
    );
    assert!(rolled_back["published"].is_object(), "{rolled_back}");
    assert_eq!(
        platforms_and_runtimes(&rolled_back["published"]),
        BTreeSet::from([("android".into(), "1.0.0".into()), ("ios".into(), "1.0.0".into())])
    );
    // Android 2.0.0 rolls back to the embedded update on its own.
    let directive = op(
        &setup,
        &[
            "rollback",
            "--channel",
            "production",
            "--to-embedded",
            "--runtime-version",
            "2.0.0",
            "--platform",
            "android",
        ],
    );
    assert!(directive["published"].is_object(), "{directive}");

    // The rollout was never touched: still 10 %, the same devices in and out.
    let list = groups(&setup, &[]);
    assert_eq!(group(&list, &group_id(&g3))["rollout_percentage"], 10);
    let (mut inside, mut outside) = (0, 0);
    for _ in 0..300 {
        let id = Uuid::new_v4().to_string().to_uppercase();
        match offered_id(&setup, "ios", "2.0.0", &id).await {
            Some(got) if got == update_id_rv(&g3, "ios", "2.0.0") => inside += 1,
            Some(got) if got == update_id_rv(&g2, "ios", "2.0.0") => outside += 1,
            other => panic!("an iOS 2.0.0 device was offered {other:?}"),
        }
    }
    assert!(inside > 0 && outside > inside * 3, "in {inside}, out {outside}");
    // 1.0.0 devices get the rollback (a republish of the content before the hotfix).
    let rolled_ios = update_id_rv(&rolled_back["published"], "ios", "1.0.0");
    assert_eq!(offered_id(&setup, "ios", "1.0.0", "A-DEVICE").await, Some(rolled_ios));
    assert_ne!(
        update_id(&hotfix, "ios"),
        update_id_rv(&rolled_back["published"], "ios", "1.0.0")
    );
    // Android 2.0.0 devices get the directive, not an update.
    let headers = device_headers("android", "2.0.0", "production");
    let reply = get(&setup.server.manifest_url("demo"), &headers).await;
    let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
    assert_eq!(parts[0].name, "directive", "{:?}", android_2["group_id"]);

    // Forcing completes only the blocking rollout.
    let forced = publish_export(&setup, &ios_2, PRODUCTION, &["--platform", "ios", "--force"]);
    let list = groups(&setup, &[]);
    assert_eq!(group(&list, &group_id(&g3))["rollout_percentage"], Value::Null);
    assert_eq!(
        offered_id(&setup, "ios", "2.0.0", "ANY").await,
        Some(update_id_rv(&forced, "ios", "2.0.0"))
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Rollout revert
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reverting_a_rollout_moves_its_devices_back_to_the_control() {
    let setup = Setup::new();
    let g1 = publish(&setup, "r1", PRODUCTION, &[]);
    let g3 = publish(&setup, "r3", PRODUCTION, &["--rollout-percentage", "50"]);
    let probe = Probe::new(&setup);
    let (inside, outside) = one_in_one_out(&probe, &g3, "production").await;

    let mut in_devices: Vec<Device> = PLATFORMS
        .iter()
        .map(|p| Device::with_id(p, "production", Some(inside)))
        .collect();
    let mut out_devices: Vec<Device> = PLATFORMS
        .iter()
        .map(|p| Device::with_id(p, "production", Some(outside)))
        .collect();
    let mut g1_manifests = HashMap::new();
    let mut g3_manifests = HashMap::new();
    for d in &mut in_devices {
        let a = d.sync(&setup).await;
        assert_eq!(a.id(), update_id(&g3, d.platform));
        g3_manifests.insert(d.platform, a.manifest().clone());
    }
    for d in &mut out_devices {
        let a = d.sync(&setup).await;
        assert_eq!(a.id(), update_id(&g1, d.platform));
        g1_manifests.insert(d.platform, a.manifest().clone());
    }

    let outcome = op(&setup, &["rollout", "revert", &group_id(&g3)]);
    let republished = &outcome["published"];
    assert!(republished.is_object(), "reverting published nothing: {outcome}");
    assert!(created_at(republished) > created_at(&g3));

    for d in in_devices.iter_mut().chain(out_devices.iter_mut()) {
        let a = d.sync(&setup).await;
        let m = a.manifest();
        let g1_m = &g1_manifests[d.platform];
        assert_eq!(m["id"], update_id(republished, d.platform).as_str());
        assert_ne!(m["id"], g1_m["id"]);
        assert_ne!(m["id"], g3_manifests[d.platform]["id"]);
        assert_eq!(launch_of(m), launch_of(g1_m));
        assert_eq!(hashes_of(m), hashes_of(g1_m));
        assert!(m["createdAt"].as_str().unwrap() > g3_manifests[d.platform]["createdAt"].as_str().unwrap());
        // The device took it: it now runs G1's code again.
        assert_eq!(d.running_id(), Some(update_id(republished, d.platform).as_str()));
        assert_eq!(d.running_launch(), Some(launch_of(g1_m).0.as_str()));
        assert!(matches!(d.sync(&setup).await, Answer::NoUpdate));
    }
    // Nobody is offered G3 any more; its files still download.
    let ids: Vec<Uuid> = (0..400).map(|_| Uuid::new_v4()).collect();
    assert!(
        split(&probe.offered(&ids, "production").await, republished, None)
            .iter()
            .all(|x| *x)
    );
    for m in g3_manifests.values() {
        download_all(m).await;
    }

    let list = groups(&setup, &[]);
    assert_eq!(group(&list, &group_id(&g3))["disabled"], "rollout_reverted");
    assert_eq!(group(&list, &group_id(republished))["republished_from"], group_id(&g1));
    // Reverting again: there is nothing to revert.
    let err = refused(&setup, &["rollout", "revert", &group_id(&g3)], true);
    assert_clear_refusal(&err, &["rollout"]);
}

// ---------------------------------------------------------------------------------------------
// 4-5. Rollbacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rollback_republishes_the_previous_update() {
    let setup = Setup::new();
    let a = publish(&setup, "a", PRODUCTION, &["--message", "A"]);
    let mut devices: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    let mut a_manifests = HashMap::new();
    for d in &mut devices {
        a_manifests.insert(d.platform, d.sync(&setup).await.manifest().clone());
    }
    let b = publish(&setup, "b", PRODUCTION, &["--message", "B"]);
    let mut b_manifests = HashMap::new();
    for d in &mut devices {
        let answer = d.sync(&setup).await;
        assert_eq!(answer.id(), update_id(&b, d.platform));
        b_manifests.insert(d.platform, answer.manifest().clone());
    }

    let outcome = op(&setup, &["rollback", "--channel", "production"]);
    let r = &outcome["published"];
    assert!(created_at(r) > created_at(&b));
    for d in &mut devices {
        let answer = d.sync(&setup).await;
        let m = answer.manifest();
        assert_eq!(m["id"], update_id(r, d.platform).as_str());
        assert_ne!(m["id"], update_id(&a, d.platform).as_str());
        assert_eq!(launch_of(m), launch_of(&a_manifests[d.platform]));
        assert_eq!(hashes_of(m), hashes_of(&a_manifests[d.platform]));
        assert!(m["createdAt"].as_str().unwrap() > b_manifests[d.platform]["createdAt"].as_str().unwrap());
        assert_eq!(d.running_launch(), Some(launch_of(&a_manifests[d.platform]).0.as_str()));
    }
    // A fresh device gets the rollback too.
    assert_eq!(
        Device::new("ios", "production").check(&setup).await.id(),
        update_id(r, "ios")
    );
    // Both A's and B's files still download.
    for m in a_manifests.values().chain(b_manifests.values()) {
        download_all(m).await;
    }
    let list = groups(&setup, &[]);
    assert_eq!(list.len(), 3);
    assert_eq!(group(&list, &group_id(r))["republished_from"], group_id(&a));
    // Nothing before A: a second rollback says so and points at --to-embedded.
    let err = refused(&setup, &["rollback", "--channel", "production"], true);
    assert_clear_refusal(&err, &["--to-embedded"]);
    assert_eq!(groups(&setup, &[]).len(), 3);
}

#[tokio::test]
async fn rollback_to_embedded_sends_a_stable_signed_directive() {
    let setup = Setup::new();
    let u = publish(&setup, "u", PRODUCTION, &[]);
    let mut devices: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    for d in &mut devices {
        assert_eq!(d.sync(&setup).await.id(), update_id(&u, d.platform));
    }

    let outcome = op(&setup, &["rollback", "--channel", "production", "--to-embedded"]);
    let rollback = &outcome["published"];
    let commit_time = created_at(rollback);
    assert!(is_iso_millis(&commit_time), "{commit_time}");
    assert!(commit_time > created_at(&u));
    let expected = format!(r#"{{"type":"rollBackToEmbedded","parameters":{{"commitTime":"{commit_time}"}}}}"#);

    for d in &mut devices {
        // The same directive, byte for byte, on every check (signature verified each time).
        for _ in 0..3 {
            match d.check(&setup).await {
                Answer::Directive { body, .. } => assert_eq!(String::from_utf8(body).unwrap(), expected),
                other => panic!("expected the directive, got {other:?}"),
            }
        }
        // Only multipart can carry a directive.
        for accept in ["application/json", "application/expo+json"] {
            let reply = get(&setup.server.manifest_url("demo"), &with(d.headers(), "Accept", accept)).await;
            assert_eq!(reply.status, 406, "{accept}");
        }
        // The device takes it and runs its embedded update...
        d.sync(&setup).await;
        assert_eq!(
            d.running,
            Running::Embedded {
                commit_time: commit_time.clone()
            }
        );
        // ...and from then on (current id = embedded id) there is nothing new.
        assert!(matches!(d.check(&setup).await, Answer::NoUpdate));
    }
    // A fresh install, running its embedded update: nothing to do.
    for platform in PLATFORMS {
        assert!(matches!(
            Device::new(platform, "production").check(&setup).await,
            Answer::NoUpdate
        ));
    }
    let list = groups(&setup, &[]);
    assert_eq!(group(&list, &group_id(rollback))["kind"], "rollback");

    // A later publish reaches the rolled-back devices: strictly newer than the commitTime.
    let c = publish(&setup, "c", PRODUCTION, &[]);
    assert!(created_at(&c) > commit_time);
    for d in &mut devices {
        let answer = d.sync(&setup).await;
        assert_eq!(answer.id(), update_id(&c, d.platform));
        assert!(answer.manifest()["createdAt"].as_str().unwrap() > commit_time.as_str());
        assert_eq!(d.running_id(), Some(update_id(&c, d.platform).as_str()));
    }
}

#[tokio::test]
async fn rollback_to_embedded_can_target_one_platform_or_runtime_version() {
    let setup = Setup::new();
    let u = publish(&setup, "u1", PRODUCTION, &[]);
    let v = publish_export(&setup, &make_export(setup.dir.path(), "v2", "2.0.0"), PRODUCTION, &[]);
    let v_id = |platform: &str| {
        v["updates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["platform"] == platform && x["runtime_version"] == "2.0.0")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // iOS only: both of its runtime versions get the directive, Android keeps its updates.
    let outcome = op(
        &setup,
        &[
            "rollback",
            "--channel",
            "production",
            "--to-embedded",
            "--platform",
            "ios",
        ],
    );
    assert_eq!(
        platforms_and_runtimes(&outcome["published"]),
        BTreeSet::from([("ios".into(), "1.0.0".into()), ("ios".into(), "2.0.0".into())])
    );
    for rv in ["1.0.0", "2.0.0"] {
        let mut ios = Device::new("ios", "production").runtime(rv);
        ios.running = Running::Update {
            id: Uuid::new_v4().to_string(),
            created_at: created_at(&u),
            launch: String::new(),
        };
        assert!(matches!(ios.sync(&setup).await, Answer::Directive { .. }), "ios {rv}");
        assert!(matches!(ios.running, Running::Embedded { .. }));
    }
    let mut android = Device::new("android", "production");
    assert_eq!(android.sync(&setup).await.id(), update_id(&u, "android"));
    let mut android2 = Device::new("android", "production").runtime("2.0.0");
    assert_eq!(android2.sync(&setup).await.id(), v_id("android"));

    // Runtime version 1.0.0 only (both platforms): Android 1.0.0 rolls back, 2.0.0 does not.
    let outcome = op(
        &setup,
        &[
            "rollback",
            "--channel",
            "production",
            "--to-embedded",
            "--runtime-version",
            "1.0.0",
        ],
    );
    assert_eq!(outcome["published"]["updates"].as_array().unwrap().len(), 2);
    match android.sync(&setup).await {
        Answer::Directive { value, .. } => {
            assert_eq!(value["parameters"]["commitTime"], outcome["published"]["created_at"]);
        }
        other => panic!("expected the directive, got {other:?}"),
    }
    assert!(matches!(android.running, Running::Embedded { .. }));
    assert!(matches!(android2.sync(&setup).await, Answer::NoUpdate));
    assert_eq!(android2.running_id(), Some(v_id("android").as_str()));
}

// ---------------------------------------------------------------------------------------------
// 6. Republish
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn republish_makes_new_signed_updates_with_the_same_files() {
    let setup = Setup::new();
    let a = publish(&setup, "ra", PRODUCTION, &[]);
    let mut a_manifests = HashMap::new();
    for platform in PLATFORMS {
        let m = Device::new(platform, "production").check(&setup).await;
        a_manifests.insert(platform, m.manifest().clone());
    }
    let b = publish(&setup, "rb", PRODUCTION, &[]);
    let mut devices: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    for d in &mut devices {
        assert_eq!(d.sync(&setup).await.id(), update_id(&b, d.platform));
    }

    let outcome = op(&setup, &["republish", &group_id(&a), "--channel", "production"]);
    let r = &outcome["published"];
    assert!(created_at(r) > created_at(&b));
    assert_ne!(group_id(r), group_id(&a));
    for d in &mut devices {
        // `check` verified the signature of the new manifest with openssl.
        let answer = d.sync(&setup).await;
        let m = answer.manifest();
        let old = &a_manifests[d.platform];
        assert_eq!(m["id"], update_id(r, d.platform).as_str());
        assert_ne!(m["id"], old["id"]);
        assert!(m["createdAt"].as_str().unwrap() > old["createdAt"].as_str().unwrap());
        assert_eq!(launch_of(m), launch_of(old));
        assert_eq!(hashes_of(m), hashes_of(old));
        assert_eq!(m["extra"], old["extra"]);
        assert_eq!(d.running_id(), Some(update_id(r, d.platform).as_str()));
    }
    let list = groups(&setup, &[]);
    assert_eq!(list.len(), 3);
    assert_eq!(group(&list, &group_id(r))["republished_from"], group_id(&a));

    // A group in an active rollout cannot be republished.
    let c = publish(&setup, "rc", PRODUCTION, &["--rollout-percentage", "50"]);
    let err = refused(&setup, &["republish", &group_id(&c), "--channel", "production"], true);
    assert_clear_refusal(&err, &["rollout"]);
}

// ---------------------------------------------------------------------------------------------
// 7. Disable
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn disabling_an_update_moves_devices_off_it() {
    let setup = Setup::new();
    let a = publish(&setup, "da", PRODUCTION, &[]);
    let mut a_manifests = HashMap::new();
    for platform in PLATFORMS {
        let m = Device::new(platform, "production").check(&setup).await;
        a_manifests.insert(platform, m.manifest().clone());
    }
    let b = publish(&setup, "db", PRODUCTION, &[]);
    let mut on_b: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    for d in &mut on_b {
        assert_eq!(d.sync(&setup).await.id(), update_id(&b, d.platform));
        assert_eq!(d.current_id(), update_id(&b, d.platform));
    }

    let outcome = op(&setup, &["updates", "disable", &group_id(&b)]);
    let r = &outcome["published"];
    assert!(r.is_object(), "disabling the newest group published nothing: {outcome}");
    assert!(created_at(r) > created_at(&b));

    // Devices running B (expo-current-update-id = B) and fresh ones get a republish of A.
    let mut fresh: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    for d in on_b.iter_mut().chain(fresh.iter_mut()) {
        let answer = d.sync(&setup).await;
        let m = answer.manifest();
        let old = &a_manifests[d.platform];
        assert_eq!(m["id"], update_id(r, d.platform).as_str());
        assert_ne!(m["id"], old["id"]);
        assert_eq!(launch_of(m), launch_of(old));
        assert_eq!(hashes_of(m), hashes_of(old));
        assert!(m["createdAt"].as_str().unwrap() > created_at(&b).as_str());
        assert_eq!(d.running_launch(), Some(launch_of(old).0.as_str()));
    }
    // B is served to nobody.
    let probe = Probe::new(&setup);
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    for got in probe.offered(&ids, "production").await {
        let got = got.unwrap();
        assert!(PLATFORMS.iter().all(|p| got != update_id(&b, p)), "B was served");
    }
    let list = groups(&setup, &[]);
    assert_eq!(group(&list, &group_id(&b))["disabled"], "disabled");
    assert_eq!(group(&list, &group_id(r))["republished_from"], group_id(&a));
    let err = refused(&setup, &["updates", "disable", &group_id(&b)], true);
    assert_clear_refusal(&err, &["disabled"]);

    // Disabling the only group of a branch: devices get "nothing new".
    let solo = publish(&setup, "solo", &["--channel", "solo"], &[]);
    let mut on_solo = Device::new("android", "solo");
    assert_eq!(on_solo.sync(&setup).await.id(), update_id(&solo, "android"));
    let outcome = op(&setup, &["updates", "disable", &group_id(&solo)]);
    assert_eq!(outcome["published"], Value::Null, "{outcome}");
    assert!(matches!(on_solo.check(&setup).await, Answer::NoUpdate));
    for platform in PLATFORMS {
        assert!(matches!(
            Device::new(platform, "solo").check(&setup).await,
            Answer::NoUpdate
        ));
    }
}

/// The update id of one platform and runtime version in a `PublishedGroup`.
fn update_id_rv(published: &Value, platform: &str, rv: &str) -> String {
    published["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["platform"] == platform && u["runtime_version"] == rv)
        .unwrap_or_else(|| panic!("no {platform} {rv} update in {published}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A on runtime 1.0.0, then B for a new native build (2.0.0), then C on 1.0.0 again: the
/// ordinary life of an app.
struct AcrossRuntimes {
    c: Value,
    /// Devices of both platforms and runtimes that took the newest update of their runtime
    /// (1.0.0: C, 2.0.0: B).
    devices: Vec<Device>,
    /// Launch asset hashes of A (1.0.0) and B (2.0.0), by platform.
    a_launch: HashMap<&'static str, String>,
    b_launch: HashMap<&'static str, String>,
}

impl AcrossRuntimes {
    async fn publish(setup: &Setup) -> Self {
        let mut a_launch = HashMap::new();
        publish(setup, "rt-a", PRODUCTION, &[]);
        for platform in PLATFORMS {
            let answer = Device::new(platform, "production").check(setup).await;
            a_launch.insert(platform, launch_of(answer.manifest()).0);
        }
        let b = publish_export(setup, &make_export(setup.dir.path(), "rt-b", "2.0.0"), PRODUCTION, &[]);
        let c = publish(setup, "rt-c", PRODUCTION, &[]);
        let mut devices = Vec::new();
        let mut b_launch = HashMap::new();
        for platform in PLATFORMS {
            let mut d = Device::new(platform, "production");
            assert_eq!(d.sync(setup).await.id(), update_id(&c, platform));
            devices.push(d);
            let mut d = Device::new(platform, "production").runtime("2.0.0");
            assert_eq!(d.sync(setup).await.id(), update_id_rv(&b, platform, "2.0.0"));
            b_launch.insert(platform, d.running_launch().unwrap().to_owned());
            devices.push(d);
        }
        Self {
            c,
            devices,
            a_launch,
            b_launch,
        }
    }

    /// After C is rolled back or withdrawn: 1.0.0 devices run A's code under a new update newer
    /// than C; 2.0.0 devices still run B's code.
    async fn assert_back_on_a(&mut self, setup: &Setup) {
        let c_created = created_at(&self.c);
        for d in &mut self.devices {
            let offered = match d.sync(setup).await {
                Answer::Manifest(m) => format!("manifest {} createdAt {}", m["id"], m["createdAt"]),
                other => format!("{other:?}"),
            };
            if d.runtime_version == RV {
                assert_eq!(
                    d.running_launch(),
                    Some(self.a_launch[d.platform].as_str()),
                    "the {} {RV} device still runs C ({}, createdAt {c_created}) instead of A's code; it was offered {offered}",
                    d.platform,
                    update_id(&self.c, d.platform)
                );
                assert!(d.commit_time() > c_created.as_str());
            } else {
                assert_eq!(d.running_launch(), Some(self.b_launch[d.platform].as_str()));
            }
        }
    }
}

#[tokio::test]
async fn rollback_rolls_back_each_runtime_version_to_its_own_previous_update() {
    let setup = Setup::new();
    let mut state = AcrossRuntimes::publish(&setup).await;
    op(&setup, &["rollback", "--channel", "production"]);
    state.assert_back_on_a(&setup).await;
}

#[tokio::test]
async fn disabling_moves_devices_off_it_when_another_runtime_was_published_in_between() {
    let setup = Setup::new();
    let mut state = AcrossRuntimes::publish(&setup).await;
    op(&setup, &["updates", "disable", &group_id(&state.c)]);
    state.assert_back_on_a(&setup).await;
}

// ---------------------------------------------------------------------------------------------
// 8. Branch deletion; 11. garbage collection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_branch_refuses_branches_in_use_and_keeps_shared_files() {
    let setup = Setup::new();
    let export = make_export(setup.dir.path(), "shared", RV);
    let kept = publish_export(&setup, &export, &["--branch", "keep"], &[]);
    let dropped = publish_export(&setup, &export, &["--branch", "drop"], &[]);
    ok(&setup, &["channels", "create", "keeper", "--branch", "keep"]);
    ok(&setup, &["channels", "create", "dropper", "--branch", "drop"]);
    let mut keeper = Device::new("ios", "keeper");
    let kept_manifest = keeper.sync(&setup).await.manifest().clone();
    assert_eq!(kept_manifest["id"], update_id(&kept, "ios").as_str());
    let dropped_manifest = Device::new("ios", "dropper").check(&setup).await.manifest().clone();
    assert_eq!(dropped_manifest["id"], update_id(&dropped, "ios").as_str());
    assert_eq!(hashes_of(&kept_manifest), hashes_of(&dropped_manifest));

    // In use by a channel: refused, saying which.
    let err = refused(&setup, &["branches", "delete", "drop"], false);
    assert_clear_refusal(&err, &["dropper"]);
    let err = refused(&setup, &["branches", "delete", "production"], false);
    assert_clear_refusal(&err, &["production"]);
    assert!(named(&json(&ok(&setup, &["branches", "list", "--json"])), "drop").is_object());

    ok(&setup, &["channels", "edit", "dropper", "--branch", "keep"]);
    let out = ok(&setup, &["branches", "delete", "drop"]);
    assert!(out.contains("drop"), "{out}");
    let branches = json(&ok(&setup, &["branches", "list", "--json"]));
    assert!(
        branches.as_array().unwrap().iter().all(|b| b["name"] != "drop"),
        "{branches}"
    );
    let list = groups(&setup, &[]);
    assert_eq!(ids_of(&list), vec![group_id(&kept)]);

    // The files of the update still served elsewhere keep working, for old and new devices.
    download_all(&kept_manifest).await;
    download_all(&dropped_manifest).await;
    assert!(matches!(keeper.sync(&setup).await, Answer::NoUpdate));
    let mut moved = Device::new("android", "dropper");
    assert_eq!(moved.sync(&setup).await.id(), update_id(&kept, "android"));

    let err = refused(&setup, &["branches", "delete", "drop"], false);
    assert_clear_refusal(&err, &["branch"]);
}

#[tokio::test]
async fn gc_removes_only_files_nothing_references() {
    let setup = Setup::new();
    let served_export = make_export(setup.dir.path(), "served", RV);
    let served = publish_export(&setup, &served_export, PRODUCTION, &[]);
    let mut served_manifests = Vec::new();
    for platform in PLATFORMS {
        let answer = Device::new(platform, "production").check(&setup).await;
        served_manifests.push(answer.manifest().clone());
    }
    // Branch junk: an update of its own (seen through channel peek), then a copy of the served
    // update (files shared with production).
    publish(&setup, "junk", &["--branch", "junk"], &[]);
    ok(&setup, &["channels", "create", "peek", "--branch", "junk"]);
    let mut junk_manifests = Vec::new();
    for platform in PLATFORMS {
        let answer = Device::new(platform, "peek").check(&setup).await;
        junk_manifests.push(answer.manifest().clone());
    }
    publish_export(&setup, &served_export, &["--branch", "junk"], &[]);
    ok(&setup, &["channels", "edit", "peek", "--branch", "production"]);
    ok(&setup, &["branches", "delete", "junk"]);

    let served_hashes: BTreeSet<String> = served_manifests.iter().flat_map(hashes_of).collect();
    let junk_only: Vec<(String, String, String)> = junk_manifests
        .iter()
        .flat_map(files_of)
        .filter(|(_, h, _)| !served_hashes.contains(h))
        .collect();
    let junk_only_hashes: BTreeSet<&str> = junk_only.iter().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(junk_only_hashes.len(), 4, "two bundles, a PNG and a font");
    // Deleting a branch leaves the files: a device that has the manifest can still download.
    for (url, _, _) in &junk_only {
        assert_eq!(asset_status(url).await, 200, "{url}");
    }

    let out = expect_ok(run(&setup, &["gc", "--grace-seconds", "0"], false, false), &["gc"]);
    assert!(out.contains("removed 4 "), "{out}");
    for (url, _, _) in &junk_only {
        assert_eq!(asset_status(url).await, 404, "{url}");
        let reply = get(url, &[("accept-encoding".into(), "br, gzip".into())]).await;
        assert_eq!(reply.status, 404, "{url} (compressed)");
    }
    // The bundles downloaded above were sent from their files (on local disk); the server
    // closed them when it removed the blobs, so their space is free.
    if cfg!(target_os = "linux") {
        let deleted: Vec<PathBuf> = open_files(setup.server.child.id())
            .into_iter()
            .filter(|target| target.to_string_lossy().ends_with(" (deleted)"))
            .collect();
        assert!(deleted.is_empty(), "removed blobs still open: {deleted:?}");
    }
    // Everything served stays, and devices still get and download it.
    for m in &served_manifests {
        download_all(m).await;
    }
    for platform in PLATFORMS {
        let mut d = Device::new(platform, "production");
        assert_eq!(d.sync(&setup).await.id(), update_id(&served, platform));
    }
    let out = expect_ok(run(&setup, &["gc", "--grace-seconds", "0"], false, false), &["gc"]);
    assert!(out.contains("removed 0 "), "{out}");
    for m in &served_manifests {
        download_all(m).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Channel branch rollouts
// ---------------------------------------------------------------------------------------------

/// P on production, Q on branch `next`, and a 40% branch rollout of `next` on production.
async fn start_branch_rollout(setup: &Setup) -> (Value, Value) {
    let p = publish(setup, "p", PRODUCTION, &[]);
    let q = publish(setup, "q", &["--branch", "next"], &[]);
    let outcome = op(
        setup,
        &[
            "channels",
            "rollout",
            "production",
            "--branch",
            "next",
            "--percentage",
            "40",
        ],
    );
    assert_eq!(outcome["published"], Value::Null);
    let channels = json(&ok(setup, &["channels", "list", "--json"]));
    let production = named(&channels, "production");
    assert_eq!(production["branch"], "production");
    assert_eq!(production["rollout"]["branch"], "next");
    assert_eq!(production["rollout"]["percentage"], 40);
    (p, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_branch_rollout_splits_raises_and_ends() {
    let setup = Setup::new();
    let (p, q) = start_branch_rollout(&setup).await;
    let probe = Probe::new(&setup);

    let ids: Vec<Uuid> = (0..4000).map(|_| Uuid::new_v4()).collect();
    let at_40 = split(&probe.offered(&ids, "production").await, &q, Some(&p));
    println!("branch rollout at 40%: {:.2}% of 4000 devices got Q", share(&at_40));
    assert!((share(&at_40) - 40.0).abs() <= 4.0, "{}", share(&at_40));
    // Deterministic per device, whatever the case of its id.
    for (i, id) in ids.iter().enumerate().take(200) {
        let platform = PLATFORMS[(i + 1) % 2];
        let form = if i % 4 < 2 {
            id.to_string().to_uppercase()
        } else {
            id.to_string()
        };
        let want = update_id(if at_40[i] { &q } else { &p }, platform);
        assert_eq!(
            probe.served(platform, Some(&form), "production").await.as_deref(),
            Some(want.as_str())
        );
    }
    let i_in = at_40.iter().position(|x| *x).unwrap();
    let i_out = at_40.iter().position(|x| !*x).unwrap();
    let mut inside = Device::with_id("ios", "production", Some(ids[i_in]));
    assert_eq!(inside.sync(&setup).await.id(), update_id(&q, "ios"));
    let mut outside = Device::with_id("ios", "production", Some(ids[i_out]));
    assert_eq!(outside.sync(&setup).await.id(), update_id(&p, "ios"));

    // Raise to 70%: nobody who had Q loses it.
    let outcome = op(&setup, &["channels", "rollout", "production", "--percentage", "70"]);
    assert_eq!(outcome["published"], Value::Null);
    let at_70 = split(&probe.offered(&ids, "production").await, &q, Some(&p));
    println!("branch rollout at 70%: {:.2}% of 4000 devices got Q", share(&at_70));
    assert!((share(&at_70) - 70.0).abs() <= 4.0, "{}", share(&at_70));
    assert!(at_40.iter().zip(&at_70).all(|(was, is)| !*was || *is));
    let err = refused(
        &setup,
        &["channels", "rollout", "production", "--percentage", "50"],
        true,
    );
    assert_clear_refusal(&err, &["70%"]);

    // While it runs: no publishing to the channel, no re-pointing, no rollback.
    let export = make_export(setup.dir.path(), "blocked", RV);
    let err = refused(&setup, &publish_args(&export, PRODUCTION), true);
    assert_clear_refusal(&err, &["rollout"]);
    let err = refused(&setup, &["channels", "edit", "production", "--branch", "next"], false);
    assert_clear_refusal(&err, &["rollout"]);
    let err = refused(&setup, &["rollback", "--channel", "production"], true);
    assert_clear_refusal(&err, &["rollout"]);
    assert_eq!(groups(&setup, &[]).len(), 2);

    // End: the channel points at next; every device ends up on Q's code.
    let outcome = op(&setup, &["channels", "rollout", "production", "--end"]);
    let channels = json(&ok(&setup, &["channels", "list", "--json"]));
    assert_eq!(named(&channels, "production")["branch"], "next");
    assert_eq!(named(&channels, "production")["rollout"], Value::Null);
    let q_launch = launch_of(Device::new("ios", "production").check(&setup).await.manifest()).0;
    assert_eq!(
        q_launch,
        inside.running_launch().unwrap(),
        "devices get Q's code after the end"
    );
    if outcome["published"].is_object() {
        assert!(created_at(&outcome["published"]) > created_at(&q));
        assert!(inside.sync(&setup).await.manifest()["id"] != update_id(&q, "ios").as_str());
    } else {
        assert!(matches!(inside.sync(&setup).await, Answer::NoUpdate));
    }
    outside.sync(&setup).await;
    assert_eq!(outside.running_launch(), Some(q_launch.as_str()));
    let after = probe.offered(&ids[..1000], "production").await;
    let want = |i: usize| {
        let platform = PLATFORMS[i % 2];
        match outcome["published"].as_object() {
            Some(_) => update_id(&outcome["published"], platform),
            None => update_id(&q, platform),
        }
    };
    for (i, got) in after.iter().enumerate() {
        assert_eq!(got.as_deref(), Some(want(i).as_str()));
    }
    // Publishing to the channel works again, onto next.
    let r = publish(&setup, "after-end", PRODUCTION, &[]);
    assert_eq!(r["branch"], "next");
}

#[tokio::test]
async fn channel_branch_rollout_revert_restores_the_old_branch() {
    let setup = Setup::new();
    let (p, q) = start_branch_rollout(&setup).await;
    let probe = Probe::new(&setup);
    let (inside, outside) = one_in_one_out(&probe, &q, "production").await;
    let mut p_manifests = HashMap::new();
    let mut devices = Vec::new();
    for platform in PLATFORMS {
        let mut d = Device::with_id(platform, "production", Some(inside));
        assert_eq!(d.sync(&setup).await.id(), update_id(&q, platform));
        devices.push(d);
        let mut d = Device::with_id(platform, "production", Some(outside));
        let answer = d.sync(&setup).await;
        assert_eq!(answer.id(), update_id(&p, platform));
        p_manifests.insert(platform, answer.manifest().clone());
        devices.push(d);
    }

    let outcome = op(&setup, &["channels", "rollout", "production", "--revert"]);
    let r = &outcome["published"];
    assert!(r.is_object(), "devices that took Q need a newer copy of P: {outcome}");
    assert!(created_at(r) > created_at(&q));
    assert_eq!(r["branch"], "production");
    let channels = json(&ok(&setup, &["channels", "list", "--json"]));
    assert_eq!(named(&channels, "production")["branch"], "production");
    assert_eq!(named(&channels, "production")["rollout"], Value::Null);

    for d in &mut devices {
        let answer = d.sync(&setup).await;
        let m = answer.manifest();
        assert_eq!(m["id"], update_id(r, d.platform).as_str());
        assert_eq!(launch_of(m), launch_of(&p_manifests[d.platform]));
        assert!(m["createdAt"].as_str().unwrap() > created_at(&q).as_str());
        assert_eq!(d.running_launch(), Some(launch_of(&p_manifests[d.platform]).0.as_str()));
    }
    let list = groups(&setup, &["--branch", "next"]);
    assert_eq!(ids_of(&list), vec![group_id(&q)]);
}

#[tokio::test]
async fn ending_a_branch_rollout_moves_every_runtime_version_to_the_new_branch() {
    let setup = Setup::new();
    // next gets Q (1.0.0) first; production then gets P (1.0.0); then next gets Q2 for a new
    // native build (2.0.0).
    let q = publish(&setup, "end-q", &["--branch", "next"], &[]);
    let p = publish(&setup, "end-p", PRODUCTION, &[]);
    publish_export(
        &setup,
        &make_export(setup.dir.path(), "end-q2", "2.0.0"),
        &["--branch", "next"],
        &[],
    );
    let mut q_launch = HashMap::new();
    ok(&setup, &["channels", "create", "peek", "--branch", "next"]);
    for platform in PLATFORMS {
        let answer = Device::new(platform, "peek").check(&setup).await;
        assert_eq!(answer.id(), update_id(&q, platform));
        q_launch.insert(platform, launch_of(answer.manifest()).0);
    }
    let mut devices: Vec<Device> = PLATFORMS.iter().map(|p| Device::new(p, "production")).collect();
    for d in &mut devices {
        assert_eq!(d.sync(&setup).await.id(), update_id(&p, d.platform));
    }
    op(
        &setup,
        &[
            "channels",
            "rollout",
            "production",
            "--branch",
            "next",
            "--percentage",
            "50",
        ],
    );
    op(&setup, &["channels", "rollout", "production", "--end"]);
    for d in &mut devices {
        let offered = match d.sync(&setup).await {
            Answer::Manifest(m) => format!("manifest {} createdAt {}", m["id"], m["createdAt"]),
            other => format!("{other:?}"),
        };
        assert_eq!(
            d.running_launch(),
            Some(q_launch[d.platform].as_str()),
            "after the end, the {} {RV} device still runs P (createdAt {}); it was offered {offered}",
            d.platform,
            created_at(&p)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Concurrent publishes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_publishes_all_land_in_order() {
    let setup = Setup::new();
    // Two processes publish the same export (the same files uploaded at once), two others
    // exports of their own.
    let exports = [
        make_export(setup.dir.path(), "same", RV),
        make_export(setup.dir.path(), "same", RV),
        make_export(setup.dir.path(), "other-1", RV),
        make_export(setup.dir.path(), "other-2", RV),
    ];
    let children: Vec<_> = exports
        .iter()
        .map(|export| {
            let args = cli_args(
                &setup,
                &[
                    "publish",
                    "--input",
                    export.to_str().unwrap(),
                    "--channel",
                    "production",
                    "--json",
                ],
                true,
                true,
            );
            Command::new(BIN)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut published = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent publish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        published.push(json(&String::from_utf8(out.stdout).unwrap()));
    }
    let distinct: HashSet<String> = published.iter().map(group_id).collect();
    assert_eq!(distinct.len(), 4);

    let list = groups(&setup, &["--channel", "production"]);
    assert_eq!(list.len(), 4);
    let listed: HashSet<String> = ids_of(&list).into_iter().collect();
    assert_eq!(listed, distinct);
    for pair in list.windows(2) {
        assert!(
            created_at(&pair[0]) > created_at(&pair[1]),
            "createdAt not strictly increasing: {} then {}",
            created_at(&pair[1]),
            created_at(&pair[0])
        );
    }
    for p in &published {
        assert_eq!(created_at(group(&list, &group_id(p))), created_at(p));
    }
    let newest = published
        .iter()
        .find(|p| group_id(p) == list[0]["id"].as_str().unwrap())
        .unwrap();
    for platform in PLATFORMS {
        let mut d = Device::new(platform, "production");
        assert_eq!(d.sync(&setup).await.id(), update_id(newest, platform));
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Audit log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_records_every_change_with_actor_and_address() {
    let setup = Setup::new();
    let a = publish(&setup, "audit-a", PRODUCTION, &[]);
    let b = publish(&setup, "audit-b", PRODUCTION, &["--rollout-percentage", "20"]);
    ok(&setup, &["rollout", "set", &group_id(&b), "50"]);
    ok(&setup, &["rollout", "complete", &group_id(&b)]);
    ok(&setup, &["channels", "create", "beta", "--branch", "beta"]);
    ok(&setup, &["channels", "edit", "beta", "--branch", "production"]);
    ok(&setup, &["branches", "create", "scratch"]);
    ok(&setup, &["branches", "delete", "scratch"]);
    op(&setup, &["rollback", "--channel", "production"]);
    op(&setup, &["republish", &group_id(&b), "--channel", "production"]);
    let c = publish(&setup, "audit-c", PRODUCTION, &[]);
    op(&setup, &["updates", "disable", &group_id(&c)]);
    op(&setup, &["rollback", "--channel", "production", "--to-embedded"]);

    let entries = json(&expect_ok(
        run(&setup, &["audit", "--app", "demo", "--json"], false, false),
        &["audit"],
    ));
    let entries = entries.as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for e in entries {
        // The token's name (`admin`, the default of `tokens create`), with its id.
        assert!(e["actor"].as_str().unwrap().starts_with("admin"), "{e}");
        assert_eq!(e["app"], "demo", "{e}");
        let remote = e["remote"].as_str().unwrap();
        assert!(remote.contains("127.0.0.1"), "remote address {remote:?}");
        assert!(is_iso_millis(e["at"].as_str().unwrap()), "{e}");
    }
    for pair in entries.windows(2) {
        assert!(pair[0]["at"].as_str() >= pair[1]["at"].as_str(), "newest first");
    }
    let count = |action: &str| actions.iter().filter(|a| **a == action).count();
    // One entry per change: a signed publish's prepare step is not a change.
    assert_eq!(count("publish"), 3, "{actions:?}");
    for (action, n) in [
        ("rollout.set", 1),
        ("rollout.complete", 1),
        ("channel.create", 1),
        ("channel.edit", 1),
        ("branch.create", 1),
        ("branch.delete", 1),
        ("republish", 1),
        ("rollback", 1),
        ("group.disable", 1),
        ("rollback.embedded", 1),
    ] {
        assert_eq!(count(action), n, "{action} in {actions:?}");
    }
    let set = entries.iter().find(|e| e["action"] == "rollout.set").unwrap();
    assert_eq!(set["target"], group_id(&b));
    let edit = entries.iter().find(|e| e["action"] == "channel.edit").unwrap();
    assert_eq!(edit["target"], "beta");
    assert_eq!(edit["details"]["branch"], "production");
    let publish_to = entries
        .iter()
        .filter(|e| e["action"] == "publish")
        .all(|e| e["target"] == "production");
    assert!(publish_to);
    // The newest entry is the last change.
    assert_eq!(entries[0]["action"], "rollback.embedded");
    // The rollback entry names the group it published: a republish of A.
    let rollback = entries.iter().find(|e| e["action"] == "rollback").unwrap();
    let published = rollback["details"]["published_group"].as_str().unwrap();
    assert_eq!(group(&groups(&setup, &[]), published)["republished_from"], group_id(&a));
}

// ---------------------------------------------------------------------------------------------
// Errors that name the problem
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_or_duplicate_names_are_refused_clearly() {
    let setup = Setup::new();
    publish(&setup, "e1", PRODUCTION, &[]);
    ok(&setup, &["branches", "create", "twice"]);
    let unknown = Uuid::new_v4().to_string();
    let u = unknown.as_str();
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (vec!["rollout", "set", u, "50"], false, "404"),
        (vec!["rollout", "complete", u], false, "404"),
        (vec!["rollout", "revert", u], true, "404"),
        (vec!["updates", "disable", u], true, "404"),
        (vec!["updates", "show", u], false, "404"),
        (vec!["republish", u], true, "404"),
        (vec!["channels", "edit", "nope", "--branch", "production"], false, "404"),
        (vec!["channels", "rollout", "nope", "--end"], true, "404"),
        (vec!["branches", "delete", "nope"], false, "404"),
        (vec!["channels", "create", "production"], false, "409"),
        (vec!["branches", "create", "twice"], false, "409"),
    ];
    let mut problems = Vec::new();
    for (args, signed, status) in &cases {
        let err = refused(&setup, args, *signed);
        if err.contains("500") || err.contains("internal") || !err.contains(status) {
            problems.push(format!(
                "aloft {}: expected {status}, got {}",
                args.join(" "),
                err.trim()
            ));
        }
    }
    assert!(problems.is_empty(), "unclear refusals:\n{}", problems.join("\n"));
}
