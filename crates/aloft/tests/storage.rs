//! Storage and the database in trouble, end to end, on the backend under test: the first
//! downloads after a publish are compressed; a locked, read-only or full database and a full disk
//! are named (with what to fix) and visible in `/readyz`; blobs recorded without variants get
//! them; and `gc` removes what interrupted uploads left behind.
//!
//! How each condition is made, so that it is real even when the tests run as root (where
//! `chmod` stops nothing):
//! - locked: a second connection of the test holds the write lock (`BEGIN IMMEDIATE` on SQLite,
//!   the writers' advisory lock on PostgreSQL), as another process would;
//! - read-only: on SQLite the server opens the file with `mode=ro`, the state SQLite itself falls
//!   into when it may not write the file (permissions, a read-only mount); on PostgreSQL the
//!   database is switched to `default_transaction_read_only` and the server's sessions are ended,
//!   as on a standby;
//! - disk full: the server runs in a private mount namespace (`unshare -m`) on a 4 MiB tmpfs, so
//!   nothing is mounted outside it; skipped, with a message, where mounting is not allowed (the
//!   mapping of a real ENOSPC is also unit-tested, with /dev/full);
//! - killed mid-upload: SIGKILL while the client is still sending.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aloft_store::testing::{Backend, Location};
use aloft_store::{BlobStore, Database};
use futures::SinkExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const RV: &str = "1.0.0";

/// A fresh location of the backend under test and an admin token; servers are started on it
/// with extra flags.
struct Env {
    dir: tempfile::TempDir,
    location: Location,
    token: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let location = Backend::from_env().fresh(&dir.path().join("data"));
        let mut args = vec!["tokens".to_owned(), "create".to_owned()];
        args.extend(location.token_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let token = aloft_ok(&args).trim().to_owned();
        Self { dir, location, token }
    }

    fn data(&self) -> &Path {
        &self.location.dir
    }

    fn sqlite(&self) -> bool {
        self.location.database_url.is_none()
    }

    fn serve_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.location.serve_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn start(&self, extra: &[&str]) -> Server {
        Server::start_on(self.data(), "127.0.0.1:0", self.serve_args(extra))
    }

    /// Where the server writes the partial file of an upload.
    fn staging(&self) -> PathBuf {
        match self.location.s3 {
            None => self.data().join("blobs").join(".partial"),
            Some(_) => self.data().join("tmp"),
        }
    }

    /// A connection of our own to the server's database, as another process would have.
    async fn other_connection(&self) -> Database {
        match &self.location.database_url {
            None => Database::open_sqlite(&self.data().join("aloft.db")).await.unwrap(),
            Some(url) => Database::connect(url, 2).await.unwrap(),
        }
    }

    /// A blob store on the server's storage that leaves the server's staging folder alone.
    fn blob_store(&self) -> BlobStore {
        match &self.location.s3 {
            None => BlobStore::local(self.data()).unwrap(),
            Some(s3) => BlobStore::s3(s3, &self.dir.path().join("side")).unwrap(),
        }
    }
}

async fn api(server: &Server, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", server.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    Reply { status, headers, body }
}

async fn create_app(server: &Server, token: &str, slug: &str) -> Reply {
    api(server, token, Method::POST, "/apps", Some(json!({"slug": slug}))).await
}

async fn upload(server: &Server, token: &str, bytes: &[u8]) -> Reply {
    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/blobs/{}", server.base, sha256_b64url(bytes)))
        .bearer_auth(token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    Reply { status, headers, body }
}

async fn gc(server: &Server, token: &str, grace_seconds: u64) -> Value {
    let reply = api(
        server,
        token,
        Method::POST,
        "/gc",
        Some(json!({"grace_seconds": grace_seconds})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    serde_json::from_slice(&reply.body).unwrap()
}

/// The `{"error":{"code","message"}}` of a refusal.
fn error_of(reply: &Reply) -> (String, String) {
    let body: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&reply.body)));
    (
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

async fn readyz(server: &Server) -> (u16, Value) {
    let reply = get(&format!("{}/readyz", server.base), &[]).await;
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

/// An update check as `platform`'s client sends it, asking for the bare manifest (the
/// publishes here are unsigned).
async fn manifest(server: &Server, platform: &str) -> Value {
    let headers = with(
        without(device_headers(platform, RV, "production"), "expo-expect-signature"),
        "Accept",
        "application/expo+json",
    );
    let reply = get(&server.manifest_url("demo"), &headers).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    serde_json::from_slice(&reply.body).unwrap()
}

async fn asset(url: &str, accept_encoding: &str) -> Reply {
    get(url, &[("Accept-Encoding".to_owned(), accept_encoding.to_owned())]).await
}

fn asset_url(server: &Server, bytes: &[u8], ext: &str) -> String {
    format!("{}/assets/{}.{ext}", server.base, sha256_b64url(bytes))
}

/// JavaScript-like text: compressible, but not so repetitive that compressing it is instant.
fn script(tag: &str, len: usize) -> Vec<u8> {
    let mut out = format!("// {tag}\n").into_bytes();
    let mut i = 0u64;
    while out.len() < len {
        let salt = &sha256_b64url(format!("{tag}{i}").as_bytes())[..8];
        out.extend_from_slice(
            format!(
                "function f{i}(a, b) {{ return a * {} + b - \"{salt}\".length; }}\n",
                i % 977
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Files directly in `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for a file of at least `len` bytes in `dir`.
async fn wait_for_file(dir: &Path, len: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(path) = files_in(dir)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= len))
        {
            return path;
        }
        assert!(Instant::now() < deadline, "no partial file in {}", dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upload whose client has sent only the first part of the body so far.
struct StalledUpload {
    tx: futures::channel::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    rest: Vec<u8>,
    task: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl StalledUpload {
    async fn start(server: &Server, token: &str, bytes: &[u8], first: usize) -> Self {
        let (mut tx, rx) = futures::channel::mpsc::channel(1);
        let request = reqwest::Client::new()
            .put(format!("{}/api/v1/blobs/{}", server.base, sha256_b64url(bytes)))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_LENGTH, bytes.len())
            .body(reqwest::Body::wrap_stream(rx));
        let task = tokio::spawn(request.send());
        tx.send(Ok(bytes::Bytes::copy_from_slice(&bytes[..first])))
            .await
            .unwrap();
        Self {
            tx,
            rest: bytes[first..].to_vec(),
            task,
        }
    }

    async fn finish(mut self) -> u16 {
        self.tx.send(Ok(bytes::Bytes::from(self.rest))).await.unwrap();
        drop(self.tx);
        self.task.await.unwrap().unwrap().status().as_u16()
    }
}

/// Bytes the server does not try to compress (they start like a PNG), so uploads are quick.
fn png_like(seed: &str, len: usize) -> Vec<u8> {
    [b"\x89PNG\r\n\x1a\n".as_slice(), &bytes_of(seed, len)].concat()
}

// ---------------------------------------------------------------------------------------------
// Item 1: compressed from the first download
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_downloads_after_a_publish_are_compressed() {
    let env = Env::new();
    let server = env.start(&[]);
    assert_eq!(create_app(&server, &env.token, "demo").await.status, 201);
    let export = make_export(env.dir.path(), "fresh", RV);
    // Bundles big enough that compressing them takes a while, as real ones do: a server that
    // compressed after answering the upload would still be at it when the devices come.
    let metadata: Value = serde_json::from_slice(&std::fs::read(export.join("metadata.json")).unwrap()).unwrap();
    for platform in ["ios", "android"] {
        let path = metadata["fileMetadata"][platform]["bundle"].as_str().unwrap();
        let body = [
            b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f".as_slice(),
            &script(platform, 1 << 20),
        ]
        .concat();
        write(&export.join(path), &body);
    }
    publish_json(&server.base, &env.token, &export);

    // At once, no waiting: every compressible asset comes in the encoding each client accepts.
    for platform in ["ios", "android"] {
        let m = manifest(&server, platform).await;
        let mut assets = vec![m["launchAsset"].clone()];
        assets.extend(m["assets"].as_array().unwrap().iter().cloned());
        for a in &assets {
            let url = a["url"].as_str().unwrap();
            let compressible = a["contentType"] != "image/png";
            for (accept, token) in [("gzip", "gzip"), ("br", "br"), ("gzip, br", "br")] {
                let reply = asset(url, accept).await;
                assert_eq!(reply.status, 200, "{url}");
                let expected = compressible.then_some(token);
                assert_eq!(reply.header("content-encoding"), expected, "{url} with {accept}");
                assert_eq!(
                    sha256_b64url(&decode_body(&reply)),
                    a["hash"].as_str().unwrap(),
                    "{url} with {accept}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_upload_meeting_a_blob_recorded_without_variants_makes_them_before_answering() {
    let env = Env::new();
    let server = env.start(&[]);
    // A blob as an older version recorded it: bytes and a row, no variants yet.
    let bytes = script("legacy", 200_000);
    let hash = aloft_core::ContentHash::of(&bytes);
    let db = env.other_connection().await;
    let store = env.blob_store();
    store
        .ingest(
            &db,
            hash,
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes.clone()))]),
            1 << 30,
        )
        .await
        .unwrap();
    sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL WHERE hash = $1")
        .bind(hash.to_string())
        .execute(db.pool())
        .await
        .unwrap();
    let url = asset_url(&server, &bytes, "js");
    assert_eq!(asset(&url, "br").await.header("content-encoding"), None);

    // The publisher offers it again; the answer comes once the variants exist.
    let reply = upload(&server, &env.token, &bytes).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    for token in ["br", "gzip"] {
        let reply = asset(&url, token).await;
        assert_eq!(reply.header("content-encoding"), Some(token));
        assert_eq!(decode_body(&reply), bytes);
    }
}

/// SQLite only: there a held write lock stops every write, so the variants of a blob recorded
/// without them cannot be recorded while it is held. (On PostgreSQL only the writers that take
/// the advisory lock wait for it, and recording variants is not one of them.)
#[tokio::test]
async fn variants_that_could_not_be_recorded_are_retried_until_they_are() {
    let env = Env::new();
    if !env.sqlite() {
        eprintln!("SKIPPED variants_that_could_not_be_recorded_are_retried_until_they_are: SQLite only");
        return;
    }
    // Before the server starts: a blob recorded without variants, as an older version left it.
    let bytes = script("retried", 200_000);
    let hash = aloft_core::ContentHash::of(&bytes);
    let db = env.other_connection().await;
    env.blob_store()
        .ingest(
            &db,
            hash,
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes.clone()))]),
            1 << 30,
        )
        .await
        .unwrap();
    sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL")
        .execute(db.pool())
        .await
        .unwrap();
    let hex = hex::encode(hash.as_bytes());
    for suffix in [".br", ".gz"] {
        let variant = env.data().join("blobs").join(&hex[..2]).join(format!("{hex}{suffix}"));
        match std::fs::remove_file(variant) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
            _ => {}
        }
    }

    // The server starts while another process holds the write lock: the variants it makes at
    // start cannot be recorded.
    let held = db.begin_write().await.unwrap();
    let server = env.start(&["--db-lock-timeout-seconds", "1"]);
    let url = asset_url(&server, &bytes, "js");
    assert_eq!(asset(&url, "br").await.header("content-encoding"), None);
    // An upload meeting it says why it cannot finish.
    let reply = upload(&server, &env.token, &bytes).await;
    assert_eq!(reply.status, 503);
    assert_eq!(error_of(&reply).0, "database_busy");
    assert!(reply.header("retry-after").is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(asset(&url, "br").await.header("content-encoding"), None);

    // The lock is let go; nobody uploads or restarts anything, and the variants arrive.
    held.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = asset(&url, "br").await;
        if reply.header("content-encoding") == Some("br") {
            assert_eq!(decode_body(&reply), bytes);
            break;
        }
        assert!(Instant::now() < deadline, "the variants were never made");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(decode_body(&asset(&url, "gzip").await), bytes);
}

// ---------------------------------------------------------------------------------------------
// Item 7: storage and database trouble is named and visible
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_locked_database_is_503_database_busy_with_retry_after() {
    let env = Env::new();
    let server = env.start(&["--db-lock-timeout-seconds", "1"]);
    assert_eq!(create_app(&server, &env.token, "demo").await.status, 201);

    let other = env.other_connection().await;
    let held = other.begin_write().await.unwrap();
    let started = Instant::now();
    let reply = create_app(&server, &env.token, "second").await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
    let (code, message) = error_of(&reply);
    assert_eq!(code, "database_busy");
    assert!(message.contains("holds the database write lock"), "{message}");
    assert!(message.contains("--db-lock-timeout-seconds"), "{message}");
    let retry_after: u32 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // It waited for the configured second, not the default ten.
    assert!(waited >= Duration::from_millis(900), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");
    // The CLI passes the reason on.
    let out = aloft(&[
        "apps",
        "create",
        "third",
        "--server",
        &server.base,
        "--token",
        &env.token,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database_busy"), "{stderr}");

    // Someone else's turn at the lock is not a fault: still ready, reads and devices unaffected.
    assert_eq!(readyz(&server).await.0, 200);
    let reply = api(&server, &env.token, Method::GET, "/apps", None).await;
    assert_eq!(reply.status, 200);
    let reply = get(&server.manifest_url("demo"), &device_headers("ios", RV, "production")).await;
    assert_eq!(reply.status, 204);

    held.rollback().await.unwrap();
    assert_eq!(create_app(&server, &env.token, "second").await.status, 201);
}

#[tokio::test]
async fn a_read_only_database_is_503_database_unavailable_and_not_ready() {
    let env = Env::new();
    let server = env.start(&[]);
    assert_eq!(create_app(&server, &env.token, "demo").await.status, 201);
    let export = make_export(env.dir.path(), "ro", RV);
    let published = publish_json(&server.base, &env.token, &export);

    let server = match &env.location.database_url {
        None => {
            // Back on the same address, so the asset URLs in the manifest still lead to it.
            let listen = server.base.trim_start_matches("http://").to_owned();
            server.kill();
            let path = std::path::absolute(env.data().join("aloft.db")).unwrap();
            let url = format!("sqlite://{}?mode=ro", path.display());
            Server::start_on(env.data(), &listen, env.serve_args(&["--database-url", &url]))
        }
        Some(url) => {
            let name = url.rsplit('/').next().unwrap();
            let admin = std::env::var("ALOFT_TEST_POSTGRES_URL").unwrap();
            for sql in [
                format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ),
            ] {
                let out = Command::new("psql")
                    .args([admin.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            server
        }
    };

    // Not ready, and it says why (on PostgreSQL, once the pool has new sessions).
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = readyz(&server).await;
        if status == 503 && body["reason"].as_str().is_some_and(|r| r.contains("read-only")) {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz kept answering {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["status"], "degraded");

    let reply = create_app(&server, &env.token, "second").await;
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
    let (code, message) = error_of(&reply);
    assert_eq!(code, "database_unavailable");
    assert!(message.contains("read-only"), "{message}");
    let fix = if env.sqlite() {
        "check its permissions"
    } else {
        "primary"
    };
    assert!(message.contains(fix), "{message}");
    assert!(!message.contains("see the server log"), "{message}");

    // Devices are still served what was published.
    let m = manifest(&server, "ios").await;
    assert_eq!(m["id"], ios_id(&published).as_str());
    let launch = asset(m["launchAsset"]["url"].as_str().unwrap(), "br").await;
    assert_eq!(
        sha256_b64url(&decode_body(&launch)),
        m["launchAsset"]["hash"].as_str().unwrap()
    );
}

/// `unshare` flags that give a private mount namespace in which tmpfs can be mounted, if any.
fn mount_namespace(probe_dir: &Path) -> Option<Vec<&'static str>> {
    for flags in [
        vec!["-m", "--propagation", "private"],
        vec!["-r", "-m", "--propagation", "private"],
    ] {
        let ok = Command::new("unshare")
            .args(&flags)
            .args(["sh", "-c", "mount -t tmpfs -o size=1m aloft-probe \"$1\"", "sh"])
            .arg(probe_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(flags);
        }
    }
    None
}

#[tokio::test]
async fn a_full_disk_is_507_storage_full_and_leaves_nothing_behind() {
    let env = Env::new();
    let mount = env.dir.path().join("small-disk");
    std::fs::create_dir_all(&mount).unwrap();
    let Some(flags) = mount_namespace(&mount) else {
        eprintln!(
            "SKIPPED a_full_disk_is_507_storage_full_and_leaves_nothing_behind: cannot mount a tmpfs in a private \
             mount namespace here (unshare -m); a real ENOSPC is still mapped by the unit tests"
        );
        return;
    };
    std::fs::create_dir_all(env.data()).unwrap();
    // The data folder (SQLite database included) is copied onto a 4 MiB tmpfs that only the
    // server's mount namespace sees; it disappears with the server.
    let mut child = Command::new("unshare")
        .args(&flags)
        .args([
            "sh",
            "-c",
            "mount -t tmpfs -o size=4m aloft-full \"$1\" && cp -a \"$2\"/. \"$1\"/ && shift 2 && exec \"$@\"",
            "sh",
        ])
        .arg(&mount)
        .arg(env.data())
        .arg(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&mount)
        .args(env.serve_args(&[]))
        .env("ALOFT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let server = Server {
        child,
        base,
        data_dir: mount.clone(),
        backend_args: env.serve_args(&[]),
    };
    assert_eq!(create_app(&server, &env.token, "demo").await.status, 201);

    let big = png_like("too big", 6 << 20);
    let reply = upload(&server, &env.token, &big).await;
    assert_eq!(reply.status, 507, "{}", String::from_utf8_lossy(&reply.body));
    let (code, message) = error_of(&reply);
    assert_eq!(code, "storage_full");
    assert!(
        message.contains(&format!("free disk space under {}", mount.display())),
        "{message}"
    );
    assert!(reply.header("retry-after").is_none());

    // The failed upload left nothing behind: its space is free again, and there is nothing for
    // gc to remove.
    let small = script("small", 100_000);
    let reply = upload(&server, &env.token, &small).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let reply = asset(&asset_url(&server, &small, "js"), "br").await;
    assert_eq!(reply.header("content-encoding"), Some("br"));
    assert_eq!(decode_body(&reply), small);
    assert_eq!(create_app(&server, &env.token, "second").await.status, 201);
    assert_eq!(gc(&server, &env.token, 0).await["leftovers_removed"], 0);
}

#[tokio::test]
async fn gc_removes_what_interrupted_uploads_left_and_spares_uploads_in_flight() {
    let env = Env::new();
    let server = env.start(&[]);
    let staging = env.staging();

    // An upload in progress: its partial file is not a leftover, even with no grace period.
    let bytes = png_like("slow", 1 << 20);
    let slow = StalledUpload::start(&server, &env.token, &bytes, 256 << 10).await;
    let partial = wait_for_file(&staging, 256 << 10).await;
    assert_eq!(gc(&server, &env.token, 0).await["leftovers_removed"], 0);
    assert!(partial.exists());
    assert_eq!(slow.finish().await, 201);
    let reply = asset(&asset_url(&server, &bytes, "png"), "identity").await;
    assert_eq!(reply.body, bytes);
    assert_eq!(files_in(&staging), Vec::<PathBuf>::new());

    // A server killed mid-upload leaves its partial file.
    let killed = png_like("killed", 1 << 20);
    let _stalled = StalledUpload::start(&server, &env.token, &killed, 256 << 10).await;
    let partial = wait_for_file(&staging, 256 << 10).await;
    server.kill();
    let mut leftovers = 0;
    if env.location.s3.is_none() {
        assert!(partial.exists(), "a killed upload leaves its partial file");
        leftovers += 1;
        // So did object_store's local writes in older versions, next to the blobs.
        let shard = env.data().join("blobs").join("ab");
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(format!("ab{}#1", "0".repeat(62))), b"partial").unwrap();
        leftovers += 1;
    }
    // (With S3 storage the partial file is in <data>/tmp, which the server empties at start.)
    let server = env.start(&[]);
    // Fresh leftovers are kept for the grace period, then removed and counted.
    assert_eq!(gc(&server, &env.token, 3600).await["leftovers_removed"], 0);
    let out = aloft_ok(&[
        "gc",
        "--grace-seconds",
        "0",
        "--server",
        &server.base,
        "--token",
        &env.token,
    ]);
    assert!(
        out.contains(&format!("and {leftovers} leftover file(s) of interrupted uploads")),
        "{out}"
    );
    assert_eq!(files_in(&staging), Vec::<PathBuf>::new());
    if env.location.s3.is_none() {
        assert_eq!(files_in(&env.data().join("blobs").join("ab")), Vec::<PathBuf>::new());
    }
    // The interrupted blob was never recorded; uploading it again works.
    let reply = api(
        &server,
        &env.token,
        Method::POST,
        "/blobs/missing",
        Some(json!({"hashes": [sha256_b64url(&killed)]})),
    )
    .await;
    let missing: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(missing["missing"], json!([sha256_b64url(&killed)]));
    assert_eq!(upload(&server, &env.token, &killed).await.status, 201);
    assert_eq!(gc(&server, &env.token, 0).await["leftovers_removed"], 0);
}
