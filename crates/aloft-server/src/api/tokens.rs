use aloft_core::AppSlug;
use aloft_core::api::{AuditEntry, CreateToken, CreatedToken, TokenInfo};
use aloft_core::time::Millis;
use aloft_store::db::audit;
use aloft_store::db::tokens::{self, Scope, Token};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Need};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn token_info(t: Token) -> TokenInfo {
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

pub fn parse_scope(scope: &str, apps: &[String]) -> Result<Scope, ApiError> {
    for app in apps {
        AppSlug::parse(app.as_str()).map_err(|e| ApiError::bad_request("invalid_slug", e.to_string()))?;
    }
    match (scope, apps.is_empty()) {
        ("admin", true) => Ok(Scope::Admin),
        ("admin", false) => Err(ApiError::bad_request(
            "invalid_scope",
            "an admin token is for every app; give no apps",
        )),
        ("publish" | "read", true) => Err(ApiError::bad_request(
            "invalid_scope",
            "a publish or read token needs the apps it is for",
        )),
        ("publish", false) => Ok(Scope::Publish(apps.to_vec())),
        ("read", false) => Ok(Scope::Read(apps.to_vec())),
        (other, _) => Err(ApiError::bad_request(
            "invalid_scope",
            format!("scope {other:?} is not admin, publish or read"),
        )),
    }
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.admin()?;
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a token name is 1-100 characters",
        ));
    }
    let scope = parse_scope(&req.scope, &req.apps)?;
    let expires = req
        .expires_in_days
        .map(|d| Millis(Millis::now().0 + i64::from(d) * 86_400_000));
    let (token, secret) = tokens::create(&state.db, &req.name, &scope, expires).await?;
    caller
        .audit(
            &state,
            None,
            "token.create",
            format!("{}", token.id),
            json!({"name": req.name, "scope": req.scope, "apps": req.apps}),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token_info(token),
            secret,
        }),
    ))
}

pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.admin()?;
    Ok(Json(
        tokens::list(&state.db).await?.into_iter().map(token_info).collect(),
    ))
}

/// `/tokens/{id}`: a struct, so that a refusal can name the segment.
#[derive(Debug, Deserialize)]
pub struct TokenPath {
    id: i64,
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    tokens::revoke(&state.db, id).await?;
    caller
        .audit(&state, None, "token.revoke", id.to_string(), json!({}))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    app: Option<String>,
    limit: Option<i64>,
}

/// The audit log: of one app (for anyone who may read it), or of everything (admin).
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
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
