use aloft_core::api::{BranchInfo, ChannelInfo, ChannelRolloutInfo, CreateBranch, CreateChannel, EditChannel};
use aloft_store::db::channels::{self, Channel};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::auth::{Caller, Need};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::channels as service;
use crate::state::AppState;

pub fn channel_info(c: Channel) -> ChannelInfo {
    ChannelInfo {
        name: c.name,
        branch: c.branch,
        rollout: c.rollout.map(|r| ChannelRolloutInfo {
            branch: r.branch,
            percentage: r.percentage,
        }),
    }
}

pub async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Vec<ChannelInfo>>, ApiError> {
    let app = caller.app(&state, &slug, Need::Read).await?;
    Ok(Json(
        channels::list(&state.db, app.id)
            .await?
            .into_iter()
            .map(channel_info)
            .collect(),
    ))
}

pub async fn create_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<CreateChannel>,
) -> Result<(StatusCode, Json<ChannelInfo>), ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let channel = service::create_channel(&state, &app, &req.name, req.branch.as_deref()).await?;
    caller
        .audit(
            &state,
            Some(&slug),
            "channel.create",
            &channel.name,
            json!({"branch": channel.branch}),
        )
        .await;
    Ok((StatusCode::CREATED, Json(channel_info(channel))))
}

pub async fn edit_channel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<EditChannel>,
) -> Result<Json<ChannelInfo>, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    let channel = service::edit_channel(&state, &app, &name, &req.branch).await?;
    caller
        .audit(
            &state,
            Some(&slug),
            "channel.edit",
            &name,
            json!({"branch": req.branch}),
        )
        .await;
    Ok(Json(channel_info(channel)))
}

pub async fn list_branches(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Vec<BranchInfo>>, ApiError> {
    let app = caller.app(&state, &slug, Need::Read).await?;
    Ok(Json(
        channels::list_branches(&state.db, app.id)
            .await?
            .into_iter()
            .map(|b| BranchInfo {
                name: b.name,
                created_at: b.created_at.to_iso(),
                groups: b.groups,
                channels: b.channels,
            })
            .collect(),
    ))
}

pub async fn create_branch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<CreateBranch>,
) -> Result<StatusCode, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    service::create_branch(&state, &app, &req.name).await?;
    caller
        .audit(&state, Some(&slug), "branch.create", &req.name, json!({}))
        .await;
    Ok(StatusCode::CREATED)
}

pub async fn delete_branch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((slug, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    service::delete_branch(&state, &app, &name).await?;
    caller
        .audit(&state, Some(&slug), "branch.delete", &name, json!({}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
