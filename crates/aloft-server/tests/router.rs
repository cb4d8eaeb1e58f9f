//! Router tests: every request goes through the production `aloft_server::app(state)`, with state
//! built the way the binary builds it (SQLite file, local blob store), and every expectation is
//! about status, headers and exact body bytes (docs/protocol.md §1, §2, §4, §5, §12).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::time::{Duration, Instant};

use aloft_core::api::{FileRef, Outcome, PlatformUpdate, PublishRequest, PublishedGroup};
use aloft_core::{ContentHash, Md5Key, Platform};
use aloft_server::{AppState, ServerConfig};
use aloft_store::Database;
use aloft_store::testing::{Backend, Location};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

const MAX_UPLOAD: u64 = 1 << 20;
const ACCEPT_ALL: &str = "multipart/mixed,application/expo+json,application/json";
const EXPECT_MAIN: &str = r#"sig, keyid="main", alg="rsa-v1_5-sha256""#;
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

// ---------------------------------------------------------------------------------------------
// Harness

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// `{"error":{"code":…,"message":…}}` with the given status and code, served as JSON.
    #[track_caller]
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {:?}", String::from_utf8_lossy(&self.body));
        self.assert_json_error_shape();
        assert_eq!(self.json()["error"]["code"], code, "{}", self.json());
    }

    #[track_caller]
    fn assert_json_error_shape(&self) {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error of status {} is not JSON: {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{v}");
        let err = v["error"].as_object().unwrap();
        assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    /// 204 with the headers a client needs to take it as "nothing new".
    #[track_caller]
    fn assert_no_update(&self) {
        assert_eq!(
            self.status,
            StatusCode::NO_CONTENT,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("expo-protocol-version"), Some("1"));
        assert_eq!(self.header("expo-sfv-version"), Some("0"));
        assert_eq!(self.header("cache-control"), Some("private, max-age=0"));
        assert!(self.body.is_empty());
    }
}

struct Env {
    dir: TempDir,
    location: Location,
    state: AppState,
    token: String,
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let location = Backend::from_env().fresh(dir.path());
        let (db, blobs) = location.open().await;
        let config = ServerConfig {
            listen: "127.0.0.1:3000".parse().unwrap(),
            public_url: "http://ota.test".into(),
            max_upload_bytes: MAX_UPLOAD,
            asset_base_url: None,
            asset_delivery: Default::default(),
            asset_cache_bytes: 16 << 20,
            dashboard: true,
        };
        let (_, token) = aloft_store::db::tokens::create(&db, "test", &aloft_store::db::tokens::Scope::Admin, None)
            .await
            .unwrap();
        let state = AppState::new(config, db, blobs, None).await.unwrap();
        Self {
            dir,
            location,
            state,
            token,
        }
    }

    /// The same data directory served by a freshly started process.
    async fn restart(self) -> Self {
        let (db, blobs) = self.location.open().await;
        let config = ServerConfig::clone(&self.state.config);
        let state = AppState::new(config, db, blobs, None).await.unwrap();
        Self {
            dir: self.dir,
            location: self.location,
            state,
            token: self.token,
        }
    }

    /// Files left in the upload staging directory.
    fn staged_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("tmp")).unwrap().count()
    }

    fn db(&self) -> &Database {
        &self.state.db
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let res = aloft_server::app(self.state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn request(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, uri, headers).await
    }

    /// An absolute asset URL from a manifest, fetched through the router.
    async fn get_url(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let path = url
            .strip_prefix("http://ota.test")
            .unwrap_or_else(|| panic!("{url} is not under the public URL"));
        self.get(path, headers).await
    }

    /// A management call with the admin token and a raw body.
    async fn api_raw(&self, method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    async fn api(&self, method: Method, uri: &str, body: &Value) -> Resp {
        self.api_raw(method, uri, Some("application/json"), serde_json::to_vec(body).unwrap())
            .await
    }

    async fn create_app(&self, slug: &str) {
        let r = self.api(Method::POST, "/api/v1/apps", &json!({ "slug": slug })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        let info = r.json();
        assert_eq!(info["slug"], slug);
        assert_eq!(info["default_channel"], "production");
        assert_eq!(info["manifest_url"], format!("http://ota.test/apps/{slug}/manifest"));
        assert_eq!(info["server_signing"], false);
    }

    /// Uploads bytes under their hash and returns the hash.
    async fn upload(&self, bytes: &[u8]) -> ContentHash {
        let hash = ContentHash::of(bytes);
        let r = self
            .api_raw(
                Method::PUT,
                &format!("/api/v1/blobs/{hash}"),
                Some("application/octet-stream"),
                bytes.to_vec(),
            )
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "upload: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let info = r.json();
        assert_eq!(info["hash"], hash.to_string());
        assert_eq!(info["md5"], Md5Key::of(bytes).to_string());
        assert_eq!(info["size"], bytes.len());
        hash
    }

    async fn publish(&self, slug: &str, req: &PublishRequest) -> Resp {
        self.api(
            Method::POST,
            &format!("/api/v1/apps/{slug}/publish"),
            &serde_json::to_value(req).unwrap(),
        )
        .await
    }

    async fn publish_ok(&self, slug: &str, req: &PublishRequest) -> PublishedGroup {
        let r = self.publish(slug, req).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice::<Outcome>(&r.body).unwrap().published.unwrap()
    }

    async fn check(&self, slug: &str, check: &Check) -> Resp {
        let uri = if check.query.is_empty() {
            format!("/apps/{slug}/manifest")
        } else {
            format!("/apps/{slug}/manifest?{}", check.query)
        };
        let headers: Vec<(&str, &str)> = check.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.get(&uri, &headers).await
    }

    /// Waits for the background compression of a blob to finish.
    async fn wait_compressed(&self, hash: &ContentHash) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rec = aloft_store::db::blobs::get(self.db(), hash).await.unwrap().unwrap();
            if rec.compressed {
                return;
            }
            assert!(Instant::now() < deadline, "blob {hash} not compressed after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A manifest request as the real client sends it (docs/protocol.md §12 `H`), adjustable.
#[derive(Clone)]
struct Check {
    headers: Vec<(String, String)>,
    query: String,
}

impl Check {
    fn new(platform: &str, runtime_version: &str) -> Self {
        Self {
            headers: [
                ("expo-platform", platform),
                ("expo-runtime-version", runtime_version),
                ("expo-protocol-version", "1"),
                ("accept", ACCEPT_ALL),
                ("expo-api-version", "1"),
                ("expo-updates-environment", "BARE"),
                ("expo-json-error", "true"),
                ("eas-client-id", "6f1b3c1e-4a55-4c7e-9d0b-2f7f1d8e9a10"),
                ("expo-embedded-update-id", "0b4c6a2e-1111-4222-8333-944455556666"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            query: String::new(),
        }
    }

    fn ios() -> Self {
        Self::new("ios", "1.0.0")
    }

    fn set(mut self, name: &str, value: &str) -> Self {
        self = self.unset(name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn unset(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }
}

/// One part of a `multipart/mixed` body.
struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn name(&self) -> Option<&str> {
        let disposition = self.header("content-disposition")?;
        disposition
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"')))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A strict parser for the multipart bodies this server writes: CRLF delimiters, no preamble.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
        .trim_matches('"');
    assert!(!boundary.is_empty());
    let first = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    assert!(
        body.starts_with(first.as_bytes()),
        "body does not start with the boundary"
    );
    let mut rest = &body[first.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            assert!(
                rest == b"--\r\n" || rest == b"--",
                "trailing bytes after the close delimiter"
            );
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a boundary delimiter");
        let header_end = find(rest, b"\r\n\r\n").expect("end of part headers");
        let headers = std::str::from_utf8(&rest[..header_end])
            .unwrap()
            .split("\r\n")
            .map(|line| {
                let (k, v) = line.split_once(':').expect("header line");
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let content = &rest[header_end + 4..];
        let end = find(content, delimiter.as_bytes()).expect("next delimiter");
        parts.push(Part {
            headers,
            body: content[..end].to_vec(),
        });
        rest = &content[end + delimiter.len()..];
    }
}

/// The single `manifest` part of a 200 multipart manifest response, after checking the response
/// headers of docs/protocol.md §12 check 1.
#[track_caller]
fn manifest_part(r: &Resp) -> Part {
    assert_eq!(r.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&r.body));
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/mixed; boundary=")
        .unwrap_or_else(|| panic!("content-type {ct:?}"));
    assert!(!boundary.is_empty() && !boundary.contains([' ', ';', ',']));
    assert_eq!(r.header("expo-protocol-version"), Some("1"));
    assert_eq!(r.header("expo-sfv-version"), Some("0"));
    assert_eq!(r.header("cache-control"), Some("private, max-age=0"));
    let mut parts = parse_multipart(ct, &r.body);
    assert_eq!(parts.len(), 1, "expected exactly the manifest part");
    let part = parts.remove(0);
    assert_eq!(part.name(), Some("manifest"));
    assert!(
        part.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        part.header("content-type")
    );
    part
}

fn manifest_json(r: &Resp) -> Value {
    serde_json::from_slice(&manifest_part(r).body).unwrap()
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`
fn is_iso_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn is_base64url_sha256(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn br_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).unwrap();
    out
}

fn gz_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A few KB of JavaScript: compressible, so brotli and gzip variants are kept.
fn bundle(version: u32) -> Vec<u8> {
    let mut s = format!("// aloft router test bundle v{version}\n");
    for i in 0..120 {
        s.push_str(&format!(
            "__d(function(g,r,i,a,m,e,d){{console.log('module {i} of version {version}');}},{i},[]);\n"
        ));
    }
    s.into_bytes()
}

/// Starts with the PNG signature, so the server does not try to compress it.
fn png(version: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend(format!("fake image {version}").bytes());
    v.extend((0..200u32).map(|i| (i * 7 + version) as u8));
    v
}

fn ttf() -> Vec<u8> {
    let mut v = vec![0, 1, 0, 0, 0, 12, 0, 128];
    v.extend((0..300u32).map(|i| (i % 251) as u8));
    v
}

fn expo_client() -> Value {
    json!({
        "name": "Demo",
        "slug": "demo",
        "version": "1.0.0",
        "runtimeVersion": "1.0.0",
        "ios": {"bundleIdentifier": "test.aloft.demo"},
        "extra": {"nested": [1, 2, {"x": null}]}
    })
}

fn file(hash: ContentHash, ext: &str) -> FileRef {
    FileRef {
        hash,
        ext: ext.to_owned(),
    }
}

fn platform_update(platform: Platform, runtime_version: &str, launch: FileRef, assets: Vec<FileRef>) -> PlatformUpdate {
    PlatformUpdate {
        platform,
        runtime_version: runtime_version.to_owned(),
        launch_asset: launch,
        assets,
    }
}

fn to_channel(channel: &str, updates: Vec<PlatformUpdate>) -> PublishRequest {
    PublishRequest {
        channel: Some(channel.to_owned()),
        branch: None,
        message: "router test".to_owned(),
        updates,
        expo_client: Some(expo_client()),
        rollout_percentage: None,
        halt_policy: None,
        no_halt: false,
        force: false,
        commit: None,
        allow_unsigned: false,
    }
}

/// The files of one standard update and what was published.
struct Published {
    bundle: Vec<u8>,
    png: Vec<u8>,
    ttf: Vec<u8>,
    group: PublishedGroup,
}

/// Uploads a bundle, a PNG and a font and publishes them for iOS, runtime 1.0.0, to `channel`.
async fn publish_standard(env: &Env, slug: &str, channel: &str, version: u32) -> Published {
    let (bundle, png, ttf) = (bundle(version), png(version), ttf());
    let b = env.upload(&bundle).await;
    let p = env.upload(&png).await;
    let t = env.upload(&ttf).await;
    let group = env
        .publish_ok(
            slug,
            &to_channel(
                channel,
                vec![platform_update(
                    Platform::Ios,
                    "1.0.0",
                    file(b, "js"),
                    vec![file(p, "png"), file(t, "ttf")],
                )],
            ),
        )
        .await;
    assert_eq!(group.updates.len(), 1);
    assert_eq!(group.updates[0].platform, Platform::Ios);
    assert_eq!(group.updates[0].runtime_version, "1.0.0");
    assert_eq!(group.manifest_url, format!("http://ota.test/apps/{slug}/manifest"));
    Published {
        bundle,
        png,
        ttf,
        group,
    }
}

/// A new server with app `demo` and one published iOS update on `production`.
async fn published_env() -> (Env, Published) {
    let env = Env::new().await;
    env.create_app("demo").await;
    let p = publish_standard(&env, "demo", "production", 1).await;
    (env, p)
}

/// Checks one manifest asset entry against the bytes that were uploaded for it.
#[track_caller]
fn assert_asset_entry(entry: &Value, bytes: &[u8], ext: &str, content_type: &str) {
    let hash = ContentHash::of(bytes).to_string();
    assert!(is_base64url_sha256(entry["hash"].as_str().unwrap()));
    assert_eq!(entry["hash"], hash);
    assert_eq!(entry["key"], Md5Key::of(bytes).to_string());
    let key = entry["key"].as_str().unwrap();
    assert!(key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(entry["fileExtension"], format!(".{ext}"));
    assert_eq!(entry["contentType"], content_type);
    assert_eq!(entry["url"], format!("http://ota.test/assets/{hash}.{ext}"));
}

// ---------------------------------------------------------------------------------------------
// Manifest: nothing published, unknown things, bad input

#[tokio::test]
async fn manifest_before_any_publish_is_204() {
    let env = Env::new().await;
    env.create_app("demo").await;
    env.check("demo", &Check::ios()).await.assert_no_update();
    // The default channel named explicitly, by header and by query.
    env.check("demo", &Check::ios().set("expo-channel-name", "production"))
        .await
        .assert_no_update();
    env.check("demo", &Check::ios().query("channel=production"))
        .await
        .assert_no_update();
    // A 204 must carry a version > 0 even for a protocol-0 request, or the client fails.
    env.check("demo", &Check::ios().unset("expo-protocol-version"))
        .await
        .assert_no_update();
    env.check("demo", &Check::new("android", "1.0.0"))
        .await
        .assert_no_update();
}

#[tokio::test]
async fn unknown_app_is_404_and_unknown_or_empty_channel_is_no_update() {
    let env = Env::new().await;
    env.create_app("demo").await;
    env.check("nope", &Check::ios())
        .await
        .assert_error(StatusCode::NOT_FOUND, "app_not_found");
    // A build shipped before its channel's first publish: "nothing new", never an error.
    env.check("demo", &Check::ios().set("expo-channel-name", "staging"))
        .await
        .assert_no_update();
    env.check("demo", &Check::ios().query("channel=staging"))
        .await
        .assert_no_update();
    // The app's default channel exists but has nothing in it yet.
    env.check("demo", &Check::ios()).await.assert_no_update();
    // A channel whose branch has updates for another runtime version only.
    publish_standard(&env, "demo", "production", 1).await;
    env.check("demo", &Check::new("ios", "9.9.9")).await.assert_no_update();
    env.check("nope", &Check::ios().set("expo-channel-name", "staging"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "app_not_found");
}

#[tokio::test]
async fn bad_manifest_requests_are_400_with_stable_codes() {
    let (env, p) = published_env().await;
    let id = p.group.updates[0].id.to_string();
    let cases: Vec<(&str, Check, &str)> = vec![
        ("no platform", Check::ios().unset("expo-platform"), "missing_platform"),
        ("web", Check::ios().set("expo-platform", "web"), "invalid_platform"),
        (
            "upper-case",
            Check::ios().set("expo-platform", "IOS"),
            "invalid_platform",
        ),
        (
            "empty platform",
            Check::ios().set("expo-platform", ""),
            "invalid_platform",
        ),
        (
            "no runtime version",
            Check::ios().unset("expo-runtime-version"),
            "missing_runtime_version",
        ),
        (
            "empty runtime version",
            Check::ios().set("expo-runtime-version", ""),
            "missing_runtime_version",
        ),
        (
            "garbage expect-signature",
            Check::ios().set("expo-expect-signature", "sig,,,="),
            "invalid_expect_signature",
        ),
        (
            "keyid not a string",
            Check::ios().set("expo-expect-signature", "sig, keyid=main"),
            "invalid_expect_signature",
        ),
        (
            "unknown alg",
            Check::ios().set("expo-expect-signature", r#"sig, alg="ecdsa-p256""#),
            "invalid_expect_signature",
        ),
        (
            "bad current update id",
            Check::ios().set("expo-current-update-id", "not-a-uuid"),
            "invalid_current_update_id",
        ),
        (
            "truncated current update id",
            Check::ios().set("expo-current-update-id", &id[..35]),
            "invalid_current_update_id",
        ),
        (
            "protocol 7",
            Check::ios().set("expo-protocol-version", "7"),
            "unsupported_protocol_version",
        ),
        (
            "protocol garbage",
            Check::ios().set("expo-protocol-version", "one"),
            "unsupported_protocol_version",
        ),
    ];
    for (what, check, code) in cases {
        let r = env.check("demo", &check).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        r.assert_error(StatusCode::BAD_REQUEST, code);
    }
    // The same platform and runtime rules apply to the query-string forms.
    env.check("demo", &Check::ios().unset("expo-platform").query("platform=web"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_platform");
    // Nothing above disturbed the served update.
    assert_eq!(manifest_json(&env.check("demo", &Check::ios()).await)["id"], id);
}

#[tokio::test]
async fn html_only_accept_is_406() {
    let (env, _) = published_env().await;
    env.check("demo", &Check::ios().set("accept", "text/html"))
        .await
        .assert_error(StatusCode::NOT_ACCEPTABLE, "not_acceptable");
    env.check("demo", &Check::ios().set("accept", "application/json;q=0"))
        .await
        .assert_error(StatusCode::NOT_ACCEPTABLE, "not_acceptable");
}

// ---------------------------------------------------------------------------------------------
// Manifest: a published update

#[tokio::test]
async fn published_update_is_served_as_multipart_per_check_1() {
    let (env, p) = published_env().await;
    let r = env.check("demo", &Check::ios()).await;
    let part = manifest_part(&r);
    assert_eq!(part.header("expo-signature"), None, "unsigned update");
    let m: Value = serde_json::from_slice(&part.body).unwrap();

    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "createdAt",
            "runtimeVersion",
            "launchAsset",
            "assets",
            "metadata",
            "extra"
        ]
    );
    let id = m["id"].as_str().unwrap();
    let parsed = Uuid::parse_str(id).unwrap();
    assert_eq!(id, parsed.hyphenated().to_string(), "lower-case hyphenated");
    assert_eq!(parsed, p.group.updates[0].id);
    let created_at = m["createdAt"].as_str().unwrap();
    assert!(is_iso_millis(created_at), "{created_at}");
    assert_eq!(created_at, p.group.created_at);
    assert_eq!(m["runtimeVersion"], "1.0.0");

    // The launch asset was uploaded as `js` and is served as `.bundle`.
    assert_asset_entry(&m["launchAsset"], &p.bundle, "bundle", "application/javascript");
    let assets = m["assets"].as_array().unwrap();
    assert_eq!(assets.len(), 2);
    assert_asset_entry(&assets[0], &p.png, "png", "image/png");
    assert_asset_entry(&assets[1], &p.ttf, "ttf", "font/ttf");
    let mut all_keys: Vec<&str> = assets
        .iter()
        .chain([&m["launchAsset"]])
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    all_keys.sort_unstable();
    all_keys.dedup();
    assert_eq!(all_keys.len(), 3, "asset keys are unique");

    assert_eq!(m["metadata"], json!({}));
    assert_eq!(m["extra"], json!({ "expoClient": expo_client() }));
}

#[tokio::test]
async fn json_negotiation() {
    let (env, p) = published_env().await;
    let multipart_body = manifest_part(&env.check("demo", &Check::ios()).await).body;
    for (accept, content_type) in [
        ("application/json", "application/json"),
        ("application/expo+json", "application/expo+json"),
        ("multipart/mixed;q=0.1, application/json", "application/json"),
        ("application/json;q=0.5, application/expo+json", "application/expo+json"),
        ("application/*", "application/expo+json"),
    ] {
        let r = env.check("demo", &Check::ios().set("accept", accept)).await;
        assert_eq!(r.status, StatusCode::OK, "{accept}");
        assert_eq!(r.header("content-type"), Some(content_type), "{accept}");
        assert_eq!(r.header("expo-protocol-version"), Some("1"));
        assert_eq!(r.header("expo-sfv-version"), Some("0"));
        assert_eq!(r.header("cache-control"), Some("private, max-age=0"));
        assert_eq!(r.header("expo-signature"), None);
        assert_eq!(&r.body[..], &multipart_body[..], "{accept}: body = manifest");
        let m: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(m["id"], p.group.updates[0].id.to_string());
    }
    // Anything that ranks multipart first, or says nothing, gets multipart.
    for accept in ["*/*", "multipart/*", "multipart/mixed", ACCEPT_ALL] {
        let r = env.check("demo", &Check::ios().set("accept", accept)).await;
        assert_eq!(manifest_part(&r).body, multipart_body, "{accept}");
    }
    let r = env.check("demo", &Check::ios().unset("accept")).await;
    assert_eq!(manifest_part(&r).body, multipart_body);
}

/// A `GET` of `/apps/{slug}/manifest` is answered by the front lane; an encoded slug or a `HEAD`
/// goes through the router. Both must give the same answer, byte for byte.
#[tokio::test]
async fn front_lane_and_router_answer_checks_alike() {
    let (env, p) = published_env().await;
    let id = p.group.updates[0].id.to_string();
    let checks = [
        Check::ios(),
        Check::ios().set("expo-current-update-id", &id),
        Check::ios().set("accept", "application/json"),
        Check::ios().set("expo-platform", "web"),
        Check::ios().set("expo-channel-name", "nope"),
        Check::ios()
            .unset("expo-runtime-version")
            .query("runtime-version=1.0.0"),
    ];
    for check in &checks {
        let headers: Vec<(&str, &str)> = check.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let suffix = if check.query.is_empty() {
            String::new()
        } else {
            format!("?{}", check.query)
        };
        let mut front = env.get(&format!("/apps/demo/manifest{suffix}"), &headers).await;
        let mut routed = env.get(&format!("/apps/%64emo/manifest{suffix}"), &headers).await;
        // axum's handlers state the length; hyper writes it from the body's exact size when a
        // response has none, so on the wire both carry the same content-length.
        for r in [&mut front, &mut routed] {
            if let Some(length) = r.headers.remove("content-length") {
                assert_eq!(length.to_str().unwrap(), r.body.len().to_string());
            }
        }
        assert_eq!(front.status, routed.status, "{:?}", check.headers);
        assert_eq!(front.headers, routed.headers, "{:?}", check.headers);
        assert_eq!(front.body, routed.body, "{:?}", check.headers);
        let head = env
            .request(Method::HEAD, &format!("/apps/demo/manifest{suffix}"), &headers)
            .await;
        assert_eq!(head.status, front.status);
        assert!(head.body.is_empty());
    }
    let statuses: Vec<u16> = [200, 204, 200, 400, 204, 200].to_vec();
    let mut got = Vec::new();
    for check in &checks {
        got.push(env.check("demo", check).await.status.as_u16());
    }
    assert_eq!(got, statuses);

    // A repeated header: the first value counts, in both lanes (only iOS is published).
    for path in ["/apps/demo/manifest", "/apps/%64emo/manifest"] {
        for (first, second, status) in [("ios", "android", 200), ("android", "ios", 204)] {
            let mut req = Request::builder().method(Method::GET).uri(path);
            for (k, v) in &Check::new(first, "1.0.0").headers {
                req = req.header(k, v);
            }
            let r = env
                .send(req.header("expo-platform", second).body(Body::empty()).unwrap())
                .await;
            assert_eq!(r.status, status, "{path}: the first expo-platform ({first}) counts");
        }
    }
    assert_eq!(manifest_json(&env.check("demo", &Check::ios()).await)["id"], id);
}

#[tokio::test]
async fn current_update_id_equal_to_the_head_is_204() {
    let (env, p) = published_env().await;
    let id = p.group.updates[0].id.to_string();
    env.check("demo", &Check::ios().set("expo-current-update-id", &id))
        .await
        .assert_no_update();
    // iOS may send upper-case UUIDs.
    env.check("demo", &Check::ios().set("expo-current-update-id", &id.to_uppercase()))
        .await
        .assert_no_update();
    // Also when the client asks for JSON.
    env.check(
        "demo",
        &Check::ios()
            .set("expo-current-update-id", &id)
            .set("accept", "application/json"),
    )
    .await
    .assert_no_update();
    // Running something else (the embedded update): the head is served.
    let other = Check::ios().set("expo-current-update-id", "0b4c6a2e-1111-4222-8333-944455556666");
    assert_eq!(manifest_json(&env.check("demo", &other).await)["id"], id);
}

#[tokio::test]
async fn protocol_0_always_gets_the_manifest() {
    let (env, p) = published_env().await;
    let id = p.group.updates[0].id.to_string();
    let v1_body = manifest_part(&env.check("demo", &Check::ios()).await).body;
    for check in [
        Check::ios().unset("expo-protocol-version"),
        Check::ios().set("expo-protocol-version", "0"),
        Check::ios()
            .unset("expo-protocol-version")
            .set("expo-current-update-id", &id),
        Check::ios()
            .set("expo-protocol-version", "0")
            .set("expo-current-update-id", &id),
    ] {
        let r = env.check("demo", &check).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("expo-protocol-version"), Some("0"));
        assert_eq!(r.header("expo-sfv-version"), Some("0"));
        assert_eq!(r.header("cache-control"), Some("private, max-age=0"));
        let ct = r.header("content-type").unwrap();
        assert!(ct.starts_with("multipart/mixed; boundary="), "{ct}");
        let parts = parse_multipart(ct, &r.body);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name(), Some("manifest"));
        assert_eq!(parts[0].body, v1_body);
    }
}

#[tokio::test]
async fn channel_by_header_and_by_query() {
    let env = Env::new().await;
    env.create_app("demo").await;
    // Publishing to a channel that does not exist creates it.
    env.check("demo", &Check::ios().set("expo-channel-name", "staging"))
        .await
        .assert_no_update();
    let p = publish_standard(&env, "demo", "staging", 1).await;
    let id = p.group.updates[0].id.to_string();

    let by_header = env
        .check("demo", &Check::ios().set("expo-channel-name", "staging"))
        .await;
    assert_eq!(manifest_json(&by_header)["id"], id);
    let by_query = env.check("demo", &Check::ios().query("channel=staging")).await;
    assert_eq!(manifest_json(&by_query)["id"], id);
    assert_eq!(manifest_part(&by_header).body, manifest_part(&by_query).body);

    // The default channel is untouched.
    env.check("demo", &Check::ios()).await.assert_no_update();
    env.check("demo", &Check::ios().query("channel=production"))
        .await
        .assert_no_update();

    // A second channel gets its own update; each channel keeps serving its own.
    let q = publish_standard(&env, "demo", "production", 2).await;
    let prod_id = q.group.updates[0].id.to_string();
    assert_ne!(prod_id, id);
    assert_eq!(manifest_json(&env.check("demo", &Check::ios()).await)["id"], prod_id);
    assert_eq!(
        manifest_json(
            &env.check("demo", &Check::ios().set("expo-channel-name", "staging"))
                .await
        )["id"],
        id
    );
}

#[tokio::test]
async fn platforms_are_isolated() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let b = env.upload(&bundle(1)).await;
    let p = env.upload(&png(1)).await;
    let a = env.upload(&bundle(2)).await;
    let group = env
        .publish_ok(
            "demo",
            &to_channel(
                "production",
                vec![
                    platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![file(p, "png")]),
                    platform_update(Platform::Android, "1.0.0", file(a, "hbc"), vec![file(p, "png")]),
                ],
            ),
        )
        .await;
    let id_of = |platform| {
        group
            .updates
            .iter()
            .find(|u| u.platform == platform)
            .unwrap()
            .id
            .to_string()
    };
    let ios = manifest_json(&env.check("demo", &Check::ios()).await);
    let android = manifest_json(&env.check("demo", &Check::new("android", "1.0.0")).await);
    assert_ne!(ios["id"], android["id"]);
    assert_eq!(ios["id"], id_of(Platform::Ios));
    assert_eq!(android["id"], id_of(Platform::Android));
    assert_eq!(ios["createdAt"], android["createdAt"], "one group, one time");
    assert_eq!(ios["launchAsset"]["hash"], b.to_string());
    assert_eq!(android["launchAsset"]["hash"], a.to_string());
    assert_eq!(android["launchAsset"]["fileExtension"], ".bundle");

    // An iOS-only publish afterwards leaves Android on its update.
    let c = env.upload(&bundle(3)).await;
    let later = env
        .publish_ok(
            "demo",
            &to_channel(
                "production",
                vec![platform_update(Platform::Ios, "1.0.0", file(c, "js"), vec![])],
            ),
        )
        .await;
    let ios2 = manifest_json(&env.check("demo", &Check::ios()).await);
    assert_eq!(ios2["id"], later.updates[0].id.to_string());
    assert_eq!(ios2["assets"], json!([]));
    let android2 = manifest_json(&env.check("demo", &Check::new("android", "1.0.0")).await);
    assert_eq!(android2["id"], id_of(Platform::Android));
}

#[tokio::test]
async fn runtime_versions_are_isolated() {
    let (env, p) = published_env().await;
    env.check("demo", &Check::new("ios", "2.0.0")).await.assert_no_update();
    env.check("demo", &Check::new("ios", "1.0")).await.assert_no_update();
    // A runtime-2 update does not replace what runtime 1 gets.
    let b = env.upload(&bundle(9)).await;
    let g = env
        .publish_ok(
            "demo",
            &to_channel(
                "production",
                vec![platform_update(Platform::Ios, "2.0.0", file(b, "js"), vec![])],
            ),
        )
        .await;
    let v2 = manifest_json(&env.check("demo", &Check::new("ios", "2.0.0")).await);
    assert_eq!(v2["id"], g.updates[0].id.to_string());
    assert_eq!(v2["runtimeVersion"], "2.0.0");
    let v1 = manifest_json(&env.check("demo", &Check::ios()).await);
    assert_eq!(v1["id"], p.group.updates[0].id.to_string());
    assert_eq!(v1["runtimeVersion"], "1.0.0");
}

// ---------------------------------------------------------------------------------------------
// Code signing

/// The members of an `expo-signature` value; every one must be an sf-string (iOS requires it).
fn signature_members(value: &str) -> Vec<(String, String)> {
    let dict: sfv::Dictionary = sfv::Parser::new(value.as_bytes()).parse().unwrap();
    dict.iter()
        .map(|(k, entry)| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("{k:?} is an inner list")
            };
            let sfv::BareItem::String(s) = &item.bare_item else {
                panic!("{k:?} is not an sf-string: {value}")
            };
            (k.as_str().to_owned(), s.as_str().to_owned())
        })
        .collect()
}

fn member<'a>(members: &'a [(String, String)], name: &str) -> Option<&'a str> {
    members.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn server_side_signing_verifies_over_the_exact_part_body() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let keys = aloft_core::keys::generate("aloft router test", 1).unwrap();
    let r = env
        .api(
            Method::PUT,
            "/api/v1/apps/demo/signing-key",
            &json!({"private_key_pem": keys.private_key_pem, "keyid": "main"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert_eq!(r.json()["server_signing"], true);
    let p = publish_standard(&env, "demo", "production", 1).await;
    assert!(p.group.updates[0].signed);

    let r = env
        .check("demo", &Check::ios().set("expo-expect-signature", EXPECT_MAIN))
        .await;
    let part = manifest_part(&r);
    assert_eq!(r.header("expo-signature"), None, "multipart: part header only");
    let members = signature_members(part.header("expo-signature").unwrap());
    assert_eq!(member(&members, "keyid"), Some("main"));
    assert!(matches!(member(&members, "alg"), None | Some("rsa-v1_5-sha256")));
    let sig = member(&members, "sig").unwrap();
    aloft_core::signature::verify(&keys.certificate_pem, &part.body, sig).unwrap();
    aloft_core::signature::verify(&keys.public_key_pem, &part.body, sig).unwrap();
    let m: Value = serde_json::from_slice(&part.body).unwrap();
    assert_eq!(m["id"], p.group.updates[0].id.to_string());

    // One flipped byte anywhere in the body breaks it.
    for i in [0, part.body.len() / 2, part.body.len() - 1] {
        let mut tampered = part.body.clone();
        tampered[i] ^= 0x01;
        assert!(
            aloft_core::signature::verify(&keys.certificate_pem, &tampered, sig).is_err(),
            "byte {i}"
        );
    }
    // And a different key does not verify it.
    let other = aloft_core::keys::generate("other", 1).unwrap();
    assert!(aloft_core::signature::verify(&other.certificate_pem, &part.body, sig).is_err());

    // JSON responses carry the signature as a top-level header over the same bytes.
    let r = env
        .check(
            "demo",
            &Check::ios()
                .set("expo-expect-signature", EXPECT_MAIN)
                .set("accept", "application/json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(&r.body[..], &part.body[..]);
    let members = signature_members(r.header("expo-signature").unwrap());
    assert_eq!(member(&members, "keyid"), Some("main"));
    aloft_core::signature::verify(&keys.certificate_pem, &r.body, member(&members, "sig").unwrap()).unwrap();

    // The device expects another key id (or the default `root`): refused, not silently served.
    for expect in [r#"sig, keyid="other", alg="rsa-v1_5-sha256""#, "sig"] {
        env.check("demo", &Check::ios().set("expo-expect-signature", expect))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "signature_keyid_mismatch");
    }
}

#[tokio::test]
async fn unsigned_update_with_expect_signature_is_400() {
    let (env, p) = published_env().await;
    assert!(!p.group.updates[0].signed);
    env.check("demo", &Check::ios().set("expo-expect-signature", EXPECT_MAIN))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "signature_unavailable");
    env.check(
        "demo",
        &Check::ios()
            .set("expo-expect-signature", EXPECT_MAIN)
            .set("accept", "application/json"),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "signature_unavailable");
}

// ---------------------------------------------------------------------------------------------
// Publishing again

#[tokio::test]
async fn second_publish_is_served_and_first_assets_stay() {
    let (env, first) = published_env().await;
    let m1 = manifest_json(&env.check("demo", &Check::ios()).await);
    let second = publish_standard(&env, "demo", "production", 2).await;
    let m2 = manifest_json(&env.check("demo", &Check::ios()).await);

    assert_eq!(m2["id"], second.group.updates[0].id.to_string());
    assert_ne!(m1["id"], m2["id"]);
    let (c1, c2) = (m1["createdAt"].as_str().unwrap(), m2["createdAt"].as_str().unwrap());
    assert!(is_iso_millis(c2), "{c2}");
    assert!(c2 > c1, "createdAt {c2} is not after {c1}");
    assert_ne!(m1["launchAsset"]["hash"], m2["launchAsset"]["hash"]);

    // A device on the first update is offered the second; one on the second is up to date.
    let on_first = Check::ios().set("expo-current-update-id", m1["id"].as_str().unwrap());
    assert_eq!(manifest_json(&env.check("demo", &on_first).await)["id"], m2["id"]);
    env.check(
        "demo",
        &Check::ios().set("expo-current-update-id", m2["id"].as_str().unwrap()),
    )
    .await
    .assert_no_update();

    // Every asset of the first update is still served, byte for byte (check 13).
    let expected = [
        (&m1["launchAsset"], &first.bundle),
        (&m1["assets"][0], &first.png),
        (&m1["assets"][1], &first.ttf),
    ];
    for (entry, bytes) in expected {
        let r = env.get_url(entry["url"].as_str().unwrap(), &[("accept", "*/*")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", entry["url"]);
        assert_eq!(&r.body[..], &bytes[..]);
        assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
    }
}

// ---------------------------------------------------------------------------------------------
// Assets

#[tokio::test]
async fn every_manifest_asset_url_serves_its_bytes() {
    let (env, p) = published_env().await;
    let m = manifest_json(&env.check("demo", &Check::ios()).await);
    let expected = [
        (&m["launchAsset"], &p.bundle, "application/javascript"),
        (&m["assets"][0], &p.png, "image/png"),
        (&m["assets"][1], &p.ttf, "font/ttf"),
    ];
    for (entry, bytes, content_type) in expected {
        let url = entry["url"].as_str().unwrap();
        assert!(url.starts_with("http://ota.test/assets/"), "{url}");
        let r = env.get_url(url, &[("accept", "*/*")]).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.header("content-type"), Some(content_type), "{url}");
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(&r.body[..], &bytes[..]);
        assert_eq!(ContentHash::of(&r.body).to_string(), entry["hash"]);
        assert_eq!(Md5Key::of(&r.body).to_string(), entry["key"]);
    }
}

#[tokio::test]
async fn asset_get_head_conditional_and_ranges() {
    let (env, p) = published_env().await;
    let hash = ContentHash::of(&p.png);
    let uri = format!("/assets/{hash}.png");
    let len = p.png.len().to_string();
    let etag = format!("\"{hash}\"");

    let get = env.get(&uri, &[]).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.header("content-type"), Some("image/png"));
    assert_eq!(get.header("content-length"), Some(len.as_str()));
    assert_eq!(get.header("cache-control"), Some(IMMUTABLE));
    assert_eq!(get.header("etag"), Some(etag.as_str()));
    assert_eq!(get.header("accept-ranges"), Some("bytes"));
    assert_eq!(&get.body[..], &p.png[..]);

    let head = env.request(Method::HEAD, &uri, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(len.as_str()));
    assert_eq!(head.header("content-type"), Some("image/png"));
    assert_eq!(head.header("cache-control"), Some(IMMUTABLE));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert!(head.body.is_empty());

    // Content type follows the extension in the URL.
    for (ext, ct) in [
        ("bundle", "application/javascript"),
        ("js", "application/javascript"),
        ("ttf", "font/ttf"),
        ("json", "application/json"),
        ("xyz", "application/octet-stream"),
    ] {
        let r = env.get(&format!("/assets/{hash}.{ext}"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{ext}");
        assert_eq!(r.header("content-type"), Some(ct), "{ext}");
        assert_eq!(&r.body[..], &p.png[..]);
    }

    // Conditional requests.
    let r = env.get(&uri, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
    let r = env.get(&uri, &[("if-none-match", &format!("\"other\", {etag}"))]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = env.get(&uri, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &p.png[..]);

    // Ranges.
    let r = env.get(&uri, &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), Some(format!("bytes 0-9/{len}").as_str()));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(&r.body[..], &p.png[..10]);
    let r = env.get(&uri, &[("range", "bytes=-5")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &p.png[p.png.len() - 5..]);
    let r = env.get(&uri, &[("range", &format!("bytes={}-", p.png.len()))]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn asset_names_are_validated_never_5xx() {
    let (env, p) = published_env().await;
    let hash = ContentHash::of(&p.png).to_string();
    let invalid = [
        "/assets/....png".to_owned(),
        format!("/assets/{}", "A".repeat(44)),
        format!("/assets/{}.png", "A".repeat(44)),
        format!("/assets/{}.png", &hash[..42]),
        format!("/assets/{hash}..png"),
        format!("/assets/{hash}.p%2Fng"),
        format!("/assets/{hash}.png%00"),
        format!("/assets/{hash}=.png"),
        "/assets/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "/assets/..%5C..%5Cwindows%5Cwin.ini".to_owned(),
    ];
    for uri in &invalid {
        env.get(uri, &[])
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_asset_name");
    }
    // Paths the router itself refuses, or that cannot be decoded: still JSON errors, never 5xx.
    for uri in ["/assets/../../etc/passwd", "/assets/a/b.png"] {
        let r = env.get(uri, &[]).await;
        assert!(r.status.is_client_error(), "{uri}: {}", r.status);
        r.assert_json_error_shape();
    }
}

#[tokio::test]
async fn undecodable_path_segments_are_json_errors() {
    // `%FF` decodes to bytes that are not UTF-8. Every error of the HTTP surfaces is meant to be
    // `{"error":{"code",...}}` JSON, including path segments the extractor cannot decode.
    let (env, _) = published_env().await;
    let auth = format!("Bearer {}", env.token);
    for (method, uri) in [
        (Method::GET, "/assets/%FF%FE.png"),
        (Method::HEAD, "/assets/%FF%FE.png"),
        (Method::GET, "/apps/%FF/manifest"),
        (Method::GET, "/api/v1/apps/%FF"),
        (Method::PUT, "/api/v1/blobs/%FF"),
    ] {
        let r = env
            .request(
                method.clone(),
                uri,
                &[
                    ("authorization", &auth),
                    ("expo-platform", "ios"),
                    ("expo-runtime-version", "1.0.0"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {uri}");
        if method != Method::HEAD {
            r.assert_json_error_shape();
        } else {
            assert_eq!(r.header("content-type"), Some("application/json"), "{uri}");
        }
    }
}

#[tokio::test]
async fn if_none_match_uses_weak_comparison() {
    // RFC 9110 §13.1.2: If-None-Match is evaluated with the weak comparison function, so a
    // validator a CDN weakened (`W/"…"`) still revalidates to 304.
    let (env, p) = published_env().await;
    let hash = ContentHash::of(&p.png);
    let uri = format!("/assets/{hash}.png");
    let r = env.get(&uri, &[("if-none-match", &format!("W/\"{hash}\""))]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_restarted_server_serves_the_same_bytes() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let keys = aloft_core::keys::generate("aloft router test", 1).unwrap();
    let r = env
        .api(
            Method::PUT,
            "/api/v1/apps/demo/signing-key",
            &json!({"private_key_pem": keys.private_key_pem, "keyid": "main"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let p = publish_standard(&env, "demo", "production", 1).await;
    let signed = Check::ios().set("expo-expect-signature", EXPECT_MAIN);
    let before = manifest_part(&env.check("demo", &signed).await);

    let env = env.restart().await;
    let after = manifest_part(&env.check("demo", &signed).await);
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("expo-signature"), before.header("expo-signature"));
    let members = signature_members(after.header("expo-signature").unwrap());
    aloft_core::signature::verify(&keys.certificate_pem, &after.body, member(&members, "sig").unwrap()).unwrap();
    env.check(
        "demo",
        &Check::ios().set("expo-current-update-id", &p.group.updates[0].id.to_string()),
    )
    .await
    .assert_no_update();
    let m: Value = serde_json::from_slice(&after.body).unwrap();
    let r = env.get_url(m["launchAsset"]["url"].as_str().unwrap(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &p.bundle[..]);
    // The token and the apps survived too.
    env.api(Method::POST, "/api/v1/apps", &json!({"slug": "demo"}))
        .await
        .assert_error(StatusCode::CONFLICT, "app_exists");
}

#[tokio::test]
async fn unknown_asset_is_404() {
    let (env, _) = published_env().await;
    let never = ContentHash::of(b"never uploaded");
    env.get(&format!("/assets/{never}.png"), &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "asset_not_found");
    let head = env.request(Method::HEAD, &format!("/assets/{never}.png"), &[]).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert!(head.body.is_empty());
}

/// A launch asset's answers vary on what decides a bundle patch (docs/patches.md).
const LAUNCH_VARY: &str =
    "accept-encoding, a-im, expo-current-update-id, expo-embedded-update-id, expo-requested-update-id";

#[tokio::test]
async fn precompressed_variants_after_background_compression() {
    let (env, p) = published_env().await;
    let m = manifest_json(&env.check("demo", &Check::ios()).await);
    let url = m["launchAsset"]["url"].as_str().unwrap();
    let hash = ContentHash::of(&p.bundle);
    env.wait_compressed(&hash).await;
    let rec = aloft_store::db::blobs::get(env.db(), &hash).await.unwrap().unwrap();
    let (br_size, gz_size) = (rec.br_size.unwrap(), rec.gz_size.unwrap());
    assert!(br_size < p.bundle.len() as u64 && gz_size < p.bundle.len() as u64);

    for accept in ["br", "gzip, deflate, br", "zstd, br, gzip", "br;q=1.0"] {
        let r = env.get_url(url, &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, StatusCode::OK, "{accept}");
        assert_eq!(r.header("content-encoding"), Some("br"), "{accept}");
        assert_eq!(r.header("vary"), Some(LAUNCH_VARY));
        assert_eq!(r.header("content-type"), Some("application/javascript"));
        assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
        assert_eq!(r.header("etag"), Some(format!("\"{hash}-br\"").as_str()));
        assert_eq!(r.header("content-length"), Some(br_size.to_string().as_str()));
        assert_eq!(r.body.len() as u64, br_size);
        let decoded = br_decode(&r.body);
        assert_eq!(ContentHash::of(&decoded).to_string(), m["launchAsset"]["hash"]);
        assert_eq!(Md5Key::of(&decoded).to_string(), m["launchAsset"]["key"]);
        assert_eq!(decoded, p.bundle);
    }
    for accept in ["gzip", "br;q=0, gzip"] {
        let r = env.get_url(url, &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, StatusCode::OK, "{accept}");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{accept}");
        assert_eq!(r.header("vary"), Some(LAUNCH_VARY));
        assert_eq!(r.body.len() as u64, gz_size);
        assert_eq!(gz_decode(&r.body), p.bundle);
    }
    for headers in [vec![], vec![("accept-encoding", "identity")]] {
        let r = env.get_url(url, &headers).await;
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), Some(LAUNCH_VARY));
        assert_eq!(&r.body[..], &p.bundle[..]);
    }
    // HEAD describes the representation a GET would send.
    let path = url.strip_prefix("http://ota.test").unwrap();
    let head = env.request(Method::HEAD, path, &[("accept-encoding", "br")]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert_eq!(head.header("content-length"), Some(br_size.to_string().as_str()));
    assert!(head.body.is_empty());
    // A range is of the identity bytes, whatever the client accepts.
    let r = env
        .get_url(url, &[("accept-encoding", "br"), ("range", "bytes=0-9")])
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(&r.body[..], &p.bundle[..10]);

    // An already-compressed image has no variants: identity even when brotli is accepted.
    let png_hash = ContentHash::of(&p.png);
    env.wait_compressed(&png_hash).await;
    let r = env
        .get(&format!("/assets/{png_hash}.png"), &[("accept-encoding", "br, gzip")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(&r.body[..], &p.png[..]);
}

// ---------------------------------------------------------------------------------------------
// Management API

#[tokio::test]
async fn management_api_requires_a_valid_token() {
    let env = Env::new().await;
    let body = serde_json::to_vec(&json!({"slug": "demo"})).unwrap();
    for auth in [
        None,
        Some("Bearer aloft_0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer "),
        Some(&*format!("Basic {}", env.token)),
        Some(&*env.token),
    ] {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/apps")
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = env.send(req.body(Body::from(body.clone())).unwrap()).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // Nothing was created.
    env.check("demo", &Check::ios())
        .await
        .assert_error(StatusCode::NOT_FOUND, "app_not_found");

    let r = env.get("/api/v1/apps", &[]).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let bytes = bundle(1);
    let hash = ContentHash::of(&bytes);
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/v1/blobs/{hash}"))
        .header("authorization", "Bearer wrong")
        .body(Body::from(bytes.clone()))
        .unwrap();
    env.send(req)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(aloft_store::db::blobs::get(env.db(), &hash).await.unwrap().is_none());

    // The right token works.
    let r = env
        .get("/api/v1/apps", &[("authorization", &format!("Bearer {}", env.token))])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn invalid_json_is_400() {
    let env = Env::new().await;
    env.create_app("demo").await;
    for (uri, body) in [
        ("/api/v1/apps", "{\"slug\":"),
        ("/api/v1/apps", "not json"),
        ("/api/v1/apps/demo/publish", "{\"channel\": \"production\", "),
    ] {
        env.api_raw(Method::POST, uri, Some("application/json"), body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    }
    // Well-formed JSON of the wrong shape is refused too, with the same code.
    let r = env
        .api(Method::POST, "/api/v1/apps", &json!({"slug": "x", "extra": 1}))
        .await;
    assert!(r.status.is_client_error());
    r.assert_json_error_shape();
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    // A body that is not declared as JSON.
    env.api_raw(Method::POST, "/api/v1/apps", None, "{\"slug\":\"x\"}")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

#[tokio::test]
async fn upload_must_match_its_hash() {
    let env = Env::new().await;
    let claimed = ContentHash::of(b"the bytes the URL names");
    let r = env
        .api_raw(
            Method::PUT,
            &format!("/api/v1/blobs/{claimed}"),
            Some("application/octet-stream"),
            &b"other bytes entirely"[..],
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "hash_mismatch");
    assert!(aloft_store::db::blobs::get(env.db(), &claimed).await.unwrap().is_none());
    let actual = ContentHash::of(b"other bytes entirely");
    assert!(aloft_store::db::blobs::get(env.db(), &actual).await.unwrap().is_none());
    let missing = env
        .api(
            Method::POST,
            "/api/v1/blobs/missing",
            &json!({"hashes": [claimed.to_string()]}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::OK);
    assert_eq!(missing.json(), json!({"missing": [claimed.to_string()]}));
    env.get(&format!("/assets/{claimed}.png"), &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "asset_not_found");
    assert_eq!(env.staged_files(), 0, "a refused upload leaves no staged file");

    // A malformed hash in the URL.
    env.api_raw(Method::PUT, "/api/v1/blobs/not-a-hash", None, &b"x"[..])
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_hash");

    // The right bytes are accepted and then served.
    env.upload(b"the bytes the URL names").await;
    let r = env.get(&format!("/assets/{claimed}.txt"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"the bytes the URL names");
    // Uploading it again is idempotent.
    env.upload(b"the bytes the URL names").await;
}

#[tokio::test]
async fn upload_over_the_limit_is_413() {
    let env = Env::new().await;
    let big = vec![b'a'; MAX_UPLOAD as usize + 1];
    let hash = ContentHash::of(&big);
    // Declared up front...
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/v1/blobs/{hash}"))
        .header("authorization", format!("Bearer {}", env.token))
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    env.send(req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large");
    // ...or only found out while streaming.
    env.api_raw(Method::PUT, &format!("/api/v1/blobs/{hash}"), None, big.clone())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large");
    assert!(aloft_store::db::blobs::get(env.db(), &hash).await.unwrap().is_none());
    env.get(&format!("/assets/{hash}.bundle"), &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "asset_not_found");
    assert_eq!(env.staged_files(), 0, "a refused upload leaves no staged file");
    // Exactly at the limit is fine.
    let at_limit = vec![b'b'; MAX_UPLOAD as usize];
    env.upload(&at_limit).await;
}

#[tokio::test]
async fn publish_with_a_missing_blob_is_refused_and_serves_nothing() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let b = env.upload(&bundle(1)).await;
    let never = ContentHash::of(b"never uploaded");
    for updates in [
        vec![platform_update(Platform::Ios, "1.0.0", file(never, "js"), vec![])],
        vec![platform_update(
            Platform::Ios,
            "1.0.0",
            file(b, "js"),
            vec![file(never, "png")],
        )],
        // One good platform does not let the group through partially.
        vec![
            platform_update(Platform::Android, "1.0.0", file(b, "js"), vec![]),
            platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![file(never, "png")]),
        ],
    ] {
        env.publish("demo", &to_channel("production", updates))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "missing_blob");
    }
    env.check("demo", &Check::ios()).await.assert_no_update();
    env.check("demo", &Check::new("android", "1.0.0"))
        .await
        .assert_no_update();
    // A refused publish to a new channel does not create the channel either.
    env.publish(
        "demo",
        &to_channel(
            "beta",
            vec![platform_update(Platform::Ios, "1.0.0", file(never, "js"), vec![])],
        ),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "missing_blob");
    env.check("demo", &Check::ios().set("expo-channel-name", "beta"))
        .await
        .assert_no_update();
    let channels = env
        .api_raw(Method::GET, "/api/v1/apps/demo/channels", None, Body::empty())
        .await
        .json();
    assert!(!channels.to_string().contains("\"beta\""), "{channels}");
}

#[tokio::test]
async fn publish_needs_exactly_one_target() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let b = env.upload(&bundle(1)).await;
    let updates = vec![platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![])];
    let both = PublishRequest {
        branch: Some("production".into()),
        ..to_channel("production", updates.clone())
    };
    env.publish("demo", &both)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_target");
    let neither = PublishRequest {
        channel: None,
        ..to_channel("production", updates)
    };
    env.publish("demo", &neither)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_target");
    env.check("demo", &Check::ios()).await.assert_no_update();
    // Publishing to an unknown app.
    let b2 = to_channel(
        "production",
        vec![platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![])],
    );
    env.publish("nope", &b2)
        .await
        .assert_error(StatusCode::NOT_FOUND, "app_not_found");
}

#[tokio::test]
async fn duplicate_and_invalid_apps() {
    let env = Env::new().await;
    env.create_app("demo").await;
    env.api(Method::POST, "/api/v1/apps", &json!({"slug": "demo"}))
        .await
        .assert_error(StatusCode::CONFLICT, "app_exists");
    env.api(Method::POST, "/api/v1/apps", &json!({"slug": "Not A Slug"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_slug");
    let list = env.api(Method::GET, "/api/v1/apps", &json!(null)).await;
    assert_eq!(list.status, StatusCode::OK);
    let slugs: Vec<Value> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].clone())
        .collect();
    assert_eq!(slugs, [json!("demo")]);
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let env = Env::new().await;
    let r = env.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"ok\n");
    for uri in ["/nope", "/apps/demo/nope", "/api/v1/nope", "/assets"] {
        env.get(uri, &[]).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    // An app's page is the dashboard's: signed out, it sends the browser to sign in.
    let r = env.get("/apps/demo", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    env.request(Method::DELETE, "/healthz", &[])
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

// ---------------------------------------------------------------------------------------------
// Dry runs, signatures required, key ids, createdAt

/// The groups of app `demo`, newest first.
async fn group_list(env: &Env) -> Vec<Value> {
    env.api_raw(Method::GET, "/api/v1/apps/demo/groups", None, Body::empty())
        .await
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn prepare_is_a_strict_boolean_and_a_typo_does_nothing() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let b = env.upload(&bundle(1)).await;
    let req = serde_json::to_value(to_channel(
        "production",
        vec![platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![])],
    ))
    .unwrap();
    for bad in [
        "prepare=yes",
        "prepare=on",
        "prepare=ture",
        "prepare=TRUE",
        "prepare=2",
        "prepare=",
        "prepare=true&prepare=false",
    ] {
        let r = env
            .api(Method::POST, &format!("/api/v1/apps/demo/publish?{bad}"), &req)
            .await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_prepare");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("true, false, 1 or 0")
                || bad.contains('&')
        );
    }
    assert!(group_list(&env).await.is_empty());
    env.check("demo", &Check::ios()).await.assert_no_update();

    // The accepted spellings of a dry run return the bodies and store nothing.
    for dry in [
        "prepare",
        "prepare=true",
        "prepare=1",
        "other=x&prepare=1",
        "prepare=1&prepare=true",
    ] {
        let r = env
            .api(Method::POST, &format!("/api/v1/apps/demo/publish?{dry}"), &req)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{dry}: {}", r.json());
        assert_eq!(r.json()["updates"].as_array().unwrap().len(), 1, "{dry}");
    }
    assert!(group_list(&env).await.is_empty());
    // And the two spellings of "for real" publish.
    for real in ["prepare=false", "prepare=0"] {
        let r = env
            .api(Method::POST, &format!("/api/v1/apps/demo/publish?{real}"), &req)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{real}: {}", r.json());
    }
    let groups = group_list(&env).await;
    assert_eq!(groups.len(), 2);
    let newest = groups[0]["id"].as_str().unwrap().to_owned();

    // Every operation that takes `prepare` refuses a typo before doing anything.
    let operations = [
        (
            "/api/v1/apps/demo/rollbacks".to_owned(),
            json!({"channel": "production"}),
        ),
        (format!("/api/v1/apps/demo/groups/{newest}/republish"), json!({})),
        (format!("/api/v1/apps/demo/groups/{newest}/disable"), json!({})),
        (format!("/api/v1/apps/demo/groups/{newest}/rollout/revert"), json!({})),
        (
            "/api/v1/apps/demo/channels/production/rollout".to_owned(),
            json!({"action": "start", "branch": "next", "percentage": 10}),
        ),
    ];
    for (path, body) in &operations {
        env.api(Method::POST, &format!("{path}?prepare=yes"), body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_prepare");
    }
    let after = group_list(&env).await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|g| g["disabled"].is_null() || g["disabled"] == false),
        "{after:?}"
    );
    let head = manifest_json(&env.check("demo", &Check::ios()).await);
    assert_eq!(head["id"], groups[0]["updates"][0]["id"]);
}

/// Gives app `slug` a server-side key with `keyid`; returns the key pair.
async fn server_key(env: &Env, slug: &str, keyid: &str) -> aloft_core::keys::GeneratedKeys {
    let keys = aloft_core::keys::generate("aloft router test", 1).unwrap();
    let r = env
        .api(
            Method::PUT,
            &format!("/api/v1/apps/{slug}/signing-key"),
            &json!({"private_key_pem": keys.private_key_pem, "keyid": keyid}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    keys
}

#[tokio::test]
async fn an_unsigned_commit_on_a_signed_app_needs_allow_unsigned() {
    let env = Env::new().await;
    env.create_app("demo").await;
    server_key(&env, "demo", "main").await;
    let signed = publish_standard(&env, "demo", "production", 1).await;
    assert!(signed.group.updates[0].signed);
    // The key is removed (or the publisher forgot --signing-key): the devices still expect
    // signatures, so an unsigned update would stop every one of them from updating.
    let r = env
        .api(Method::DELETE, "/api/v1/apps/demo/signing-key", &json!(null))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    let b = env.upload(&bundle(2)).await;
    let mut req = to_channel(
        "production",
        vec![platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![])],
    );
    let r = env.publish("demo", &req).await;
    r.assert_error(StatusCode::CONFLICT, "signature_required");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("--signing-key") && message.contains("--allow-unsigned"),
        "{message}"
    );
    // A rollback would republish unsigned too.
    env.api(
        Method::POST,
        "/api/v1/apps/demo/rollbacks",
        &json!({"channel": "production"}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "nothing_to_roll_back");
    assert_eq!(group_list(&env).await.len(), 1);
    let head = manifest_json(
        &env.check("demo", &Check::ios().set("expo-expect-signature", EXPECT_MAIN))
            .await,
    );
    assert_eq!(head["id"], signed.group.updates[0].id.to_string());

    // Asked for explicitly, it is stored unsigned.
    req.allow_unsigned = true;
    let published = env.publish_ok("demo", &req).await;
    assert!(!published.updates[0].signed);
    // A republish of the signed group without a key is refused the same way, unless allowed.
    let path = format!("/api/v1/apps/demo/groups/{}/republish", signed.group.group_id);
    env.api(Method::POST, &path, &json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "signature_required");
    let r = env.api(Method::POST, &path, &json!({"allow_unsigned": true})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());

    // An app that never signed publishes unsigned without being asked.
    env.create_app("plain").await;
    publish_standard(&env, "plain", "production", 3).await;
    publish_standard(&env, "plain", "production", 4).await;
}

#[tokio::test]
async fn the_signature_carries_the_apps_own_key_id() {
    let env = Env::new().await;
    for (slug, keyid) in [("a1", "release-2026"), ("a2", "root"), ("a3", "k.1_x")] {
        env.create_app(slug).await;
        let keys = server_key(&env, slug, keyid).await;
        publish_standard(&env, slug, "production", 1).await;
        let expect = format!(r#"sig, keyid="{keyid}", alg="rsa-v1_5-sha256""#);
        let r = env
            .check(slug, &Check::ios().set("expo-expect-signature", &expect))
            .await;
        let part = manifest_part(&r);
        let members = signature_members(part.header("expo-signature").unwrap());
        assert_eq!(member(&members, "keyid"), Some(keyid));
        aloft_core::signature::verify(&keys.certificate_pem, &part.body, member(&members, "sig").unwrap()).unwrap();
        // JSON answers carry the same key id in their header.
        let r = env
            .check(
                slug,
                &Check::ios()
                    .set("expo-expect-signature", &expect)
                    .set("accept", "application/json"),
            )
            .await;
        let members = signature_members(r.header("expo-signature").unwrap());
        assert_eq!(member(&members, "keyid"), Some(keyid));
        // A device that expects `main` is refused rather than served another key's signature.
        env.check(slug, &Check::ios().set("expo-expect-signature", EXPECT_MAIN))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "signature_keyid_mismatch");
    }
    // The client's default key id is `root`: a bare `sig` matches a key named so.
    let r = env.check("a2", &Check::ios().set("expo-expect-signature", "sig")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn created_at_only_grows_in_the_service_and_in_the_store() {
    let env = Env::new().await;
    env.create_app("demo").await;
    let first = publish_standard(&env, "demo", "production", 1).await;
    let newest = aloft_core::time::Millis::parse_iso(&first.group.created_at).unwrap();

    // The service: a commit whose createdAt is not after the newest update is refused.
    let b = env.upload(&bundle(2)).await;
    let req = to_channel(
        "production",
        vec![platform_update(Platform::Ios, "1.0.0", file(b, "js"), vec![])],
    );
    let r = env
        .api(
            Method::POST,
            "/api/v1/apps/demo/publish?prepare=true",
            &serde_json::to_value(&req).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let prepared: aloft_core::api::PreparedGroup = serde_json::from_slice(&r.body).unwrap();
    let commit_at = |created_at: aloft_core::time::Millis| {
        let mut req = req.clone();
        req.commit = Some(aloft_core::api::CommitInfo {
            group_id: prepared.group_id,
            created_at: created_at.to_iso(),
            updates: prepared
                .updates
                .iter()
                .map(|u| aloft_core::api::CommitUpdate {
                    platform: u.platform,
                    runtime_version: u.runtime_version.clone(),
                    id: u.id,
                    sha256: ContentHash::of(u.body.as_bytes()).to_hex(),
                    signature: None,
                })
                .collect(),
        });
        req
    };
    for t in [
        newest,
        aloft_core::time::Millis(newest.0 - 1),
        aloft_core::time::Millis(newest.0 - 86_400_000),
    ] {
        env.publish("demo", &commit_at(t))
            .await
            .assert_error(StatusCode::CONFLICT, "stale_created_at");
    }
    assert_eq!(group_list(&env).await.len(), 1);

    // The store, on its own: inserting a group that is not later than the newest is refused.
    let app = aloft_store::db::apps::by_slug(env.db(), &aloft_core::AppSlug::parse("demo").unwrap())
        .await
        .unwrap();
    for t in [newest.0, newest.0 - 1] {
        let mut tx = env.db().begin_write().await.unwrap();
        let branch_id = aloft_store::db::channels::branch_id(&mut tx, app.id, "production")
            .await
            .unwrap();
        let group = aloft_store::db::updates::NewGroup {
            id: Uuid::new_v4(),
            app_id: app.id,
            branch_id,
            kind: aloft_store::db::updates::GroupKind::Update,
            message: "stale".into(),
            created_at: aloft_core::time::Millis(t),
            published_by: "test".into(),
            rollout: None,
            republished_from: None,
            updates: vec![aloft_store::db::updates::NewUpdate {
                id: Uuid::new_v4(),
                platform: Platform::Ios,
                runtime_version: aloft_core::RuntimeVersion::parse("1.0.0").unwrap(),
                body: b"{}".to_vec(),
                signature: None,
                blobs: vec![b],
                republished_from: None,
            }],
        };
        let err = aloft_store::db::updates::insert_group(&mut tx, &group)
            .await
            .unwrap_err();
        assert!(
            matches!(err, aloft_store::DbError::StaleCreatedAt { created_at, newest: n } if created_at == t && n == newest.0),
            "{err:?}"
        );
    }
    // The prepared createdAt, later than the newest, is accepted.
    let ok = commit_at(aloft_core::time::Millis::parse_iso(&prepared.created_at).unwrap());
    assert!(prepared.created_at > first.group.created_at);
    let r = env.publish("demo", &ok).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
}
