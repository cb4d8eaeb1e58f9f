//! Use-cases behind the management API, independent of HTTP extraction. Every change runs in one
//! write transaction that also records its audit entry, so the entry exists exactly when the
//! change does: per app under the app-wide publish lock ([`Change`], see `operation`), or for what
//! belongs to no app's served state ([`Write`]: tokens, signing keys, a new app, `gc`).

pub(crate) mod apps;
pub(crate) mod blobs;
pub(crate) mod channels;
pub(crate) mod error;
pub(crate) mod halt;
pub(crate) mod input;
pub(crate) mod operation;
pub(crate) mod patches;
pub(crate) mod publish;
pub(crate) mod release;
pub(crate) mod tokens;
pub(crate) mod users;
pub(crate) mod webhooks;

use aloft_core::time::Millis;
use aloft_store::db::WriteTx;
use aloft_store::db::audit;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::state::AppState;

pub(crate) use error::Error;

/// Who makes a change: named in the audit log, and as the publisher of the groups it stores.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    /// Who, as the audit log names them: a token's name and id, or a user's email.
    pub who: String,
    /// The publisher name of the groups this actor stores.
    pub name: String,
    /// Where the request came from, as the audit log shows it.
    pub remote: String,
}

impl Actor {
    /// The audit entry of a change this actor makes now.
    pub(crate) fn entry(
        &self,
        app: Option<&str>,
        action: &str,
        target: impl Into<String>,
        details: Value,
    ) -> audit::Entry {
        audit::Entry {
            at: Millis::now(),
            actor: self.who.clone(),
            app: app.map(str::to_owned),
            action: action.to_owned(),
            target: target.into(),
            details,
            remote: self.remote.clone(),
        }
    }
}

/// A change to an app in progress: the publish lock and an open write transaction.
pub(crate) struct Change {
    _guard: OwnedMutexGuard<()>,
    pub tx: WriteTx,
}

impl Change {
    pub(crate) async fn begin(state: &AppState) -> Result<Self, Error> {
        let guard = state.publish_lock.clone().lock_owned().await;
        let tx = state.db.begin_write().await?;
        Ok(Self { _guard: guard, tx })
    }

    /// Records `entry`, bumps the app's revision (so other replicas notice), commits, and
    /// refreshes what this replica serves.
    pub(crate) async fn commit(mut self, state: &AppState, app_id: i64, entry: audit::Entry) -> Result<(), Error> {
        audit::record(&mut self.tx, &entry).await?;
        aloft_store::db::apps::bump_revision(&mut self.tx, app_id).await?;
        self.tx.commit().await.map_err(aloft_store::DbError::from)?;
        state.served.refresh(&state.db, app_id).await?;
        Ok(())
    }
}

/// A change outside any app's served state: a write transaction, committed with its audit entry.
pub(crate) struct Write {
    pub tx: WriteTx,
}

impl Write {
    pub(crate) async fn begin(state: &AppState) -> Result<Self, Error> {
        Self::on(&state.db).await
    }

    /// [`Write::begin`] on a database alone (changes made without a server: `aloft users`).
    pub(crate) async fn on(db: &aloft_store::Database) -> Result<Self, Error> {
        Ok(Self {
            tx: db.begin_write().await?,
        })
    }

    /// Records `entry` and commits.
    pub(crate) async fn commit(mut self, entry: audit::Entry) -> Result<(), Error> {
        audit::record(&mut self.tx, &entry).await?;
        self.tx.commit().await.map_err(aloft_store::DbError::from)?;
        Ok(())
    }
}
