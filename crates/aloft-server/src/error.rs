//! The one error type of the HTTP surfaces: a status, a stable machine code and a human message,
//! rendered as `{"error":{"code":…,"message":…}}`. Internal details are logged, never sent.

use aloft_store::{DbError, IngestError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure that is ours, not the caller's: logged in full, reported without detail.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; see the server log"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required: send `authorization: Bearer <token>` (make one with `aloft tokens create`)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::info!(code = self.code, message = %self.message, "request refused");
        }
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NoSuchApp => ApiError::not_found("app_not_found", "no app with that slug"),
            DbError::AppAlreadyExists(slug) => ApiError::new(
                StatusCode::CONFLICT,
                "app_exists",
                format!("an app with slug {slug:?} already exists"),
            ),
            DbError::NoSuchChannel => ApiError::not_found("channel_not_found", "no channel with that name"),
            DbError::NoSuchBranch => ApiError::not_found("branch_not_found", "no branch with that name"),
            DbError::NoSuchGroup => ApiError::not_found("group_not_found", "no update group with that id"),
            DbError::NoSuchToken => ApiError::not_found("token_not_found", "no token with that id"),
            e @ DbError::ChannelAlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "channel_exists", e.to_string())
            }
            e @ DbError::BranchAlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "branch_exists", e.to_string()),
            e @ DbError::BranchInUse { .. } => ApiError::new(StatusCode::CONFLICT, "branch_in_use", e.to_string()),
            DbError::MissingBlob(hash) => ApiError::bad_request(
                "missing_blob",
                format!("blob {hash} has not been uploaded; upload it with PUT /api/v1/blobs/{hash} first"),
            ),
            e @ DbError::UpdateAlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "update_exists", e.to_string()),
            e @ DbError::StaleCreatedAt { .. } => {
                ApiError::new(StatusCode::CONFLICT, "stale_created_at", e.to_string())
            }
            e if e.is_unavailable() => {
                tracing::error!(error = %e, "database unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database cannot be reached; devices are still served, but changes must wait",
                )
            }
            other => ApiError::internal("database error", &other),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            e @ IngestError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large", e.to_string())
            }
            e @ IngestError::Mismatch { .. } => ApiError::bad_request("hash_mismatch", e.to_string()),
            IngestError::Body(e) => {
                tracing::info!(error = %e, "upload interrupted");
                ApiError::bad_request("upload_interrupted", "the upload ended before all its bytes arrived")
            }
            IngestError::Db(e) => e.into(),
            other => ApiError::internal("storing the upload failed", &other),
        }
    }
}

/// The request as the caller wrote it (nested routers see a shortened path), for fallbacks.
fn route_text(method: &http::Method, uri: &http::Uri) -> String {
    let path: String = uri.path().chars().take(200).collect();
    format!("{method} {path}")
}

pub async fn not_found(method: http::Method, uri: axum::extract::OriginalUri) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!(
            "no route {}: devices use /apps/{{slug}}/manifest and /assets/{{file}}; the management API is \
             under /api/v1 (its routes are listed at /api/v1/openapi.json)",
            route_text(&method, &uri.0)
        ),
    )
}

pub async fn method_not_allowed(method: http::Method, uri: axum::extract::OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take the method {method}; the `Allow` header lists the ones it takes",
            uri.0.path().chars().take(200).collect::<String>()
        ),
    )
}
