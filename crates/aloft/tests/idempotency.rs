//! Safe retries, through the real binary: a write with an `Idempotency-Key` acts once and a
//! retry with the key gets the first answer; `aloft publish` whose answer was lost (the
//! connection cut after the commit, by a proxy in between) retries with its key and ends with
//! exactly one new group; a client that goes away does not cancel the write; concurrent requests
//! with one key act once; keys of different tokens never meet.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_store::testing::{Backend, Location};
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RV: &str = "1.0.0";
const REPLAYED: &str = "idempotent-replayed";

/// A server with an app `demo`, an admin token, and one export already published (so its blobs
/// are on the server and raw publish requests can name them).
struct World {
    dir: tempfile::TempDir,
    location: Location,
    server: Server,
    token: String,
    export: PathBuf,
    http: reqwest::Client,
}

/// One answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    fn replayed(&self) -> bool {
        self.header(REPLAYED) == Some("true")
    }

    #[track_caller]
    fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected answer: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl World {
    async fn new() -> Self {
        Self::on(Backend::from_env()).await
    }

    async fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let location = backend.fresh(&data);
        let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
        token_args.extend(location.token_args());
        let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
        let token = aloft_ok(&token_args).trim().to_owned();
        let server = Server::start_on(&data, "127.0.0.1:0", location.serve_args());
        aloft_ok(&["apps", "create", "demo", "--server", &server.base, "--token", &token]);
        let export = make_export(dir.path(), "first", RV);
        publish_json(&server.base, &token, &export);
        Self {
            dir,
            location,
            server,
            token,
            export,
            http: reqwest::Client::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.base.trim_start_matches("http://").parse().unwrap()
    }

    /// A management API call as `token`, with an `Idempotency-Key` when `key` is given.
    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        self.call_at(&self.server.base, token, method, path, key, body).await
    }

    /// The same, to the server at `base` (another replica).
    async fn call_at(
        &self,
        base: &str,
        token: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{base}/api/v1{path}"))
            .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request).await
    }

    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
        self.call_as(&self.token, method, path, key, body).await
    }

    async fn publish(&self, key: Option<&str>, body: &Value) -> Answer {
        self.call(Method::POST, "/apps/demo/publish", key, Some(body)).await
    }

    /// The app's update groups, newest first.
    async fn groups(&self) -> Vec<Value> {
        let answer = self.call(Method::GET, "/apps/demo/groups", None, None).await;
        answer.assert_status(200);
        answer.json().as_array().unwrap().clone()
    }

    async fn channels(&self) -> Vec<String> {
        let answer = self.call(Method::GET, "/apps/demo/channels", None, None).await;
        answer.assert_status(200);
        answer
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A publish request for the first export (whose blobs the server has) to `production`.
    fn publish_body(&self, message: &str) -> Value {
        publish_body(&self.export, message)
    }

    /// Another admin token, made through the API.
    async fn second_token(&self) -> String {
        let body = json!({"name": "second", "scope": "admin"});
        let answer = self.call(Method::POST, "/tokens", None, Some(&body)).await;
        answer.assert_status(201);
        answer.json()["secret"].as_str().unwrap().to_owned()
    }
}

async fn read(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Answer { status, headers, body }
}

/// The JSON of `POST /apps/demo/publish` for an export made by `make_export`, as the CLI builds it.
fn publish_body(export: &Path, message: &str) -> Value {
    let metadata: Value = serde_json::from_slice(&std::fs::read(export.join("metadata.json")).unwrap()).unwrap();
    let file = |path: &str| sha256_b64url(&std::fs::read(export.join(path)).unwrap());
    let mut updates = Vec::new();
    for (platform, entry) in metadata["fileMetadata"].as_object().unwrap() {
        let bundle = entry["bundle"].as_str().unwrap();
        let assets: Vec<Value> = entry["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!({"hash": file(a["path"].as_str().unwrap()), "ext": a["ext"]}))
            .collect();
        updates.push(json!({
            "platform": platform,
            "runtime_version": RV,
            "launch_asset": {"hash": file(bundle), "ext": "hbc"},
            "assets": assets,
        }));
    }
    let config: Value = serde_json::from_slice(&std::fs::read(export.join("expoConfig.json")).unwrap()).unwrap();
    json!({"channel": "production", "message": message, "updates": updates, "expo_client": config})
}

#[tokio::test]
async fn the_same_key_twice_publishes_once_and_replays_the_first_answer() {
    let w = World::new().await;
    let before = w.groups().await.len();
    let body = w.publish_body("once");
    let key = new_key();

    let first = w.publish(Some(&key), &body).await;
    first.assert_status(201);
    assert!(!first.replayed(), "the first answer is not a replay");
    let group = first.json()["published"]["group_id"].as_str().unwrap().to_owned();

    let again = w.publish(Some(&key), &body).await;
    again.assert_status(201);
    assert!(again.replayed(), "{:?}", again.headers);
    assert_eq!(again.body, first.body, "the replay is the first answer, byte for byte");
    assert_eq!(again.header("content-type"), first.header("content-type"));

    let groups = w.groups().await;
    assert_eq!(groups.len(), before + 1, "one group for two requests with one key");
    assert_eq!(groups[0]["id"], group.as_str());

    // Without a key the same request acts again: the key is what made the retry safe.
    let unkeyed = w.publish(None, &body).await;
    unkeyed.assert_status(201);
    assert_ne!(unkeyed.json()["published"]["group_id"], group.as_str());
    assert_eq!(w.groups().await.len(), before + 2);
}

#[tokio::test]
async fn every_write_replays_empty_answers_and_refusals_too_and_a_prepare_is_not_recorded() {
    let w = World::new().await;

    // A 201 with no body.
    let key = new_key();
    let body = json!({"name": "scratch"});
    w.call(Method::POST, "/apps/demo/branches", Some(&key), Some(&body))
        .await
        .assert_status(201);
    let again = w
        .call(Method::POST, "/apps/demo/branches", Some(&key), Some(&body))
        .await;
    again.assert_status(201);
    assert!(again.replayed());
    assert!(again.body.is_empty());
    // (Acting again would have been 409 branch_exists.)

    // A 204, replayed where acting again would be a 404.
    let key = new_key();
    w.call(Method::DELETE, "/apps/demo/branches/scratch", Some(&key), None)
        .await
        .assert_status(204);
    let again = w
        .call(Method::DELETE, "/apps/demo/branches/scratch", Some(&key), None)
        .await;
    again.assert_status(204);
    assert!(again.replayed());
    w.call(Method::DELETE, "/apps/demo/branches/scratch", None, None)
        .await
        .assert_status(404);

    // A refusal is an answer too: replayed even once the request would succeed.
    let key = new_key();
    let refused = w
        .call(Method::DELETE, "/apps/demo/branches/ghost", Some(&key), None)
        .await;
    refused.assert_status(404);
    assert_eq!(refused.code(), "branch_not_found");
    w.call(
        Method::POST,
        "/apps/demo/branches",
        None,
        Some(&json!({"name": "ghost"})),
    )
    .await
    .assert_status(201);
    let again = w
        .call(Method::DELETE, "/apps/demo/branches/ghost", Some(&key), None)
        .await;
    again.assert_status(404);
    assert!(again.replayed());
    assert_eq!(again.body, refused.body);
    w.call(Method::DELETE, "/apps/demo/branches/ghost", Some(&new_key()), None)
        .await
        .assert_status(204);

    // A prepare changes nothing and is not recorded: the same key then covers the commit.
    let before = w.groups().await.len();
    let key = new_key();
    let body = w.publish_body("prepared");
    for _ in 0..2 {
        let prepared = w
            .call(Method::POST, "/apps/demo/publish?prepare=true", Some(&key), Some(&body))
            .await;
        prepared.assert_status(200);
        assert!(!prepared.replayed());
        assert!(prepared.json()["group_id"].is_string());
    }
    assert_eq!(w.groups().await.len(), before);
    let committed = w.publish(Some(&key), &body).await;
    committed.assert_status(201);
    assert!(!committed.replayed());
    assert_eq!(w.groups().await.len(), before + 1);

    // Reads ignore the header.
    w.call(Method::GET, "/apps/demo/channels", Some("not a valid key"), None)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_malformed_keys_too() {
    let w = World::new().await;
    let before = w.groups().await.len();
    let key = new_key();
    w.publish(Some(&key), &w.publish_body("first")).await.assert_status(201);

    // Another body, another path, another method: 422, nothing done.
    let other_body = w.publish(Some(&key), &w.publish_body("second")).await;
    other_body.assert_status(422);
    assert_eq!(other_body.code(), "idempotency_key_reused");
    let other_path = w
        .call(
            Method::POST,
            "/apps/demo/channels",
            Some(&key),
            Some(&json!({"name": "beta"})),
        )
        .await;
    other_path.assert_status(422);
    assert_eq!(other_path.code(), "idempotency_key_reused");
    let other_query = w
        .call(
            Method::POST,
            "/apps/demo/publish?force=1",
            Some(&key),
            Some(&w.publish_body("first")),
        )
        .await;
    other_query.assert_status(422);
    assert_eq!(w.groups().await.len(), before + 1);
    assert!(!w.channels().await.contains(&"beta".to_owned()));

    // Malformed keys: 400 before anything is done.
    let body = w.publish_body("malformed");
    for bad in ["", "two words", &"k".repeat(256)] {
        let answer = w.publish(Some(bad), &body).await;
        answer.assert_status(400);
        assert_eq!(answer.code(), "invalid_idempotency_key", "{bad:?}");
    }
    let twice = read(
        w.http
            .post(format!("{}/api/v1/apps/demo/publish", w.server.base))
            .bearer_auth(&w.token)
            .header("idempotency-key", new_key())
            .header("idempotency-key", new_key())
            .json(&body),
    )
    .await;
    twice.assert_status(400);
    assert_eq!(twice.code(), "invalid_idempotency_key");
    // The longest key is fine.
    w.publish(Some(&"k".repeat(255)), &body).await.assert_status(201);
    assert_eq!(w.groups().await.len(), before + 2);
}

#[tokio::test]
async fn keys_of_different_tokens_never_meet() {
    let w = World::new().await;
    let other = w.second_token().await;
    let key = new_key();

    let alpha = json!({"name": "alpha"});
    let beta = json!({"name": "beta"});
    let path = "/apps/demo/channels";
    let a = w.call_as(&w.token, Method::POST, path, Some(&key), Some(&alpha)).await;
    a.assert_status(201);
    // The same key from another token is another request: it acts (no 422, no replay of A's).
    let b = w.call_as(&other, Method::POST, path, Some(&key), Some(&beta)).await;
    b.assert_status(201);
    assert!(!b.replayed());
    assert_eq!(b.json()["name"], "beta");
    // Each token's retry gets its own answer.
    let b_again = w.call_as(&other, Method::POST, path, Some(&key), Some(&beta)).await;
    assert!(b_again.replayed());
    assert_eq!(b_again.body, b.body);
    let a_again = w.call_as(&w.token, Method::POST, path, Some(&key), Some(&alpha)).await;
    assert!(a_again.replayed());
    assert_eq!(a_again.body, a.body);
    let channels = w.channels().await;
    assert!(
        channels.contains(&"alpha".to_owned()) && channels.contains(&"beta".to_owned()),
        "{channels:?}"
    );

    // Even the same request with the same key acts once per token.
    let before = w.groups().await.len();
    let key = new_key();
    let body = w.publish_body("per token");
    let mine = w
        .call_as(&w.token, Method::POST, "/apps/demo/publish", Some(&key), Some(&body))
        .await;
    let theirs = w
        .call_as(&other, Method::POST, "/apps/demo/publish", Some(&key), Some(&body))
        .await;
    mine.assert_status(201);
    theirs.assert_status(201);
    assert!(!theirs.replayed());
    assert_ne!(
        mine.json()["published"]["group_id"],
        theirs.json()["published"]["group_id"]
    );
    assert_eq!(w.groups().await.len(), before + 2);
}

/// Request lines a proxy saw, with their `Idempotency-Key`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// When [`CutProxy`] cuts the connection of the request it cuts.
#[derive(Debug, Clone)]
enum Cut {
    /// Once the server's whole answer arrived (so it acted): an answer lost after the commit.
    AfterAnswer,
    /// While the server still works on it: the database's write lock is taken before the
    /// request is passed on and released `unlock_after` later; the connections (the server's
    /// too) are closed `cut_after` the request was passed on.
    WhileLocked {
        db: aloft_store::Database,
        cut_after: Duration,
        unlock_after: Duration,
    },
}

/// A TCP proxy in front of the server that passes everything through, except that the first
/// request whose request line starts with `cut` is sent to the server and the client's
/// connection is then closed (`when`) without a byte of the answer. Every request line it saw is
/// kept with its `Idempotency-Key`.
struct CutProxy {
    base: String,
    seen: Seen,
}

impl CutProxy {
    async fn start(upstream: SocketAddr, cut: &'static str, when: Cut) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, (cut, when.clone()), log.clone(), done.clone()));
            }
        });
        Self { base, seen }
    }

    /// Requests seen whose line starts with `prefix`, with their keys.
    fn seen(&self, prefix: &str) -> Vec<(String, Option<String>)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(line, _)| line.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// One request per connection (`connection: close` is added, so the server closes after its
/// answer): relays it, and its answer unless it is the one to cut.
async fn relay(client: TcpStream, upstream: SocketAddr, (cut, when): (&str, Cut), seen: Seen, done: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("idempotency-key")
            .then(|| value.trim().to_owned())
    });
    seen.lock().unwrap().push((line.clone(), key));
    let cut_this = line.starts_with(cut) && !done.swap(true, Ordering::SeqCst);
    if let (true, Cut::WhileLocked { db, unlock_after, .. }) = (cut_this, &when) {
        let lock = db.begin_write().await.unwrap();
        let unlock_after = *unlock_after;
        tokio::spawn(async move {
            tokio::time::sleep(unlock_after).await;
            lock.rollback().await.unwrap();
        });
    }

    let server = TcpStream::connect(upstream).await.unwrap();
    let (mut server_read, mut server_write) = server.into_split();
    let first_line_end = head.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut forwarded = head[..first_line_end].to_vec();
    forwarded.extend_from_slice(b"connection: close\r\n");
    forwarded.extend_from_slice(&head[first_line_end..]);
    if server_write.write_all(&forwarded).await.is_err() {
        return;
    }
    // The rest of the body, as it comes.
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    match (cut_this, when) {
        // The server answers in full (so it committed); the client gets none of it.
        (true, Cut::AfterAnswer) => {
            let _ = tokio::io::copy(&mut server_read, &mut tokio::io::sink()).await;
        }
        // Both connections go, the server's too.
        (true, Cut::WhileLocked { cut_after, .. }) => tokio::time::sleep(cut_after).await,
        (false, _) => {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        }
    }
    let _ = client_write.shutdown().await;
    upload.abort();
}

/// Runs the real CLI (without blocking the runtime the proxy runs on).
async fn aloft_async(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN).args(args).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_answer_was_lost_is_retried_with_its_key_and_publishes_once() {
    let w = World::new().await;
    let keys = w.dir.path().join("keys");
    aloft_ok(&[
        "keys",
        "generate",
        "--output-dir",
        keys.to_str().unwrap(),
        "--common-name",
        "Idempotency E2E",
    ]);
    let signing_key = keys.join("private-key.pem");
    // The commit's request line; a prepare's is `POST /api/v1/apps/demo/publish?prepare=true`.
    const COMMIT: &str = "POST /api/v1/apps/demo/publish ";

    for (tag, signed) in [("lost-unsigned", false), ("lost-signed", true)] {
        let proxy = CutProxy::start(w.addr(), COMMIT, Cut::AfterAnswer).await;
        let before = w.groups().await;
        let export = make_export(w.dir.path(), tag, RV);
        let mut args = publish_args(&proxy.base, &w.token, "production", &export);
        args.push("--json");
        let key_path = signing_key.to_string_lossy().into_owned();
        if signed {
            args.extend(["--signing-key", &key_path, "--keyid", "main"]);
        }
        let out = aloft_async(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{tag}: publish failed although the server published:\n{stderr}"
        );
        assert!(stderr.contains("retrying"), "{tag}: no note of the retry: {stderr}");
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();

        // The proxy cut the first commit's answer; the retry carried the same key.
        let commits = proxy.seen(COMMIT);
        assert_eq!(commits.len(), 2, "{tag}: {commits:?}");
        assert!(commits[0].1.is_some(), "{tag}: the commit carried no key");
        assert_eq!(commits[0].1, commits[1].1, "{tag}: the retry used another key");
        if signed {
            let prepares = proxy.seen("POST /api/v1/apps/demo/publish?prepare=true ");
            assert_eq!(prepares.len(), 1, "{tag}: {prepares:?}");
            assert_eq!(
                prepares[0].1, None,
                "{tag}: a prepare records nothing, so it carries no key"
            );
        }
        // Blobs went through the proxy too, with keys (which the server ignores there).
        assert!(!proxy.seen("PUT /api/v1/blobs/").is_empty(), "{tag}");

        // Exactly one new group, the one the CLI printed.
        let after = w.groups().await;
        assert_eq!(after.len(), before.len() + 1, "{tag}: {after:#?}");
        assert_eq!(after[0]["id"], printed["group_id"], "{tag}");
        assert_eq!(after[0]["updates"].as_array().unwrap().len(), 2, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cut_while_the_server_still_works_is_retried_until_the_first_attempt_answers() {
    let w = World::new().await;
    const COMMIT: &str = "POST /api/v1/apps/demo/publish ";
    let (db, _blobs) = w.location.open().await;
    let cut = Cut::WhileLocked {
        db: db.clone(),
        cut_after: Duration::from_millis(300),
        unlock_after: Duration::from_millis(2000),
    };
    let proxy = CutProxy::start(w.addr(), COMMIT, cut).await;
    let before = w.groups().await.len();

    let mut args = publish_args(&proxy.base, &w.token, "production", &w.export);
    args.push("--json");
    let out = aloft_async(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    eprintln!("{stderr}");
    if w.location.database_url.is_some() {
        // On PostgreSQL the first attempt holds its key while it waits for the lock.
        assert!(stderr.contains("still working on the first attempt"), "{stderr}");
    }
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();

    let commits = proxy.seen(COMMIT);
    assert!(commits.len() >= 2, "{commits:?}");
    assert!(commits[0].1.is_some());
    assert!(commits.iter().all(|c| c.1 == commits[0].1), "{commits:?}");
    let groups = w.groups().await;
    assert_eq!(groups.len(), before + 1, "{groups:#?}");
    assert_eq!(groups[0]["id"], printed["group_id"]);
    db.close().await;
}

/// A publish sent by hand on a connection of its own.
fn raw_publish(addr: SocketAddr, token: &str, key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/v1/apps/demo/publish HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nidempotency-key: {key}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_does_not_cancel_the_write_and_its_answer_is_kept() {
    let w = World::new().await;
    let before = w.groups().await.len();
    let body = w.publish_body("the client left");
    let key = new_key();

    // Hold the database's write lock, so the publish is certainly still running when the
    // client leaves.
    let (db, _blobs) = w.location.open().await;
    let lock = db.begin_write().await.unwrap();
    let mut client = TcpStream::connect(w.addr()).await.unwrap();
    client
        .write_all(&raw_publish(w.addr(), &w.token, &key, &body.to_string()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();

    // The write still happens...
    let deadline = Instant::now() + Duration::from_secs(20);
    let groups = loop {
        let groups = w.groups().await;
        if groups.len() > before {
            break groups;
        }
        assert!(Instant::now() < deadline, "the publish was cancelled with its client");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(groups.len(), before + 1);
    assert_eq!(groups[0]["message"], "the client left");

    // ...and the retry gets its answer instead of publishing again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let retry = loop {
        let retry = w.publish(Some(&key), &body).await;
        if retry.status != 409 {
            break retry;
        }
        assert_eq!(retry.code(), "idempotency_in_progress");
        assert!(Instant::now() < deadline, "the first request never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    retry.assert_status(201);
    assert!(retry.replayed());
    assert_eq!(retry.json()["published"]["group_id"], groups[0]["id"]);
    assert_eq!(w.groups().await.len(), before + 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_act_once() {
    let w = World::new().await;
    let before = w.groups().await.len();
    let body = w.publish_body("concurrent");
    let key = new_key();

    // All of them arrive while the write lock is held, so they overlap.
    let (db, _blobs) = w.location.open().await;
    let lock = db.begin_write().await.unwrap();
    let calls = futures::future::join_all((0..4).map(|_| w.publish(Some(&key), &body)));
    let release = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        lock.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(calls, release);

    let acted: Vec<&Answer> = answers.iter().filter(|a| a.status == 201 && !a.replayed()).collect();
    assert_eq!(acted.len(), 1, "{answers:#?}");
    for answer in &answers {
        match answer.status {
            201 => assert_eq!(answer.body, acted[0].body),
            409 => assert_eq!(answer.code(), "idempotency_in_progress"),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    let groups = w.groups().await;
    assert_eq!(groups.len(), before + 1);
    assert_eq!(groups[0]["id"], acted[0].json()["published"]["group_id"]);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_both_act_on_one_key() {
    let Some(backend) = Backend::require_postgres_s3("two_replicas_never_both_act_on_one_key") else {
        return;
    };
    let w = World::on(backend).await;
    // A second replica on the same database and bucket.
    let other = Server::start_on(&w.dir.path().join("replica-b"), "127.0.0.1:0", w.location.serve_args());
    let before = w.groups().await.len();
    let body = w.publish_body("two replicas");
    let key = new_key();

    let (db, _blobs) = w.location.open().await;
    let lock = db.begin_write().await.unwrap();
    let bases = [&w.server.base, &other.base, &w.server.base, &other.base];
    let calls = futures::future::join_all(bases.iter().map(|base| {
        w.call_at(
            base,
            &w.token,
            Method::POST,
            "/apps/demo/publish",
            Some(&key),
            Some(&body),
        )
    }));
    let release = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        lock.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(calls, release);

    let acted: Vec<&Answer> = answers.iter().filter(|a| a.status == 201 && !a.replayed()).collect();
    assert_eq!(acted.len(), 1, "{answers:#?}");
    for answer in &answers {
        match answer.status {
            201 => assert_eq!(answer.body, acted[0].body),
            409 => assert_eq!(answer.code(), "idempotency_in_progress"),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    assert_eq!(w.groups().await.len(), before + 1);
    // Either replica replays the answer.
    for base in [&w.server.base, &other.base] {
        let again = w
            .call_at(
                base,
                &w.token,
                Method::POST,
                "/apps/demo/publish",
                Some(&key),
                Some(&body),
            )
            .await;
        again.assert_status(201);
        assert!(again.replayed());
        assert_eq!(again.body, acted[0].body);
    }
    db.close().await;
}

#[tokio::test]
async fn the_openapi_document_gives_the_header_to_exactly_the_recorded_writes() {
    let w = World::new().await;
    let doc = w.call(Method::GET, "/openapi.json", None, None).await;
    doc.assert_status(200);
    let doc = doc.json();
    // Not recorded: questions, content-addressed uploads, and the answers that hold a secret.
    let exempt = [
        "post /api/v1/blobs/missing",
        "post /api/v1/apps/{slug}/publish/check",
        "put /api/v1/blobs/{hash}",
        "post /api/v1/tokens",
        "post /api/v1/users",
        "post /api/v1/users/{email}/sign-in-link",
    ];
    let mut recorded = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let header = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
            let expected = method != "get" && !exempt.contains(&what.as_str());
            assert_eq!(header.is_some(), expected, "{what}");
            if let Some(header) = header {
                recorded += 1;
                assert_eq!(header["required"], false, "{what}");
                assert_eq!(header["schema"]["maxLength"], 255, "{what}");
            }
        }
    }
    assert!(recorded >= 15, "only {recorded} operations document the header");

    // The exempt token creation really acts twice: its secret is never stored for a replay.
    let key = new_key();
    let body = json!({"name": "twice", "scope": "read", "apps": ["demo"]});
    let first = w.call(Method::POST, "/tokens", Some(&key), Some(&body)).await;
    let second = w.call(Method::POST, "/tokens", Some(&key), Some(&body)).await;
    first.assert_status(201);
    second.assert_status(201);
    assert!(!second.replayed());
    assert_ne!(first.json()["secret"], second.json()["secret"]);
}

/// A blob upload whose answer is lost is streamed again (uploads are content-addressed, so the
/// second one stores nothing new) and the publish goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_answer_was_lost_is_sent_again() {
    let w = World::new().await;
    const UPLOAD: &str = "PUT /api/v1/blobs/";
    let proxy = CutProxy::start(w.addr(), UPLOAD, Cut::AfterAnswer).await;
    let before = w.groups().await;
    let export = make_export(w.dir.path(), "lost-upload", RV);
    let mut args = publish_args(&proxy.base, &w.token, "production", &export);
    args.push("--json");
    let out = aloft_async(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "publish failed:\n{stderr}");
    assert!(stderr.contains("uploading") && stderr.contains("retrying"), "{stderr}");
    // One upload line was seen twice: the cut one and its retry.
    let uploads: Vec<String> = proxy.seen(UPLOAD).into_iter().map(|(line, _)| line).collect();
    let distinct: std::collections::BTreeSet<&String> = uploads.iter().collect();
    assert_eq!(uploads.len(), distinct.len() + 1, "{uploads:?}");
    let after = w.groups().await;
    assert_eq!(after.len(), before.len() + 1);
}
