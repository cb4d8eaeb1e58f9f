//! Dashboard users (admin): list, add (with a sign-in link), a new sign-in link, remove.

use aloft_core::api::{CreateUser, UserInfo, UserSignInLink};
use aloft_core::time::Millis;
use aloft_store::db::tokens::Scope;
use aloft_store::db::users::{self, User};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::grant::Admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::service::users as service;
use crate::state::AppState;

pub(crate) fn user_info(u: &User) -> UserInfo {
    let apps = match &u.scope {
        Scope::Admin => Vec::new(),
        Scope::Publish(apps) | Scope::Read(apps) => apps.clone(),
    };
    UserInfo {
        email: u.email.clone(),
        role: service::role_name(&u.scope).to_owned(),
        apps,
        password_set: u.password_hash.is_some(),
        created_at: u.created_at.to_iso(),
    }
}

fn with_link(state: &AppState, user: &User, secret: &str) -> UserSignInLink {
    UserSignInLink {
        user: user_info(user),
        sign_in_url: service::link_url(&state.config.public_url, secret),
        expires_at: Millis(Millis::now().0 + service::LINK_VALID_MS).to_iso(),
    }
}

pub(super) async fn list_users(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    Ok(Json(users::list(&state.db).await?.iter().map(user_info).collect()))
}

pub(super) async fn create_user(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserSignInLink>), ApiError> {
    let (user, secret) = service::create(&state.db, &caller.actor(), &req.email, &req.role, &req.apps).await?;
    Ok((StatusCode::CREATED, Json(with_link(&state, &user, &secret))))
}

pub(super) async fn reset_user(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiPath(email): ApiPath<String>,
) -> Result<(StatusCode, Json<UserSignInLink>), ApiError> {
    let (user, secret) = service::reset(&state.db, &caller.actor(), &email).await?;
    Ok((StatusCode::CREATED, Json(with_link(&state, &user, &secret))))
}

pub(super) async fn remove_user(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiPath(email): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    service::remove(&state, &caller.actor(), &email).await?;
    Ok(StatusCode::NO_CONTENT)
}
