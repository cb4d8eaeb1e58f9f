//! The one error type of the HTTP surfaces: a status, a stable machine code and a human message,
//! rendered as `{"error":{"code":…,"message":…}}`. Internal details are logged, never sent.

use aloft_store::db::{Engine, Trouble};
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
    /// Seconds after which trying again makes sense (sent as `Retry-After`).
    pub retry_after: Option<u32>,
}

/// What a client is told to wait before retrying a change that found the write lock taken.
pub(crate) const BUSY_RETRY_AFTER_SECONDS: u32 = 2;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client to try again after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
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
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
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
            DbError::NoSuchWebhook => ApiError::not_found("webhook_not_found", "no webhook with that id on this app"),
            DbError::NoSuchUser => ApiError::not_found("user_not_found", "no such user"),
            DbError::NoSuchEmbedded => ApiError::not_found(
                "embedded_not_found",
                "no embedded update with that id on this app (see aloft embedded list)",
            ),
            e @ DbError::EmbeddedAlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "embedded_exists", e.to_string())
            }
            e @ DbError::UserAlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "user_exists", e.to_string()),
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
            e => match database_trouble(&e) {
                Some(api) => {
                    if api.code == "database_busy" {
                        tracing::warn!(error = %e, "database busy");
                    } else {
                        tracing::error!(error = %e, code = api.code, "database trouble");
                    }
                    api
                }
                None => ApiError::internal("database error", &e),
            },
        }
    }
}

/// The one place a use-case's refusal becomes an HTTP status; its code and message go unchanged.
impl From<crate::service::error::Error> for ApiError {
    fn from(err: crate::service::error::Error) -> Self {
        use crate::service::error::Error;
        match err {
            Error::Invalid { code, message } => ApiError::bad_request(code, message),
            Error::NotFound { code, message } => ApiError::not_found(code, message),
            Error::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            Error::Internal { context, detail } => ApiError::internal(context, &detail),
            Error::Store(e) => e.into(),
        }
    }
}

/// The operator's view of a database in trouble, when that is what `err` is: what is wrong and
/// what to fix, as the status, code and message of the answer. Nothing is logged here.
pub(crate) fn database_trouble(err: &DbError) -> Option<ApiError> {
    let trouble = err.trouble()?;
    let message = format!(
        "{}; devices are still served, but changes must wait",
        database_hint(err)?
    );
    Some(match trouble {
        Trouble::StorageFull => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", message),
        Trouble::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_busy", message)
            .retry_after(BUSY_RETRY_AFTER_SECONDS),
        Trouble::ReadOnly | Trouble::Corrupt | Trouble::Unreachable => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message)
        }
    })
}

/// What is wrong with the database and what to fix, when `err` is the database's trouble (also
/// said when `aloft serve` cannot start).
pub fn database_hint(err: &DbError) -> Option<String> {
    let postgres = err.engine() == Some(Engine::Postgres);
    Some(match err.trouble()? {
        Trouble::StorageFull if postgres => {
            "the PostgreSQL server's disk is full: free disk space on the database server".to_owned()
        }
        Trouble::StorageFull => "the disk holding the database is full: free disk space under the data folder \
                                 (where the SQLite file aloft.db lives)"
            .to_owned(),
        Trouble::Busy if postgres => "another connection holds the database write lock (a PostgreSQL advisory \
                                      lock every aloft writer takes) or a lock this change needs, for longer than \
                                      --db-lock-timeout-seconds: try again; if this persists, find the session \
                                      holding it in pg_locks and pg_stat_activity"
            .to_owned(),
        Trouble::Busy => "another process holds the database write lock, for longer than \
                          --db-lock-timeout-seconds: try again; if this persists, find the process keeping a \
                          write transaction open on the SQLite file (a sqlite3 shell, a backup or copy tool, \
                          another aloft)"
            .to_owned(),
        Trouble::ReadOnly => match err {
            DbError::ReadOnly(why) => format!(
                "the database is read-only ({why}): point --database-url at the primary server, or turn \
                 default_transaction_read_only off"
            ),
            _ if postgres => "the database is read-only (a standby, or default_transaction_read_only is on): \
                              point --database-url at the primary server"
                .to_owned(),
            _ => "the database file is read-only: check its permissions (the user aloft runs as must be able to \
                  write aloft.db, its -wal and -shm files and their folder) and that its file system is mounted \
                  read-write"
                .to_owned(),
        },
        Trouble::Corrupt if postgres => {
            "PostgreSQL reports corrupted data: check the database server and restore from a backup".to_owned()
        }
        Trouble::Corrupt => "the database file is corrupt or is not an SQLite database: stop aloft and restore \
                             aloft.db from a backup (see docs/deploying.md, Backups)"
            .to_owned(),
        Trouble::Unreachable => "the database cannot be reached".to_owned(),
    })
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
            IngestError::StorageFull { dir } => {
                tracing::error!(dir = %dir.display(), "blob storage disk full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    format!(
                        "the disk is full: free disk space under {} (an upload needs its own size free there, \
                         plus its compressed copies); devices are still served",
                        dir.display()
                    ),
                )
            }
            IngestError::Io(e) if aloft_store::blobs::is_storage_full(&e) => {
                tracing::error!(error = %e, "blob storage disk full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the disk is full: free disk space under the data folder; devices are still served",
                )
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

pub(crate) async fn not_found(method: http::Method, uri: axum::extract::OriginalUri) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!(
            "no route {}: devices use /apps/{{slug}}/manifest and /assets/{{file}}; the management API is \
             under /api/v1 (its routes are listed at /api/v1/openapi.json)",
            route_text(&method, &uri.0)
        ),
    )
}

pub(crate) async fn method_not_allowed(method: http::Method, uri: axum::extract::OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take the method {method}; the `Allow` header lists the ones it takes",
            uri.0.path().chars().take(200).collect::<String>()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_store::Database;
    use aloft_store::db::DbOptions;
    use http_body_util::BodyExt;
    use std::io::Write;
    use std::path::Path;

    async fn render(err: ApiError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = err.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn each_kind_of_service_error_is_one_status_with_its_code_and_message() {
        use crate::service::Error;
        for (err, status, code, message) in [
            (
                Error::invalid("invalid_percentage", "a rollout percentage is 0 to 100"),
                StatusCode::BAD_REQUEST,
                "invalid_percentage",
                "a rollout percentage is 0 to 100",
            ),
            (
                Error::not_found("group_not_found", "no update group with that id"),
                StatusCode::NOT_FOUND,
                "group_not_found",
                "no update group with that id",
            ),
            (
                Error::conflict("stale_commit", "prepare again"),
                StatusCode::CONFLICT,
                "stale_commit",
                "prepare again",
            ),
            (
                Error::internal("signing failed", &"key library said no"),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "signing failed; see the server log",
            ),
            (
                Error::from(DbError::NoSuchChannel),
                StatusCode::NOT_FOUND,
                "channel_not_found",
                "no channel with that name",
            ),
        ] {
            let (got, _, body) = render(err.into()).await;
            assert_eq!(
                (got, &body["error"]["code"], &body["error"]["message"]),
                (status, &code.into(), &message.into())
            );
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_507_storage_full() {
        // A real ENOSPC: /dev/full refuses every write with it.
        let mut full = std::fs::File::options().write(true).open("/dev/full").unwrap();
        let enospc = full.write_all(b"x").and_then(|()| full.flush()).unwrap_err();
        let err = IngestError::writing(enospc, Path::new("/srv/aloft/blobs"));
        let (status, headers, body) = render(err.into()).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(body["error"]["code"], "storage_full");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("free disk space under /srv/aloft/blobs"), "{message}");
        assert!(headers.get(http::header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_locked_database_is_503_database_busy_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aloft.db");
        let holder = Database::open_sqlite(&path).await.unwrap();
        let options = DbOptions {
            max_connections: 1,
            lock_timeout: std::time::Duration::from_millis(100),
        };
        let db = Database::open_sqlite_opts(&path, options).await.unwrap();
        let _held = holder.begin_write().await.unwrap();
        let err = db.begin_write().await.unwrap_err();
        let (status, headers, body) = render(err.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "database_busy");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("another process holds the database write lock"),
            "{body}"
        );
        assert_eq!(headers.get(http::header::RETRY_AFTER).unwrap(), "2");
    }

    #[tokio::test]
    async fn a_read_only_or_corrupt_database_is_503_database_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aloft.db");
        Database::open_sqlite(&path).await.unwrap().close().await;
        let ro = Database::connect(&format!("sqlite://{}?mode=ro", path.display()), 1)
            .await
            .unwrap();
        let err = ro.check_writable().await.unwrap_err();
        let (status, _, body) = render(err.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "database_unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the database file is read-only: check its permissions"),
            "{message}"
        );

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = Database::open_sqlite(&junk).await.unwrap_err();
        let (status, _, body) = render(err.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "database_unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("corrupt or is not an SQLite database"), "{message}");
    }
}
