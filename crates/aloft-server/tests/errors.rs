//! Refusals in plain words: bad bodies, paths and queries sent to many routes of the production
//! `aloft_server::app` get a stable code and a message that names the field and what it accepts,
//! and no message speaks Rust (type names, library error texts). Also `publish/check`, which
//! refuses what a publish would refuse, before anything is uploaded.

#![allow(clippy::unwrap_used)]

use aloft_core::api::{FileRef, PlatformUpdate, PublishRequest};
use aloft_core::{ContentHash, Platform};
use aloft_server::{AppState, ServerConfig};
use aloft_store::testing::Backend;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

struct Env {
    _dir: TempDir,
    state: AppState,
    token: String,
}

struct Resp {
    status: StatusCode,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (db, blobs) = Backend::from_env().fresh(dir.path()).open().await;
        let config = ServerConfig {
            listen: "127.0.0.1:3000".parse().unwrap(),
            public_url: "http://ota.test".into(),
            max_upload_bytes: 1 << 20,
            asset_base_url: None,
            asset_delivery: Default::default(),
            asset_cache_bytes: 1 << 20,
            dashboard: true,
        };
        let (_, token) = aloft_store::db::tokens::create(&db, "test", &aloft_store::db::tokens::Scope::Admin, None)
            .await
            .unwrap();
        let state = AppState::new(config, db, blobs, None).await.unwrap();
        let env = Self {
            _dir: dir,
            state,
            token,
        };
        let r = env.json(Method::POST, "/api/v1/apps", json!({"slug": "demo"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        env
    }

    async fn send(&self, method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = aloft_server::app(self.state.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
        };
        Resp { status, body }
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> Resp {
        self.send(
            method,
            uri,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    async fn upload(&self, bytes: &[u8]) -> ContentHash {
        let hash = ContentHash::of(bytes);
        let r = self
            .send(
                Method::PUT,
                &format!("/api/v1/blobs/{hash}"),
                Some("application/octet-stream"),
                bytes.to_vec(),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        hash
    }
}

/// Words that give away Rust or a library: type names, paths, debug output, serde's and axum's
/// phrasing.
fn rust_isms(message: &str) -> Vec<String> {
    let mut found: Vec<String> = [
        "struct ",
        "enum ",
        "i64",
        "u64",
        "u32",
        "u8",
        "usize",
        "::",
        "Error(",
        "Some(",
        "Option<",
        "Vec<",
        "String",
        "serde",
        "axum",
        "Failed to deserialize",
        "unknown variant",
        "invalid type:",
        "Uuid",
        "UUID parsing failed",
        "invalid digit found",
        "sequence",
    ]
    .iter()
    .filter(|w| message.contains(**w))
    .map(|w| (*w).to_owned())
    .collect();
    // CamelCase words that start with Invalid (`InvalidEncoding`, `InvalidPlatform`…).
    for (i, _) in message.match_indices("Invalid") {
        if message[i + 7..].starts_with(|c: char| c.is_ascii_uppercase()) {
            found.push(message[i..].split_whitespace().next().unwrap_or_default().to_owned());
        }
    }
    found
}

#[test]
fn the_rust_ism_list_catches_what_the_libraries_said() {
    for said in [
        "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected struct CreateApp",
        "Cannot parse `abc` to a `i64`",
        "the key was rejected: InvalidEncoding",
        "unknown variant `web`, expected `ios` or `android`",
        "Failed to deserialize query string: limit: invalid digit found in string",
    ] {
        assert!(!rust_isms(said).is_empty(), "{said}");
    }
    assert!(rust_isms("field `percentage` must be a whole number from 0 to 100, not 300").is_empty());
}

/// One refusal to provoke: the request, and what the answer must be.
struct Case {
    method: Method,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// Texts the message must contain (the field, what it accepts).
    says: Vec<&'static str>,
}

fn case(
    method: Method,
    uri: impl Into<String>,
    body: &str,
    status: u16,
    code: &'static str,
    says: &[&'static str],
) -> Case {
    Case {
        method,
        uri: uri.into(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status: StatusCode::from_u16(status).unwrap(),
        code,
        says: says.to_vec(),
    }
}

#[tokio::test]
async fn bad_bodies_paths_and_queries_are_explained_in_plain_words() {
    let env = Env::new().await;
    let group = Uuid::new_v4();
    let hash = ContentHash::of(b"x").to_string();
    let good_update =
        format!(r#"{{"platform":"ios","runtime_version":"1","launch_asset":{{"hash":"{hash}","ext":"js"}}}}"#);
    let bad_key = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    use Method as M;
    let mut cases = vec![
        // The body's own shape.
        case(
            M::POST,
            "/api/v1/apps",
            "[]",
            422,
            "invalid_json",
            &["the body", "an object", "a list"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            "\"demo\"",
            422,
            "invalid_json",
            &["the body", "an object"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            r#"{"slug": 5}"#,
            422,
            "invalid_json",
            &["`slug`", "a string", "not 5"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            "{}",
            422,
            "invalid_json",
            &["`slug`", "required"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            r#"{"slug":"x","extra":1}"#,
            422,
            "invalid_json",
            &["`extra`", "accepted here: slug"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            "{\"slug\":",
            400,
            "invalid_json",
            &["not valid JSON", "line 1"],
        ),
        case(
            M::POST,
            "/api/v1/apps",
            "not json",
            400,
            "invalid_json",
            &["not valid JSON", "line 1, column 2"],
        ),
        case(M::POST, "/api/v1/apps", "", 400, "invalid_json", &["empty"]),
        case(
            M::POST,
            "/api/v1/apps",
            "{\"slug\":\"a\"} {}",
            400,
            "invalid_json",
            &["more text after"],
        ),
        // Publishing.
        case(
            M::POST,
            "/api/v1/apps/demo/publish",
            r#"{"channel":"production","updates":[{"platform":"web","runtime_version":"1","launch_asset":{"hash":"x","ext":"js"}}]}"#,
            422,
            "invalid_json",
            &["`updates[0].platform`", "one of ios, android", "\"web\""],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/publish",
            &format!(r#"{{"channel":"production","rollout_percentage":300,"updates":[{good_update}]}}"#),
            422,
            "invalid_json",
            &["`rollout_percentage`", "0 to 100", "300"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/publish",
            r#"{"channel":"production","updates":[{"platform":"ios","runtime_version":"1","launch_asset":{"hash":"abc","ext":"js"}}]}"#,
            422,
            "invalid_json",
            &["`updates[0].launch_asset.hash`", "SHA-256", "43 characters"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/publish",
            &format!(
                r#"{{"channel":"production","updates":[{good_update}],"commit":{{"group_id":"nope","created_at":"x","updates":[]}}}}"#
            ),
            422,
            "invalid_json",
            &["`commit.group_id`", "a UUID"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/publish",
            r#"{"channel":"production"}"#,
            422,
            "invalid_json",
            &["`updates`", "required", "a list of objects"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/publish/check",
            r#"{"channel":"production","updates":[{"platform":"ios","runtime_version":1}]}"#,
            422,
            "invalid_json",
            &["`updates[0].runtime_version`", "a string", "not 1"],
        ),
        case(
            M::POST,
            format!("/api/v1/apps/demo/groups/{group}/republish"),
            r#"{"message": 5}"#,
            422,
            "invalid_json",
            &["`message`", "a string"],
        ),
        case(
            M::POST,
            format!("/api/v1/apps/demo/groups/{group}/disable"),
            r#"{"commit": 1}"#,
            422,
            "invalid_json",
            &["`commit`", "an object"],
        ),
        case(
            M::PUT,
            format!("/api/v1/apps/demo/groups/{group}/rollout"),
            r#"{"percentage": "half"}"#,
            422,
            "invalid_json",
            &["`percentage`", "0 to 100", "\"half\""],
        ),
        case(
            M::PUT,
            format!("/api/v1/apps/demo/groups/{group}/rollout"),
            r#"{"percentage": -1}"#,
            422,
            "invalid_json",
            &["`percentage`", "0 to 100", "-1"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/rollbacks",
            r#"{"channel":"production","to_embedded":true,"platform":"web"}"#,
            422,
            "invalid_json",
            &["`platform`", "ios, android"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/rollbacks",
            r#"{"channel":"production","to_embedded":"yes"}"#,
            422,
            "invalid_json",
            &["`to_embedded`", "true or false"],
        ),
        // Channels and branches.
        case(
            M::POST,
            "/api/v1/apps/demo/channels",
            r#"{"name": ["a"]}"#,
            422,
            "invalid_json",
            &["`name`", "a string", "a list"],
        ),
        case(
            M::PUT,
            "/api/v1/apps/demo/channels/production",
            "{}",
            422,
            "invalid_json",
            &["`branch`", "required"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/channels/production/rollout",
            r#"{"action":"grow"}"#,
            422,
            "invalid_json",
            &["`action`", "start, set, end, revert"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/channels/production/rollout",
            r#"{"action":"start","percentage":5}"#,
            422,
            "invalid_json",
            &["`branch`", "required"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/channels/production/rollout",
            r#"{"action":"set","percentage":500}"#,
            422,
            "invalid_json",
            &["`percentage`", "0 to 100", "500"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/channels/production/rollout",
            r#"{"action":"end","percentage":5}"#,
            422,
            "invalid_json",
            &["`percentage`", "not accepted"],
        ),
        case(
            M::POST,
            "/api/v1/apps/demo/branches",
            r#"{"name": null}"#,
            422,
            "invalid_json",
            &["`name`", "a string", "null"],
        ),
        // Blobs, garbage collection, tokens.
        case(
            M::POST,
            "/api/v1/blobs/missing",
            r#"{"hashes": "x"}"#,
            422,
            "invalid_json",
            &["`hashes`", "a list"],
        ),
        case(
            M::POST,
            "/api/v1/blobs/missing",
            r#"{"hashes": ["nope"]}"#,
            422,
            "invalid_json",
            &["`hashes[0]`", "SHA-256"],
        ),
        case(
            M::POST,
            "/api/v1/gc",
            r#"{"grace_seconds": -5}"#,
            422,
            "invalid_json",
            &["`grace_seconds`", "0 or more", "-5"],
        ),
        case(
            M::POST,
            "/api/v1/tokens",
            r#"{"name":"a","scope":"read","expires_in_days":"soon"}"#,
            422,
            "invalid_json",
            &["`expires_in_days`", "a whole number"],
        ),
        case(
            M::POST,
            "/api/v1/tokens",
            r#"{"name":"a"}"#,
            422,
            "invalid_json",
            &["`scope`", "required"],
        ),
        // A key the crypto library refuses.
        case(
            M::PUT,
            "/api/v1/apps/demo/signing-key",
            &json!({"private_key_pem": bad_key, "keyid": "main"}).to_string(),
            400,
            "invalid_signing_key",
            &["`private_key_pem`", "RSA private key"],
        ),
        // Paths and queries.
        case(
            M::DELETE,
            "/api/v1/tokens/abc",
            "",
            400,
            "invalid_path",
            &["`id`", "a whole number", "\"abc\""],
        ),
        case(
            M::GET,
            "/api/v1/apps/demo/groups?limit=abc",
            "",
            400,
            "invalid_query",
            &["`limit`", "a whole number"],
        ),
        case(
            M::GET,
            "/api/v1/apps/demo/groups?bogus=1",
            "",
            400,
            "invalid_query",
            &["`bogus`", "branch, channel, limit"],
        ),
        case(
            M::GET,
            "/api/v1/audit?limit=1.5",
            "",
            400,
            "invalid_query",
            &["`limit`", "a whole number"],
        ),
        case(
            M::GET,
            "/api/v1/audit?app=demo&app=demo",
            "",
            400,
            "invalid_query",
            &["`app`", "more than once"],
        ),
        // Routes and methods.
        case(
            M::GET,
            "/api/v1/nope",
            "",
            404,
            "not_found",
            &["GET /api/v1/nope", "/api/v1/openapi.json"],
        ),
        case(
            M::DELETE,
            "/healthz",
            "",
            405,
            "method_not_allowed",
            &["/healthz", "DELETE", "Allow"],
        ),
        case(
            M::PATCH,
            "/api/v1/apps",
            "",
            405,
            "method_not_allowed",
            &["/api/v1/apps", "PATCH"],
        ),
    ];
    let mut not_json = case(
        M::POST,
        "/api/v1/apps",
        r#"{"slug":"x"}"#,
        415,
        "unsupported_media_type",
        &["content-type: application/json"],
    );
    not_json.content_type = Some("text/plain");
    cases.push(not_json);
    let mut too_big = case(M::POST, "/api/v1/apps", "", 413, "body_too_large", &["2 MiB"]);
    too_big.body = format!("{{\"slug\":\"{}\"}}", "a".repeat(3 << 20)).into_bytes();
    cases.push(too_big);

    let mut problems = Vec::new();
    for c in cases {
        let what = format!("{} {}", c.method, c.uri);
        let r = env.send(c.method, &c.uri, c.content_type, c.body).await;
        if r.status != c.status || r.code() != c.code {
            problems.push(format!(
                "{what}: expected {} {}, got {} {}",
                c.status, c.code, r.status, r.body
            ));
            continue;
        }
        let message = r.message();
        for needle in &c.says {
            if !message.contains(needle) {
                problems.push(format!("{what}: message does not say {needle:?}: {message}"));
            }
        }
        let isms = rust_isms(message);
        if !isms.is_empty() {
            problems.push(format!("{what}: message speaks Rust ({isms:?}): {message}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn device_refusals_are_plain_too() {
    let env = Env::new().await;
    for (headers, code) in [
        (
            vec![("expo-platform", "web"), ("expo-runtime-version", "1")],
            "invalid_platform",
        ),
        (vec![("expo-platform", "ios")], "missing_runtime_version"),
        (
            vec![
                ("expo-platform", "ios"),
                ("expo-runtime-version", "1"),
                ("expo-expect-signature", "sig, keyid=1"),
            ],
            "invalid_expect_signature",
        ),
        (
            vec![
                ("expo-platform", "ios"),
                ("expo-runtime-version", "1"),
                ("expo-current-update-id", "x"),
            ],
            "invalid_current_update_id",
        ),
    ] {
        let mut req = Request::builder().uri("/apps/demo/manifest?channel=production");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let res = aloft_server::app(env.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        let body: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(rust_isms(message).is_empty(), "{message}");
    }
}

fn publish_request(channel: Option<&str>, branch: Option<&str>, hash: ContentHash, rollout: Option<u8>) -> Value {
    serde_json::to_value(PublishRequest {
        channel: channel.map(str::to_owned),
        branch: branch.map(str::to_owned),
        message: String::new(),
        updates: [Platform::Ios, Platform::Android]
            .into_iter()
            .map(|platform| PlatformUpdate {
                platform,
                runtime_version: "1.0.0".into(),
                launch_asset: FileRef {
                    hash,
                    ext: "bundle".into(),
                },
                assets: Vec::new(),
            })
            .collect(),
        expo_client: None,
        rollout_percentage: rollout,
        halt_policy: None,
        no_halt: false,
        force: false,
        commit: None,
        allow_unsigned: false,
    })
    .unwrap()
}

fn check_request(target: Value, platform: &str, runtime_version: &str, force: bool) -> Value {
    let mut body = json!({"updates": [{"platform": platform, "runtime_version": runtime_version}], "force": force});
    body.as_object_mut()
        .unwrap()
        .extend(target.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn publish_check_refuses_what_the_publish_would_refuse_and_changes_nothing() {
    let env = Env::new().await;
    let check = "/api/v1/apps/demo/publish/check";
    let production = json!({"channel": "production"});

    // Nothing in the way: the answer names the branch.
    let r = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "ios", "1.0.0", false),
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"branch": "production"})));
    // A new channel is not created by asking.
    let r = env
        .json(
            Method::POST,
            check,
            check_request(json!({"channel": "fresh"}), "ios", "1.0.0", false),
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"branch": "fresh"})));
    let channels = env
        .send(Method::GET, "/api/v1/apps/demo/channels", None, Vec::new())
        .await;
    assert_eq!(channels.body.as_array().unwrap().len(), 1, "{}", channels.body);

    // Unknown app, bad names, no target: the publish's own refusals.
    let r = env
        .json(
            Method::POST,
            "/api/v1/apps/nope/publish/check",
            check_request(production.clone(), "ios", "1", false),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "app_not_found"));
    let r = env
        .json(
            Method::POST,
            check,
            check_request(json!({"channel": "a b"}), "ios", "1", false),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "invalid_channel"));
    let r = env
        .json(Method::POST, check, check_request(json!({}), "ios", "1", false))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "invalid_target"));
    let r = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "ios", "1 0", false),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_runtime_version")
    );

    // A group rollout on production: asking is refused as the publish is; forcing is allowed, as
    // it is for the publish.
    let hash = env.upload(b"bundle one").await;
    let r = env
        .json(
            Method::POST,
            "/api/v1/apps/demo/publish",
            publish_request(Some("production"), None, hash, Some(10)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let group = r.body["published"]["group_id"].as_str().unwrap().to_owned();
    let refused = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "android", "1.0.0", false),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "rollout_in_progress"),
        "{}",
        refused.body
    );
    assert!(
        refused.message().contains(&group) && refused.message().contains("--force"),
        "{}",
        refused.message()
    );
    let hash2 = env.upload(b"bundle two").await;
    let publish = env
        .json(
            Method::POST,
            "/api/v1/apps/demo/publish",
            publish_request(Some("production"), None, hash2, None),
        )
        .await;
    assert_eq!(
        (publish.status, publish.code()),
        (StatusCode::CONFLICT, "rollout_in_progress")
    );
    let r = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "android", "1.0.0", true),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Asking changed nothing: the rollout is still in progress.
    let refused_again = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "ios", "1.0.0", false),
        )
        .await;
    assert_eq!(refused_again.code(), "rollout_in_progress");
    // Another runtime version: whatever the publish answers, asking answers the same.
    let asked = env
        .json(
            Method::POST,
            check,
            json!({"channel": "production", "updates": [
                {"platform": "ios", "runtime_version": "2.0.0"},
                {"platform": "android", "runtime_version": "2.0.0"}
            ]}),
        )
        .await;
    let mut other = publish_request(Some("production"), None, hash2, None);
    for u in other["updates"].as_array_mut().unwrap() {
        u["runtime_version"] = json!("2.0.0");
    }
    let published = env.json(Method::POST, "/api/v1/apps/demo/publish", other).await;
    assert_eq!(
        (asked.status.is_success(), asked.code(), asked.message()),
        (published.status.is_success(), published.code(), published.message()),
        "{} / {}",
        asked.body,
        published.body
    );

    // A channel rollout: publishing with --channel is refused, with or without force.
    let r = env
        .json(
            Method::POST,
            &format!("/api/v1/apps/demo/groups/{group}/rollout/complete"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = env
        .json(Method::POST, "/api/v1/apps/demo/branches", json!({"name": "next"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = env
        .json(
            Method::POST,
            "/api/v1/apps/demo/channels/production/rollout",
            json!({"action": "start", "branch": "next", "percentage": 20}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refused = env
        .json(
            Method::POST,
            check,
            check_request(production.clone(), "ios", "1.0.0", true),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "channel_rollout_in_progress")
    );
    let publish = env
        .json(
            Method::POST,
            "/api/v1/apps/demo/publish",
            publish_request(Some("production"), None, hash2, None),
        )
        .await;
    assert_eq!(
        (publish.status, publish.code()),
        (StatusCode::CONFLICT, "channel_rollout_in_progress")
    );
    assert_eq!(publish.message(), refused.message());
    // Publishing to the branch instead is fine.
    let r = env
        .json(
            Method::POST,
            check,
            check_request(json!({"branch": "next"}), "ios", "1.0.0", false),
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"branch": "next"})));
}
