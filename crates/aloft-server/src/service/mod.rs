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
}
