//! Reading insights back: stored counts of every process merged per update, platform and day.

use std::collections::BTreeMap;

use aloft_core::Platform;
use aloft_core::distinct::Distinct;
use aloft_core::halt::Figures;
use aloft_store::Database;
use aloft_store::DbError;
use aloft_store::db::insights::{self, Event};
use uuid::Uuid;

/// Most fatal error texts a report lists per platform.
pub(crate) const FATAL_ERRORS_LISTED: i64 = 10;

/// Distinct devices per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Served the manifest.
    pub(crate) devices: u64,
    pub(crate) installs: u64,
    pub(crate) launches: u64,
    pub(crate) failures: u64,
    /// Whether every count is exact (else some are estimates).
    pub(crate) exact: bool,
}

impl Counts {
    /// What a halt policy weighs.
    pub(crate) fn figures(&self) -> Figures {
        Figures {
            installs: self.installs,
            launches: self.launches,
            failures: self.failures,
        }
    }

    /// Failures over launches and failures, in percent; `None` before any device reported.
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        self.figures().failure_rate()
    }
}

/// The merged counts of each event.
#[derive(Debug, Default, Clone)]
struct Merged([Distinct; 4]);

impl Merged {
    fn add(&mut self, event: Event, devices: &Distinct) {
        self.0[event as usize].merge(devices);
    }

    fn counts(&self) -> Counts {
        Counts {
            devices: self.0[Event::Served as usize].count(),
            installs: self.0[Event::Installed as usize].count(),
            launches: self.0[Event::Launched as usize].count(),
            failures: self.0[Event::Failed as usize].count(),
            exact: self.0.iter().all(Distinct::is_exact),
        }
    }
}

/// One platform's insights over a period.
#[derive(Debug, Clone)]
pub(crate) struct PlatformReport {
    pub(crate) platform: Platform,
    pub(crate) update_id: Uuid,
    pub(crate) totals: Counts,
    /// Per UTC day (days since 1970-01-01), oldest first.
    pub(crate) daily: Vec<(i64, Counts)>,
    pub(crate) fatal_errors: Vec<(String, i64)>,
}

/// The insights of these updates (one per platform) from `since_day` on.
pub(crate) async fn updates(
    db: &Database,
    updates: &[(Uuid, Platform)],
    since_day: i64,
) -> Result<Vec<PlatformReport>, DbError> {
    let ids: Vec<Uuid> = updates.iter().map(|(id, _)| *id).collect();
    let rows = insights::devices(db, &ids, since_day).await?;
    let errors = insights::fatal_errors(db, &ids, since_day, FATAL_ERRORS_LISTED * 2).await?;
    let mut out = Vec::new();
    for &(update_id, platform) in updates {
        let mut total = Merged::default();
        let mut days: BTreeMap<i64, Merged> = BTreeMap::new();
        for row in rows.iter().filter(|r| r.update_id == update_id) {
            // A row that does not decode (written by a newer version) is skipped, not fatal.
            let Ok(devices) = Distinct::decode(&row.devices) else {
                tracing::warn!(update = %update_id, day = row.day, "an insight count could not be read; skipped");
                continue;
            };
            total.add(row.event, &devices);
            days.entry(row.day).or_default().add(row.event, &devices);
        }
        let fatal_errors = errors
            .iter()
            .filter(|e| e.platform == platform.as_str())
            .take(usize::try_from(FATAL_ERRORS_LISTED).unwrap_or(0))
            .map(|e| (e.message.clone(), e.reports))
            .collect();
        out.push(PlatformReport {
            platform,
            update_id,
            totals: total.counts(),
            daily: days.into_iter().map(|(day, m)| (day, m.counts())).collect(),
            fatal_errors,
        });
    }
    Ok(out)
}

/// Distinct devices on each thing they run, per channel, platform and runtime version, on `day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FleetShare {
    pub(crate) channel: String,
    pub(crate) platform: String,
    pub(crate) runtime_version: String,
    /// `embedded` or an update id.
    pub(crate) running: String,
    pub(crate) devices: u64,
}

/// The fleet of an app's channel (every channel with `None`) on `day`.
pub(crate) async fn fleet(
    db: &Database,
    app_id: i64,
    channel: Option<&str>,
    day: i64,
) -> Result<Vec<FleetShare>, DbError> {
    let mut merged: BTreeMap<(String, String, String, String), Distinct> = BTreeMap::new();
    for row in insights::fleet(db, app_id, channel, day).await? {
        let Ok(devices) = Distinct::decode(&row.devices) else {
            continue;
        };
        merged
            .entry((row.channel, row.platform, row.runtime_version, row.running))
            .or_default()
            .merge(&devices);
    }
    Ok(merged
        .into_iter()
        .map(|((channel, platform, runtime_version, running), devices)| FleetShare {
            channel,
            platform,
            runtime_version,
            running,
            devices: devices.count(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rate_counts_launches_and_failures() {
        let c = |launches, failures| Counts {
            launches,
            failures,
            ..Counts::default()
        };
        assert_eq!(c(0, 0).failure_rate(), None);
        assert_eq!(c(3, 1).failure_rate(), Some(25.0));
        assert_eq!(c(0, 2).failure_rate(), Some(100.0));
    }
}
