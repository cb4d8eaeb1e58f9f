//! Publishing and every release operation that may publish. Each takes `?prepare=true`, which
//! returns the bodies the operation would store (for a publisher who signs them) and changes
//! nothing, and `allow_unsigned` in its body, without which unsigned updates are refused on an
//! app whose earlier updates were signed.

use aloft_core::RuntimeVersion;
use aloft_core::api::{
    ChannelRolloutRequest, Outcome, PublishCheck, PublishCheckRequest, PublishRequest, RepublishRequest,
    RollbackRequest, SetRollout, SignedOperation,
};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::auth::{Caller, Need};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::plan::{Finished, Intent};
use crate::service::{channels, publish as publishing, release};
use crate::state::AppState;

/// What the request asks for: `?prepare` is a strict boolean (`true`/`1`, `false`/`0`, or bare
/// for true). Anything else is refused before anything is done, so a mistyped dry run never
/// stores an update.
fn intent(uri: &Uri, allow_unsigned: bool) -> Result<Intent, ApiError> {
    let mut prepare = None;
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if name != "prepare" {
            continue;
        }
        let parsed = match value {
            None | Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_prepare",
                    format!(
                        "prepare must be true, false, 1 or 0 (or given bare for true), not {other:?}; nothing was done"
                    ),
                ));
            }
        };
        if prepare.is_some_and(|p| p != parsed) {
            return Err(ApiError::bad_request(
                "invalid_prepare",
                "prepare is given twice with different values; nothing was done",
            ));
        }
        prepare = Some(parsed);
    }
    Ok(Intent {
        prepare: prepare.unwrap_or(false),
        allow_unsigned,
    })
}

/// Whether the request asks only to prepare; a malformed `prepare` is not one (the operation
/// refuses it).
pub(super) fn prepare(uri: &Uri) -> bool {
    intent(uri, false).is_ok_and(|i| i.prepare)
}

fn group_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("group_not_found", "no update group with that id"))
}

/// Renders what an operation did, and records it.
async fn respond(
    state: &AppState,
    caller: &Caller,
    app: &str,
    action: &str,
    target: String,
    summary: String,
    finished: Finished,
) -> Response {
    match finished {
        Finished::Prepared(prepared) => Json(prepared).into_response(),
        Finished::Committed(published) => {
            let details = json!({
                "summary": summary,
                "published_group": published.as_ref().map(|p| p.group_id),
            });
            caller.audit(state, Some(app), action, target, details).await;
            let status = if published.is_some() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(Outcome { summary, published })).into_response()
        }
    }
}

pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    uri: Uri,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = publishing::publish(
        &state,
        &app,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    let target = req.channel.clone().or(req.branch.clone()).unwrap_or_default();
    let summary = match req.rollout_percentage.filter(|p| *p < 100) {
        Some(p) => format!("published to {target} as a {p}% rollout"),
        None => format!("published to {target}"),
    };
    Ok(respond(&state, &caller, &slug, "publish", target, summary, finished).await)
}

/// Whether a publish to this target would be refused, before anything is uploaded; read-only,
/// so not audited.
pub async fn check_publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<PublishCheckRequest>,
) -> Result<Json<PublishCheck>, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let targets = req
        .updates
        .iter()
        .map(|u| {
            RuntimeVersion::parse(u.runtime_version.as_str())
                .map(|rv| (u.platform, rv))
                .map_err(|e| ApiError::bad_request("invalid_runtime_version", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let branch = publishing::check_publish(
        &state,
        &app,
        req.channel.as_deref(),
        req.branch.as_deref(),
        &targets,
        req.force,
    )
    .await?;
    Ok(Json(PublishCheck { branch }))
}

pub async fn republish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<RepublishRequest>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = publishing::republish(
        &state,
        &app,
        group_id(&id)?,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    Ok(respond(
        &state,
        &caller,
        &slug,
        "republish",
        id.clone(),
        format!("republished {id}"),
        finished,
    )
    .await)
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    uri: Uri,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = release::rollback(
        &state,
        &app,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    let summary = if req.to_embedded {
        format!("channel {} rolled back to the embedded update", req.channel)
    } else {
        format!("channel {} rolled back to its previous update", req.channel)
    };
    let action = if req.to_embedded {
        "rollback.embedded"
    } else {
        "rollback"
    };
    Ok(respond(&state, &caller, &slug, action, req.channel.clone(), summary, finished).await)
}

pub async fn disable_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<SignedOperation>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = release::disable(
        &state,
        &app,
        group_id(&id)?,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    Ok(respond(
        &state,
        &caller,
        &slug,
        "group.disable",
        id.clone(),
        format!("group {id} disabled"),
        finished,
    )
    .await)
}

pub async fn set_rollout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRollout>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = release::set_rollout(&state, &app, group_id(&id)?, req.percentage, &caller.token_name).await?;
    let summary = format!("rollout of {id} set to {}%", req.percentage);
    Ok(respond(&state, &caller, &slug, "rollout.set", id, summary, finished).await)
}

pub async fn complete_rollout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = release::complete_rollout(&state, &app, group_id(&id)?, &caller.token_name).await?;
    Ok(respond(
        &state,
        &caller,
        &slug,
        "rollout.complete",
        id.clone(),
        format!("rollout of {id} completed"),
        finished,
    )
    .await)
}

pub async fn revert_rollout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<SignedOperation>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = release::revert_rollout(
        &state,
        &app,
        group_id(&id)?,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    Ok(respond(
        &state,
        &caller,
        &slug,
        "rollout.revert",
        id.clone(),
        format!("rollout of {id} reverted"),
        finished,
    )
    .await)
}

pub async fn channel_rollout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, name)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<ChannelRolloutRequest>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = channels::channel_rollout(
        &state,
        &app,
        &name,
        &req,
        intent(&uri, req.allow_unsigned)?,
        &caller.token_name,
    )
    .await?;
    let summary = format!(
        "channel {name}: branch rollout {}",
        serde_json::to_value(&req.action).unwrap_or_default()
    );
    Ok(respond(&state, &caller, &slug, "channel.rollout", name, summary, finished).await)
}

pub async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    release::delete_group(&state, &app, group_id(&id)?).await?;
    caller.audit(&state, Some(&slug), "group.delete", id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}
