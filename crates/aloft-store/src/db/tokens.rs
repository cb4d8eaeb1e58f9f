//! API tokens. Only a SHA-256 of each secret is stored; a secret is shown once, at creation.

use aloft_core::time::Millis;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Database, DbError};

#[derive(Debug, Clone)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub scope: String,
}

/// A fresh secret: `aloft_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    format!("aloft_{}", hex::encode(rand::random::<[u8; 32]>()))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Stores a token and returns its secret.
pub async fn create(db: &Database, name: &str, scope: &str) -> Result<String, DbError> {
    let secret = new_secret();
    sqlx::query("INSERT INTO tokens (name, token_hash, scope, created_at) VALUES (?, ?, ?, ?)")
        .bind(name)
        .bind(hash_secret(&secret))
        .bind(scope)
        .bind(Millis::now().0)
        .execute(db.pool())
        .await?;
    Ok(secret)
}

/// The live token whose secret hashes to `hash`. The lookup is by an index over hashes of
/// secrets, so its timing reveals nothing about the secret itself.
pub async fn find_by_hash(db: &Database, hash: &str) -> Result<Option<Token>, DbError> {
    let row = sqlx::query(
        "SELECT id, name, scope FROM tokens WHERE token_hash = ? AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ?)",
    )
    .bind(hash)
    .bind(Millis::now().0)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(Token {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            scope: r.try_get("scope")?,
        })
    })
    .transpose()
}
