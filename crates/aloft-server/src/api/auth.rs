//! Bearer-token authentication.

use aloft_store::db::tokens;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a management route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_name: String,
    pub scope: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let token = tokens::find_by_hash(&state.db, &tokens::hash_secret(secret))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            token_name: token.name,
            scope: token.scope,
        })
    }
}
