//! Access control of the management API, walked over the route table itself: every entry of
//! `aloft_server::api::endpoints()` is requested with every kind of caller, so a new route cannot
//! escape the walk. Also checks that the OpenAPI document and the router agree with that table,
//! and the tokens API end to end. Every request goes through the production `aloft_server::app`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use aloft_core::api::{FileRef, Outcome, PlatformUpdate, PublishRequest};
use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform};
use aloft_server::api::{Access, endpoints};
use aloft_server::{AppState, ServerConfig};
use aloft_store::db::tokens::{self, Scope};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness

/// A dashboard user the user routes act on.
const SPARE_USER: &str = "spare@example.com";

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of a JSON error body, if it is one.
    fn code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }

    /// `{"error":{"code":…,"message":…}}` with this status and code, served as JSON.
    fn error_problem(&self, status: StatusCode, code: &str) -> Option<String> {
        if self.status != status || self.code().as_deref() != Some(code) {
            return Some(format!(
                "expected {} {code}, got {} {}",
                status.as_u16(),
                self.status.as_u16(),
                self.text()
            ));
        }
        if self.header("content-type") != Some("application/json") {
            return Some(format!(
                "error is not served as JSON: {:?}",
                self.header("content-type")
            ));
        }
        let v = self.json();
        if v.as_object().map(|o| o.len()) != Some(1) || v["error"]["message"].as_str().is_none_or(str::is_empty) {
            return Some(format!("malformed error body {v}"));
        }
        if status == StatusCode::UNAUTHORIZED && self.header("www-authenticate") != Some("Bearer") {
            return Some("401 without `www-authenticate: Bearer`".into());
        }
        None
    }

    #[track_caller]
    fn assert_error(&self, status: StatusCode, code: &str) {
        if let Some(p) = self.error_problem(status, code) {
            panic!("{p}");
        }
    }

    #[track_caller]
    fn assert_status(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.text());
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// No `authorization` header.
    Nobody,
    /// A bearer value that is no token: the stored hash of the admin token's secret, so a leaked
    /// database row cannot be replayed as a token.
    Garbage,
    /// An admin token that was revoked.
    Revoked,
    /// An admin token whose expiry has passed.
    Expired,
    Admin,
    PublishAlpha,
    ReadAlpha,
    PublishBeta,
}

const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::Garbage,
    Who::Revoked,
    Who::Expired,
    Who::Admin,
    Who::PublishAlpha,
    Who::ReadAlpha,
    Who::PublishBeta,
];

impl Who {
    fn authenticated(self) -> bool {
        !matches!(self, Who::Nobody | Who::Garbage | Who::Revoked | Who::Expired)
    }
}

/// One RSA key for every world (generating one per world would dominate the run time).
fn signing_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        aloft_core::keys::generate("aloft access test", 1)
            .unwrap()
            .private_key_pem
    })
}

/// A fresh server: apps `alpha` and `beta`, published updates, and a token of every kind.
///
/// `alpha`: groups `g1` then `g2` on channel/branch `production` (so a rollback has somewhere to
/// go), `g3` a 50% rollout on branch `canary`, `g4` disabled on branch `retired`, and an unused
/// branch `spare`. `beta`: `beta_group` on `production`.
struct World {
    _dir: TempDir,
    state: AppState,
    secrets: BTreeMap<Who, String>,
    /// A token nobody uses, for `DELETE /tokens/{id}`.
    spare_token: i64,
    /// A webhook of alpha, for `DELETE /apps/{slug}/webhooks/{webhook}`.
    webhook: i64,
    g1: Uuid,
    g3: Uuid,
    g4: Uuid,
    beta_group: Uuid,
    alpha_bundle: ContentHash,
    /// Bytes not uploaded yet, for `PUT /blobs/{hash}`.
    new_blob: Vec<u8>,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (db, blobs) = aloft_store::testing::Backend::from_env().fresh(dir.path()).open().await;
        let config = ServerConfig {
            listen: "127.0.0.1:3000".parse().unwrap(),
            public_url: "http://ota.test".into(),
            max_upload_bytes: 1 << 20,
            asset_base_url: None,
            asset_delivery: Default::default(),
            asset_cache_bytes: 16 << 20,
            dashboard: true,
        };
        let mut secrets = BTreeMap::new();
        let (_, admin) = tokens::create(&db, "admin-token", &Scope::Admin, None).await.unwrap();
        secrets.insert(Who::Garbage, tokens::hash_secret(&admin));
        secrets.insert(Who::Admin, admin);
        for (who, name, scope) in [
            (Who::PublishAlpha, "publish-alpha", Scope::Publish(vec!["alpha".into()])),
            (Who::ReadAlpha, "read-alpha", Scope::Read(vec!["alpha".into()])),
            (Who::PublishBeta, "publish-beta", Scope::Publish(vec!["beta".into()])),
        ] {
            let (_, secret) = tokens::create(&db, name, &scope, None).await.unwrap();
            secrets.insert(who, secret);
        }
        let (revoked, secret) = tokens::create(&db, "revoked-admin", &Scope::Admin, None).await.unwrap();
        tokens::revoke(&db, revoked.id).await.unwrap();
        secrets.insert(Who::Revoked, secret);
        let past = Millis(Millis::now().0 - 60_000);
        let (_, secret) = tokens::create(&db, "expired-admin", &Scope::Admin, Some(past))
            .await
            .unwrap();
        secrets.insert(Who::Expired, secret);
        let (spare, _) = tokens::create(&db, "spare", &Scope::Read(vec!["alpha".into()]), None)
            .await
            .unwrap();
        let mut tx = db.begin_write().await.unwrap();
        aloft_store::db::users::insert(&mut tx, SPARE_USER, &Scope::Read(vec!["alpha".into()]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let state = AppState::new(config, db, blobs, None).await.unwrap();

        let mut world = World {
            _dir: dir,
            state,
            secrets,
            spare_token: spare.id,
            webhook: 0,
            g1: Uuid::nil(),
            g3: Uuid::nil(),
            g4: Uuid::nil(),
            beta_group: Uuid::nil(),
            alpha_bundle: ContentHash::of(b"alpha bundle 1"),
            new_blob: b"a blob nobody has uploaded yet".to_vec(),
        };
        for slug in ["alpha", "beta"] {
            world
                .json(Who::Admin, Method::POST, "/api/v1/apps", &json!({ "slug": slug }))
                .await
                .assert_status(StatusCode::CREATED);
        }
        for bundle in [
            &b"alpha bundle 1"[..],
            b"alpha bundle 2",
            b"alpha bundle 3",
            b"alpha bundle 4",
            b"beta bundle",
        ] {
            world.upload(bundle).await;
        }
        world.g1 = world
            .publish_ok(
                "alpha",
                &publish_request(Some("production"), None, b"alpha bundle 1", None),
            )
            .await;
        world
            .publish_ok(
                "alpha",
                &publish_request(Some("production"), None, b"alpha bundle 2", None),
            )
            .await;
        world.g3 = world
            .publish_ok(
                "alpha",
                &publish_request(None, Some("canary"), b"alpha bundle 3", Some(50)),
            )
            .await;
        world.g4 = world
            .publish_ok(
                "alpha",
                &publish_request(None, Some("retired"), b"alpha bundle 4", None),
            )
            .await;
        world
            .json(
                Who::Admin,
                Method::POST,
                &format!("/api/v1/apps/alpha/groups/{}/disable", world.g4),
                &json!({}),
            )
            .await
            .assert_status(StatusCode::OK);
        world
            .json(
                Who::Admin,
                Method::POST,
                "/api/v1/apps/alpha/branches",
                &json!({"name": "spare"}),
            )
            .await
            .assert_status(StatusCode::CREATED);
        let hook = world
            .json(
                Who::Admin,
                Method::POST,
                "/api/v1/apps/alpha/webhooks",
                &json!({"url": "http://127.0.0.1:9/hook", "events": ["publish"]}),
            )
            .await;
        hook.assert_status(StatusCode::CREATED);
        world.webhook = hook.json()["webhook"]["id"].as_i64().unwrap();
        world
            .json(
                Who::Admin,
                Method::POST,
                "/api/v1/apps/alpha/embedded",
                &json!({"id": EMBEDDED, "platform": "ios", "runtime_version": "1", "bundle": world.alpha_bundle}),
            )
            .await
            .assert_status(StatusCode::CREATED);
        world.beta_group = world
            .publish_ok("beta", &publish_request(Some("production"), None, b"beta bundle", None))
            .await;
        world
    }

    fn authorization(&self, who: Who) -> Option<String> {
        (who != Who::Nobody).then(|| format!("Bearer {}", self.secrets[&who]))
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

    async fn call(&self, who: Who, method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = self.authorization(who) {
            req = req.header("authorization", a);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn get(&self, who: Who, uri: &str) -> Resp {
        self.call(who, Method::GET, uri, None, Vec::new()).await
    }

    async fn json(&self, who: Who, method: Method, uri: &str, body: &Value) -> Resp {
        self.call(
            who,
            method,
            uri,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    async fn upload(&self, bytes: &[u8]) -> ContentHash {
        let hash = ContentHash::of(bytes);
        let r = self
            .call(
                Who::Admin,
                Method::PUT,
                &format!("/api/v1/blobs/{hash}"),
                Some("application/octet-stream"),
                bytes.to_vec(),
            )
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "upload: {r:?}"
        );
        hash
    }

    async fn publish_ok(&self, slug: &str, req: &PublishRequest) -> Uuid {
        let r = self
            .json(
                Who::Admin,
                Method::POST,
                &format!("/api/v1/apps/{slug}/publish"),
                &serde_json::to_value(req).unwrap(),
            )
            .await;
        r.assert_status(StatusCode::CREATED);
        serde_json::from_slice::<Outcome>(&r.body)
            .unwrap()
            .published
            .unwrap()
            .group_id
    }
}

/// An iOS update of one file. The file must be uploaded first (see [`World::new`]).
fn publish_request(channel: Option<&str>, branch: Option<&str>, bundle: &[u8], rollout: Option<u8>) -> PublishRequest {
    PublishRequest {
        channel: channel.map(str::to_owned),
        branch: branch.map(str::to_owned),
        message: "access test".into(),
        updates: vec![PlatformUpdate {
            platform: Platform::Ios,
            runtime_version: "1.0.0".into(),
            launch_asset: FileRef {
                hash: ContentHash::of(bundle),
                ext: "js".into(),
            },
            assets: Vec::new(),
        }],
        expo_client: None,
        rollout_percentage: rollout,
        halt_policy: None,
        no_halt: false,
        force: false,
        commit: None,
        allow_unsigned: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests for routes of the table

/// What the walk needs of an `Endpoint` (which is neither `Clone` nor cheap to move into tasks).
#[derive(Debug, Clone, Copy)]
struct Route {
    method: &'static str,
    path: &'static str,
    access: Access,
    prepare: bool,
    has_request: bool,
    status: u16,
}

fn routes() -> Vec<Route> {
    endpoints()
        .iter()
        .map(|e| Route {
            method: match e.method {
                Method::GET => "GET",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                Method::PATCH => "PATCH",
                ref other => panic!("the walk does not know method {other} of {}", e.path),
            },
            path: e.path,
            access: e.access,
            prepare: e.prepare,
            has_request: e.request.is_some(),
            status: e.status,
        })
        .collect()
}

/// A concrete request for a route of the table.
struct Call {
    method: Method,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// A body the route accepts and that succeeds on a fresh [`World`] for a caller allowed to make
/// it. `None` for routes without a JSON body.
fn json_body(w: &World, r: &Route) -> Option<Value> {
    let body = match (r.method, r.path) {
        ("POST", "/apps") => json!({"slug": "gamma"}),
        ("PUT", "/apps/{slug}/signing-key") => json!({"private_key_pem": signing_key_pem(), "keyid": "main"}),
        ("PUT", "/apps/{slug}/halt-policy") => json!({"policy": {"failure_rate": 10.0, "min_devices": 20}}),
        ("POST", "/apps/{slug}/publish") => {
            serde_json::to_value(publish_request(Some("production"), None, b"alpha bundle 1", None)).unwrap()
        }
        // A branch nothing is published to: never refused, whatever the walk did before.
        ("POST", "/apps/{slug}/publish/check") => {
            json!({"branch": "unused", "updates": [{"platform": "ios", "runtime_version": "1"}]})
        }
        // Republishes g1 onto its own branch.
        ("POST", "/apps/{slug}/groups/{group}/republish") => json!({}),
        ("POST", "/apps/{slug}/groups/{group}/disable") => json!({}),
        ("PUT", "/apps/{slug}/groups/{group}/rollout") => json!({"percentage": 80}),
        ("POST", "/apps/{slug}/groups/{group}/rollout/revert") => json!({}),
        ("POST", "/apps/{slug}/rollbacks") => json!({"channel": "production"}),
        ("POST", "/apps/{slug}/channels") => json!({"name": "staging"}),
        ("PUT", "/apps/{slug}/channels/{channel}") => json!({"branch": "canary"}),
        ("POST", "/apps/{slug}/channels/{channel}/rollout") => {
            json!({"action": "start", "branch": "canary", "percentage": 10})
        }
        ("POST", "/apps/{slug}/branches") => json!({"name": "feature"}),
        ("POST", "/apps/{slug}/webhooks") => {
            json!({"url": "https://hooks.example.com/x", "events": ["publish", "halt"]})
        }
        ("PUT", "/apps/{slug}/patches") => json!({"enabled": false}),
        ("POST", "/apps/{slug}/embedded") => {
            json!({"id": "0b5a2e4c-3d1f-4a6b-8c7d-9e0f1a2b3c4d", "platform": "android",
                                                     "runtime_version": "1", "bundle": w.alpha_bundle})
        }
        ("POST", "/blobs/missing") => json!({"hashes": [w.alpha_bundle.to_string()]}),
        ("POST", "/gc") => json!({"grace_seconds": 86_400}),
        ("POST", "/tokens") => json!({"name": "walk", "scope": "read", "apps": ["alpha"]}),
        ("POST", "/users") => json!({"email": "walk@example.com", "role": "viewer", "apps": ["alpha"]}),
        _ => return None,
    };
    Some(body)
}

/// An embedded update of alpha, for `DELETE /apps/{slug}/embedded/{embedded}`.
const EMBEDDED: &str = "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b";

/// Write routes that take no body at all (everything else that is not a GET or DELETE takes one).
const BODILESS_WRITES: [(&str, &str); 2] = [
    ("POST", "/apps/{slug}/groups/{group}/rollout/complete"),
    ("POST", "/users/{email}/sign-in-link"),
];

/// The one route whose body is raw bytes rather than JSON.
const RAW_UPLOAD: (&str, &str) = ("PUT", "/blobs/{hash}");

/// Whether a route really takes a JSON body: the walk's own knowledge, independent of the table.
fn takes_json(w: &World, r: &Route) -> bool {
    json_body(w, r).is_some()
}

/// The request the walk sends for `r`, with `{slug}` = `slug` and `query` appended.
fn call_for(w: &World, r: &Route, slug: &str, query: &str) -> Call {
    // Rollout operations need a group with a rollout in progress, deleting one needs a group no
    // longer served; the others use g1.
    let group = if r.path.contains("/rollout") {
        w.g3
    } else if r.method == "DELETE" && r.path.ends_with("/groups/{group}") {
        w.g4
    } else {
        w.g1
    };
    let path = r
        .path
        .replace("{slug}", slug)
        .replace("{group}", &group.to_string())
        .replace("{channel}", "production")
        .replace("{branch}", "spare")
        .replace("{hash}", &ContentHash::of(&w.new_blob).to_string())
        .replace("{id}", &w.spare_token.to_string())
        .replace("{email}", SPARE_USER)
        .replace("{webhook}", &w.webhook.to_string())
        .replace("{embedded}", EMBEDDED);
    assert!(
        !path.contains('{'),
        "{} {}: the walk does not know a path parameter of this route; teach `call_for` about it",
        r.method,
        r.path
    );
    let key = (r.method, r.path);
    let (content_type, body) = match json_body(w, r) {
        Some(v) => (Some("application/json"), serde_json::to_vec(&v).unwrap()),
        None if key == RAW_UPLOAD => (Some("application/octet-stream"), w.new_blob.clone()),
        None if matches!(r.method, "GET" | "DELETE") || BODILESS_WRITES.contains(&key) => (None, Vec::new()),
        None => panic!(
            "{} {}: the walk does not know this route's body; add it to `json_body` or `BODILESS_WRITES`",
            r.method, r.path
        ),
    };
    Call {
        method: r.method.parse().unwrap(),
        uri: format!("/api/v1{path}{query}"),
        content_type,
        body,
    }
}

async fn send_call(w: &World, who: Who, c: Call) -> Resp {
    w.call(who, c.method, &c.uri, c.content_type, c.body).await
}

// ---------------------------------------------------------------------------------------------
// 1. The scope walk

/// What a caller must get from a route.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The documented success status.
    Success,
    /// This error status and code.
    Refused(StatusCode, &'static str),
    /// An `AnyToken` route: signed in; the answer is the documented success or `403 forbidden`
    /// (what each one shows is checked by `list_endpoints_show_only_what_the_token_may_see`).
    SignedIn,
}

fn expectation(r: &Route, who: Who) -> Expect {
    let has_slug = r.path.contains("{slug}");
    if r.access == Access::Public {
        return Expect::Success;
    }
    if !who.authenticated() {
        return Expect::Refused(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    match (who, r.access) {
        (Who::Admin, _) => Expect::Success,
        (_, Access::AnyToken) => Expect::SignedIn,
        // Another tenant's app is indistinguishable from a missing one, whatever the route.
        (Who::PublishBeta, _) if has_slug => Expect::Refused(StatusCode::NOT_FOUND, "app_not_found"),
        (Who::PublishAlpha | Who::PublishBeta, Access::Upload) => Expect::Success,
        (Who::PublishAlpha, Access::AppRead | Access::AppWrite) => Expect::Success,
        (Who::ReadAlpha, Access::AppRead) => Expect::Success,
        _ => Expect::Refused(StatusCode::FORBIDDEN, "forbidden"),
    }
}

/// The problem with `resp` for `who` on `r`, if any.
fn check(r: &Route, who: Who, resp: &Resp) -> Option<String> {
    let problem = match expectation(r, who) {
        Expect::Success => {
            let allowed = resp.status != StatusCode::UNAUTHORIZED
                && resp.status != StatusCode::FORBIDDEN
                && !(resp.status == StatusCode::NOT_FOUND
                    && matches!(resp.code().as_deref(), Some("app_not_found" | "not_found")));
            if !allowed {
                Some(format!("refused: {} {}", resp.status.as_u16(), resp.text()))
            } else if resp.status.as_u16() != r.status {
                Some(format!(
                    "expected the documented {}, got {} {}",
                    r.status,
                    resp.status.as_u16(),
                    resp.text()
                ))
            } else {
                None
            }
        }
        Expect::Refused(status, code) => resp.error_problem(status, code),
        Expect::SignedIn => {
            if resp.status.as_u16() == r.status {
                None
            } else {
                resp.error_problem(StatusCode::FORBIDDEN, "forbidden")
            }
        }
    };
    problem.map(|p| format!("{who:?} on {} {} ({:?}): {p}", r.method, r.path, r.access))
}

/// Walks one (route, caller) pair on a fresh world; returns what went wrong.
async fn walk_one(r: Route, who: Who) -> Vec<String> {
    let w = World::new().await;
    let mut problems = Vec::new();
    let has_slug = r.path.contains("{slug}");

    // `?prepare=true` must not weaken anything: a refused caller is refused the same way.
    if r.prepare && matches!(expectation(&r, who), Expect::Refused(..)) {
        let resp = send_call(&w, who, call_for(&w, &r, "alpha", "?prepare=true")).await;
        problems.extend(check(&r, who, &resp).map(|p| format!("with ?prepare=true: {p}")));
    }
    // A tenant cannot tell another tenant's app from one that does not exist.
    if who == Who::PublishBeta && has_slug && r.access != Access::Public {
        let missing = send_call(&w, who, call_for(&w, &r, "doesnotexist", "")).await;
        let other = send_call(&w, who, call_for(&w, &r, "alpha", "")).await;
        let as_if_missing = missing.text().replace("doesnotexist", "alpha");
        if (other.status, other.text()) != (missing.status, as_if_missing) {
            problems.push(format!(
                "PublishBeta on {} {}: alpha answers {} {} but a missing app {} {}",
                r.method,
                r.path,
                other.status.as_u16(),
                other.text(),
                missing.status.as_u16(),
                missing.text()
            ));
        }
        problems.extend(
            missing
                .error_problem(StatusCode::NOT_FOUND, "app_not_found")
                .map(|p| format!("PublishBeta on {} {} for a missing app: {p}", r.method, r.path)),
        );
    }
    if who == Who::Admin && has_slug && r.access != Access::Public {
        let missing = send_call(&w, who, call_for(&w, &r, "doesnotexist", "")).await;
        problems.extend(
            missing
                .error_problem(StatusCode::NOT_FOUND, "app_not_found")
                .map(|p| format!("Admin on {} {} for a missing app: {p}", r.method, r.path)),
        );
    }
    // Preparing changes nothing, so the real call below still succeeds afterwards.
    if r.prepare && matches!(expectation(&r, who), Expect::Success) {
        let resp = send_call(&w, who, call_for(&w, &r, "alpha", "?prepare=true")).await;
        if resp.status != StatusCode::OK {
            problems.push(format!(
                "{who:?} on {} {}?prepare=true: {} {}",
                r.method,
                r.path,
                resp.status.as_u16(),
                resp.text()
            ));
        }
    }
    let resp = send_call(&w, who, call_for(&w, &r, "alpha", "")).await;
    problems.extend(check(&r, who, &resp));
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_enforces_its_access_class_for_every_caller() {
    let routes = routes();
    assert!(routes.len() >= 29, "the table shrank to {} routes", routes.len());
    // Every access class is exercised, and every app route names the app in its path.
    let classes: BTreeSet<String> = routes.iter().map(|r| format!("{:?}", r.access)).collect();
    for class in ["Public", "AnyToken", "AppRead", "AppWrite", "Upload", "Admin"] {
        assert!(classes.contains(class), "no {class} route left to walk");
    }
    for r in &routes {
        if matches!(r.access, Access::AppRead | Access::AppWrite) {
            assert!(
                r.path.contains("{slug}"),
                "{} {} is {:?} without {{slug}}",
                r.method,
                r.path,
                r.access
            );
        }
    }

    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for r in &routes {
        for who in EVERYONE {
            let (r, limit) = (*r, limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.unwrap();
                (r.method, r.path, who, walk_one(r, who).await)
            });
        }
    }
    let mut walked: BTreeSet<(&str, &str, Who)> = BTreeSet::new();
    let mut problems = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (method, path, who, p) = done.unwrap();
        walked.insert((method, path, who));
        problems.extend(p);
    }
    problems.sort();
    assert!(
        problems.is_empty(),
        "{} access problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The walk covered every route of the table with every caller.
    let distinct: BTreeSet<(&str, &str)> = walked.iter().map(|(m, p, _)| (*m, *p)).collect();
    assert_eq!(distinct.len(), routes.len(), "duplicate (method, path) in the table");
    assert_eq!(walked.len(), routes.len() * EVERYONE.len());
    assert_eq!(routes.len(), endpoints().len());
}

fn slugs(resp: &Resp) -> Vec<String> {
    resp.assert_status(StatusCode::OK);
    let mut out: Vec<String> = resp
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn list_endpoints_show_only_what_the_token_may_see() {
    let w = World::new().await;
    for (who, expected) in [
        (Who::Admin, &["alpha", "beta"][..]),
        (Who::PublishAlpha, &["alpha"]),
        (Who::ReadAlpha, &["alpha"]),
        (Who::PublishBeta, &["beta"]),
    ] {
        assert_eq!(
            slugs(&w.get(who, "/api/v1/apps").await),
            expected,
            "GET /apps as {who:?}"
        );
    }

    // The whole audit log is the admin's.
    let all = w.get(Who::Admin, "/api/v1/audit").await;
    all.assert_status(StatusCode::OK);
    let apps_in_log: BTreeSet<String> = all
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["app"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(apps_in_log, BTreeSet::from(["alpha".into(), "beta".into()]));
    for who in [Who::PublishAlpha, Who::ReadAlpha, Who::PublishBeta] {
        w.get(who, "/api/v1/audit")
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }

    // One app's log, for whoever may read that app, and only that app's entries.
    for (who, slug) in [
        (Who::Admin, "alpha"),
        (Who::PublishAlpha, "alpha"),
        (Who::ReadAlpha, "alpha"),
        (Who::PublishBeta, "beta"),
    ] {
        let r = w.get(who, &format!("/api/v1/audit?app={slug}")).await;
        r.assert_status(StatusCode::OK);
        let entries = r.json();
        let entries = entries.as_array().unwrap();
        assert!(!entries.is_empty(), "{who:?}: no entries for {slug}");
        for e in entries {
            assert_eq!(e["app"], slug, "{who:?} asked for {slug}'s log and got {e}");
        }
        assert!(
            entries.iter().any(|e| e["action"] == "publish"),
            "{who:?}: {slug}'s log lacks its publishes: {}",
            r.text()
        );
    }
    let other = w.get(Who::PublishBeta, "/api/v1/audit?app=alpha").await;
    other.assert_error(StatusCode::NOT_FOUND, "app_not_found");
    let missing = w.get(Who::PublishBeta, "/api/v1/audit?app=doesnotexist").await;
    missing.assert_error(StatusCode::NOT_FOUND, "app_not_found");
    assert_eq!(other.text(), missing.text().replace("doesnotexist", "alpha"));
    for who in [Who::Nobody, Who::Garbage, Who::Revoked, Who::Expired] {
        for uri in ["/api/v1/apps", "/api/v1/audit", "/api/v1/audit?app=alpha"] {
            w.get(who, uri)
                .await
                .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
}

/// A group id of another app, given under an app the caller may change, reaches nothing.
#[tokio::test]
async fn groups_of_another_app_are_not_reachable_through_a_visible_app() {
    let group_routes: Vec<Route> = routes().into_iter().filter(|r| r.path.contains("{group}")).collect();
    assert!(group_routes.len() >= 6, "{group_routes:?}");
    let mut problems = Vec::new();
    for r in group_routes {
        let w = World::new().await;
        let mut c = call_for(&w, &r, "alpha", "");
        c.uri = c
            .uri
            .replace(&w.g1.to_string(), &w.beta_group.to_string())
            .replace(&w.g3.to_string(), &w.beta_group.to_string())
            .replace(&w.g4.to_string(), &w.beta_group.to_string());
        let uri = c.uri.clone();
        let resp = send_call(&w, Who::PublishAlpha, c).await;
        problems.extend(
            resp.error_problem(StatusCode::NOT_FOUND, "group_not_found")
                .map(|p| format!("{} {uri}: {p}", r.method)),
        );
        // Beta's group is untouched.
        let g = w
            .get(Who::PublishBeta, &format!("/api/v1/apps/beta/groups/{}", w.beta_group))
            .await;
        g.assert_status(StatusCode::OK);
        assert_eq!(g.json()["disabled"], Value::Null, "after {uri}");
        assert_eq!(g.json()["rollout_percentage"], Value::Null, "after {uri}");
        let groups = w.get(Who::PublishBeta, "/api/v1/apps/beta/groups").await;
        assert_eq!(
            groups.json().as_array().unwrap().len(),
            1,
            "after {uri}: {}",
            groups.text()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. The OpenAPI document and the router agree with the table

/// `{name}` segments of a path.
fn path_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

/// Every `$ref` string anywhere in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap_or_else(|| panic!("non-string $ref {x}")));
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

const HTTP_METHODS: [&str; 6] = ["get", "head", "post", "put", "delete", "patch"];

#[tokio::test]
async fn openapi_document_matches_the_route_table() {
    let w = World::new().await;
    let r = w.get(Who::Nobody, "/api/v1/openapi.json").await;
    r.assert_status(StatusCode::OK);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "http://ota.test");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let paths = doc["paths"].as_object().unwrap();

    // The same set of operations, both ways.
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (format!("/api/v1{}", r.path), r.method.to_ascii_lowercase()))
        .collect();
    assert_eq!(table.len(), endpoints().len(), "duplicate (method, path) in the table");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            assert!(
                HTTP_METHODS.contains(&method.as_str()),
                "{path}: {method} is not an operation"
            );
            documented.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(documented, table);

    let mut operation_ids = BTreeSet::new();
    for route in routes() {
        let op = &doc["paths"][format!("/api/v1{}", route.path)][route.method.to_ascii_lowercase()];
        let what = format!("{} {}", route.method, route.path);
        assert!(
            operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "{what}: duplicate operationId"
        );
        assert_eq!(op["x-aloft-access"], format!("{:?}", route.access), "{what}");

        // Path parameters, both ways.
        let params = op["parameters"].as_array().unwrap();
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: {p}");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(in_path, path_params(route.path), "{what}");
        let prepare = params.iter().any(|p| p["in"] == "query" && p["name"] == "prepare");
        assert_eq!(
            prepare, route.prepare,
            "{what}: ?prepare documented iff the route takes it"
        );

        // Security on everything but public routes, and only schemes that exist.
        match op.get("security") {
            Some(sec) => {
                assert_ne!(
                    route.access,
                    Access::Public,
                    "{what}: a public route documents security"
                );
                let sec = sec.as_array().unwrap();
                assert!(!sec.is_empty(), "{what}: empty security");
                for req in sec {
                    for name in req.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "{what}: unknown security scheme {name}");
                    }
                }
            }
            None => assert_eq!(route.access, Access::Public, "{what}: no security"),
        }

        // A request body exactly where the route takes one.
        assert_eq!(
            op.get("requestBody").is_some(),
            route.has_request,
            "{what}: requestBody"
        );
        if route.has_request {
            assert!(
                op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{what}: {}",
                op["requestBody"]
            );
        }
        assert!(
            op["responses"][route.status.to_string()].is_object(),
            "{what}: the documented status {} is missing",
            route.status
        );
    }

    // The table and the document against what the routes really take (the walk's knowledge):
    // a JSON request body exactly where a route reads one...
    let mut wrong = Vec::new();
    for route in routes() {
        let what = format!("{} {}", route.method, route.path);
        let op = &doc["paths"][format!("/api/v1{}", route.path)][route.method.to_ascii_lowercase()];
        let takes = takes_json(&w, &route);
        if route.has_request != takes {
            wrong.push(format!(
                "{what}: Endpoint.request.is_some() = {}, but the route takes a JSON body: {takes}",
                route.has_request
            ));
        }
        let documented = op["requestBody"]["content"]["application/json"].is_object();
        if documented != takes {
            wrong.push(format!(
                "{what}: documents a JSON request body: {documented}, takes one: {takes} ({})",
                op["requestBody"]
            ));
        }
        // ...and no body, sent or received, is described as a JSON `null`: no route has one.
        for (status, response) in op["responses"].as_object().unwrap() {
            if response["content"]["application/json"]["schema"] == json!({"type": "null"}) {
                wrong.push(format!("{what}: response {status} documented as a JSON null body"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements between the table, the document and the routes:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 10, "suspiciously few $refs: {all:?}");
    for reference in all {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("$ref {reference} points outside components/schemas"));
        let name = name.replace("~1", "/").replace("~0", "~");
        assert!(schemas.contains_key(&name), "$ref {reference} does not resolve");
    }
}

#[tokio::test]
async fn router_serves_exactly_the_documented_methods() {
    let w = World::new().await;
    let doc = w.get(Who::Nobody, "/api/v1/openapi.json").await.json();
    let table = routes();
    // Documented operations reach a handler (never the router's fallbacks).
    for r in &table {
        let resp = send_call(&w, Who::Admin, call_for(&w, r, "alpha", "")).await;
        let code = resp.code();
        assert!(
            !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
            "{} {}: {} {}",
            r.method,
            r.path,
            resp.status,
            resp.text()
        );
    }
    // Any other method on a documented path is 405.
    let mut by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let methods = item.as_object().unwrap().keys().cloned().collect();
        by_path.insert(path.as_str(), methods);
    }
    assert_eq!(
        by_path.len(),
        table.iter().map(|r| r.path).collect::<BTreeSet<_>>().len()
    );
    let mut checked = 0;
    for r in &table {
        let path = format!("/api/v1{}", r.path);
        let methods = &by_path[path.as_str()];
        let uri = call_for(&w, r, "alpha", "").uri;
        for m in HTTP_METHODS {
            // HEAD is served wherever GET is.
            if methods.contains(m) || (m == "head" && methods.contains("get")) {
                continue;
            }
            let method: Method = m.to_ascii_uppercase().parse().unwrap();
            let resp = w.call(Who::Admin, method, &uri, None, Vec::new()).await;
            if m == "head" {
                // A HEAD answer has no body to carry the error code.
                resp.assert_status(StatusCode::METHOD_NOT_ALLOWED);
            } else {
                resp.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            }
            checked += 1;
        }
    }
    assert!(checked > table.len(), "only {checked} undocumented methods tried");
}

// ---------------------------------------------------------------------------------------------
// 3. The tokens API

#[tokio::test]
async fn tokens_api_scopes_revokes_and_never_shows_secrets() {
    let w = World::new().await;
    let created = w
        .json(
            Who::Admin,
            Method::POST,
            "/api/v1/tokens",
            &json!({"name": "ci-alpha", "scope": "publish", "apps": ["alpha"]}),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let body = created.json();
    assert_eq!(body["token"]["name"], "ci-alpha");
    assert_eq!(body["token"]["scope"], "publish");
    assert_eq!(body["token"]["apps"], json!(["alpha"]));
    assert_eq!(body["token"]["revoked_at"], Value::Null);
    let id = body["token"]["id"].as_i64().unwrap();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    let bearer = format!("Bearer {secret}");
    let as_ci = |method: Method, uri: &str, body: Option<&Value>| {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", &bearer);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(v).unwrap())
            }
            None => Body::empty(),
        };
        w.send(req.body(body).unwrap())
    };

    // It works on alpha, and beta does not exist for it.
    as_ci(Method::GET, "/api/v1/apps/alpha", None)
        .await
        .assert_status(StatusCode::OK);
    let publish = serde_json::to_value(publish_request(Some("production"), None, b"alpha bundle 1", None)).unwrap();
    as_ci(Method::POST, "/api/v1/apps/alpha/publish", Some(&publish))
        .await
        .assert_status(StatusCode::CREATED);
    let beta = as_ci(Method::GET, "/api/v1/apps/beta", None).await;
    beta.assert_error(StatusCode::NOT_FOUND, "app_not_found");
    let nowhere = as_ci(Method::GET, "/api/v1/apps/doesnotexist", None).await;
    assert_eq!(beta.text(), nowhere.text().replace("doesnotexist", "beta"));
    as_ci(Method::POST, "/api/v1/apps/beta/publish", Some(&publish))
        .await
        .assert_error(StatusCode::NOT_FOUND, "app_not_found");
    assert_eq!(slugs(&as_ci(Method::GET, "/api/v1/apps", None).await), ["alpha"]);
    as_ci(Method::GET, "/api/v1/tokens", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Scopes that make no sense are refused, and nothing is created for them.
    let before = w
        .get(Who::Admin, "/api/v1/tokens")
        .await
        .json()
        .as_array()
        .unwrap()
        .len();
    for bad in [
        json!({"name": "r", "scope": "read"}),
        json!({"name": "r", "scope": "read", "apps": []}),
        json!({"name": "p", "scope": "publish"}),
        json!({"name": "a", "scope": "admin", "apps": ["alpha"]}),
        json!({"name": "x", "scope": "root"}),
    ] {
        w.json(Who::Admin, Method::POST, "/api/v1/tokens", &bad)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    let after = w.get(Who::Admin, "/api/v1/tokens").await.json();
    assert_eq!(after.as_array().unwrap().len(), before, "{after}");

    // Listing never shows a secret, nor the hash it is stored as.
    let list = w.get(Who::Admin, "/api/v1/tokens").await;
    list.assert_status(StatusCode::OK);
    let text = list.text();
    for s in w.secrets.values().map(String::as_str).chain([secret.as_str()]) {
        if s == w.secrets[&Who::Garbage] {
            continue;
        }
        assert!(!text.contains(s), "GET /tokens shows a secret: {text}");
        assert!(
            !text.contains(&tokens::hash_secret(s)),
            "GET /tokens shows a secret's hash"
        );
    }
    let listed = list.json();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("token {id} not listed: {text}"));
    assert_eq!(mine["name"], "ci-alpha");
    assert_eq!(mine["scope"], "publish");
    assert_eq!(mine["apps"], json!(["alpha"]));
    assert!(mine.get("secret").is_none(), "{mine}");

    // The publish is in alpha's log under the token's name.
    let log = w.get(Who::Admin, "/api/v1/audit?app=alpha").await;
    log.assert_status(StatusCode::OK);
    let log = log.json();
    assert!(
        log.as_array().unwrap().iter().any(|e| e["action"] == "publish"
            && e["app"] == "alpha"
            && e["target"] == "production"
            && e["actor"].as_str().unwrap().contains("ci-alpha")),
        "no publish by ci-alpha in {log}"
    );

    // Revoking it: 204, then the secret no longer works, and the list says so.
    let r = w
        .call(
            Who::Admin,
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
            Vec::new(),
        )
        .await;
    r.assert_status(StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    as_ci(Method::GET, "/api/v1/apps/alpha", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    as_ci(Method::GET, "/api/v1/apps", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let listed = w.get(Who::Admin, "/api/v1/tokens").await.json();
    let mine = listed.as_array().unwrap().iter().find(|t| t["id"] == id).unwrap();
    assert!(mine["revoked_at"].is_string(), "{mine}");
    let global = w.get(Who::Admin, "/api/v1/audit").await.json();
    let target = id.to_string();
    for action in ["token.create", "token.revoke"] {
        assert!(
            global
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action && e["target"].as_str() == Some(target.as_str())),
            "no {action} of {id} in {global}"
        );
    }

    // Revoking a token that does not exist is the caller's mistake, not a server error.
    let r = w
        .call(Who::Admin, Method::DELETE, "/api/v1/tokens/987654321", None, Vec::new())
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "DELETE /tokens/<unknown>: {}",
        r.text()
    );
    assert_ne!(r.code().as_deref(), Some("internal"));
    assert_ne!(r.code().as_deref(), Some("not_found"), "the route itself exists");
}

/// Refusals for a state reason are the caller's problem (4xx with a stable code), never a 500:
/// the walk's bodies succeed on a fresh world, so the same requests repeated must be refused.
#[tokio::test]
async fn state_refusals_are_client_errors_not_500() {
    let w = World::new().await;
    let mut problems = Vec::new();
    let unknown_group = Uuid::new_v4();
    for (method, uri, body, status) in [
        // Already there.
        (
            Method::POST,
            "/api/v1/apps/alpha/channels".to_owned(),
            Some(json!({"name": "production"})),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/api/v1/apps/alpha/branches".to_owned(),
            Some(json!({"name": "production"})),
            StatusCode::CONFLICT,
        ),
        // The channel `production` uses this branch.
        (
            Method::DELETE,
            "/api/v1/apps/alpha/branches/production".to_owned(),
            None,
            StatusCode::CONFLICT,
        ),
        // Nothing by that name or id.
        (
            Method::DELETE,
            "/api/v1/apps/alpha/branches/nosuchbranch".to_owned(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            format!("/api/v1/apps/alpha/groups/{unknown_group}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            format!("/api/v1/apps/alpha/groups/{unknown_group}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("/api/v1/apps/alpha/groups/{unknown_group}/disable"),
            Some(json!({})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/api/v1/tokens/987654321".to_owned(),
            None,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let resp = match &body {
            Some(b) => w.json(Who::Admin, method.clone(), &uri, b).await,
            None => w.call(Who::Admin, method.clone(), &uri, None, Vec::new()).await,
        };
        let code = resp.code();
        if resp.status != status
            || matches!(
                code.as_deref(),
                None | Some("internal" | "not_found" | "method_not_allowed")
            )
        {
            problems.push(format!(
                "{method} {uri}: expected {} with a specific code, got {} {}",
                status.as_u16(),
                resp.status.as_u16(),
                resp.text()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
