//! Apps: one server hosts many, each with a slug and a default channel.

use aloft_core::time::Millis;
use aloft_core::{AppSlug, ChannelName};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Conn, Database, DbError, is_unique_violation};

#[derive(Debug, Clone)]
pub struct App {
    pub id: i64,
    pub slug: AppSlug,
    pub default_channel: ChannelName,
    pub signing_key_pem: Option<String>,
    pub signing_keyid: Option<String>,
    pub created_at: Millis,
    /// Bumped by every committed change to what the app serves.
    pub revision: i64,
    /// The halt setting of the app's rollouts that set none (`aloft_core::halt::Halt`, stored);
    /// `None`: the built-in default.
    pub halt_policy: Option<String>,
    /// Whether devices that ask get bsdiff patches of launch assets (on by default).
    pub patches: bool,
}

fn from_row(row: &AnyRow) -> Result<App, DbError> {
    let slug: String = row.try_get("slug")?;
    let default_channel: String = row.try_get("default_channel")?;
    Ok(App {
        id: row.try_get("id")?,
        slug: AppSlug::parse(slug).map_err(|e| sqlx::Error::Decode(e.into()))?,
        default_channel: ChannelName::parse(default_channel).map_err(|e| sqlx::Error::Decode(e.into()))?,
        signing_key_pem: row.try_get("signing_key_pem")?,
        signing_keyid: row.try_get("signing_keyid")?,
        created_at: Millis(row.try_get("created_at")?),
        revision: row.try_get("revision")?,
        halt_policy: row.try_get("halt_policy")?,
        patches: row.try_get::<i64, _>("patches")? != 0,
    })
}

macro_rules! select_apps {
    ($rest:literal) => {
        concat!(
            "SELECT id, slug, default_channel, signing_key_pem, signing_keyid, created_at, revision, halt_policy, patches FROM apps ",
            $rest
        )
    };
}

/// Creates an app with its default channel and the branch of the same name, so a device asking
/// before the first publish gets the no-update answer.
pub async fn create(db: &Database, slug: &AppSlug) -> Result<App, DbError> {
    let mut tx = db.begin_write().await?;
    let id = insert(&mut tx, slug).await?;
    tx.commit().await?;
    by_id(db, id).await
}

/// [`create`] inside a transaction the caller commits; returns the new app's id.
pub async fn insert(conn: &mut Conn, slug: &AppSlug) -> Result<i64, DbError> {
    let now = Millis::now().0;
    let default_channel = "production";
    let id: i64 =
        sqlx::query_scalar("INSERT INTO apps (slug, default_channel, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(slug.as_str())
            .bind(default_channel)
            .bind(now)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    DbError::AppAlreadyExists(slug.to_string())
                } else {
                    e.into()
                }
            })?;
    let branch_id: i64 =
        sqlx::query_scalar("INSERT INTO branches (app_id, name, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(id)
            .bind(default_channel)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("INSERT INTO channels (app_id, name, branch_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(default_channel)
        .bind(branch_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

pub async fn by_slug(db: &Database, slug: &AppSlug) -> Result<App, DbError> {
    let row = sqlx::query(select_apps!("WHERE slug = $1"))
        .bind(slug.as_str())
        .fetch_optional(db.pool())
        .await?
        .ok_or(DbError::NoSuchApp)?;
    from_row(&row)
}

pub async fn by_id(db: &Database, id: i64) -> Result<App, DbError> {
    let row = sqlx::query(select_apps!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(DbError::NoSuchApp)?;
    from_row(&row)
}

pub async fn list(db: &Database) -> Result<Vec<App>, DbError> {
    let rows = sqlx::query(select_apps!("ORDER BY slug")).fetch_all(db.pool()).await?;
    rows.iter().map(from_row).collect()
}

/// Stores (or, with `None`, removes) the app's server-side signing key.
pub async fn set_signing_key(conn: &mut Conn, app_id: i64, key: Option<(&str, &str)>) -> Result<(), DbError> {
    let (pem, keyid) = key.unzip();
    let done = sqlx::query("UPDATE apps SET signing_key_pem = $1, signing_keyid = $2 WHERE id = $3")
        .bind(pem)
        .bind(keyid)
        .bind(app_id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::NoSuchApp);
    }
    Ok(())
}

/// Marks a change to what the app serves, inside the change's transaction.
pub async fn bump_revision(conn: &mut AnyConnection, app_id: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE apps SET revision = revision + 1 WHERE id = $1")
        .bind(app_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every app's id, slug and revision: what replicas poll.
pub async fn revisions(db: &Database) -> Result<Vec<(i64, String, i64)>, DbError> {
    let rows = sqlx::query("SELECT id, slug, revision FROM apps")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("slug")?, r.try_get("revision")?)))
        .collect()
}

/// Sets (or with `None` resets to the built-in default) the app's halt setting.
pub async fn set_halt_policy(conn: &mut Conn, app_id: i64, policy: Option<&str>) -> Result<(), DbError> {
    sqlx::query("UPDATE apps SET halt_policy = $1 WHERE id = $2")
        .bind(policy)
        .bind(app_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Turns the app's bundle patches on or off.
pub async fn set_patches(conn: &mut Conn, app_id: i64, on: bool) -> Result<(), DbError> {
    sqlx::query("UPDATE apps SET patches = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(app_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
