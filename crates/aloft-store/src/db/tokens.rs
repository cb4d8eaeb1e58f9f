//! API tokens. Only a SHA-256 of each secret is stored; a secret is shown once, at creation.

use aloft_core::time::Millis;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Conn, Database, DbError};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything, on every app, including tokens and apps themselves.
    Admin,
    /// Read and release (publish, roll out, roll back, ...) the listed apps.
    Publish(Vec<String>),
    /// Read the listed apps.
    Read(Vec<String>),
}

impl Scope {
    pub(crate) fn columns(&self) -> (&'static str, String) {
        match self {
            Scope::Admin => ("admin", String::new()),
            Scope::Publish(apps) => ("publish", apps.join(",")),
            Scope::Read(apps) => ("read", apps.join(",")),
        }
    }

    pub(crate) fn from_columns(scope: &str, apps: &str) -> Self {
        let apps = || apps.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        match scope {
            "admin" => Scope::Admin,
            "publish" => Scope::Publish(apps()),
            // Anything unknown gets the least power.
            _ => Scope::Read(apps()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// A fresh secret: `aloft_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    format!("aloft_{}", hex::encode(rand::random::<[u8; 32]>()))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn from_row(r: &AnyRow) -> Result<Token, DbError> {
    let scope: String = r.try_get("scope")?;
    let apps: String = r.try_get("apps")?;
    Ok(Token {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: Scope::from_columns(&scope, &apps),
        created_at: Millis(r.try_get("created_at")?),
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(Millis),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Millis),
    })
}

/// Stores a token and returns it with its secret.
pub async fn create(
    db: &Database,
    name: &str,
    scope: &Scope,
    expires_at: Option<Millis>,
) -> Result<(Token, String), DbError> {
    let mut tx = db.begin_write().await?;
    let created = insert(&mut tx, name, scope, expires_at).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`create`] inside a transaction the caller commits.
pub async fn insert(
    conn: &mut Conn,
    name: &str,
    scope: &Scope,
    expires_at: Option<Millis>,
) -> Result<(Token, String), DbError> {
    let secret = new_secret();
    let (scope_text, apps) = scope.columns();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tokens (name, token_hash, scope, apps, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(name)
    .bind(hash_secret(&secret))
    .bind(scope_text)
    .bind(apps)
    .bind(Millis::now().0)
    .bind(expires_at.map(|t| t.0))
    .fetch_one(&mut *conn)
    .await?;
    let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((from_row(&row)?, secret))
}

pub async fn list(db: &Database) -> Result<Vec<Token>, DbError> {
    let rows = sqlx::query("SELECT * FROM tokens ORDER BY id")
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn revoke(db: &Database, id: i64) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    set_revoked(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// [`revoke`] inside a transaction the caller commits.
pub async fn set_revoked(conn: &mut Conn, id: i64) -> Result<(), DbError> {
    let done = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .bind(Millis::now().0)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::NoSuchToken);
    }
    Ok(())
}

/// The live token whose secret hashes to `hash`. The lookup goes through an index over hashes of
/// secrets, so its timing depends on the hash, never on how much of a secret was right; the
/// stored hash is then compared in constant time as well.
pub async fn find_by_hash(db: &Database, hash: &str) -> Result<Option<Token>, DbError> {
    let row = sqlx::query(
        "SELECT * FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(hash)
    .bind(Millis::now().0)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("token_hash")?;
    if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(from_row(&row)?))
}

/// Whether two byte strings are equal, in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
