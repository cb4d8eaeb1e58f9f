use aloft_core::api::{PreparedGroup, PublishRequest, PublishedGroup};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::Caller;
use super::apps::load_app;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service;
use crate::state::AppState;

pub async fn prepare_publish(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<PreparedGroup>, ApiError> {
    let app = load_app(&state, &slug).await?;
    Ok(Json(service::publish::prepare(&state, &app, &req).await?))
}

pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<(StatusCode, Json<PublishedGroup>), ApiError> {
    let app = load_app(&state, &slug).await?;
    let published = service::publish::publish(&state, &app, &req, &caller.token_name).await?;
    Ok((StatusCode::CREATED, Json(published)))
}
