//! Publishing and every release operation that may publish. Each takes `?prepare=true`, which
//! returns the bodies the operation would store (for a publisher who signs them) and changes
//! nothing.

use aloft_core::api::{
    ChannelRolloutRequest, Outcome, PublishRequest, RepublishRequest, RollbackRequest, SetRollout, SignedOperation,
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
use crate::service::plan::Finished;
use crate::service::{channels, publish as publishing, release};
use crate::state::AppState;

/// Whether the request asked only to prepare (`?prepare=true`).
pub(super) fn prepare(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "prepare=true" || p == "prepare=1" || p == "prepare")
    })
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
    let finished = publishing::publish(&state, &app, &req, prepare(&uri), &caller.token_name).await?;
    let target = req.channel.clone().or(req.branch.clone()).unwrap_or_default();
    let summary = match req.rollout_percentage.filter(|p| *p < 100) {
        Some(p) => format!("published to {target} as a {p}% rollout"),
        None => format!("published to {target}"),
    };
    Ok(respond(&state, &caller, &slug, "publish", target, summary, finished).await)
}

pub async fn republish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<RepublishRequest>,
) -> Result<Response, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let finished = publishing::republish(&state, &app, group_id(&id)?, &req, prepare(&uri), &caller.token_name).await?;
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
    let finished = release::rollback(&state, &app, &req, prepare(&uri), &caller.token_name).await?;
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
    let finished = release::disable(&state, &app, group_id(&id)?, &req, prepare(&uri), &caller.token_name).await?;
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
    let finished =
        release::revert_rollout(&state, &app, group_id(&id)?, &req, prepare(&uri), &caller.token_name).await?;
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
    let finished = channels::channel_rollout(&state, &app, &name, &req, prepare(&uri), &caller.token_name).await?;
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
