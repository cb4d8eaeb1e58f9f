//! Update groups and their per-platform updates: the atomic publish, and the heads a server
//! serves.

use aloft_core::signature::CodeSignature;
use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform, RuntimeVersion};
use sqlx::Row;
use uuid::Uuid;

use super::{Database, DbError, channels, is_unique_violation};

/// Where a publish lands.
#[derive(Debug, Clone)]
pub enum Target {
    /// The branch the channel points at; a new channel gets a branch of its own name.
    Channel(String),
    Branch(String),
}

#[derive(Debug, Clone)]
pub struct NewUpdate {
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub manifest: Vec<u8>,
    pub signature: Option<CodeSignature>,
    /// Every blob the manifest references; all must be stored.
    pub blobs: Vec<ContentHash>,
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub id: Uuid,
    pub app_id: i64,
    pub target: Target,
    pub message: String,
    pub created_at: Millis,
    pub published_by: String,
    pub updates: Vec<NewUpdate>,
}

/// The newest `createdAt` of any update of the app. Every publish is later than this, so the
/// device, which orders by `createdAt` alone, always takes a new publish as newer.
pub async fn newest_created_at(db: &Database, app_id: i64) -> Result<Option<Millis>, DbError> {
    let max: Option<i64> =
        sqlx::query_scalar("SELECT MAX(created_at) FROM update_groups WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(db.pool())
            .await?;
    Ok(max.map(Millis))
}

/// Commits a whole update group in one transaction: visible entirely or not at all.
pub async fn publish(db: &Database, group: &NewGroup) -> Result<i64, DbError> {
    let mut tx = db.begin_write().await?;
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(created_at) FROM update_groups WHERE app_id = ?")
            .bind(group.app_id)
            .fetch_one(&mut *tx)
            .await?;
    if let Some(newest) = newest
        && group.created_at.0 <= newest
    {
        return Err(DbError::StaleCreatedAt {
            created_at: group.created_at.0,
            newest,
        });
    }
    let branch_id = match &group.target {
        Target::Channel(name) => {
            channels::ensure_channel(&mut tx, group.app_id, name, group.created_at).await?
        }
        Target::Branch(name) => {
            channels::ensure_branch(&mut tx, group.app_id, name, group.created_at).await?
        }
    };
    sqlx::query(
        "INSERT INTO update_groups (id, app_id, branch_id, message, created_at, published_by) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(group.id.to_string())
    .bind(group.app_id)
    .bind(branch_id)
    .bind(&group.message)
    .bind(group.created_at.0)
    .bind(&group.published_by)
    .execute(&mut *tx)
    .await
    .map_err(|e| if is_unique_violation(&e) { DbError::UpdateAlreadyExists(group.id.to_string()) } else { e.into() })?;
    for update in &group.updates {
        sqlx::query(
            "INSERT INTO updates (id, group_id, branch_id, platform, runtime_version, created_at, manifest, signature, keyid) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(update.id.to_string())
        .bind(group.id.to_string())
        .bind(branch_id)
        .bind(update.platform.as_str())
        .bind(update.runtime_version.as_str())
        .bind(group.created_at.0)
        .bind(&update.manifest)
        .bind(update.signature.as_ref().map(|s| s.sig.as_str()))
        .bind(update.signature.as_ref().map(|s| s.keyid.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { DbError::UpdateAlreadyExists(update.id.to_string()) } else { e.into() })?;
        for hash in &update.blobs {
            let hash = hash.to_string();
            let stored: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blobs WHERE hash = ?")
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
            if stored.is_none() {
                return Err(DbError::MissingBlob(hash));
            }
            sqlx::query("INSERT OR IGNORE INTO update_assets (update_id, blob_hash) VALUES (?, ?)")
                .bind(update.id.to_string())
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(branch_id)
}

/// The newest update of a branch for one platform and runtime version: what a device gets.
#[derive(Debug, Clone)]
pub struct Head {
    pub branch_id: i64,
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub created_at: Millis,
    pub manifest: Vec<u8>,
    pub signature: Option<CodeSignature>,
}

/// Every head of every branch of the app.
pub async fn heads(db: &Database, app_id: i64) -> Result<Vec<Head>, DbError> {
    let rows = sqlx::query(
        "SELECT branch_id, id, platform, runtime_version, created_at, manifest, signature, keyid FROM ( \
           SELECT u.*, ROW_NUMBER() OVER ( \
             PARTITION BY u.branch_id, u.platform, u.runtime_version ORDER BY u.created_at DESC, u.id DESC) AS rn \
           FROM updates u JOIN branches b ON b.id = u.branch_id WHERE b.app_id = ?) \
         WHERE rn = 1",
    )
    .bind(app_id)
    .fetch_all(db.pool())
    .await?;
    let decode = |e: String| DbError::Sqlx(sqlx::Error::Decode(e.into()));
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let platform: String = r.try_get("platform")?;
            let rv: String = r.try_get("runtime_version")?;
            let sig: Option<String> = r.try_get("signature")?;
            let keyid: Option<String> = r.try_get("keyid")?;
            Ok(Head {
                branch_id: r.try_get("branch_id")?,
                id: Uuid::parse_str(&id).map_err(|e| decode(e.to_string()))?,
                platform: platform
                    .parse()
                    .map_err(|e: aloft_core::platform::InvalidPlatform| decode(e.to_string()))?,
                runtime_version: RuntimeVersion::parse(rv).map_err(|e| decode(e.to_string()))?,
                created_at: Millis(r.try_get("created_at")?),
                manifest: r.try_get("manifest")?,
                signature: match (sig, keyid) {
                    (Some(sig), Some(keyid)) => {
                        Some(CodeSignature::new(sig, keyid).map_err(|e| decode(e.to_string()))?)
                    }
                    _ => None,
                },
            })
        })
        .collect()
}
