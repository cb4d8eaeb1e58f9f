use aloft_core::api::{AuditEntry, CreateToken, CreatedToken, TokenInfo};
use aloft_core::time::Millis;
use aloft_store::db::audit;
use aloft_store::db::tokens::{self, Scope, Token};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;

use super::Need;
use super::grant::{Admin, AnyToken};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::service::tokens as service;
use crate::state::AppState;

pub(super) fn token_info(t: Token) -> TokenInfo {
    let (scope, apps) = match t.scope {
        Scope::Admin => ("admin", Vec::new()),
        Scope::Publish(apps) => ("publish", apps),
        Scope::Read(apps) => ("read", apps),
    };
    TokenInfo {
        id: t.id,
        name: t.name,
        scope: scope.to_owned(),
        apps,
        created_at: t.created_at.to_iso(),
        expires_at: t.expires_at.map(Millis::to_iso),
        revoked_at: t.revoked_at.map(Millis::to_iso),
    }
}

pub(super) async fn create_token(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (token, secret) = service::create_token(
        &state,
        &caller.actor(),
        &req.name,
        &req.scope,
        &req.apps,
        req.expires_in_days,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token_info(token),
            secret,
        }),
    ))
}

pub(super) async fn list_tokens(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(
        tokens::list(&state.db).await?.into_iter().map(token_info).collect(),
    ))
}

/// `/tokens/{id}`: a struct, so that a refusal can name the segment.
#[derive(Debug, Deserialize)]
pub(super) struct TokenPath {
    id: i64,
}

pub(super) async fn revoke_token(
    Admin { caller, .. }: Admin,
    State(state): State<AppState>,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    service::revoke_token(&state, &caller.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    app: Option<String>,
    limit: Option<i64>,
}

/// The audit log: of one app (for anyone who may read it), or of everything (admin).
pub(super) async fn list_audit(
    AnyToken(caller): AnyToken,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    match &q.app {
        Some(app) => {
            caller.app(&state, app, Need::Read).await?;
        }
        None => caller.admin()?,
    }
    let entries = audit::list(&state.db, q.app.as_deref(), q.limit.unwrap_or(100).clamp(1, 10_000)).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditEntry {
                at: e.at.to_iso(),
                actor: e.actor,
                app: e.app,
                action: e.action,
                target: e.target,
                details: e.details,
                remote: e.remote,
            })
            .collect(),
    ))
}
