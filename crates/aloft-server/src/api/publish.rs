//! Publishing and every release operation that may publish. Each takes `?prepare=true`, which
//! returns the bodies the operation would store (for a publisher who signs them) and changes
//! nothing, and `allow_unsigned` in its body, without which unsigned updates are refused on an
//! app whose earlier updates were signed.

use aloft_core::api::{
    ChannelRolloutRequest, CommitInfo, PublishCheck, PublishCheckRequest, PublishRequest, RepublishRequest,
    RollbackRequest, SetRollout, SignedOperation,
};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::grant::AppWrite;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::operation::{Finished, Mode, Operation, Record};
use crate::service::{Actor, channels, input, publish as publishing, release};
use crate::state::AppState;

/// What the request asks for: `?prepare` is a strict boolean (`true`/`1`, `false`/`0`, or bare
/// for true). Anything else is refused before anything is done, so a mistyped dry run never
/// stores an update.
fn mode(uri: &Uri, allow_unsigned: bool) -> Result<Mode, ApiError> {
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
    Ok(match prepare {
        Some(true) => Mode::Prepare,
        _ => Mode::Commit { allow_unsigned },
    })
}

/// Whether the request asks only to prepare; a malformed `prepare` is not one (the operation
/// refuses it).
pub(super) fn prepare(uri: &Uri) -> bool {
    mode(uri, false).is_ok_and(|m| m == Mode::Prepare)
}

fn group_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("group_not_found", "no update group with that id"))
}

/// An operation `by` asks for, recorded as `action` on `target` with `summary`.
fn operation<'a>(
    by: &'a Actor,
    mode: Mode,
    fixed: Option<&'a CommitInfo>,
    action: &'static str,
    target: String,
    summary: String,
) -> Operation<'a> {
    Operation {
        by,
        mode,
        fixed,
        record: Record {
            action,
            target,
            summary,
            details: Value::Null,
        },
    }
}

/// Renders what an operation did.
fn respond(finished: Finished) -> Response {
    match finished {
        Finished::Prepared(prepared) => Json(prepared).into_response(),
        Finished::Committed(outcome) => {
            let status = if outcome.published.is_some() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(outcome)).into_response()
        }
    }
}

pub(super) async fn publish(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    uri: Uri,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    let target = req.channel.clone().or(req.branch.clone()).unwrap_or_default();
    let summary = match req.rollout_percentage.filter(|p| *p < 100) {
        Some(p) => format!("published to {target} as a {p}% rollout"),
        None => format!("published to {target}"),
    };
    let by = caller.actor();
    let mode = mode(&uri, req.allow_unsigned)?;
    let parsed = publishing::Publish::parse(&req)?;
    let op = operation(&by, mode, req.commit.as_ref(), "publish", target, summary);
    Ok(respond(publishing::publish(&state, &app, &parsed, op).await?))
}

/// Whether a publish to this target would be refused, before anything is uploaded; read-only,
/// so not audited.
pub(super) async fn check_publish(
    AppWrite { app, .. }: AppWrite,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PublishCheckRequest>,
) -> Result<Json<PublishCheck>, ApiError> {
    // In the order the publish refuses them: runtime versions, platforms, then the target.
    let updates = req
        .updates
        .iter()
        .map(|u| input::runtime_version(&u.runtime_version).map(|rv| (u.platform, rv)))
        .collect::<Result<Vec<_>, _>>()?;
    let updates = publishing::Updates::new(updates)?;
    let target = input::Target::parse(req.channel.as_deref(), req.branch.as_deref())?;
    let branch = publishing::check_publish(&state, &app, &target, &updates, req.force).await?;
    Ok(Json(PublishCheck { branch }))
}

pub(super) async fn republish(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<RepublishRequest>,
) -> Result<Response, ApiError> {
    let group = group_id(&id)?;
    let by = caller.actor();
    let summary = format!("republished {id}");
    let mode = mode(&uri, req.allow_unsigned)?;
    let target = match (&req.channel, &req.branch) {
        (None, None) => None,
        (channel, branch) => Some(input::Target::parse(channel.as_deref(), branch.as_deref())?),
    };
    let op = operation(&by, mode, req.commit.as_ref(), "republish", id, summary);
    Ok(respond(
        publishing::republish(&state, &app, group, target.as_ref(), &req, op).await?,
    ))
}

pub(super) async fn rollback(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    uri: Uri,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let mode = mode(&uri, req.allow_unsigned)?;
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
    let by = caller.actor();
    let runtime_version = req.runtime_version.as_deref().map(input::runtime_version).transpose()?;
    let rollback = release::Rollback {
        channel: input::channel_name(&req.channel)?,
        to_embedded: req.to_embedded,
        platform: req.platform,
        runtime_version,
        message: req.message.clone(),
    };
    let op = operation(&by, mode, req.commit.as_ref(), action, req.channel.clone(), summary);
    Ok(respond(release::rollback(&state, &app, &rollback, op).await?))
}

pub(super) async fn disable_group(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<SignedOperation>,
) -> Result<Response, ApiError> {
    let group = group_id(&id)?;
    let by = caller.actor();
    let summary = format!("group {id} disabled");
    let mode = mode(&uri, req.allow_unsigned)?;
    let op = operation(&by, mode, req.commit.as_ref(), "group.disable", id, summary);
    Ok(respond(release::disable(&state, &app, group, op).await?))
}

pub(super) async fn set_rollout(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetRollout>,
) -> Result<Response, ApiError> {
    let group = group_id(&id)?;
    let by = caller.actor();
    let summary = format!("rollout of {id} set to {}%", req.percentage);
    let percentage = input::Percentage::new(req.percentage)?;
    let halt = input::halt_setting(req.halt_policy, req.no_halt)?;
    let op = Operation::commit(
        &by,
        Record {
            action: "rollout.set",
            target: id,
            summary,
            details: Value::Null,
        },
    );
    Ok(respond(
        release::set_rollout(&state, &app, group, percentage, halt, op).await?,
    ))
}

pub(super) async fn complete_rollout(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let group = group_id(&id)?;
    let by = caller.actor();
    let summary = format!("rollout of {id} completed");
    let op = Operation::commit(
        &by,
        Record {
            action: "rollout.complete",
            target: id,
            summary,
            details: Value::Null,
        },
    );
    Ok(respond(release::complete_rollout(&state, &app, group, op).await?))
}

pub(super) async fn revert_rollout(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<SignedOperation>,
) -> Result<Response, ApiError> {
    let group = group_id(&id)?;
    let by = caller.actor();
    let summary = format!("rollout of {id} reverted");
    let mode = mode(&uri, req.allow_unsigned)?;
    let op = operation(&by, mode, req.commit.as_ref(), "rollout.revert", id, summary);
    Ok(respond(release::revert_rollout(&state, &app, group, op).await?))
}

pub(super) async fn channel_rollout(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, name)): ApiPath<(String, String)>,
    uri: Uri,
    ApiJson(req): ApiJson<ChannelRolloutRequest>,
) -> Result<Response, ApiError> {
    let mode = mode(&uri, req.allow_unsigned)?;
    let summary = format!(
        "channel {name}: branch rollout {}",
        serde_json::to_value(&req.action).unwrap_or_default()
    );
    let by = caller.actor();
    let channel = input::channel_name(&name)?;
    let op = operation(&by, mode, req.commit.as_ref(), "channel.rollout", name, summary);
    Ok(respond(
        channels::channel_rollout(&state, &app, &channel, &req, op).await?,
    ))
}

pub(super) async fn delete_group(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let group = group_id(&id)?;
    let entry = caller
        .actor()
        .entry(Some(app.slug.as_str()), "group.delete", id, json!({}));
    release::delete_group(&state, &app, group, entry).await?;
    Ok(StatusCode::NO_CONTENT)
}
