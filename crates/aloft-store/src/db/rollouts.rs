//! Rollouts: a group (or a channel) served to a share of devices, and the queries that follow
//! and change the rollouts in progress on a branch.

use aloft_core::{Platform, RuntimeVersion};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::{DbError, decode, uuid};

/// An active per-group rollout: who gets the group is decided by hashing the device id with
/// `salt`; `percentage` of devices do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSpec {
    pub percentage: u8,
    pub salt: String,
}

impl RolloutSpec {
    /// The `rollout_percentage` and `rollout_salt` columns of a row (a group's or a channel's):
    /// a rollout when both are set.
    pub(crate) fn from_row(r: &AnyRow) -> Result<Option<Self>, DbError> {
        let percentage: Option<i64> = r.try_get("rollout_percentage")?;
        let salt: Option<String> = r.try_get("rollout_salt")?;
        Ok(match (percentage, salt) {
            (Some(p), Some(salt)) => Some(Self {
                percentage: p.clamp(0, 100) as u8,
                salt,
            }),
            _ => None,
        })
    }
}

/// What the rollouts in progress on a branch roll out: per served update of a group with a
/// rollout, `(group, platform, runtime version)`, newest group first. A rollout concerns only the
/// devices of its own platforms and runtime versions.
pub async fn active_rollouts(
    conn: &mut AnyConnection,
    branch_id: i64,
) -> Result<Vec<(Uuid, Platform, RuntimeVersion)>, DbError> {
    let rows = sqlx::query(
        "SELECT g.id, u.platform, u.runtime_version FROM update_groups g JOIN updates u ON u.group_id = g.id \
         WHERE g.branch_id = $1 AND g.rollout_percentage IS NOT NULL AND g.disabled_at IS NULL \
         AND u.withdrawn_at IS NULL ORDER BY g.created_at DESC, u.platform",
    )
    .bind(branch_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let platform: String = r.try_get("platform")?;
            let rv: String = r.try_get("runtime_version")?;
            Ok((
                uuid(&id)?,
                platform.parse().map_err(decode)?,
                RuntimeVersion::parse(rv).map_err(decode)?,
            ))
        })
        .collect()
}

/// Sets an active rollout's percentage, or with `None` completes it (everyone gets the group).
pub async fn set_rollout_percentage(
    conn: &mut AnyConnection,
    group_id: Uuid,
    percentage: Option<u8>,
) -> Result<(), DbError> {
    let query = match percentage {
        Some(_) => "UPDATE update_groups SET rollout_percentage = $1 WHERE id = $2",
        None => "UPDATE update_groups SET rollout_percentage = $1, rollout_salt = NULL WHERE id = $2",
    };
    sqlx::query(query)
        .bind(percentage.map(i64::from))
        .bind(group_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sets a group's halt setting (`aloft_core::halt::Halt`, stored; `None`: as the app says).
pub async fn set_halt_policy(conn: &mut AnyConnection, group_id: Uuid, policy: Option<&str>) -> Result<(), DbError> {
    sqlx::query("UPDATE update_groups SET halt_policy = $1 WHERE id = $2")
        .bind(policy)
        .bind(group_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A group's halt setting, stored (`None`: as the app says).
pub async fn halt_policy(conn: &mut AnyConnection, group_id: Uuid) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT halt_policy FROM update_groups WHERE id = $1")
            .bind(group_id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .flatten(),
    )
}

/// A rollout in progress, as the halting job watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub app_id: i64,
    pub app: String,
    /// The rollout's own halt setting, and the app's.
    pub policy: Option<String>,
    pub app_policy: Option<String>,
    pub rollout: WatchedRollout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedRollout {
    Group(Uuid),
    /// A channel's branch rollout: the channel's name.
    Channel(String),
}

/// Every rollout in progress on the server: group rollouts and channel branch rollouts.
pub async fn watched(conn: &mut AnyConnection) -> Result<Vec<Watched>, DbError> {
    let groups = sqlx::query(
        "SELECT g.id, g.app_id, a.slug, g.halt_policy, a.halt_policy AS app_policy FROM update_groups g \
         JOIN apps a ON a.id = g.app_id WHERE g.rollout_percentage IS NOT NULL AND g.disabled_at IS NULL \
         ORDER BY g.created_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    let channels = sqlx::query(
        "SELECT c.name, c.app_id, a.slug, c.rollout_halt_policy AS halt_policy, a.halt_policy AS app_policy \
         FROM channels c JOIN apps a ON a.id = c.app_id WHERE c.rollout_branch_id IS NOT NULL ORDER BY c.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let watched = |r: &AnyRow, rollout: WatchedRollout| -> Result<Watched, DbError> {
        Ok(Watched {
            app_id: r.try_get("app_id")?,
            app: r.try_get("slug")?,
            policy: r.try_get("halt_policy")?,
            app_policy: r.try_get("app_policy")?,
            rollout,
        })
    };
    let mut out = Vec::new();
    for r in &groups {
        let id: String = r.try_get("id")?;
        out.push(watched(r, WatchedRollout::Group(uuid(&id)?))?);
    }
    for r in &channels {
        out.push(watched(r, WatchedRollout::Channel(r.try_get("name")?))?);
    }
    Ok(out)
}
