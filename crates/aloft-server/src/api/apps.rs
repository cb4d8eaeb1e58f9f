use aloft_core::AppSlug;
use aloft_core::api::{AppInfo, CreateApp, SetSigningKey};
use aloft_core::signature::{CodeSignature, Signer};
use aloft_store::db::apps::{self, App};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::auth::{Caller, Need};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

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
    caller: Caller,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppInfo>), ApiError> {
    caller.admin()?;
    let slug = AppSlug::parse(&body.slug).map_err(|e| ApiError::bad_request("invalid_slug", e.to_string()))?;
    let app = apps::create(&state.db, &slug).await?;
    state.served.refresh(&state.db, app.id).await?;
    caller
        .audit(&state, Some(slug.as_str()), "app.create", slug.as_str(), json!({}))
        .await;
    Ok((StatusCode::CREATED, Json(info(&state, &app))))
}

/// The apps this caller can see.
pub async fn list_apps(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AppInfo>>, ApiError> {
    let mut out = Vec::new();
    for app in apps::list(&state.db).await? {
        if caller.app(&state, app.slug.as_str(), Need::Read).await.is_ok() {
            out.push(info(&state, &app));
        }
    }
    Ok(Json(out))
}

pub async fn show_app(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<AppInfo>, ApiError> {
    Ok(Json(info(&state, &caller.app(&state, &slug, Need::Read).await?)))
}

/// Gives the app a server-side key: publishes without the publisher's signatures are signed with it.
pub async fn set_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<SetSigningKey>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    caller.admin()?;
    let signer = Signer::from_pem(&body.private_key_pem).map_err(|e| unusable_key(&e))?;
    // Prove the key signs and the key id can be sent, before storing anything.
    let sig = signer.sign(b"aloft").map_err(|e| unusable_key(&e))?;
    CodeSignature::new(sig, body.keyid.clone()).map_err(|e| ApiError::bad_request("invalid_keyid", e.to_string()))?;
    apps::set_signing_key(&state.db, app.id, Some((&body.private_key_pem, &body.keyid))).await?;
    caller
        .audit(
            &state,
            Some(&slug),
            "app.signing_key.set",
            &slug,
            json!({"keyid": body.keyid}),
        )
        .await;
    Ok(Json(info(&state, &apps::by_id(&state.db, app.id).await?)))
}

/// The key library's reason is logged; the caller is told what is accepted.
fn unusable_key(err: &dyn std::fmt::Display) -> ApiError {
    tracing::info!(error = %err, "signing key refused");
    ApiError::bad_request(
        "invalid_signing_key",
        "field `private_key_pem` must be an RSA private key of 2048 to 8192 bits in PEM \
         (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`)",
    )
}

pub async fn delete_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<AppInfo>, ApiError> {
    let app = caller.app(&state, &slug, Need::Write).await?;
    caller.admin()?;
    apps::set_signing_key(&state.db, app.id, None).await?;
    caller
        .audit(&state, Some(&slug), "app.signing_key.delete", &slug, json!({}))
        .await;
    Ok(Json(info(&state, &apps::by_id(&state.db, app.id).await?)))
}
