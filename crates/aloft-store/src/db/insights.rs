//! What devices report, aggregated per UTC day (migration 0006). The server counts in memory
//! and stores here every few seconds; see `aloft-server`'s `insights` module.
//!
//! Distinct-device counts are opaque bytes here (`aloft_core::distinct::Distinct` encodes them),
//! one row per recording process: a process overwrites its own rows with its whole count for the
//! day, and readers merge every process's rows. Counters (fatal errors, unknown channels) are
//! added to in place, so each process stores only what it counted since its last store.

use aloft_core::Platform;
use sqlx::Row;
use uuid::Uuid;

use super::{Database, DbError, decode, uuid};

/// What a device did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// Was served its manifest.
    Served,
    /// Downloaded its launch asset.
    Installed,
    /// Checked for updates while running it.
    Launched,
    /// Listed it in `Expo-Recent-Failed-Update-IDs`.
    Failed,
}

impl Event {
    pub const ALL: [Event; 4] = [Event::Served, Event::Installed, Event::Launched, Event::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Served => "served",
            Event::Installed => "installed",
            Event::Launched => "launched",
            Event::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, DbError> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| decode(format!("unknown insight event {s:?}")))
    }
}

/// One update's devices for one event on one day, as one process counted them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub app_id: i64,
    pub update_id: Uuid,
    pub platform: Platform,
    pub day: i64,
    pub event: Event,
}

/// Devices on one channel, platform and runtime version running one thing on one day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetKey {
    pub app_id: i64,
    pub channel: String,
    pub platform: Platform,
    pub runtime_version: String,
    /// [`EMBEDDED`] or an update id.
    pub running: String,
    pub day: i64,
}

/// `running` of devices on their embedded update.
pub const EMBEDDED: &str = "embedded";

/// A fatal error text reported for an update on one day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FatalKey {
    pub app_id: i64,
    pub update_id: Uuid,
    pub platform: Platform,
    pub day: i64,
    /// SHA-256 of the message, base64url.
    pub message_hash: String,
}

/// What one process counted since its last store.
#[derive(Debug, Default)]
pub struct Batch {
    /// Whole counts of this process for the day, encoded.
    pub devices: Vec<(DeviceKey, Vec<u8>)>,
    pub fleet: Vec<(FleetKey, Vec<u8>)>,
    /// Reports since the last store, with the message.
    pub fatal_errors: Vec<(FatalKey, String, i64)>,
    /// (app id, channel, day) → checks since the last store.
    pub unknown_channels: Vec<(i64, String, i64, i64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.fleet.is_empty()
            && self.fatal_errors.is_empty()
            && self.unknown_channels.is_empty()
    }
}

/// Stores a batch in one transaction. It takes no write lock of its own beyond the database's:
/// on SQLite it waits its turn like any write; on PostgreSQL rows of different processes never
/// conflict, and counters are added to atomically.
pub async fn store(db: &Database, replica: &str, batch: &Batch) -> Result<(), DbError> {
    let mut tx = db.pool().begin().await?;
    for (key, devices) in &batch.devices {
        sqlx::query(
            "INSERT INTO insight_devices (update_id, platform, day, event, replica, app_id, devices) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (update_id, platform, day, event, replica) DO UPDATE SET devices = excluded.devices",
        )
        .bind(key.update_id.to_string())
        .bind(key.platform.as_str())
        .bind(key.day)
        .bind(key.event.as_str())
        .bind(replica)
        .bind(key.app_id)
        .bind(devices.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    for (key, devices) in &batch.fleet {
        sqlx::query(
            "INSERT INTO insight_fleet (app_id, channel, platform, runtime_version, running, day, replica, devices) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (app_id, channel, platform, runtime_version, running, day, replica) \
             DO UPDATE SET devices = excluded.devices",
        )
        .bind(key.app_id)
        .bind(&key.channel)
        .bind(key.platform.as_str())
        .bind(&key.runtime_version)
        .bind(&key.running)
        .bind(key.day)
        .bind(replica)
        .bind(devices.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    for (key, message, reports) in &batch.fatal_errors {
        sqlx::query(
            "INSERT INTO insight_fatal_errors (update_id, platform, day, message_hash, message, reports, app_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (update_id, platform, day, message_hash) \
             DO UPDATE SET reports = insight_fatal_errors.reports + excluded.reports",
        )
        .bind(key.update_id.to_string())
        .bind(key.platform.as_str())
        .bind(key.day)
        .bind(&key.message_hash)
        .bind(message)
        .bind(reports)
        .bind(key.app_id)
        .execute(&mut *tx)
        .await?;
    }
    for (app_id, channel, day, checks) in &batch.unknown_channels {
        sqlx::query(
            "INSERT INTO insight_unknown_channels (app_id, channel, day, checks) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, channel, day) DO UPDATE SET checks = insight_unknown_channels.checks + excluded.checks",
        )
        .bind(app_id)
        .bind(channel)
        .bind(day)
        .bind(checks)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A stored count of one process.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub update_id: Uuid,
    pub platform: String,
    pub day: i64,
    pub event: Event,
    pub devices: Vec<u8>,
}

/// Every stored count of these updates from `since_day` on, all processes.
pub async fn devices(db: &Database, update_ids: &[Uuid], since_day: i64) -> Result<Vec<DeviceRow>, DbError> {
    let mut out = Vec::new();
    for id in update_ids {
        let rows = sqlx::query(
            "SELECT update_id, platform, day, event, devices FROM insight_devices \
             WHERE update_id = $1 AND day >= $2 ORDER BY day",
        )
        .bind(id.to_string())
        .bind(since_day)
        .fetch_all(db.pool())
        .await?;
        for r in rows {
            let update_id: String = r.try_get("update_id")?;
            let event: String = r.try_get("event")?;
            out.push(DeviceRow {
                update_id: uuid(&update_id)?,
                platform: r.try_get("platform")?,
                day: r.try_get("day")?,
                event: Event::parse(&event)?,
                devices: r.try_get("devices")?,
            });
        }
    }
    Ok(out)
}

/// A fatal error text and how often devices reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalError {
    pub platform: String,
    pub message: String,
    pub reports: i64,
}

/// The fatal errors reported for these updates from `since_day` on, most frequent first.
pub async fn fatal_errors(
    db: &Database,
    update_ids: &[Uuid],
    since_day: i64,
    limit: i64,
) -> Result<Vec<FatalError>, DbError> {
    let mut out: Vec<FatalError> = Vec::new();
    for id in update_ids {
        let rows = sqlx::query(
            "SELECT platform, message, CAST(SUM(reports) AS BIGINT) AS reports FROM insight_fatal_errors \
             WHERE update_id = $1 AND day >= $2 GROUP BY platform, message_hash, message \
             ORDER BY reports DESC, message LIMIT $3",
        )
        .bind(id.to_string())
        .bind(since_day)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
        for r in rows {
            out.push(FatalError {
                platform: r.try_get("platform")?,
                message: r.try_get("message")?,
                reports: r.try_get("reports")?,
            });
        }
    }
    out.sort_by(|a, b| b.reports.cmp(&a.reports).then_with(|| a.message.cmp(&b.message)));
    out.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(out)
}

/// A stored fleet count of one process.
#[derive(Debug, Clone)]
pub struct FleetRow {
    pub channel: String,
    pub platform: String,
    pub runtime_version: String,
    pub running: String,
    pub devices: Vec<u8>,
}

/// Every stored fleet count of an app's channel (every channel with `None`) on `day`.
pub async fn fleet(db: &Database, app_id: i64, channel: Option<&str>, day: i64) -> Result<Vec<FleetRow>, DbError> {
    let rows = sqlx::query(
        "SELECT channel, platform, runtime_version, running, devices FROM insight_fleet \
         WHERE app_id = $1 AND day = $2 AND (CAST($3 AS TEXT) IS NULL OR channel = $3) \
         ORDER BY channel, platform, runtime_version, running",
    )
    .bind(app_id)
    .bind(day)
    .bind(channel)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FleetRow {
                channel: r.try_get("channel")?,
                platform: r.try_get("platform")?,
                runtime_version: r.try_get("runtime_version")?,
                running: r.try_get("running")?,
                devices: r.try_get("devices")?,
            })
        })
        .collect()
}

/// Checks per unknown channel of an app from `since_day` on, most first.
pub async fn unknown_channels(db: &Database, app_id: i64, since_day: i64) -> Result<Vec<(String, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT channel, CAST(SUM(checks) AS BIGINT) AS checks FROM insight_unknown_channels \
         WHERE app_id = $1 AND day >= $2 GROUP BY channel ORDER BY checks DESC, channel",
    )
    .bind(app_id)
    .bind(since_day)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("channel")?, r.try_get("checks")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back() {
        for e in Event::ALL {
            assert_eq!(Event::parse(e.as_str()).unwrap(), e);
        }
        assert!(Event::parse("crashed").is_err());
    }
}
