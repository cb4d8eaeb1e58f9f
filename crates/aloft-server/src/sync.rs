//! Keeping replicas in step. Every committed change bumps its app's revision in the database;
//! each replica polls the revisions and reloads the apps that changed, so a change made through
//! any replica is served by all of them within one poll interval. When the database cannot be
//! reached, a replica keeps serving the last state it loaded and reports itself degraded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::sync::Arc;

use aloft_store::Database;
use aloft_store::db::apps;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::served::Served;

/// Whether the last look at the database succeeded.
#[derive(Debug)]
pub(crate) struct Health {
    database_ok: AtomicBool,
    /// Whether the last readiness probe found the database writable (logged when it changes).
    writable: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            database_ok: AtomicBool::new(true),
            writable: AtomicBool::new(true),
        }
    }
}

impl Health {
    pub(crate) fn database_ok(&self) -> bool {
        self.database_ok.load(Ordering::Relaxed)
    }

    /// Records the write probe's outcome: `None` when writable, else why not.
    fn set_writable(&self, refused: Option<&str>) {
        if self.writable.swap(refused.is_none(), Ordering::Relaxed) == refused.is_some() {
            match refused {
                None => tracing::info!("the database accepts writes again"),
                Some(reason) => tracing::error!(reason, "the database refuses writes"),
            }
        }
    }

    fn set(&self, ok: bool) {
        if self.database_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("database reachable again");
            } else {
                tracing::warn!("database unreachable: serving the last known state");
            }
        }
    }
}

/// One poll: reloads every app whose revision differs from what is served.
pub(crate) async fn poll_once(db: &Database, served: &Served, health: &Health) -> Result<usize, aloft_store::DbError> {
    let revisions = match apps::revisions(db).await {
        Ok(r) => r,
        Err(e) => {
            health.set(false);
            return Err(e);
        }
    };
    health.set(true);
    let mut reloaded = 0;
    for (id, slug, revision) in revisions {
        if served.app(&slug).map(|a| a.revision) != Some(revision) {
            served.refresh(db, id).await?;
            reloaded += 1;
        }
    }
    Ok(reloaded)
}

/// What the readiness probe looks at.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) db: Database,
    pub(crate) health: Arc<Health>,
}

/// `GET /readyz`: 200 when the database answers and accepts writes; 503 `degraded` (devices are
/// still served from memory) with the reason when it cannot be reached or read, or refuses
/// writes (a read-only file or mount, a PostgreSQL standby). A write lock held by someone else
/// is not a failure: the database is writable, changes just wait their turn.
pub(crate) async fn readyz(State(state): State<Probe>) -> Response {
    const UNREACHABLE: &str = "the database is unreachable; devices are served the last known state";
    // A load balancer asks often; answer within two seconds either way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let read = tokio::time::timeout_at(deadline, apps::revisions(&state.db)).await;
    let ok = matches!(read, Ok(Ok(_)));
    state.health.set(ok);
    let reason = if !ok {
        Some(UNREACHABLE.to_owned())
    } else {
        match tokio::time::timeout_at(deadline, state.db.check_writable()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(match crate::error::database_trouble(&e) {
                Some(api) => api.message,
                None => {
                    tracing::warn!(error = %e, "readiness write probe failed");
                    UNREACHABLE.to_owned()
                }
            }),
            Err(_) => Some(UNREACHABLE.to_owned()),
        }
    };
    if ok {
        state.health.set_writable(reason.as_deref());
    }
    match reason {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "reason": reason})),
        )
            .into_response(),
    }
}
