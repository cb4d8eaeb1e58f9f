use aloft_core::api::{BranchInfo, ChannelInfo, ChannelRolloutInfo, CreateBranch, CreateChannel, EditChannel};
use aloft_store::db::channels::{self, Channel};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::grant::{AppRead, AppWrite};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::channels as service;
use crate::service::input::{branch_name, channel_name};
use crate::state::AppState;

pub(super) fn channel_info(c: Channel) -> ChannelInfo {
    ChannelInfo {
        name: c.name,
        branch: c.branch,
        rollout: c.rollout.map(|r| ChannelRolloutInfo {
            branch: r.branch,
            percentage: r.percentage,
        }),
    }
}

pub(super) async fn list_channels(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
) -> Result<Json<Vec<ChannelInfo>>, ApiError> {
    Ok(Json(
        channels::list(&state.db, app.id)
            .await?
            .into_iter()
            .map(channel_info)
            .collect(),
    ))
}

pub(super) async fn create_channel(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateChannel>,
) -> Result<(StatusCode, Json<ChannelInfo>), ApiError> {
    let name = channel_name(&req.name)?;
    let branch = req.branch.as_deref().map(branch_name).transpose()?;
    let channel = service::create_channel(&state, &caller.actor(), &app, &name, branch.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(channel_info(channel))))
}

pub(super) async fn edit_channel(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, name)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<EditChannel>,
) -> Result<Json<ChannelInfo>, ApiError> {
    let (name, branch) = (channel_name(&name)?, branch_name(&req.branch)?);
    let channel = service::edit_channel(&state, &caller.actor(), &app, &name, &branch).await?;
    Ok(Json(channel_info(channel)))
}

pub(super) async fn list_branches(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
) -> Result<Json<Vec<BranchInfo>>, ApiError> {
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

pub(super) async fn create_branch(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateBranch>,
) -> Result<StatusCode, ApiError> {
    service::create_branch(&state, &caller.actor(), &app, &branch_name(&req.name)?).await?;
    Ok(StatusCode::CREATED)
}

pub(super) async fn delete_branch(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath((_, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    service::delete_branch(&state, &caller.actor(), &app, &branch_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
