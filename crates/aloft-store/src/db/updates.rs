//! Update groups and their per-platform updates: the atomic insert of a group, the state a
//! release manager changes (disabling, withdrawing), and the heads a server serves. Rollouts
//! live in [`super::rollouts`]; their items are re-exported here.

use aloft_core::signature::CodeSignature;
use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform, RuntimeVersion};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

pub use super::rollouts::{RolloutSpec, active_rollouts, set_rollout_percentage};
use super::{Database, DbError, decode, is_unique_violation, uuid};

/// What a group's updates carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Manifests.
    Update,
    /// `rollBackToEmbedded` directives.
    Rollback,
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Update => "update",
            GroupKind::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "rollback" {
            GroupKind::Rollback
        } else {
            GroupKind::Update
        }
    }

    /// The kind of body each of the group's updates has.
    pub fn body(self) -> BodyKind {
        match self {
            GroupKind::Update => BodyKind::Manifest,
            GroupKind::Rollback => BodyKind::Directive,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Manifest,
    Directive,
}

impl BodyKind {
    fn as_str(self) -> &'static str {
        match self {
            BodyKind::Manifest => "manifest",
            BodyKind::Directive => "directive",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "directive" {
            BodyKind::Directive
        } else {
            BodyKind::Manifest
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewUpdate {
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub body: Vec<u8>,
    pub signature: Option<CodeSignature>,
    /// Every blob the body references; all must be stored.
    pub blobs: Vec<ContentHash>,
    /// The original update this one republishes.
    pub republished_from: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub id: Uuid,
    pub app_id: i64,
    pub branch_id: i64,
    pub kind: GroupKind,
    pub message: String,
    pub created_at: Millis,
    pub published_by: String,
    pub rollout: Option<RolloutSpec>,
    pub republished_from: Option<Uuid>,
    pub updates: Vec<NewUpdate>,
}

/// The newest `createdAt` of any group of the app. Every new group is later than this, so the
/// device, which orders by `createdAt` alone, always takes a new group as newer.
pub async fn newest_created_at(conn: &mut AnyConnection, app_id: i64) -> Result<Option<Millis>, DbError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(created_at) FROM update_groups WHERE app_id = $1")
        .bind(app_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(max.map(Millis))
}

/// Inserts a whole group. Run inside a write transaction: the group is visible entirely or not
/// at all.
pub async fn insert_group(conn: &mut AnyConnection, group: &NewGroup) -> Result<(), DbError> {
    if let Some(newest) = newest_created_at(conn, group.app_id).await?
        && group.created_at <= newest
    {
        return Err(DbError::StaleCreatedAt {
            created_at: group.created_at.0,
            newest: newest.0,
        });
    }
    let unique = |id: Uuid| {
        move |e: sqlx::Error| {
            if is_unique_violation(&e) {
                DbError::UpdateAlreadyExists(id.to_string())
            } else {
                e.into()
            }
        }
    };
    sqlx::query(
        "INSERT INTO update_groups (id, app_id, branch_id, kind, message, created_at, published_by, \
         rollout_percentage, rollout_salt, republished_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(group.id.to_string())
    .bind(group.app_id)
    .bind(group.branch_id)
    .bind(group.kind.as_str())
    .bind(&group.message)
    .bind(group.created_at.0)
    .bind(&group.published_by)
    .bind(group.rollout.as_ref().map(|r| i64::from(r.percentage)))
    .bind(group.rollout.as_ref().map(|r| r.salt.as_str()))
    .bind(group.republished_from.map(|id| id.to_string()))
    .execute(&mut *conn)
    .await
    .map_err(unique(group.id))?;
    for update in &group.updates {
        sqlx::query(
            "INSERT INTO updates (id, group_id, branch_id, platform, runtime_version, created_at, manifest, \
             signature, keyid, kind, republished_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(update.id.to_string())
        .bind(group.id.to_string())
        .bind(group.branch_id)
        .bind(update.platform.as_str())
        .bind(update.runtime_version.as_str())
        .bind(group.created_at.0)
        .bind(&update.body)
        .bind(update.signature.as_ref().map(|s| s.sig.as_str()))
        .bind(update.signature.as_ref().map(|s| s.keyid.as_str()))
        .bind(group.kind.body().as_str())
        .bind(update.republished_from.map(|id| id.to_string()))
        .execute(&mut *conn)
        .await
        .map_err(unique(update.id))?;
        for hash in &update.blobs {
            let hash = hash.to_string();
            let stored: Option<String> = sqlx::query_scalar("SELECT hash FROM blobs WHERE hash = $1")
                .bind(&hash)
                .fetch_optional(&mut *conn)
                .await?;
            if stored.is_none() {
                return Err(DbError::MissingBlob(hash));
            }
            sqlx::query("INSERT INTO update_assets (update_id, blob_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(update.id.to_string())
                .bind(&hash)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A group as release management sees it.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: Uuid,
    pub app_id: i64,
    pub branch_id: i64,
    pub branch: String,
    pub kind: GroupKind,
    pub message: String,
    pub created_at: Millis,
    pub published_by: String,
    pub rollout: Option<RolloutSpec>,
    pub republished_from: Option<Uuid>,
    pub disabled: Option<(Millis, String)>,
    pub updates: Vec<GroupUpdate>,
}

impl Group {
    pub fn is_served(&self) -> bool {
        self.disabled.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct GroupUpdate {
    pub id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    /// Why this update is no longer served, when it was withdrawn on its own.
    pub withdrawn: Option<String>,
}

/// One stored update with its exact body.
#[derive(Debug, Clone)]
pub struct StoredUpdate {
    pub id: Uuid,
    /// The original content it carries: what it republishes, or itself.
    pub origin: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub body: Vec<u8>,
    pub signature: Option<CodeSignature>,
}

fn group_from_row(r: &AnyRow) -> Result<Group, DbError> {
    let id: String = r.try_get("id")?;
    let from: Option<String> = r.try_get("republished_from")?;
    let disabled_at: Option<i64> = r.try_get("disabled_at")?;
    let reason: Option<String> = r.try_get("disabled_reason")?;
    let kind: String = r.try_get("kind")?;
    Ok(Group {
        id: uuid(&id)?,
        app_id: r.try_get("app_id")?,
        branch_id: r.try_get("branch_id")?,
        branch: r.try_get("branch")?,
        kind: GroupKind::parse(&kind),
        message: r.try_get("message")?,
        created_at: Millis(r.try_get("created_at")?),
        published_by: r.try_get("published_by")?,
        rollout: RolloutSpec::from_row(r)?,
        republished_from: from.as_deref().map(uuid).transpose()?,
        disabled: disabled_at.map(|at| (Millis(at), reason.unwrap_or_default())),
        updates: Vec::new(),
    })
}

async fn attach_updates(conn: &mut AnyConnection, groups: &mut [Group]) -> Result<(), DbError> {
    for group in groups {
        let rows =
            sqlx::query("SELECT id, platform, runtime_version, withdrawn_reason FROM updates WHERE group_id = $1 ORDER BY platform, runtime_version")
                .bind(group.id.to_string())
                .fetch_all(&mut *conn)
                .await?;
        group.updates = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let platform: String = r.try_get("platform")?;
                let rv: String = r.try_get("runtime_version")?;
                Ok(GroupUpdate {
                    id: uuid(&id)?,
                    platform: platform.parse().map_err(decode)?,
                    runtime_version: RuntimeVersion::parse(rv).map_err(decode)?,
                    withdrawn: r.try_get("withdrawn_reason")?,
                })
            })
            .collect::<Result<_, DbError>>()?;
    }
    Ok(())
}

macro_rules! select_groups {
    ($rest:literal) => {
        concat!(
            "SELECT g.id, g.app_id, g.branch_id, b.name AS branch, g.kind, g.message, g.created_at, \
             g.published_by, g.rollout_percentage, g.rollout_salt, g.republished_from, g.disabled_at, \
             g.disabled_reason FROM update_groups g JOIN branches b ON b.id = g.branch_id ",
            $rest
        )
    };
}

/// One group of the app, with its updates.
pub async fn group(conn: &mut AnyConnection, app_id: i64, id: Uuid) -> Result<Group, DbError> {
    let row = sqlx::query(select_groups!("WHERE g.app_id = $1 AND g.id = $2"))
        .bind(app_id)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(DbError::NoSuchGroup)?;
    let mut groups = vec![group_from_row(&row)?];
    attach_updates(conn, &mut groups).await?;
    Ok(groups.remove(0))
}

/// Groups of the app, newest first, optionally of one branch.
pub async fn list_groups(
    conn: &mut AnyConnection,
    app_id: i64,
    branch_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Group>, DbError> {
    let rows = sqlx::query(select_groups!(
        "WHERE g.app_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR g.branch_id = $3) ORDER BY g.created_at DESC LIMIT $4"
    ))
    .bind(app_id)
    .bind(branch_id)
    .bind(branch_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut groups = rows.iter().map(group_from_row).collect::<Result<Vec<_>, _>>()?;
    attach_updates(conn, &mut groups).await?;
    Ok(groups)
}

/// The served groups of a branch, newest first.
pub async fn served_groups(conn: &mut AnyConnection, branch_id: i64) -> Result<Vec<Group>, DbError> {
    let rows = sqlx::query(select_groups!(
        "WHERE g.branch_id = $1 AND g.disabled_at IS NULL ORDER BY g.created_at DESC"
    ))
    .bind(branch_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut groups = rows.iter().map(group_from_row).collect::<Result<Vec<_>, _>>()?;
    attach_updates(conn, &mut groups).await?;
    Ok(groups)
}

/// The bodies of a group's updates, for republishing.
pub async fn stored_updates(conn: &mut AnyConnection, group_id: Uuid) -> Result<Vec<StoredUpdate>, DbError> {
    let rows = sqlx::query(
        "SELECT id, platform, runtime_version, manifest, signature, keyid, republished_from FROM updates \
         WHERE group_id = $1 ORDER BY platform, runtime_version",
    )
    .bind(group_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(stored_from_row).collect()
}

fn stored_from_row(r: &AnyRow) -> Result<StoredUpdate, DbError> {
    let id: String = r.try_get("id")?;
    let platform: String = r.try_get("platform")?;
    let rv: String = r.try_get("runtime_version")?;
    let sig: Option<String> = r.try_get("signature")?;
    let keyid: Option<String> = r.try_get("keyid")?;
    let from: Option<String> = r.try_get("republished_from")?;
    let id = uuid(&id)?;
    Ok(StoredUpdate {
        id,
        origin: from.as_deref().map(uuid).transpose()?.unwrap_or(id),
        platform: platform.parse().map_err(decode)?,
        runtime_version: RuntimeVersion::parse(rv).map_err(decode)?,
        body: r.try_get("manifest")?,
        signature: match (sig, keyid) {
            (Some(sig), Some(keyid)) => Some(CodeSignature::new(sig, keyid).map_err(decode)?),
            _ => None,
        },
    })
}

/// Stops serving a group.
pub async fn disable(conn: &mut AnyConnection, group_id: Uuid, reason: &str) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE update_groups SET disabled_at = $1, disabled_reason = $2, rollout_percentage = NULL WHERE id = $3",
    )
    .bind(Millis::now().0)
    .bind(reason)
    .bind(group_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes a group and its updates. Their blobs stay until `gc` finds them unreferenced.
pub async fn delete_group(conn: &mut AnyConnection, group_id: Uuid) -> Result<(), DbError> {
    let id = group_id.to_string();
    // Patches to these updates go with them; patches from them stay (devices may still run
    // them, and the patch bytes are still right).
    sqlx::query("DELETE FROM patches WHERE target_id IN (SELECT id FROM updates WHERE group_id = $1)")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM update_assets WHERE update_id IN (SELECT id FROM updates WHERE group_id = $1)")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM updates WHERE group_id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE update_groups SET republished_from = NULL WHERE republished_from = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM update_groups WHERE id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A served update of a branch for one platform and runtime version, with its group's rollout.
#[derive(Debug, Clone)]
pub struct Head {
    pub branch_id: i64,
    pub group_id: Uuid,
    /// 1 for the newest served update of (branch, platform, runtime version), 2 for the one
    /// before it (the control of a rollout), and so on up to [`HEAD_HISTORY`].
    pub rank: i64,
    pub update: StoredUpdate,
    pub kind: BodyKind,
    pub created_at: Millis,
    pub rollout: Option<RolloutSpec>,
}

/// How many of the newest served updates of each (branch, platform, runtime version) [`heads`]
/// reads: the head, the control of a rollout, and earlier ones a device that reported the newer
/// ones failed may fall back to.
pub const HEAD_HISTORY: i64 = 4;

/// The [`HEAD_HISTORY`] newest served updates of every (branch, platform, runtime version) of
/// the app.
pub async fn heads(db: &Database, app_id: i64) -> Result<Vec<Head>, DbError> {
    // Rank on narrow columns first, read from the `updates_ranking` index alone (the table rows
    // carry manifest bodies), then read bodies for the newest few per key only: an app with
    // thousands of updates reads a handful of manifests. Filtering on the app's branches (not
    // `g.app_id`, which has to be read per row) keeps the scan to that app's index range, and
    // disabled groups are a short list (`update_groups_disabled`), not a join per update.
    let rows = sqlx::query(
        "SELECT u.branch_id, u.group_id, u.id, u.platform, u.runtime_version, u.created_at, u.manifest, \
                u.signature, u.keyid, u.kind, u.republished_from, g.rollout_percentage, g.rollout_salt, ranked.rn \
         FROM ( \
           SELECT u.id, ROW_NUMBER() OVER (PARTITION BY u.branch_id, u.platform, u.runtime_version \
                                           ORDER BY u.created_at DESC, u.id DESC) AS rn \
           FROM updates u \
           WHERE u.branch_id IN (SELECT id FROM branches WHERE app_id = $1) \
             AND u.group_id NOT IN (SELECT id FROM update_groups WHERE app_id = $1 AND disabled_at IS NOT NULL) \
             AND u.withdrawn_at IS NULL) AS ranked \
         JOIN updates u ON u.id = ranked.id JOIN update_groups g ON g.id = u.group_id \
         WHERE ranked.rn <= $2",
    )
    .bind(app_id)
    .bind(HEAD_HISTORY)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let group_id: String = r.try_get("group_id")?;
            let kind: String = r.try_get("kind")?;
            Ok(Head {
                branch_id: r.try_get("branch_id")?,
                group_id: uuid(&group_id)?,
                rank: r.try_get("rn")?,
                update: stored_from_row(r)?,
                kind: BodyKind::parse(&kind),
                created_at: Millis(r.try_get("created_at")?),
                rollout: RolloutSpec::from_row(r)?,
            })
        })
        .collect()
}

/// A served update of a branch, without its body: what release decisions look at.
#[derive(Debug, Clone)]
pub struct UpdateRef {
    pub id: Uuid,
    pub group_id: Uuid,
    pub platform: Platform,
    pub runtime_version: RuntimeVersion,
    pub created_at: Millis,
    pub kind: BodyKind,
    /// The original content this update carries: what it republishes, or itself.
    pub origin: Uuid,
}

/// Every served update of a branch, newest first.
pub async fn served_updates(conn: &mut AnyConnection, branch_id: i64) -> Result<Vec<UpdateRef>, DbError> {
    let rows = sqlx::query(
        "SELECT u.id, u.group_id, u.platform, u.runtime_version, u.created_at, u.kind, u.republished_from \
         FROM updates u JOIN update_groups g ON g.id = u.group_id \
         WHERE u.branch_id = $1 AND g.disabled_at IS NULL AND u.withdrawn_at IS NULL \
         ORDER BY u.created_at DESC, u.id DESC",
    )
    .bind(branch_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let group: String = r.try_get("group_id")?;
            let platform: String = r.try_get("platform")?;
            let rv: String = r.try_get("runtime_version")?;
            let kind: String = r.try_get("kind")?;
            let from: Option<String> = r.try_get("republished_from")?;
            let id = uuid(&id)?;
            Ok(UpdateRef {
                id,
                group_id: uuid(&group)?,
                platform: platform.parse().map_err(decode)?,
                runtime_version: RuntimeVersion::parse(rv).map_err(decode)?,
                created_at: Millis(r.try_get("created_at")?),
                kind: BodyKind::parse(&kind),
                origin: from.as_deref().map(uuid).transpose()?.unwrap_or(id),
            })
        })
        .collect()
}

/// One stored update with its body.
pub async fn stored_update(conn: &mut AnyConnection, id: Uuid) -> Result<StoredUpdate, DbError> {
    let row = sqlx::query(
        "SELECT id, platform, runtime_version, manifest, signature, keyid, republished_from FROM updates WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(DbError::NoSuchGroup)?;
    stored_from_row(&row)
}

/// Stops serving one update (the rest of its group stays).
pub async fn withdraw_update(conn: &mut AnyConnection, id: Uuid, reason: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE updates SET withdrawn_at = $1, withdrawn_reason = $2 WHERE id = $3")
        .bind(Millis::now().0)
        .bind(reason)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether any update of the app was ever stored signed: its devices then carry a code-signing
/// certificate and refuse unsigned manifests.
pub async fn app_has_signed_updates(conn: &mut AnyConnection, app_id: i64) -> Result<bool, DbError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM updates u JOIN update_groups g ON g.id = u.group_id \
         WHERE g.app_id = $1 AND u.signature IS NOT NULL LIMIT 1",
    )
    .bind(app_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}
