//! Bundle patches: the app setting (`aloft apps set-patches`) and embedded bundles (`aloft
//! embedded add/list/remove`).

use aloft_core::api::{AddEmbedded, AppInfo, EmbeddedInfo, PatchInfo, SetPatches};
use aloft_store::db::blobs;
use aloft_store::db::embedded::{self, Embedded};
use aloft_store::db::patches::{BaseKind, Patch, State as PatchState};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use super::apps::info;
use super::grant::{AppRead, AppWrite};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::patches as service;
use crate::state::AppState;

/// Turns the app's bundle patches on or off.
pub(super) async fn set_patches(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetPatches>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = service::set_patches(&state, &caller.actor(), &app, body.enabled).await?;
    Ok(Json(info(&state, &app)))
}

async fn embedded_info(state: &AppState, e: Embedded) -> Result<EmbeddedInfo, ApiError> {
    let size = blobs::get(&state.db, &e.bundle).await?.map_or(0, |b| b.size);
    Ok(EmbeddedInfo {
        id: e.id,
        platform: e.platform,
        runtime_version: e.runtime_version.to_string(),
        bundle: e.bundle,
        size,
        created_at: e.created_at.to_iso(),
    })
}

pub(super) async fn list_embedded(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
) -> Result<Json<Vec<EmbeddedInfo>>, ApiError> {
    let mut out = Vec::new();
    for e in embedded::list(&state.db, app.id).await? {
        out.push(embedded_info(&state, e).await?);
    }
    Ok(Json(out))
}

pub(super) async fn add_embedded(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddEmbedded>,
) -> Result<(StatusCode, Json<EmbeddedInfo>), ApiError> {
    let added = service::add_embedded(&state, &caller.actor(), &app, &body).await?;
    Ok((StatusCode::CREATED, Json(embedded_info(&state, added).await?)))
}

/// `/apps/{slug}/embedded/{embedded}`: a struct, so that a refusal can name the segment.
#[derive(Debug, Deserialize)]
pub(super) struct EmbeddedPath {
    embedded: String,
}

pub(super) async fn remove_embedded(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiPath(EmbeddedPath { embedded }): ApiPath<EmbeddedPath>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&embedded).map_err(|_| {
        ApiError::not_found(
            "embedded_not_found",
            "no embedded update with that id on this app (see aloft embedded list)",
        )
    })?;
    service::remove_embedded(&state, &caller.actor(), &app, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A patch as the API shows it.
pub(super) fn patch_info(p: &Patch) -> PatchInfo {
    let saved_each = match (p.state, p.size, p.full_size) {
        (PatchState::Done, Some(size), Some(full)) => full.saturating_sub(size),
        _ => 0,
    };
    PatchInfo {
        base: p.base,
        base_kind: match p.base_kind {
            BaseKind::Update => "update",
            BaseKind::Embedded => "embedded",
        }
        .to_owned(),
        state: p.state.as_str().to_owned(),
        size: p.size,
        full_size: p.full_size,
        hits: p.hits,
        bytes_saved: p.hits.saturating_mul(saved_each),
    }
}
