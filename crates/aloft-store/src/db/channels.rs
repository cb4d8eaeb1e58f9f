//! Channels and the branches they point at.

use aloft_core::time::Millis;
use sqlx::Row;

use super::{Database, DbError};

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: i64,
    pub name: String,
    pub branch_id: i64,
    pub branch_name: String,
}

pub async fn list(db: &Database, app_id: i64) -> Result<Vec<Channel>, DbError> {
    let rows = sqlx::query(
        "SELECT c.id, c.name, c.branch_id, b.name AS branch_name FROM channels c \
         JOIN branches b ON b.id = c.branch_id WHERE c.app_id = ? ORDER BY c.name",
    )
    .bind(app_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Channel {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                branch_id: r.try_get("branch_id")?,
                branch_name: r.try_get("branch_name")?,
            })
        })
        .collect()
}

/// The id of the branch named `name`, creating it if needed, inside `tx`.
pub(crate) async fn ensure_branch(
    tx: &mut sqlx::SqliteConnection,
    app_id: i64,
    name: &str,
    now: Millis,
) -> Result<i64, DbError> {
    if let Some(id) = sqlx::query_scalar("SELECT id FROM branches WHERE app_id = ? AND name = ?")
        .bind(app_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
    {
        return Ok(id);
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO branches (app_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(app_id)
    .bind(name)
    .bind(now.0)
    .fetch_one(&mut *tx)
    .await?)
}

/// The branch a channel points at; a channel that does not exist yet is created pointing at a
/// branch of the same name (as `eas update --channel` does).
pub(crate) async fn ensure_channel(
    tx: &mut sqlx::SqliteConnection,
    app_id: i64,
    name: &str,
    now: Millis,
) -> Result<i64, DbError> {
    if let Some(branch_id) =
        sqlx::query_scalar("SELECT branch_id FROM channels WHERE app_id = ? AND name = ?")
            .bind(app_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
    {
        return Ok(branch_id);
    }
    let branch_id = ensure_branch(tx, app_id, name, now).await?;
    sqlx::query("INSERT INTO channels (app_id, name, branch_id, created_at) VALUES (?, ?, ?, ?)")
        .bind(app_id)
        .bind(name)
        .bind(branch_id)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
    Ok(branch_id)
}
