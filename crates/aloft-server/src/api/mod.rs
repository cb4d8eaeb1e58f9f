//! The management API under `/api/v1`. One table, [`endpoints`], lists every route with its
//! handler, access class and documentation; the router, its access checks and
//! `/api/v1/openapi.json` are all built from it, so neither the document nor the checks can
//! drift from the routes.
//!
//! Access is enforced by construction. [`routes`] wraps each route in the gate of its declared
//! [`Access`] (`auth::admit`, a route layer that authenticates, resolves the `{slug}` app and
//! checks the scope before the handler's own extractors run), and the `endpoint!` macro accepts
//! a handler only if its first argument is the grant of that same class (`auth::grant::AppWrite`
//! for `AppWrite`, ...; checked at compile time by `auth::guarded`). A grant is made only from
//! what the gate let through, so a handler can neither run unchecked nor assume more access than
//! its row declares: there is no check to forget.

pub(crate) mod apps;
pub(crate) mod auth;
mod blobs;
pub(crate) mod channels;
pub(crate) mod idempotency;
pub(crate) mod insights;
mod patches;
mod publish;
pub(crate) mod tokens;
pub(crate) mod updates;
pub(crate) mod users;
pub(crate) mod webhooks;

use aloft_core::api as body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::state::AppState;

pub(crate) use auth::{Need, grant};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any valid token; the answer covers only what it may see.
    AnyToken,
    /// A token that may read the app in the path.
    AppRead,
    /// A token that may change the app in the path.
    AppWrite,
    /// A publish or admin token (blob uploads are part of publishing).
    Upload,
    Admin,
}

type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// A JSON body of type `T`.
fn json<T: JsonSchema>() -> Option<SchemaFn> {
    Some(schema::<T>)
}

/// One documented route.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Whether the route takes `?prepare=true` (returns the bodies to sign, changes nothing).
    pub prepare: bool,
    /// Whether a request here with an `Idempotency-Key` acts once and its answer is replayed to
    /// retries with the key ([`idempotency`]): every write but the few that say why not.
    pub replays: bool,
    pub request: Option<SchemaFn>,
    pub response: Option<SchemaFn>,
    pub status: u16,
    handler: MethodRouter<AppState>,
}

/// One row of the table. The handler must take the grant of `$access` first (see the module
/// documentation); `layer:` adds a layer to its method router (the upload's body limit).
macro_rules! endpoint {
    ($method:ident $path:literal, $summary:literal, $access:ident, $handler:expr $(, layer: $layer:expr)?,
     req: $req:expr, res: $res:expr, status: $status:literal $(, prepare: $prepare:literal)?
     $(, replays: $replays:literal)?) => {
        Endpoint {
            method: Method::$method,
            path: $path,
            summary: $summary,
            access: Access::$access,
            prepare: false $(|| $prepare)?,
            replays: None$(.or(Some($replays)))?.unwrap_or_else(|| writes(&Method::$method)),
            request: $req,
            response: $res,
            status: $status,
            handler: on(MethodFilter::$method, auth::guarded::<grant::$access, _, _>($handler))$(.layer($layer))?,
        }
    };
}

/// Methods that change something.
fn writes(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// Every management route.
pub fn endpoints() -> Vec<Endpoint> {
    use body::*;
    vec![
        endpoint!(GET "/openapi.json", "This document", Public, openapi_json, req: None, res: None, status: 200),
        endpoint!(GET "/apps", "List the apps the token can see", AnyToken, apps::list_apps, req: None, res: json::<Vec<AppInfo>>(), status: 200),
        endpoint!(POST "/apps", "Create an app (with channel and branch `production`)", Admin, apps::create_app, req: json::<CreateApp>(), res: json::<AppInfo>(), status: 201),
        endpoint!(GET "/apps/{slug}", "Show an app and its manifest URL", AppRead, apps::show_app, req: None, res: json::<AppInfo>(), status: 200),
        endpoint!(PUT "/apps/{slug}/signing-key", "Give the app a server-side signing key", Admin, apps::set_signing_key, req: json::<SetSigningKey>(), res: json::<AppInfo>(), status: 200),
        endpoint!(DELETE "/apps/{slug}/signing-key", "Remove the app's server-side signing key", Admin, apps::delete_signing_key, req: None, res: json::<AppInfo>(), status: 200),
        endpoint!(POST "/apps/{slug}/publish", "Publish an update group (optionally as a rollout)", AppWrite, publish::publish, req: json::<PublishRequest>(), res: json::<Outcome>(), status: 201, prepare: true),
        endpoint!(POST "/apps/{slug}/publish/check", "Whether a publish to this channel or branch, of these platforms and runtime versions, would be refused (as the publish would refuse it); changes nothing", AppWrite, publish::check_publish, req: json::<PublishCheckRequest>(), res: json::<PublishCheck>(), status: 200, replays: false),
        endpoint!(GET "/apps/{slug}/groups", "List update groups, newest first (?branch= or ?channel=, ?limit=)", AppRead, updates::list_groups, req: None, res: json::<Vec<GroupInfo>>(), status: 200),
        endpoint!(GET "/apps/{slug}/groups/{group}", "Show an update group", AppRead, updates::show_group, req: None, res: json::<GroupInfo>(), status: 200),
        endpoint!(GET "/apps/{slug}/groups/{group}/insights", "What devices did with a group, per platform: devices served it, installs, launches, failures, the failure rate, frequent fatal errors, and a daily series (?days=, 1 to 90, default 14)", AppRead, insights::group_insights, req: None, res: json::<GroupInsights>(), status: 200),
        endpoint!(GET "/apps/{slug}/groups/{group}/rollout", "A group's rollout state and its live failure figures per platform against its halt policy", AppRead, insights::rollout_status, req: None, res: json::<RolloutStatus>(), status: 200),
        endpoint!(PUT "/apps/{slug}/halt-policy", "Set when the app's rollouts halt by themselves (unless a rollout sets its own policy): a policy, off, or neither for the built-in default", AppWrite, apps::set_halt_policy, req: json::<SetHaltPolicy>(), res: json::<AppInfo>(), status: 200),
        endpoint!(PUT "/apps/{slug}/patches", "Turn the app's bundle patches on or off: when on (the default), a device that asks for its new launch asset with `A-IM: bsdiff` gets a stored bsdiff patch from the update it runs (226 IM Used) instead of the whole bundle", AppWrite, patches::set_patches, req: json::<SetPatches>(), res: json::<AppInfo>(), status: 200),
        endpoint!(GET "/apps/{slug}/embedded", "List the embedded bundles registered for the app's store builds", AppRead, patches::list_embedded, req: None, res: json::<Vec<EmbeddedInfo>>(), status: 200),
        endpoint!(POST "/apps/{slug}/embedded", "Register a store build's embedded bundle (uploaded as a blob first) as a base for patches to the app's updates of its platform and runtime version", AppWrite, patches::add_embedded, req: json::<AddEmbedded>(), res: json::<EmbeddedInfo>(), status: 201),
        endpoint!(DELETE "/apps/{slug}/embedded/{embedded}", "Remove an embedded bundle and the patches from it", AppWrite, patches::remove_embedded, req: None, res: None, status: 204),
        endpoint!(GET "/apps/{slug}/insights", "What the app's devices run today, per channel, platform and runtime version: the embedded update or which update (?channel= for one); and checks for channels that do not exist", AppRead, insights::fleet_insights, req: None, res: json::<FleetInsights>(), status: 200),
        endpoint!(DELETE "/apps/{slug}/groups/{group}", "Delete a group that is no longer served", AppWrite, publish::delete_group, req: None, res: None, status: 204),
        endpoint!(POST "/apps/{slug}/groups/{group}/republish", "Republish a group: new ids and createdAt, same assets", AppWrite, publish::republish, req: json::<RepublishRequest>(), res: json::<Outcome>(), status: 201, prepare: true),
        endpoint!(POST "/apps/{slug}/groups/{group}/disable", "Stop serving a group; re-serve the previous one if it was current", AppWrite, publish::disable_group, req: json::<SignedOperation>(), res: json::<Outcome>(), status: 200, prepare: true),
        endpoint!(PUT "/apps/{slug}/groups/{group}/rollout", "Raise a group's rollout percentage", AppWrite, publish::set_rollout, req: json::<SetRollout>(), res: json::<Outcome>(), status: 200),
        endpoint!(POST "/apps/{slug}/groups/{group}/rollout/complete", "Complete a rollout: every device gets the group", AppWrite, publish::complete_rollout, req: None, res: json::<Outcome>(), status: 200),
        endpoint!(POST "/apps/{slug}/groups/{group}/rollout/revert", "Revert a rollout: withdraw the group, move devices back to the control", AppWrite, publish::revert_rollout, req: json::<SignedOperation>(), res: json::<Outcome>(), status: 200, prepare: true),
        endpoint!(POST "/apps/{slug}/rollbacks", "Roll a channel back to its previous group, or to the embedded update", AppWrite, publish::rollback, req: json::<RollbackRequest>(), res: json::<Outcome>(), status: 201, prepare: true),
        endpoint!(GET "/apps/{slug}/channels", "List channels", AppRead, channels::list_channels, req: None, res: json::<Vec<ChannelInfo>>(), status: 200),
        endpoint!(POST "/apps/{slug}/channels", "Create a channel", AppWrite, channels::create_channel, req: json::<CreateChannel>(), res: json::<ChannelInfo>(), status: 201),
        endpoint!(PUT "/apps/{slug}/channels/{channel}", "Point a channel at another branch", AppWrite, channels::edit_channel, req: json::<EditChannel>(), res: json::<ChannelInfo>(), status: 200),
        endpoint!(POST "/apps/{slug}/channels/{channel}/rollout", "Start, raise, end or revert a channel's branch rollout", AppWrite, publish::channel_rollout, req: json::<ChannelRolloutRequest>(), res: json::<Outcome>(), status: 200, prepare: true),
        endpoint!(GET "/apps/{slug}/branches", "List branches", AppRead, channels::list_branches, req: None, res: json::<Vec<BranchInfo>>(), status: 200),
        endpoint!(POST "/apps/{slug}/branches", "Create a branch", AppWrite, channels::create_branch, req: json::<CreateBranch>(), res: None, status: 201),
        endpoint!(DELETE "/apps/{slug}/branches/{branch}", "Delete a branch no channel uses, with its groups", AppWrite, channels::delete_branch, req: None, res: None, status: 204),
        endpoint!(GET "/apps/{slug}/webhooks", "List the app's webhooks", AppRead, webhooks::list_webhooks, req: None, res: json::<Vec<WebhookInfo>>(), status: 200),
        endpoint!(POST "/apps/{slug}/webhooks", "Add a webhook: the app's events (publish, rollout, halt, rollback, disable) are POSTed to its URL, signed (the secret is shown once; see the `webhooks` section of this document for the payload)", AppWrite, webhooks::add_webhook, req: json::<CreateWebhook>(), res: json::<CreatedWebhook>(), status: 201),
        endpoint!(DELETE "/apps/{slug}/webhooks/{webhook}", "Remove a webhook and its delivery log", AppWrite, webhooks::remove_webhook, req: None, res: None, status: 204),
        endpoint!(GET "/apps/{slug}/webhooks/deliveries", "The delivery log of the app's webhooks, newest first, with every attempt's status (?webhook= for one, ?limit=)", AppRead, webhooks::list_deliveries, req: None, res: json::<Vec<WebhookDelivery>>(), status: 200),
        // A question (that also marks the blobs as offered, which repeating does not change).
        endpoint!(POST "/blobs/missing", "Which of these blobs the server lacks", Upload, blobs::missing_blobs, req: json::<MissingBlobsRequest>(), res: json::<MissingBlobsResponse>(), status: 200, replays: false),
        // Uploads stream to disk under their own size limit; being content-addressed, they are
        // idempotent already, and are never held in memory to be recorded.
        endpoint!(PUT "/blobs/{hash}", "Upload one blob; its bytes must hash to the name", Upload, blobs::upload_blob, layer: DefaultBodyLimit::disable(), req: None, res: json::<BlobInfo>(), status: 201, replays: false),
        endpoint!(POST "/gc", "Remove blobs no update references, after a grace period", Admin, blobs::collect_garbage, req: json::<GcRequest>(), res: json::<GcResult>(), status: 200),
        endpoint!(GET "/tokens", "List tokens", Admin, tokens::list_tokens, req: None, res: json::<Vec<TokenInfo>>(), status: 200),
        // The answer holds the secret, which is never stored.
        endpoint!(POST "/tokens", "Create a token (the secret is shown once)", Admin, tokens::create_token, req: json::<CreateToken>(), res: json::<CreatedToken>(), status: 201, replays: false),
        endpoint!(DELETE "/tokens/{id}", "Revoke a token", Admin, tokens::revoke_token, req: None, res: None, status: 204),
        endpoint!(GET "/users", "List dashboard users", Admin, users::list_users, req: None, res: json::<Vec<UserInfo>>(), status: 200),
        // The answer holds the sign-in link, which is never stored.
        endpoint!(POST "/users", "Add a dashboard user; the answer holds a one-time sign-in link (24 hours) where they set a password", Admin, users::create_user, req: json::<CreateUser>(), res: json::<UserSignInLink>(), status: 201, replays: false),
        endpoint!(POST "/users/{email}/sign-in-link", "A new one-time sign-in link for a user (their earlier links stop working)", Admin, users::reset_user, req: None, res: json::<UserSignInLink>(), status: 201, replays: false),
        endpoint!(DELETE "/users/{email}", "Remove a dashboard user and end their sessions", Admin, users::remove_user, req: None, res: None, status: 204),
        endpoint!(GET "/audit", "The audit log (?app= for one app, else admin only; ?limit=)", AnyToken, tokens::list_audit, req: None, res: json::<Vec<AuditEntry>>(), status: 200),
    ]
}

/// The router of [`endpoints`]: each route behind the gate of its access class, and the routes
/// that replay behind the idempotency guard, outside the gate (as a refused request is answered
/// the same way on a retry).
pub fn routes(state: &AppState) -> Router<AppState> {
    endpoints().into_iter().fold(Router::new(), |router, e| {
        let gate = auth::Gate {
            state: state.clone(),
            access: e.access,
            app_in_path: e.path.contains("{slug}"),
        };
        let handler = e.handler.route_layer(from_fn_with_state(gate, auth::admit));
        let handler = if e.replays {
            handler.route_layer(from_fn_with_state(state.clone(), idempotency::guard))
        } else {
            handler
        };
        router.route(e.path, handler)
    })
}

async fn openapi_json(_: grant::Public, State(state): State<AppState>) -> Json<Value> {
    Json(openapi(&state.config.public_url))
}

/// What Aloft sends to a webhook's URL (`docs/webhooks.md`), as OpenAPI 3.1's `webhooks`.
fn webhooks_section(generator: &mut SchemaGenerator) -> Value {
    use aloft_core::webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
    let header = |name: &str, description: &str| json!({"name": name, "in": "header", "required": true, "schema": {"type": "string"}, "description": description});
    json!({
        "event": {"post": {
            "summary": "An app's change, sent to each webhook subscribed to its event",
            "description": "Sent once the change has committed, off the request path. Any 2xx answer within 10 \
                seconds delivers it; otherwise it is tried again (with the same `aloft-delivery`, body and \
                signature) after 10 s, doubling up to an hour between attempts, until a day after the event.",
            "parameters": [
                header(SIGNATURE_HEADER, "`sha256=` and the hex HMAC-SHA256 of the exact body, keyed with the webhook's secret"),
                header(DELIVERY_HEADER, "The delivery id (the payload's `id`): the same on every retry"),
                header(EVENT_HEADER, "publish, rollout, halt, rollback or disable"),
            ],
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": generator.subschema_for::<body::WebhookPayload>()}}},
            "responses": {"2XX": {"description": "Delivered"}}
        }}
    })
}

/// The OpenAPI 3.1 document of [`endpoints`].
pub fn openapi(server_url: &str) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths = Map::new();
    for e in endpoints() {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain(e.prepare.then(|| {
                json!({"name": "prepare", "in": "query", "required": false, "schema": {"type": "boolean"},
                       "description": "Return the bodies this operation would store, for signing; change nothing"})
            }))
            .chain(e.replays.then(|| {
                json!({"name": "Idempotency-Key", "in": "header", "required": false,
                       "schema": {"type": "string", "minLength": 1, "maxLength": idempotency::MAX_KEY_LEN, "pattern": "^[!-~]+$"},
                       "description": "Makes a retry safe: a new random value (a UUID) per operation, sent again unchanged \
                        when retrying it. The first request with the key acts; a retry gets its answer again (with \
                        `idempotent-replayed: true`) instead of acting twice, for 24 hours. While the first still runs: 409 \
                        `idempotency_in_progress`; the key with a different method, path, query or body: 422 \
                        `idempotency_key_reused`. 5xx answers are not kept, so a retry acts. Keys are per token. Ignored \
                        with `?prepare=true`, which changes nothing."})
            }))
            .collect();
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{} {}", e.method, e.path),
            "x-aloft-access": format!("{:?}", e.access),
            "parameters": params,
            "responses": {
                e.status.to_string(): match e.response {
                    Some(f) => json!({"description": "Success", "content": {"application/json": {"schema": f(&mut generator)}}}),
                    None => json!({"description": "Success"}),
                },
                "4XX": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if e.access != Access::Public {
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(f) = e.request {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": f(&mut generator)}}});
        }
        paths
            .entry(format!("/api/v1{}", e.path))
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(e.method.as_str().to_ascii_lowercase(), op));
    }
    let webhooks = webhooks_section(&mut generator);
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Aloft management API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": server_url}],
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}
