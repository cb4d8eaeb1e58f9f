use aloft_core::AppSlug;
use aloft_core::api::{AppInfo, CreateApp, SetHaltPolicy, SetSigningKey};
use aloft_core::halt::Halt;
use aloft_store::db::apps::{self, App};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::grant::{Admin, AnyToken, AppRead, AppWrite};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::service::apps as service;
use crate::service::input;
use crate::state::AppState;

pub(super) fn info(state: &AppState, app: &App) -> AppInfo {
    AppInfo {
        slug: app.slug.to_string(),
        default_channel: app.default_channel.to_string(),
        manifest_url: state.config.manifest_url(app.slug.as_str()),
        server_signing: app.signing_key_pem.is_some(),
        halt_policy: match Halt::resolve(None, app.halt_policy.as_deref()) {
            Halt::Off => None,
            Halt::Policy(p) => Some(p),
        },
        patches: app.patches,
    }
}

/// Sets the halt policy of the app's rollouts that set none (`aloft apps set-halt-policy`).
pub(super) async fn set_halt_policy(
    AppWrite { caller, app }: AppWrite,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetHaltPolicy>,
) -> Result<Json<AppInfo>, ApiError> {
    let halt = input::halt_setting(body.policy, body.off)?;
    let app = service::set_halt_policy(&state, &caller.actor(), &app, halt).await?;
    Ok(Json(info(&state, &app)))
}

pub(super) async fn create_app(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppInfo>), ApiError> {
    let slug = AppSlug::parse(&body.slug).map_err(|e| ApiError::bad_request("invalid_slug", e.to_string()))?;
    let app = service::create_app(&state, &caller.actor(), &slug).await?;
    Ok((StatusCode::CREATED, Json(info(&state, &app))))
}

/// The apps this caller can see.
pub(super) async fn list_apps(
    AnyToken(caller): AnyToken,
    State(state): State<AppState>,
) -> Result<Json<Vec<AppInfo>>, ApiError> {
    let apps = apps::list(&state.db).await?;
    Ok(Json(
        apps.iter()
            .filter(|app| caller.sees(app.slug.as_str()))
            .map(|app| info(&state, app))
            .collect(),
    ))
}

pub(super) async fn show_app(AppRead { app, .. }: AppRead, State(state): State<AppState>) -> Json<AppInfo> {
    Json(info(&state, &app))
}

/// Gives the app a server-side key: publishes without the publisher's signatures are signed with it.
pub(super) async fn set_signing_key(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetSigningKey>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = service::set_signing_key(
        &state,
        &admin.caller.actor(),
        admin.app()?,
        &body.private_key_pem,
        &body.keyid,
    )
    .await?;
    Ok(Json(info(&state, &app)))
}

pub(super) async fn delete_signing_key(admin: Admin, State(state): State<AppState>) -> Result<Json<AppInfo>, ApiError> {
    let app = service::delete_signing_key(&state, &admin.caller.actor(), admin.app()?).await?;
    Ok(Json(info(&state, &app)))
}
