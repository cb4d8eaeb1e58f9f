//! Use-cases behind the management API, independent of HTTP extraction. Every change runs under
//! the app-wide publish lock in one write transaction (see `plan`).

pub mod channels;
pub mod plan;
pub mod publish;
pub mod release;

use aloft_store::db::WriteTx;
use tokio::sync::OwnedMutexGuard;

use crate::error::ApiError;
use crate::state::AppState;

/// A change in progress: the publish lock and an open write transaction.
pub struct Change {
    _guard: OwnedMutexGuard<()>,
    pub tx: WriteTx,
}

impl Change {
    pub async fn begin(state: &AppState) -> Result<Self, ApiError> {
        let guard = state.publish_lock.clone().lock_owned().await;
        let tx = state.db.begin_write().await?;
        Ok(Self { _guard: guard, tx })
    }

    /// Bumps the app's revision (so other replicas notice), commits, and refreshes what this
    /// replica serves.
    pub async fn commit(mut self, state: &AppState, app_id: i64) -> Result<(), ApiError> {
        aloft_store::db::apps::bump_revision(&mut self.tx, app_id).await?;
        self.tx.commit().await.map_err(aloft_store::DbError::from)?;
        state.served.refresh(&state.db, app_id).await?;
        Ok(())
    }
}
