//! Dashboard users, their one-time sign-in links and their sessions. A user's role is a token
//! [`Scope`], so people and tokens share one set of access rules. Secrets (links, session cookies)
//! are stored as SHA-256 hashes only, like token secrets.

use aloft_core::time::Millis;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::tokens::{Scope, constant_time_eq, hash_secret};
use super::{Conn, Database, DbError};

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    /// Lower case.
    pub email: String,
    pub scope: Scope,
    /// The argon2id PHC string; `None` until the user sets a password through a sign-in link.
    pub password_hash: Option<String>,
    pub created_at: Millis,
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The SHA-256 of the cookie's secret (what identifies the session here).
    pub hash: String,
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A fresh secret for a link or a session: 32 random bytes in hex.
fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn user_from(r: &AnyRow) -> Result<User, DbError> {
    let scope: String = r.try_get("scope")?;
    let apps: String = r.try_get("apps")?;
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        scope: Scope::from_columns(&scope, &apps),
        password_hash: r.try_get("password_hash")?,
        created_at: Millis(r.try_get("created_at")?),
    })
}

/// Adds a user without a password (they set one through a sign-in link).
pub async fn insert(conn: &mut Conn, email: &str, scope: &Scope) -> Result<User, DbError> {
    let (scope_text, apps) = scope.columns();
    let row = sqlx::query(
        "INSERT INTO users (email, scope, apps, password_hash, created_at) VALUES ($1, $2, $3, NULL, $4) \
         RETURNING id, email, scope, apps, password_hash, created_at",
    )
    .bind(email)
    .bind(scope_text)
    .bind(apps)
    .bind(Millis::now().0)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            DbError::UserAlreadyExists(email.to_owned())
        } else {
            e.into()
        }
    })?;
    user_from(&row)
}

pub async fn list(db: &Database) -> Result<Vec<User>, DbError> {
    let rows = sqlx::query("SELECT * FROM users ORDER BY email")
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(user_from).collect()
}

pub async fn by_email(db: &Database, email: &str) -> Result<Option<User>, DbError> {
    let row = sqlx::query("SELECT * FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(user_from).transpose()
}

pub async fn by_id(conn: &mut Conn, id: i64) -> Result<User, DbError> {
    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(DbError::NoSuchUser)?;
    user_from(&row)
}

pub async fn set_password(conn: &mut Conn, id: i64, password_hash: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes a user with their links and sessions.
pub async fn delete(conn: &mut Conn, id: i64) -> Result<(), DbError> {
    end_sessions(conn, id).await?;
    sqlx::query("DELETE FROM sign_in_links WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::NoSuchUser);
    }
    Ok(())
}

/// A new one-time sign-in link for the user, valid for `valid_ms`; the user's earlier unused
/// links stop working. Returns the link's secret.
pub async fn insert_link(conn: &mut Conn, user_id: i64, valid_ms: i64) -> Result<String, DbError> {
    let now = Millis::now().0;
    sqlx::query("UPDATE sign_in_links SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let secret = new_secret();
    sqlx::query("INSERT INTO sign_in_links (link_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash_secret(&secret))
        .bind(user_id)
        .bind(now)
        .bind(now + valid_ms)
        .execute(&mut *conn)
        .await?;
    Ok(secret)
}

/// The user of a link that is unused and unexpired (the link stays usable).
pub async fn link_user(db: &Database, secret: &str) -> Result<Option<User>, DbError> {
    let row = sqlx::query(
        "SELECT u.* FROM sign_in_links l JOIN users u ON u.id = l.user_id \
         WHERE l.link_hash = $1 AND l.used_at IS NULL AND l.expires_at > $2",
    )
    .bind(hash_secret(secret))
    .bind(Millis::now().0)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(user_from).transpose()
}

/// Uses up a link: its user, if the link was unused and unexpired, and no one else used it first
/// (the update is conditional, so two uses at once cannot both succeed).
pub async fn use_link(conn: &mut Conn, secret: &str) -> Result<Option<User>, DbError> {
    let now = Millis::now().0;
    let user_id: Option<i64> = sqlx::query_scalar(
        "UPDATE sign_in_links SET used_at = $1 WHERE link_hash = $2 AND used_at IS NULL AND expires_at > $3 \
         RETURNING user_id",
    )
    .bind(now)
    .bind(hash_secret(secret))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    match user_id {
        Some(id) => Ok(Some(by_id(conn, id).await?)),
        None => Ok(None),
    }
}

/// Starts a session for the user, valid for `valid_ms`; returns the cookie's secret. Expired
/// sessions of anyone are removed on the way.
pub async fn insert_session(conn: &mut Conn, user_id: i64, valid_ms: i64, remote: &str) -> Result<String, DbError> {
    let now = Millis::now().0;
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let secret = new_secret();
    sqlx::query(
        "INSERT INTO sessions (session_hash, user_id, csrf, created_at, expires_at, remote) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hash_secret(&secret))
    .bind(user_id)
    .bind(new_secret())
    .bind(now)
    .bind(now + valid_ms)
    .bind(remote)
    .execute(&mut *conn)
    .await?;
    Ok(secret)
}

/// The live session whose cookie secret is `secret`, with its user.
pub async fn session(db: &Database, secret: &str) -> Result<Option<Session>, DbError> {
    let hash = hash_secret(secret);
    let row = sqlx::query(
        "SELECT s.session_hash, s.csrf, s.created_at AS s_created, s.expires_at AS s_expires, u.* \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.session_hash = $1 AND s.expires_at > $2",
    )
    .bind(&hash)
    .bind(Millis::now().0)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("session_hash")?;
    if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(Session {
        hash,
        user: user_from(&row)?,
        csrf: row.try_get("csrf")?,
        created_at: Millis(row.try_get("s_created")?),
        expires_at: Millis(row.try_get("s_expires")?),
    }))
}

/// Ends one session (by its hash).
pub async fn end_session(db: &Database, hash: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM sessions WHERE session_hash = $1")
        .bind(hash)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends every session of the user ("sign out everywhere", a password change, a removal).
pub async fn end_sessions(conn: &mut Conn, user_id: i64) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
