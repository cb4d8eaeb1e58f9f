//! Bearer-token authentication, scopes, and the audit trail of who changed what.
//!
//! A token scoped to some apps cannot tell another app from a missing one: both are
//! `404 app_not_found`. A token that can see an app but not change it gets `403 forbidden`.

use std::net::SocketAddr;

use aloft_core::AppSlug;
use aloft_core::time::Millis;
use aloft_store::db::apps::{self, App};
use aloft_store::db::audit;
use aloft_store::db::tokens::{self, Scope};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a management route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: i64,
    pub token_name: String,
    pub scope: Scope,
    /// Peer address, and `X-Forwarded-For` when a proxy set it.
    pub remote: String,
}

/// What a route does to an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn no_such_app(slug: &str) -> ApiError {
    ApiError::not_found("app_not_found", format!("no app {slug:?} on this server"))
}

impl Caller {
    fn sees(&self, slug: &str) -> bool {
        match &self.scope {
            Scope::Admin => true,
            Scope::Publish(apps) | Scope::Read(apps) => apps.iter().any(|a| a == slug),
        }
    }

    /// The app, if this caller may `need` it.
    pub async fn app(&self, state: &AppState, slug: &str, need: Need) -> Result<App, ApiError> {
        let parsed = AppSlug::parse(slug).map_err(|_| no_such_app(slug))?;
        if !self.sees(slug) {
            return Err(no_such_app(slug));
        }
        let app = apps::by_slug(&state.db, &parsed).await?;
        if need == Need::Write && matches!(self.scope, Scope::Read(_)) {
            return Err(forbidden("this token may read the app but not change it"));
        }
        Ok(app)
    }

    pub fn admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Admin => Ok(()),
            _ => Err(forbidden("only an admin token may do this")),
        }
    }

    /// Uploading blobs is part of publishing.
    pub fn uploader(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Read(_) => Err(forbidden("a read-only token cannot upload")),
            _ => Ok(()),
        }
    }

    /// Records a change. A failure to record is logged; the change itself already happened.
    pub async fn audit(
        &self,
        state: &AppState,
        app: Option<&str>,
        action: &str,
        target: impl Into<String>,
        details: Value,
    ) {
        let entry = audit::Entry {
            at: Millis::now(),
            actor: format!("{} (token {})", self.token_name, self.token_id),
            app: app.map(str::to_owned),
            action: action.to_owned(),
            target: target.into(),
            details,
            remote: self.remote.clone(),
        };
        if let Err(e) = audit::record(&state.db, &entry).await {
            tracing::error!(error = %e, action, "writing the audit log failed");
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let token = tokens::find_by_hash(&state.db, &tokens::hash_secret(secret))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let remote = match (peer, forwarded) {
            (Some(p), Some(f)) => format!("{p} (for {f})"),
            (Some(p), None) => p,
            (None, Some(f)) => format!("(for {f})"),
            (None, None) => String::new(),
        };
        Ok(Caller {
            token_id: token.id,
            token_name: token.name,
            scope: token.scope,
            remote,
        })
    }
}
