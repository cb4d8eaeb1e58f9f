//! Channels and branches. A branch is an ordered list of update groups; a channel points at a
//! branch, and may split its devices with a second branch (a branch rollout).

use aloft_core::time::Millis;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Database, DbError, is_unique_violation};

/// A channel's split of its devices between its branch and another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRollout {
    pub branch_id: i64,
    pub branch: String,
    pub percentage: u8,
    pub salt: String,
    /// Its halt setting (`aloft_core::halt::Halt`, stored); `None`: as the app says.
    pub halt_policy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: i64,
    pub name: String,
    pub branch_id: i64,
    pub branch: String,
    pub rollout: Option<BranchRollout>,
}

macro_rules! select_channels {
    ($rest:literal) => {
        concat!(
            "SELECT c.id, c.name, c.branch_id, b.name AS branch, c.rollout_branch_id, rb.name AS rollout_branch, \
             c.rollout_percentage, c.rollout_salt, c.rollout_halt_policy FROM channels c \
             JOIN branches b ON b.id = c.branch_id \
             LEFT JOIN branches rb ON rb.id = c.rollout_branch_id ",
            $rest
        )
    };
}

fn channel_from_row(r: &AnyRow) -> Result<Channel, DbError> {
    let rollout_branch_id: Option<i64> = r.try_get("rollout_branch_id")?;
    let rollout_branch: Option<String> = r.try_get("rollout_branch")?;
    let spec = super::rollouts::RolloutSpec::from_row(r)?;
    Ok(Channel {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        branch_id: r.try_get("branch_id")?,
        branch: r.try_get("branch")?,
        rollout: match (rollout_branch_id, rollout_branch, spec) {
            (Some(branch_id), Some(branch), Some(spec)) => Some(BranchRollout {
                branch_id,
                branch,
                percentage: spec.percentage,
                salt: spec.salt,
                halt_policy: r.try_get("rollout_halt_policy")?,
            }),
            _ => None,
        },
    })
}

pub async fn list(db: &Database, app_id: i64) -> Result<Vec<Channel>, DbError> {
    let rows = sqlx::query(select_channels!("WHERE c.app_id = $1 ORDER BY c.name"))
        .bind(app_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(channel_from_row).collect()
}

pub async fn get(conn: &mut AnyConnection, app_id: i64, name: &str) -> Result<Channel, DbError> {
    let row = sqlx::query(select_channels!("WHERE c.app_id = $1 AND c.name = $2"))
        .bind(app_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(DbError::NoSuchChannel)?;
    channel_from_row(&row)
}

/// Creates a channel pointing at `branch` (created if needed).
pub async fn create(conn: &mut AnyConnection, app_id: i64, name: &str, branch: &str) -> Result<Channel, DbError> {
    let now = Millis::now();
    let branch_id = ensure_branch(conn, app_id, branch, now).await?;
    sqlx::query("INSERT INTO channels (app_id, name, branch_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(app_id)
        .bind(name)
        .bind(branch_id)
        .bind(now.0)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::ChannelAlreadyExists(name.to_owned())
            } else {
                e.into()
            }
        })?;
    get(conn, app_id, name).await
}

/// Points a channel at another branch. Nothing is republished: devices get that branch's newest
/// update at their next check.
pub async fn set_branch(conn: &mut AnyConnection, channel_id: i64, branch_id: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE channels SET branch_id = $1 WHERE id = $2")
        .bind(branch_id)
        .bind(channel_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Starts, changes or (with `None`) ends a channel's branch rollout.
pub async fn set_rollout(
    conn: &mut AnyConnection,
    channel_id: i64,
    rollout: Option<(i64, u8, &str)>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE channels SET rollout_branch_id = $1, rollout_percentage = $2, rollout_salt = $3 WHERE id = $4")
        .bind(rollout.map(|r| r.0))
        .bind(rollout.map(|r| i64::from(r.1)))
        .bind(rollout.map(|r| r.2))
        .bind(channel_id)
        .execute(&mut *conn)
        .await?;
    if rollout.is_none() {
        set_rollout_halt_policy(conn, channel_id, None).await?;
    }
    Ok(())
}

/// Sets the halt setting of a channel's branch rollout (`None`: as the app says).
pub async fn set_rollout_halt_policy(
    conn: &mut AnyConnection,
    channel_id: i64,
    policy: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE channels SET rollout_halt_policy = $1 WHERE id = $2")
        .bind(policy)
        .bind(channel_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Branch {
    pub id: i64,
    pub name: String,
    pub created_at: Millis,
    pub groups: i64,
    /// Channels pointing at it (or rolling out to it).
    pub channels: Vec<String>,
}

pub async fn list_branches(db: &Database, app_id: i64) -> Result<Vec<Branch>, DbError> {
    let rows = sqlx::query(
        "SELECT b.id, b.name, b.created_at, \
           (SELECT COUNT(*) FROM update_groups g WHERE g.branch_id = b.id) AS groups \
         FROM branches b WHERE b.app_id = $1 ORDER BY b.name",
    )
    .bind(app_id)
    .fetch_all(db.pool())
    .await?;
    let channels = list(db, app_id).await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            Ok(Branch {
                id,
                name: r.try_get("name")?,
                created_at: Millis(r.try_get("created_at")?),
                groups: r.try_get("groups")?,
                channels: channels
                    .iter()
                    .filter(|c| c.branch_id == id || c.rollout.as_ref().is_some_and(|r| r.branch_id == id))
                    .map(|c| c.name.clone())
                    .collect(),
            })
        })
        .collect()
}

pub async fn branch_id(conn: &mut AnyConnection, app_id: i64, name: &str) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT id FROM branches WHERE app_id = $1 AND name = $2")
        .bind(app_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(DbError::NoSuchBranch)
}

pub async fn create_branch(conn: &mut AnyConnection, app_id: i64, name: &str) -> Result<i64, DbError> {
    sqlx::query_scalar("INSERT INTO branches (app_id, name, created_at) VALUES ($1, $2, $3) RETURNING id")
        .bind(app_id)
        .bind(name)
        .bind(Millis::now().0)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::BranchAlreadyExists(name.to_owned())
            } else {
                e.into()
            }
        })
}

/// Deletes a branch and its groups. Refused while a channel points (or rolls out) to it.
/// Blobs stay until `gc` finds them unreferenced, so no served asset URL breaks.
pub async fn delete_branch(conn: &mut AnyConnection, app_id: i64, name: &str) -> Result<(), DbError> {
    let id = branch_id(conn, app_id, name).await?;
    let users: Vec<String> =
        sqlx::query_scalar("SELECT name FROM channels WHERE branch_id = $1 OR rollout_branch_id = $2 ORDER BY name")
            .bind(id)
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    if !users.is_empty() {
        return Err(DbError::BranchInUse {
            branch: name.to_owned(),
            channels: users,
        });
    }
    let groups: Vec<String> = sqlx::query_scalar("SELECT id FROM update_groups WHERE branch_id = $1")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    for group in groups {
        let group = uuid::Uuid::parse_str(&group).map_err(|e| DbError::Sqlx(sqlx::Error::Decode(e.into())))?;
        super::updates::delete_group(conn, group).await?;
    }
    sqlx::query("DELETE FROM branches WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The id of the branch named `name`, creating it if needed.
pub async fn ensure_branch(conn: &mut AnyConnection, app_id: i64, name: &str, now: Millis) -> Result<i64, DbError> {
    if let Some(id) = sqlx::query_scalar("SELECT id FROM branches WHERE app_id = $1 AND name = $2")
        .bind(app_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    Ok(
        sqlx::query_scalar("INSERT INTO branches (app_id, name, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(app_id)
            .bind(name)
            .bind(now.0)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The channel named `name`; a channel that does not exist yet is created pointing at a branch of
/// the same name (as `eas update --channel` does).
pub async fn ensure_channel(conn: &mut AnyConnection, app_id: i64, name: &str) -> Result<Channel, DbError> {
    match get(conn, app_id, name).await {
        Err(DbError::NoSuchChannel) => create(conn, app_id, name, name).await,
        other => other,
    }
}
