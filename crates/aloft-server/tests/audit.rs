//! The audit log records a change exactly when the change commits: every write route of
//! `aloft_server::api::endpoints()` leaves exactly one entry when it succeeds, and none when it
//! is refused or only prepared; a change whose entry cannot be written is not made, and a change
//! whose transaction fails after its entry was written leaves no entry. Also: every route that is
//! not public answers `401 unauthorized` without a token, before it looks at anything else.
//! Every request goes through the production `aloft_server::app`.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use aloft_core::ContentHash;
use aloft_server::api::{Access, endpoints};
use aloft_server::{AppState, ServerConfig};
use aloft_store::db::audit::{self, Entry};
use aloft_store::db::tokens::{self, Scope};
use aloft_store::db::{Database, Engine};
use aloft_store::testing::Backend;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

struct Resp {
    status: StatusCode,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

fn signing_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        aloft_core::keys::generate("aloft audit test", 1)
            .unwrap()
            .private_key_pem
    })
}

/// A server with app `alpha`: groups `g1`, `g2` on channel `production`, `g3` a 50% rollout on
/// branch `canary`, `g4` disabled on branch `retired`, an unused branch `spare`, a spare token.
/// A dashboard user the user routes act on.
const SPARE_USER: &str = "spare@example.com";

struct World {
    _dir: TempDir,
    state: AppState,
    admin: String,
    spare_token: i64,
    /// A webhook of alpha, for `DELETE /apps/{slug}/webhooks/{webhook}`.
    webhook: i64,
    g1: Uuid,
    g3: Uuid,
    g4: Uuid,
    new_blob: Vec<u8>,
}

impl World {
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
        let (_, admin) = tokens::create(&db, "audit-admin", &Scope::Admin, None).await.unwrap();
        let (spare, _) = tokens::create(&db, "spare", &Scope::Read(vec!["alpha".into()]), None)
            .await
            .unwrap();
        let mut tx = db.begin_write().await.unwrap();
        aloft_store::db::users::insert(&mut tx, SPARE_USER, &Scope::Read(vec!["alpha".into()]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let state = AppState::new(config, db, blobs, None).await.unwrap();
        let mut w = World {
            _dir: dir,
            state,
            admin,
            spare_token: spare.id,
            webhook: 0,
            g1: Uuid::nil(),
            g3: Uuid::nil(),
            g4: Uuid::nil(),
            new_blob: b"a blob nobody has uploaded yet".to_vec(),
        };
        w.ok(Method::POST, "/api/v1/apps", json!({"slug": "alpha"})).await;
        for n in 1..=4 {
            w.upload(format!("alpha bundle {n}").as_bytes()).await;
        }
        w.g1 = w.publish(Some("production"), None, 1, None).await;
        w.publish(Some("production"), None, 2, None).await;
        w.g3 = w.publish(None, Some("canary"), 3, Some(50)).await;
        w.g4 = w.publish(None, Some("retired"), 4, None).await;
        w.ok(
            Method::POST,
            &format!("/api/v1/apps/alpha/groups/{}/disable", w.g4),
            json!({}),
        )
        .await;
        w.ok(Method::POST, "/api/v1/apps/alpha/branches", json!({"name": "spare"}))
            .await;
        let hook = w
            .ok(
                Method::POST,
                "/api/v1/apps/alpha/webhooks",
                json!({"url": "http://127.0.0.1:9/hook", "events": ["publish"]}),
            )
            .await;
        w.webhook = hook["webhook"]["id"].as_i64().unwrap();
        let bundle = ContentHash::of(b"alpha bundle 1");
        w.ok(
            Method::POST,
            "/api/v1/apps/alpha/embedded",
            json!({"id": EMBEDDED, "platform": "ios", "runtime_version": "1.0.0", "bundle": bundle}),
        )
        .await;
        w
    }

    fn db(&self) -> &Database {
        &self.state.db
    }

    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = aloft_server::app(self.state.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, body }
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> Resp {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send(Some(&self.admin), method, uri, Some("application/json"), bytes)
            .await
    }

    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let r = self.json(method.clone(), uri, body).await;
        assert!(r.status.is_success(), "{method} {uri}: {} {}", r.status, r.body);
        r.body
    }

    async fn upload(&self, bytes: &[u8]) {
        let hash = ContentHash::of(bytes);
        let uri = format!("/api/v1/blobs/{hash}");
        let r = self
            .send(
                Some(&self.admin),
                Method::PUT,
                &uri,
                Some("application/octet-stream"),
                bytes.to_vec(),
            )
            .await;
        assert!(r.status.is_success(), "upload: {}", r.body);
    }

    async fn publish(&self, channel: Option<&str>, branch: Option<&str>, bundle: u32, rollout: Option<u8>) -> Uuid {
        let body = publish_body(channel, branch, bundle, rollout);
        let out = self.ok(Method::POST, "/api/v1/apps/alpha/publish", body).await;
        out["published"]["group_id"].as_str().unwrap().parse().unwrap()
    }

    async fn entries(&self) -> Vec<Entry> {
        audit::list(self.db(), None, 100_000).await.unwrap()
    }
}

fn publish_body(channel: Option<&str>, branch: Option<&str>, bundle: u32, rollout: Option<u8>) -> Value {
    let hash = ContentHash::of(format!("alpha bundle {bundle}").as_bytes());
    json!({
        "channel": channel,
        "branch": branch,
        "message": "audit test",
        "updates": [{"platform": "ios", "runtime_version": "1.0.0", "launch_asset": {"hash": hash, "ext": "js"}}],
        "rollout_percentage": rollout,
    })
}

/// An embedded update of alpha, for `DELETE /apps/{slug}/embedded/{embedded}`.
const EMBEDDED: &str = "7c2e8f4a-1b3d-4e5f-9a8b-6c7d8e9f0a1b";

/// Each write route of the table: a request that succeeds on a fresh [`World`], and the action
/// its audit entry has (`None`: the route is not audited, and says why in the table).
fn write_call(w: &World, method: &str, path: &str) -> (String, Option<Value>, Option<&'static str>) {
    let group = if path.contains("/rollout") {
        w.g3
    } else if method == "DELETE" && path.ends_with("/groups/{group}") {
        w.g4
    } else {
        w.g1
    };
    let uri = format!(
        "/api/v1{}",
        path.replace("{slug}", "alpha")
            .replace("{group}", &group.to_string())
            .replace("{channel}", "production")
            .replace("{branch}", "spare")
            .replace("{hash}", &ContentHash::of(&w.new_blob).to_string())
            .replace("{id}", &w.spare_token.to_string())
            .replace("{email}", SPARE_USER)
            .replace("{webhook}", &w.webhook.to_string())
            .replace("{embedded}", EMBEDDED)
    );
    let (body, action) = match (method, path) {
        ("POST", "/apps") => (Some(json!({"slug": "gamma"})), Some("app.create")),
        ("PUT", "/apps/{slug}/signing-key") => (
            Some(json!({"private_key_pem": signing_key_pem(), "keyid": "main"})),
            Some("app.signing_key.set"),
        ),
        ("DELETE", "/apps/{slug}/signing-key") => (None, Some("app.signing_key.delete")),
        ("PUT", "/apps/{slug}/halt-policy") => (Some(json!({"off": true})), Some("app.halt_policy.set")),
        ("POST", "/apps/{slug}/publish") => (Some(publish_body(Some("production"), None, 1, None)), Some("publish")),
        ("POST", "/apps/{slug}/publish/check") => (
            Some(json!({"branch": "unused", "updates": [{"platform": "ios", "runtime_version": "1"}]})),
            None,
        ),
        ("DELETE", "/apps/{slug}/groups/{group}") => (None, Some("group.delete")),
        ("POST", "/apps/{slug}/groups/{group}/republish") => (Some(json!({})), Some("republish")),
        ("POST", "/apps/{slug}/groups/{group}/disable") => (Some(json!({})), Some("group.disable")),
        ("PUT", "/apps/{slug}/groups/{group}/rollout") => (Some(json!({"percentage": 80})), Some("rollout.set")),
        ("POST", "/apps/{slug}/groups/{group}/rollout/complete") => (None, Some("rollout.complete")),
        ("POST", "/apps/{slug}/groups/{group}/rollout/revert") => (Some(json!({})), Some("rollout.revert")),
        ("POST", "/apps/{slug}/rollbacks") => (Some(json!({"channel": "production"})), Some("rollback")),
        ("POST", "/apps/{slug}/channels") => (Some(json!({"name": "staging"})), Some("channel.create")),
        ("PUT", "/apps/{slug}/channels/{channel}") => (Some(json!({"branch": "canary"})), Some("channel.edit")),
        ("POST", "/apps/{slug}/channels/{channel}/rollout") => (
            Some(json!({"action": "start", "branch": "canary", "percentage": 10})),
            Some("channel.rollout"),
        ),
        ("POST", "/apps/{slug}/branches") => (Some(json!({"name": "feature"})), Some("branch.create")),
        ("DELETE", "/apps/{slug}/branches/{branch}") => (None, Some("branch.delete")),
        ("POST", "/apps/{slug}/webhooks") => (
            Some(json!({"url": "https://hooks.example.com/x", "events": ["rollback"]})),
            Some("webhook.add"),
        ),
        ("DELETE", "/apps/{slug}/webhooks/{webhook}") => (None, Some("webhook.remove")),
        ("PUT", "/apps/{slug}/patches") => (Some(json!({"enabled": false})), Some("app.patches.set")),
        ("POST", "/apps/{slug}/embedded") => (
            Some(
                json!({"id": "0b5a2e4c-3d1f-4a6b-8c7d-9e0f1a2b3c4d", "platform": "android",
                        "runtime_version": "1.0.0", "bundle": ContentHash::of(b"alpha bundle 2")}),
            ),
            Some("embedded.add"),
        ),
        ("DELETE", "/apps/{slug}/embedded/{embedded}") => (None, Some("embedded.remove")),
        ("POST", "/blobs/missing") => (Some(json!({"hashes": [ContentHash::of(b"alpha bundle 1")]})), None),
        // Raw bytes, not JSON: see below.
        ("PUT", "/blobs/{hash}") => (None, None),
        ("POST", "/gc") => (Some(json!({"grace_seconds": 0})), Some("gc")),
        ("POST", "/tokens") => (
            Some(json!({"name": "walk", "scope": "read", "apps": ["alpha"]})),
            Some("token.create"),
        ),
        ("DELETE", "/tokens/{id}") => (None, Some("token.revoke")),
        ("POST", "/users") => (
            Some(json!({"email": "walk@example.com", "role": "viewer", "apps": ["alpha"]})),
            Some("user.create"),
        ),
        ("POST", "/users/{email}/sign-in-link") => (None, Some("user.reset")),
        ("DELETE", "/users/{email}") => (None, Some("user.remove")),
        _ => panic!("{method} {path}: a write route this test does not know; teach `write_call` about it"),
    };
    (uri, body, action)
}

async fn call(w: &World, method: &Method, uri: &str, body: Option<&Value>) -> Resp {
    match body {
        Some(b) => w.json(method.clone(), uri, b.clone()).await,
        None if uri.contains("/blobs/") => {
            let bytes = w.new_blob.clone();
            w.send(
                Some(&w.admin),
                method.clone(),
                uri,
                Some("application/octet-stream"),
                bytes,
            )
            .await
        }
        None => w.send(Some(&w.admin), method.clone(), uri, None, Vec::new()).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_successful_write_leaves_exactly_one_audit_entry_and_a_prepare_none() {
    let mut problems = Vec::new();
    let mut audited = 0;
    for e in endpoints() {
        if e.method == Method::GET {
            continue;
        }
        let path = e.path;
        let w = World::new().await;
        let (uri, body, action) = write_call(&w, e.method.as_str(), path);
        let what = format!("{} {path}", e.method);

        if e.prepare {
            let before = w.entries().await.len();
            let r = call(&w, &e.method, &format!("{uri}?prepare=true"), body.as_ref()).await;
            let after = w.entries().await.len();
            if r.status != StatusCode::OK || after != before {
                problems.push(format!(
                    "{what}?prepare=true: {} {}, {} new entries",
                    r.status,
                    r.body,
                    after - before
                ));
            }
        }

        let before = w.entries().await;
        let r = call(&w, &e.method, &uri, body.as_ref()).await;
        if r.status.as_u16() != e.status && !(path == "/blobs/{hash}" && r.status.is_success()) {
            problems.push(format!("{what}: expected {}, got {} {}", e.status, r.status, r.body));
            continue;
        }
        let after = w.entries().await;
        let new: Vec<&Entry> = after.iter().take(after.len() - before.len()).collect();
        match action {
            None if !new.is_empty() => problems.push(format!("{what}: not a change, yet audited: {new:?}")),
            None => {}
            Some(action) => {
                audited += 1;
                if new.len() != 1 || new[0].action != action {
                    problems.push(format!("{what}: expected one {action:?} entry, got {new:?}"));
                } else if !new[0].actor.contains("audit-admin") {
                    problems.push(format!("{what}: the entry does not name the token: {:?}", new[0]));
                } else if path.contains("{slug}") && new[0].app.as_deref() != Some("alpha") {
                    problems.push(format!("{what}: the entry is not alpha's: {:?}", new[0]));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(audited >= 18, "only {audited} audited routes walked");
}

#[tokio::test]
async fn a_refused_change_leaves_no_audit_entry() {
    let w = World::new().await;
    let before = w.entries().await.len();
    for (method, uri, body, status) in [
        (Method::POST, "/api/v1/apps".to_owned(), json!({"slug": "alpha"}), 409),
        (
            Method::POST,
            "/api/v1/apps/alpha/channels".to_owned(),
            json!({"name": "production"}),
            409,
        ),
        (
            Method::POST,
            "/api/v1/apps/alpha/branches".to_owned(),
            json!({"name": "production"}),
            409,
        ),
        (
            Method::PUT,
            format!("/api/v1/apps/alpha/groups/{}/rollout", w.g3),
            json!({"percentage": 10}),
            409,
        ),
        (
            Method::POST,
            format!("/api/v1/apps/alpha/groups/{}/disable", w.g4),
            json!({}),
            409,
        ),
        (
            Method::POST,
            "/api/v1/apps/alpha/publish".to_owned(),
            publish_body(Some("production"), None, 9, None),
            400,
        ),
        (
            Method::POST,
            "/api/v1/tokens".to_owned(),
            json!({"name": "x", "scope": "root"}),
            400,
        ),
        (
            Method::PUT,
            "/api/v1/apps/alpha/signing-key".to_owned(),
            json!({"private_key_pem": "no", "keyid": "k"}),
            400,
        ),
    ] {
        let r = w.json(method.clone(), &uri, body).await;
        assert_eq!(r.status.as_u16(), status, "{method} {uri}: {}", r.body);
    }
    let r = w
        .send(
            Some(&w.admin),
            Method::DELETE,
            "/api/v1/tokens/987654321",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = w
        .send(
            Some(&w.admin),
            Method::DELETE,
            "/api/v1/apps/alpha/branches/production",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let after = w.entries().await;
    assert_eq!(
        after.len(),
        before,
        "refusals were audited: {:?}",
        &after[..after.len() - before]
    );
}

/// Installs a trigger that makes `event` (`BEFORE INSERT ON audit_log`, ...) fail.
async fn refuse(db: &Database, name: &str, event: &str) {
    let statements = match db.engine() {
        Engine::Sqlite => vec![format!(
            "CREATE TRIGGER {name} {event} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
        Engine::Postgres => vec![
            "CREATE OR REPLACE FUNCTION aloft_test_refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                .to_owned(),
            format!("CREATE TRIGGER {name} {event} FOR EACH ROW EXECUTE FUNCTION aloft_test_refuse()"),
        ],
    };
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(db.pool()).await.unwrap();
    }
}

async fn unrefuse(db: &Database, name: &str, table: &str) {
    let sql = match db.engine() {
        Engine::Sqlite => format!("DROP TRIGGER {name}"),
        Engine::Postgres => format!("DROP TRIGGER {name} ON {table}"),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(db.pool()).await.unwrap();
}

async fn channel_names(w: &World) -> Vec<String> {
    let r = w
        .send(
            Some(&w.admin),
            Method::GET,
            "/api/v1/apps/alpha/channels",
            None,
            Vec::new(),
        )
        .await;
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn token_names(w: &World) -> Vec<String> {
    let r = w
        .send(Some(&w.admin), Method::GET, "/api/v1/tokens", None, Vec::new())
        .await;
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_change_and_its_audit_entry_commit_together_or_not_at_all() {
    let w = World::new().await;
    let before = w.entries().await.len();

    // The entry cannot be written: neither the per-app change nor the token is made.
    refuse(w.db(), "refuse_audit", "BEFORE INSERT ON audit_log").await;
    let r = w
        .json(Method::POST, "/api/v1/apps/alpha/channels", json!({"name": "staging"}))
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    let r = w
        .json(
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "ghost", "scope": "admin"}),
        )
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    let r = w
        .json(
            Method::POST,
            "/api/v1/apps/alpha/publish",
            publish_body(Some("production"), None, 1, None),
        )
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    unrefuse(w.db(), "refuse_audit", "audit_log").await;
    assert!(!channel_names(&w).await.contains(&"staging".to_owned()));
    assert!(!token_names(&w).await.contains(&"ghost".to_owned()));
    assert_eq!(w.entries().await.len(), before);

    // The entry is written, then the transaction fails (bumping the app's revision, the step
    // before the commit): the entry goes with the change.
    refuse(w.db(), "refuse_revision", "BEFORE UPDATE OF revision ON apps").await;
    let r = w
        .json(Method::POST, "/api/v1/apps/alpha/channels", json!({"name": "staging"}))
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    let r = w
        .json(
            Method::POST,
            "/api/v1/apps/alpha/rollbacks",
            json!({"channel": "production"}),
        )
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.body);
    unrefuse(w.db(), "refuse_revision", "apps").await;
    assert!(!channel_names(&w).await.contains(&"staging".to_owned()));
    assert_eq!(w.entries().await.len(), before);

    // And once nothing refuses, the same change is made and recorded once.
    let r = w
        .json(Method::POST, "/api/v1/apps/alpha/channels", json!({"name": "staging"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(channel_names(&w).await.contains(&"staging".to_owned()));
    let after = w.entries().await;
    assert_eq!(after.len(), before + 1);
    assert_eq!(
        (after[0].action.as_str(), after[0].target.as_str()),
        ("channel.create", "staging")
    );
}

#[tokio::test]
async fn every_route_but_the_public_ones_answers_401_without_a_token() {
    let w = World::new().await;
    let mut problems = Vec::new();
    let mut checked = 0;
    for e in endpoints() {
        if e.access == Access::Public {
            continue;
        }
        let uri = format!(
            "/api/v1{}",
            e.path
                .replace("{slug}", "alpha")
                .replace("{group}", &w.g1.to_string())
                .replace("{channel}", "production")
                .replace("{branch}", "spare")
                .replace("{hash}", &ContentHash::of(&w.new_blob).to_string())
                .replace("{id}", &w.spare_token.to_string())
                .replace("{email}", SPARE_USER)
        );
        // Not even a malformed body is looked at first.
        let r = w
            .send(
                None,
                e.method.clone(),
                &uri,
                Some("application/json"),
                b"{not json".to_vec(),
            )
            .await;
        if r.status != StatusCode::UNAUTHORIZED || r.code() != "unauthorized" {
            problems.push(format!("{} {}: {} {}", e.method, e.path, r.status, r.body));
        }
        checked += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 30, "only {checked} routes");
}
