use aloft_core::AppSlug;
use aloft_core::api::{AppInfo, CreateApp, SetSigningKey};
use aloft_core::signature::{CodeSignature, Signer};
use aloft_store::db::apps::{self, App};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

pub(crate) fn parse_slug(slug: &str) -> Result<AppSlug, ApiError> {
    AppSlug::parse(slug).map_err(|e| ApiError::bad_request("invalid_slug", e.to_string()))
}

pub(crate) async fn load_app(state: &AppState, slug: &str) -> Result<App, ApiError> {
    Ok(apps::by_slug(&state.db, &parse_slug(slug)?).await?)
}

fn info(state: &AppState, app: &App) -> AppInfo {
    AppInfo {
        slug: app.slug.to_string(),
        default_channel: app.default_channel.to_string(),
        manifest_url: state.config.manifest_url(app.slug.as_str()),
        server_signing: app.signing_key_pem.is_some(),
    }
}

pub async fn create_app(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppInfo>), ApiError> {
    let slug = parse_slug(&body.slug)?;
    let app = apps::create(&state.db, &slug).await?;
    state.served.refresh(&state.db, app.id).await?;
    Ok((StatusCode::CREATED, Json(info(&state, &app))))
}

pub async fn list_apps(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<AppInfo>>, ApiError> {
    Ok(Json(
        apps::list(&state.db)
            .await?
            .iter()
            .map(|a| info(&state, a))
            .collect(),
    ))
}

pub async fn show_app(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<AppInfo>, ApiError> {
    Ok(Json(info(&state, &load_app(&state, &slug).await?)))
}

/// Gives the app a server-side key: publishes without a CLI signature are signed with it.
pub async fn set_signing_key(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<SetSigningKey>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = load_app(&state, &slug).await?;
    let signer = Signer::from_pem(&body.private_key_pem)
        .map_err(|e| ApiError::bad_request("invalid_signing_key", e.to_string()))?;
    // Prove the key signs and the key id can be sent, before storing anything.
    let sig = signer
        .sign(b"aloft")
        .map_err(|e| ApiError::bad_request("invalid_signing_key", e.to_string()))?;
    CodeSignature::new(sig, body.keyid.clone())
        .map_err(|e| ApiError::bad_request("invalid_keyid", e.to_string()))?;
    apps::set_signing_key(
        &state.db,
        app.id,
        Some((&body.private_key_pem, &body.keyid)),
    )
    .await?;
    Ok(Json(info(&state, &apps::by_id(&state.db, app.id).await?)))
}

pub async fn delete_signing_key(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = load_app(&state, &slug).await?;
    apps::set_signing_key(&state.db, app.id, None).await?;
    Ok(Json(info(&state, &apps::by_id(&state.db, app.id).await?)))
}
