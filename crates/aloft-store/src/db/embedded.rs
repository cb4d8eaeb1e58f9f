//! Embedded bundles: the JavaScript bundle a store build ships, registered per app with its
//! embedded update id, so the first updates devices on that build take can be patches.

use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform, RuntimeVersion};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::{Conn, Database, DbError, decode, is_unique_violation, uuid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    pub app_id: i64,
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub bundle: ContentHash,
    pub created_at: Millis,
}

fn from_row(r: &AnyRow) -> Result<Embedded, DbError> {
    let id: String = r.try_get("id")?;
    let platform: String = r.try_get("platform")?;
    let rv: String = r.try_get("runtime_version")?;
    let hash: String = r.try_get("blob_hash")?;
    Ok(Embedded {
        app_id: r.try_get("app_id")?,
        id: uuid(&id)?,
        platform: platform.parse().map_err(decode)?,
        runtime_version: RuntimeVersion::parse(rv).map_err(decode)?,
        bundle: ContentHash::parse(&hash).map_err(decode)?,
        created_at: Millis(r.try_get("created_at")?),
    })
}

const COLUMNS: &str = "app_id, id, platform, runtime_version, blob_hash, created_at";

/// Registers an embedded bundle; its blob must be stored.
pub async fn insert(conn: &mut Conn, e: &Embedded) -> Result<(), DbError> {
    let stored: Option<String> = sqlx::query_scalar("SELECT hash FROM blobs WHERE hash = $1")
        .bind(e.bundle.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    if stored.is_none() {
        return Err(DbError::MissingBlob(e.bundle.to_string()));
    }
    sqlx::query(
        "INSERT INTO embedded_bundles (app_id, id, platform, runtime_version, blob_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.app_id)
    .bind(e.id.to_string())
    .bind(e.platform.as_str())
    .bind(e.runtime_version.as_str())
    .bind(e.bundle.to_string())
    .bind(e.created_at.0)
    .execute(&mut *conn)
    .await
    .map_err(|err| {
        if is_unique_violation(&err) {
            DbError::EmbeddedAlreadyExists(e.id.to_string())
        } else {
            err.into()
        }
    })?;
    Ok(())
}

/// The app's embedded bundles, newest first.
pub async fn list(db: &Database, app_id: i64) -> Result<Vec<Embedded>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM embedded_bundles WHERE app_id = $1 ORDER BY created_at DESC, id"
    )))
    .bind(app_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

/// The app's embedded bundles for one platform and runtime version.
pub async fn for_runtime(
    conn: &mut Conn,
    app_id: i64,
    platform: Platform,
    runtime_version: &RuntimeVersion,
) -> Result<Vec<Embedded>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM embedded_bundles WHERE app_id = $1 AND platform = $2 AND runtime_version = $3 \
         ORDER BY created_at DESC, id"
    )))
    .bind(app_id)
    .bind(platform.as_str())
    .bind(runtime_version.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Removes an embedded bundle with the patches from it. Its blob stays until `gc` finds it
/// unreferenced.
pub async fn delete(conn: &mut Conn, app_id: i64, id: Uuid) -> Result<Embedded, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM embedded_bundles WHERE app_id = $1 AND id = $2"
    )))
    .bind(app_id)
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(DbError::NoSuchEmbedded)?;
    let found = from_row(&row)?;
    sqlx::query("DELETE FROM patches WHERE app_id = $1 AND base_id = $2 AND base_kind = 'embedded'")
        .bind(app_id)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM embedded_bundles WHERE app_id = $1 AND id = $2")
        .bind(app_id)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(found)
}
