//! Bundle patches: one row per (target update, base) pair. Pending rows are the work queue,
//! written in the same transaction as the publish (or the embedded bundle) they come from, so a
//! committed publish always has its patch work recorded; workers claim a row under a lease
//! ([`claim_due`]), so replicas never compute one patch at the same time and a row a crashed
//! worker held is taken over once its lease ends.

use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform, RuntimeVersion, manifest};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::embedded::{self, Embedded};
use super::{Conn, Database, DbError, decode, uuid};

/// How many earlier updates of the same branch, platform and runtime version a new update gets
/// patches from.
pub const HISTORY: i64 = 5;

/// What a base is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    Update,
    Embedded,
}

impl BaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BaseKind::Update => "update",
            BaseKind::Embedded => "embedded",
        }
    }
}

/// Where a patch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    /// Computed, verified, stored and served.
    Done,
    /// Computed, but not enough smaller than the compressed bundle to be worth serving.
    NotWorthIt,
    /// Given up on.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Done => "done",
            State::NotWorthIt => "not_worth_it",
            State::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "pending" => State::Pending,
            "done" => State::Done,
            "not_worth_it" => State::NotWorthIt,
            "failed" => State::Failed,
            other => return Err(decode(format!("patch state {other:?}"))),
        })
    }
}

/// A pending pair to compute.
struct Pair {
    target: Uuid,
    target_hash: ContentHash,
    base: Uuid,
    kind: BaseKind,
    base_hash: ContentHash,
    app_id: i64,
    platform: Platform,
}

/// Records a pending pair unless one is recorded already (in any state); whether it was added.
async fn insert_pending(conn: &mut Conn, pair: &Pair, now: Millis) -> Result<bool, DbError> {
    if pair.base_hash == pair.target_hash || pair.base == pair.target {
        // The device has these bytes already; it never asks for them.
        return Ok(false);
    }
    let added = sqlx::query(
        "INSERT INTO patches (target_id, base_id, base_kind, app_id, platform, base_hash, target_hash, state, \
         next_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9) \
         ON CONFLICT (target_id, base_id) DO NOTHING",
    )
    .bind(pair.target.to_string())
    .bind(pair.base.to_string())
    .bind(pair.kind.as_str())
    .bind(pair.app_id)
    .bind(pair.platform.as_str())
    .bind(pair.base_hash.to_string())
    .bind(pair.target_hash.to_string())
    .bind(now.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(added.rows_affected() == 1)
}

/// A manifest update just stored, as patch planning sees it.
#[derive(Debug, Clone)]
pub struct NewTarget<'a> {
    pub id: Uuid,
    pub group_id: Uuid,
    pub branch_id: i64,
    pub platform: Platform,
    pub runtime_version: &'a RuntimeVersion,
    /// The stored manifest bytes.
    pub body: &'a [u8],
}

/// Records the patches a newly stored update wants, in the caller's transaction: from the launch
/// assets of the [`HISTORY`] newest earlier updates of its branch, platform and runtime version
/// (served or not: devices may still run them), and from the app's embedded bundles for that
/// platform and runtime version.
pub async fn enqueue_for_update(conn: &mut Conn, app_id: i64, t: &NewTarget<'_>) -> Result<(), DbError> {
    let Some(target_hash) = manifest::launch_asset_hash(t.body) else {
        return Ok(());
    };
    let now = Millis::now();
    let earlier = sqlx::query(
        "SELECT id, manifest FROM updates WHERE branch_id = $1 AND platform = $2 AND runtime_version = $3 \
         AND kind = 'manifest' AND group_id <> $4 ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(t.branch_id)
    .bind(t.platform.as_str())
    .bind(t.runtime_version.as_str())
    .bind(t.group_id.to_string())
    .bind(HISTORY)
    .fetch_all(&mut *conn)
    .await?;
    let mut pairs = Vec::new();
    for row in &earlier {
        let id: String = row.try_get("id")?;
        let body: Vec<u8> = row.try_get("manifest")?;
        if let Some(base_hash) = manifest::launch_asset_hash(&body) {
            pairs.push((uuid(&id)?, BaseKind::Update, base_hash));
        }
    }
    for e in embedded::for_runtime(conn, app_id, t.platform, t.runtime_version).await? {
        pairs.push((e.id, BaseKind::Embedded, e.bundle));
    }
    for (base, kind, base_hash) in pairs {
        let pair = Pair {
            target: t.id,
            target_hash,
            base,
            kind,
            base_hash,
            app_id,
            platform: t.platform,
        };
        insert_pending(conn, &pair, now).await?;
    }
    Ok(())
}

/// Records the patches a newly registered embedded bundle is a base for, in the caller's
/// transaction: to the [`HISTORY`] newest served updates of its app, platform and runtime
/// version.
pub async fn enqueue_from_embedded(conn: &mut Conn, e: &Embedded) -> Result<(), DbError> {
    let now = Millis::now();
    let rows = sqlx::query(
        "SELECT u.id, u.manifest FROM updates u JOIN update_groups g ON g.id = u.group_id \
         WHERE g.app_id = $1 AND u.platform = $2 AND u.runtime_version = $3 AND u.kind = 'manifest' \
         AND g.disabled_at IS NULL AND u.withdrawn_at IS NULL ORDER BY u.created_at DESC, u.id DESC LIMIT $4",
    )
    .bind(e.app_id)
    .bind(e.platform.as_str())
    .bind(e.runtime_version.as_str())
    .bind(HISTORY)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let body: Vec<u8> = row.try_get("manifest")?;
        let Some(target_hash) = manifest::launch_asset_hash(&body) else {
            continue;
        };
        let pair = Pair {
            target: uuid(&id)?,
            target_hash,
            base: e.id,
            kind: BaseKind::Embedded,
            base_hash: e.bundle,
            app_id: e.app_id,
            platform: e.platform,
        };
        insert_pending(conn, &pair, now).await?;
    }
    Ok(())
}

/// Records a patch a device asked for when no row exists for it: from `base` to `target`'s
/// launch asset. A device names whatever base it runs, such as an update older than the
/// [`HISTORY`] a publish plans patches from, or from another branch. The base must be the
/// launch asset of an update of the same app, platform and runtime version as `target`, or an
/// embedded bundle registered for them; an unknown base, or a pair recorded already (in any
/// state, so a patch found not worth it is not tried again), adds nothing. Whether a row was
/// added.
pub async fn enqueue_asked(db: &Database, target: Uuid, base: Uuid) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let Some(t) = sqlx::query(
        "SELECT g.app_id, u.platform, u.runtime_version, u.manifest FROM updates u \
         JOIN update_groups g ON g.id = u.group_id WHERE u.id = $1 AND u.kind = 'manifest'",
    )
    .bind(target.to_string())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    let app_id: i64 = t.try_get("app_id")?;
    let platform: String = t.try_get("platform")?;
    let runtime_version: String = t.try_get("runtime_version")?;
    let body: Vec<u8> = t.try_get("manifest")?;
    let Some(target_hash) = manifest::launch_asset_hash(&body) else {
        return Ok(false);
    };
    let earlier = sqlx::query(
        "SELECT u.manifest FROM updates u JOIN update_groups g ON g.id = u.group_id \
         WHERE u.id = $1 AND g.app_id = $2 AND u.platform = $3 AND u.runtime_version = $4 AND u.kind = 'manifest'",
    )
    .bind(base.to_string())
    .bind(app_id)
    .bind(&platform)
    .bind(&runtime_version)
    .fetch_optional(&mut *conn)
    .await?;
    let found = match earlier {
        Some(row) => {
            let body: Vec<u8> = row.try_get("manifest")?;
            manifest::launch_asset_hash(&body).map(|hash| (BaseKind::Update, hash))
        }
        None => {
            let row = sqlx::query(
                "SELECT blob_hash FROM embedded_bundles WHERE app_id = $1 AND id = $2 AND platform = $3 \
                 AND runtime_version = $4",
            )
            .bind(app_id)
            .bind(base.to_string())
            .bind(&platform)
            .bind(&runtime_version)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(row) => {
                    let hash: String = row.try_get("blob_hash")?;
                    Some((BaseKind::Embedded, ContentHash::parse(&hash).map_err(decode)?))
                }
                None => None,
            }
        }
    };
    let Some((kind, base_hash)) = found else {
        return Ok(false);
    };
    let pair = Pair {
        target,
        target_hash,
        base,
        kind,
        base_hash,
        app_id,
        platform: platform.parse::<Platform>().map_err(decode)?,
    };
    insert_pending(&mut conn, &pair, Millis::now()).await
}

/// A pending patch a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub target: Uuid,
    pub base: Uuid,
    pub base_hash: ContentHash,
    pub target_hash: ContentHash,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// Claims up to `limit` pending patches due at `now` that no one holds, until `until`.
pub async fn claim_due(db: &Database, now: Millis, until: Millis, limit: i64) -> Result<Vec<Job>, DbError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT target_id, base_id, base_hash, target_hash, attempts FROM patches \
         WHERE state = 'pending' AND next_at <= $1 AND (lease_until IS NULL OR lease_until < $2) \
         ORDER BY next_at, created_at LIMIT $3",
    )
    .bind(now.0)
    .bind(now.0)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut claimed = Vec::new();
    for r in &rows {
        let target: String = r.try_get("target_id")?;
        let base: String = r.try_get("base_id")?;
        let done = sqlx::query(
            "UPDATE patches SET lease_until = $1, attempts = attempts + 1 WHERE target_id = $2 AND base_id = $3 \
             AND state = 'pending' AND (lease_until IS NULL OR lease_until < $4)",
        )
        .bind(until.0)
        .bind(&target)
        .bind(&base)
        .bind(now.0)
        .execute(db.pool())
        .await?;
        if done.rows_affected() != 1 {
            continue; // another worker took it first
        }
        let hash = |column: &str| -> Result<ContentHash, DbError> {
            let h: String = r.try_get(column)?;
            ContentHash::parse(&h).map_err(decode)
        };
        claimed.push(Job {
            target: uuid(&target)?,
            base: uuid(&base)?,
            base_hash: hash("base_hash")?,
            target_hash: hash("target_hash")?,
            attempts: r.try_get::<i64, _>("attempts")? + 1,
        });
    }
    Ok(claimed)
}

/// Extends a worker's lease on a patch it still computes; whether it still holds it.
pub async fn renew(db: &Database, job: &Job, until: Millis) -> Result<bool, DbError> {
    let done =
        sqlx::query("UPDATE patches SET lease_until = $1 WHERE target_id = $2 AND base_id = $3 AND state = 'pending'")
            .bind(until.0)
            .bind(job.target.to_string())
            .bind(job.base.to_string())
            .execute(db.pool())
            .await?;
    Ok(done.rows_affected() == 1)
}

/// How a computation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        patch: ContentHash,
        size: u64,
        full_size: u64,
    },
    NotWorthIt {
        size: u64,
        full_size: u64,
    },
    /// Try again at `at`.
    Retry {
        at: Millis,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// Records how a claimed patch ended and lets go of the lease. A row no longer pending (a
/// worker whose lease ran out finished it too) is left as it is.
pub async fn finish(db: &Database, job: &Job, outcome: &Outcome) -> Result<(), DbError> {
    let (state, patch, size, full, next_at, error) = match outcome {
        Outcome::Done { patch, size, full_size } => (
            State::Done,
            Some(patch.to_string()),
            Some(*size),
            Some(*full_size),
            None,
            None,
        ),
        Outcome::NotWorthIt { size, full_size } => (State::NotWorthIt, None, Some(*size), Some(*full_size), None, None),
        Outcome::Retry { at, error } => (State::Pending, None, None, None, Some(at.0), Some(error.as_str())),
        Outcome::Failed { error } => (State::Failed, None, None, None, None, Some(error.as_str())),
    };
    let to_i64 = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    sqlx::query(
        "UPDATE patches SET state = $1, patch_hash = $2, size = $3, full_size = $4, next_at = COALESCE($5, next_at), \
         error = $6, lease_until = NULL WHERE target_id = $7 AND base_id = $8 AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(patch)
    .bind(to_i64(size))
    .bind(to_i64(full))
    .bind(next_at)
    .bind(error)
    .bind(job.target.to_string())
    .bind(job.base.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// What an earlier computation of the same bytes found (a republish shares its launch asset),
/// so it need not run again: a done or not-worth-it row with these hashes.
pub async fn computed(
    db: &Database,
    base_hash: &ContentHash,
    target_hash: &ContentHash,
) -> Result<Option<Outcome>, DbError> {
    let row = sqlx::query(
        "SELECT state, patch_hash, size, full_size FROM patches WHERE base_hash = $1 AND target_hash = $2 \
         AND state IN ('done', 'not_worth_it') LIMIT 1",
    )
    .bind(base_hash.to_string())
    .bind(target_hash.to_string())
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let state: String = r.try_get("state")?;
    let size = r.try_get::<Option<i64>, _>("size")?.unwrap_or(0).max(0) as u64;
    let full_size = r.try_get::<Option<i64>, _>("full_size")?.unwrap_or(0).max(0) as u64;
    Ok(Some(match State::parse(&state)? {
        State::Done => {
            let h: Option<String> = r.try_get("patch_hash")?;
            let patch = ContentHash::parse(h.as_deref().unwrap_or_default()).map_err(decode)?;
            Outcome::Done { patch, size, full_size }
        }
        _ => Outcome::NotWorthIt { size, full_size },
    }))
}

/// The stored patch from `base` to `target`, if one is done: its blob and size.
pub async fn served(db: &Database, target: Uuid, base: Uuid) -> Result<Option<(ContentHash, u64)>, DbError> {
    let row =
        sqlx::query("SELECT patch_hash, size FROM patches WHERE target_id = $1 AND base_id = $2 AND state = 'done'")
            .bind(target.to_string())
            .bind(base.to_string())
            .fetch_optional(db.pool())
            .await?;
    let Some(r) = row else { return Ok(None) };
    let hash: Option<String> = r.try_get("patch_hash")?;
    let size: Option<i64> = r.try_get("size")?;
    match (hash, size) {
        (Some(h), Some(size)) => Ok(Some((ContentHash::parse(&h).map_err(decode)?, size.max(0) as u64))),
        _ => Ok(None),
    }
}

/// Adds served counts: `(target, base, hits)`.
pub async fn add_hits(db: &Database, hits: &[(Uuid, Uuid, u64)]) -> Result<(), DbError> {
    for (target, base, n) in hits {
        sqlx::query("UPDATE patches SET hits = hits + $1 WHERE target_id = $2 AND base_id = $3")
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .bind(target.to_string())
            .bind(base.to_string())
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// A patch as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub target: Uuid,
    pub base: Uuid,
    pub base_kind: BaseKind,
    pub state: State,
    pub size: Option<u64>,
    pub full_size: Option<u64>,
    pub hits: u64,
}

fn patch_from_row(r: &AnyRow) -> Result<Patch, DbError> {
    let target: String = r.try_get("target_id")?;
    let base: String = r.try_get("base_id")?;
    let kind: String = r.try_get("base_kind")?;
    let state: String = r.try_get("state")?;
    let size: Option<i64> = r.try_get("size")?;
    let full: Option<i64> = r.try_get("full_size")?;
    Ok(Patch {
        target: uuid(&target)?,
        base: uuid(&base)?,
        base_kind: if kind == "embedded" {
            BaseKind::Embedded
        } else {
            BaseKind::Update
        },
        state: State::parse(&state)?,
        size: size.map(|s| s.max(0) as u64),
        full_size: full.map(|s| s.max(0) as u64),
        hits: r.try_get::<i64, _>("hits")?.max(0) as u64,
    })
}

/// The patches to these updates, oldest base first.
pub async fn to_updates(db: &Database, targets: &[Uuid]) -> Result<Vec<Patch>, DbError> {
    let mut out = Vec::new();
    for target in targets {
        let rows = sqlx::query(
            "SELECT target_id, base_id, base_kind, state, size, full_size, hits FROM patches \
             WHERE target_id = $1 ORDER BY created_at, base_id",
        )
        .bind(target.to_string())
        .fetch_all(db.pool())
        .await?;
        for r in &rows {
            out.push(patch_from_row(r)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_core::AppSlug;

    #[tokio::test]
    async fn a_claim_holds_until_its_lease_ends_and_a_result_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("aloft.db")).await.unwrap();
        let app = crate::db::apps::create(&db, &AppSlug::parse("demo").unwrap())
            .await
            .unwrap();
        let (target, base) = (Uuid::new_v4(), Uuid::new_v4());
        let pair = Pair {
            target,
            target_hash: ContentHash::of(b"new"),
            base,
            kind: BaseKind::Update,
            base_hash: ContentHash::of(b"old"),
            app_id: app.id,
            platform: Platform::Ios,
        };
        let mut conn = db.conn().await.unwrap();
        insert_pending(&mut conn, &pair, Millis(1000)).await.unwrap();
        // Recorded again (a retried publish): still one row.
        insert_pending(&mut conn, &pair, Millis(1000)).await.unwrap();
        // Nothing is recorded for bytes the device has already.
        let same = Pair {
            base_hash: pair.target_hash,
            base: Uuid::new_v4(),
            ..pair
        };
        insert_pending(&mut conn, &same, Millis(1000)).await.unwrap();
        drop(conn);

        let now = Millis(2000);
        let lease = Millis(62_000);
        let jobs = claim_due(&db, now, lease, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].target, jobs[0].base, jobs[0].attempts), (target, base, 1));
        // Held: neither another worker nor a replica takes it.
        assert!(
            claim_due(&db, Millis(3000), Millis(63_000), 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Renewed by its holder while it computes: still held after the first lease.
        assert!(renew(&db, &jobs[0], Millis(70_000)).await.unwrap());
        assert!(
            claim_due(&db, Millis(62_001), Millis(122_001), 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Its holder died: after the lease it is taken over.
        let again = claim_due(&db, Millis(70_001), Millis(130_001), 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);

        assert_eq!(served(&db, target, base).await.unwrap(), None);
        let patch = ContentHash::of(b"patch");
        crate::db::blobs::insert(&db, &patch, &aloft_core::Md5Key::of(b"patch"), 5, None, None)
            .await
            .unwrap();
        let done = Outcome::Done {
            patch,
            size: 5,
            full_size: 100,
        };
        finish(&db, &again[0], &done).await.unwrap();
        // The first holder finishing late changes nothing.
        finish(&db, &jobs[0], &Outcome::Failed { error: "late".into() })
            .await
            .unwrap();
        assert!(
            claim_due(&db, Millis(200_000), Millis(260_000), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(served(&db, target, base).await.unwrap(), Some((patch, 5)));
        assert_eq!(
            computed(&db, &pair.base_hash, &pair.target_hash).await.unwrap(),
            Some(done)
        );
        add_hits(&db, &[(target, base, 3)]).await.unwrap();
        let shown = to_updates(&db, &[target]).await.unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(
            (shown[0].state, shown[0].hits, shown[0].size),
            (State::Done, 3, Some(5))
        );
        // A patch blob is referenced: gc keeps it.
        let mut tx = db.begin_write().await.unwrap();
        let removed = crate::db::blobs::collect_garbage(&mut tx, -1_000_000).await.unwrap();
        assert!(!removed.contains(&patch));
    }
}
