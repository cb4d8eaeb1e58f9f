//! The audit log: who changed what, when, and from where.

use aloft_core::time::Millis;
use serde_json::Value;
use sqlx::Row;

use super::{Conn, Database, DbError};

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: Millis,
    pub actor: String,
    pub app: Option<String>,
    pub action: String,
    pub target: String,
    pub details: Value,
    pub remote: String,
}

/// Records an entry inside the transaction of the change it describes, so that the entry
/// exists exactly when the change does.
pub async fn record(conn: &mut Conn, entry: &Entry) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, app, action, target, details, remote) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.at.0)
    .bind(&entry.actor)
    .bind(&entry.app)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(entry.details.to_string())
    .bind(&entry.remote)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Newest first; of one app, or of everything.
pub async fn list(db: &Database, app: Option<&str>, limit: i64) -> Result<Vec<Entry>, DbError> {
    let rows = sqlx::query(
        "SELECT at, actor, app, action, target, details, remote FROM audit_log \
         WHERE (CAST($1 AS TEXT) IS NULL OR app = $2) ORDER BY at DESC, id DESC LIMIT $3",
    )
    .bind(app)
    .bind(app)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(entry).collect()
}

/// Up to `limit` entries of app `app` numbered after `after`, oldest first, with their numbers
/// (webhook deliveries are made from these; see `webhooks`).
pub async fn after(db: &Database, app: &str, after: i64, limit: i64) -> Result<Vec<(i64, Entry)>, DbError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, app, action, target, details, remote FROM audit_log \
         WHERE app = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(app)
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(|r| Ok((r.try_get("id")?, entry(r)?))).collect()
}

fn entry(r: &sqlx::any::AnyRow) -> Result<Entry, DbError> {
    let details: String = r.try_get("details")?;
    Ok(Entry {
        at: Millis(r.try_get("at")?),
        actor: r.try_get("actor")?,
        app: r.try_get("app")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        details: serde_json::from_str(&details).unwrap_or(Value::Null),
        remote: r.try_get("remote")?,
    })
}
