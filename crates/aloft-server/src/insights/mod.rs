//! Fleet insights: what devices did with each update, from what their checks and downloads
//! already say (docs/protocol.md §1.1, §1.2, §8.4). No SDK, no extra request.
//!
//! The device hook (`device.rs`) hands every answered check and asset download to the
//! [`Recorder`], which counts in memory: per (update, platform, UTC day) the distinct devices
//! served its manifest, that installed it (downloaded its launch asset), launched it (checked
//! while running it) and reported it failed; per (channel, platform, runtime version, day) the
//! distinct devices on the embedded update and on each update; fatal error texts and checks for
//! channels that do not exist, as counters. Recording takes one short lock and never waits for
//! I/O. A job (`jobs.rs`) stores what changed every [`FLUSH_EVERY`]; `report.rs` reads it back.
//!
//! Memory is bounded: a distinct count is exact up to 4,096 devices (about 72 KiB at most) and a
//! 16 KiB sketch beyond (`aloft_core::distinct`), the number of counts is capped ([`MAX_COUNTS`]),
//! and only the current day's counts stay in memory once stored (docs/insights.md has the
//! figures). A database outage loses nothing while the
//! process lives: what could not be stored is stored with the next flush.

pub(crate) mod report;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use aloft_core::fasthash::{FastBuild, FastHasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aloft_core::distinct::{Distinct, device_hash};
use aloft_core::time::Millis;
use aloft_core::{ContentHash, Platform};
use aloft_store::Database;
use aloft_store::db::insights::{self, Batch, DeviceKey, EMBEDDED, Event, FatalKey, FleetKey};
use uuid::Uuid;

use crate::protocol::manifest::{Facts, Running};
use crate::served::Snapshot;

/// How often counts are stored.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Most distinct counts (of every kind together) a process keeps; past it, new keys are not
/// counted (and `aloft_insights_dropped_total` says so). Keys come from updates in memory and
/// from the channels and runtime versions devices send, which a broken build could multiply.
pub(crate) const MAX_COUNTS: usize = 4096;

/// Most distinct fatal error texts kept per update, platform and day.
const MAX_FATAL_TEXTS: usize = 20;

/// Most unknown channel names counted per app and day.
const MAX_UNKNOWN_CHANNELS: usize = 100;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The UTC day of a time, as days since 1970-01-01.
pub(crate) fn day_of(at: Millis) -> i64 {
    at.0.div_euclid(DAY_MS)
}

/// One distinct count and whether it changed since it was last stored.
#[derive(Debug, Default)]
struct Tally {
    devices: Distinct,
    dirty: bool,
}

impl Tally {
    fn insert(&mut self, hash: u64) {
        self.devices.insert(hash);
        self.dirty = true;
    }
}

/// Counts not yet stored, and the day's distinct counts.
#[derive(Default)]
struct Pending {
    devices: HashMap<DeviceKey, Tally, FastBuild>,
    /// By a hash of the key (its strings come from devices; hashing once avoids building the
    /// key's strings for every check). A collision of two keys' 64-bit hashes would merge their
    /// counts; among [`MAX_COUNTS`] keys its chance is below 1 in 10^10.
    fleet: HashMap<u64, (FleetKey, Tally), FastBuild>,
    fatal: HashMap<FatalKey, (String, i64)>,
    fatal_texts: HashMap<(Uuid, Platform, i64), usize>,
    unknown: HashMap<(i64, String, i64), i64>,
    unknown_names: HashMap<(i64, i64), HashSet<String>>,
    dropped: u64,
    /// Prometheus counters per app and platform, made once each.
    series: HashMap<(i64, Platform, Series), metrics::Counter, FastBuild>,
}

/// The low-cardinality Prometheus series insights keep: by app and platform only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Series {
    /// `aloft_device_checks_total{outcome}`.
    Check(Outcome),
    /// `aloft_device_installs_total`: launch-asset downloads.
    Install,
    /// `aloft_device_failure_reports_total`: checks listing updates that failed to launch.
    FailureReport,
}

/// How a check was answered, for `aloft_device_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Update,
    NoUpdate,
    UnknownChannel,
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Update => "update",
            Outcome::NoUpdate => "no_update",
            Outcome::UnknownChannel => "unknown_channel",
            Outcome::Refused => "refused",
        }
    }
}

impl Pending {
    fn count(&mut self, app_id: i64, slug: &str, platform: Platform, series: Series) {
        self.series
            .entry((app_id, platform, series))
            .or_insert_with(|| {
                let platform = platform.as_str().to_owned();
                let labels = [("app", slug.to_owned()), ("platform", platform.clone())];
                match series {
                    Series::Check(outcome) => metrics::counter!(
                        "aloft_device_checks_total",
                        &[
                            ("app", slug.to_owned()),
                            ("platform", platform),
                            ("outcome", outcome.as_str().to_owned())
                        ]
                    ),
                    Series::Install => metrics::counter!("aloft_device_installs_total", &labels),
                    Series::FailureReport => metrics::counter!("aloft_device_failure_reports_total", &labels),
                }
            })
            .increment(1);
    }
}

impl Pending {
    fn counts(&self) -> usize {
        self.devices.len() + self.fleet.len()
    }

    fn device(&mut self, key: DeviceKey, hash: u64) {
        let room = self.counts() < MAX_COUNTS;
        match self.devices.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().insert(hash),
            Entry::Vacant(e) if room => e.insert(Tally::default()).insert(hash),
            Entry::Vacant(_) => self.dropped += 1,
        }
    }
}

/// Counts what devices report, in memory, until stored.
pub(crate) struct Recorder {
    /// This process, in stored rows (a new id per start).
    replica: String,
    pending: Mutex<Pending>,
    /// Mixed into the hash of fleet keys, so devices cannot aim for collisions between them.
    seed: u64,
    dropped: metrics::Counter,
    memory_gauge: metrics::Gauge,
    /// Off with `--insights off`: nothing is recorded (the benchmark's baseline).
    enabled: AtomicBool,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            replica: Uuid::new_v4().to_string(),
            pending: Mutex::default(),
            seed: RandomState::new().hash_one(0u8),
            dropped: metrics::counter!("aloft_insights_dropped_total"),
            memory_gauge: metrics::gauge!("aloft_insights_memory_bytes"),
            enabled: AtomicBool::new(true),
        }
    }
}

impl Recorder {
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Records an answered update check (answered with `status`).
    pub(crate) fn check(&self, facts: &Facts<'_>, status: u16, now: Millis) {
        let (Some(app_id), Some(platform)) = (facts.app_id, facts.platform) else {
            return;
        };
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let day = day_of(now);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let outcome = match status {
            _ if !facts.channel_known => Outcome::UnknownChannel,
            200 => Outcome::Update,
            204 => Outcome::NoUpdate,
            _ => Outcome::Refused,
        };
        pending.count(app_id, facts.slug, platform, Series::Check(outcome));
        if !facts.failed.is_empty() {
            pending.count(app_id, facts.slug, platform, Series::FailureReport);
        }
        if !facts.channel_known {
            if let Some(channel) = &facts.channel {
                let names = pending.unknown_names.entry((app_id, day)).or_default();
                if names.len() < MAX_UNKNOWN_CHANNELS || names.contains(channel.as_ref()) {
                    names.insert(channel.as_ref().to_owned());
                    *pending
                        .unknown
                        .entry((app_id, channel.as_ref().to_owned(), day))
                        .or_default() += 1;
                }
            }
            return;
        }
        let Some(client_id) = facts.client_id else {
            return;
        };
        let device = device_hash(client_id);
        let key = |update_id: Uuid, event: Event| DeviceKey {
            app_id,
            update_id,
            platform,
            day,
            event,
        };
        if let Running::Update(current) = facts.running {
            pending.device(key(current, Event::Launched), device);
        }
        if let Some(served) = facts.served {
            pending.device(key(served, Event::Served), device);
        }
        for &failed in &facts.failed {
            pending.device(key(failed, Event::Failed), device);
        }
        // The error behind an emergency launch belongs to the update that failed last (the
        // client lists the newest first), else to what the device runs.
        let culprit = match (facts.failed.first(), facts.running) {
            (Some(&failed), _) | (None, Running::Update(failed)) => Some(failed),
            _ => None,
        };
        if let (Some(text), Some(update)) = (&facts.fatal_error, culprit) {
            self.fatal_error(&mut pending, app_id, update, platform, day, text);
        }
        // Devices on updates this server does not hold are not split out.
        if let (Some(channel), false) = (&facts.channel, facts.running == Running::Other) {
            let mut h = FastHasher::default();
            (
                self.seed,
                app_id,
                channel.as_ref(),
                platform,
                facts.runtime_version,
                day,
            )
                .hash(&mut h);
            facts.running.hash(&mut h);
            let hash = h.finish();
            let room = pending.counts() < MAX_COUNTS;
            match pending.fleet.entry(hash) {
                Entry::Occupied(mut e) => e.get_mut().1.insert(device),
                Entry::Vacant(e) if room => {
                    let running = match facts.running {
                        Running::Update(id) => id.to_string(),
                        Running::Embedded | Running::Other => EMBEDDED.to_owned(),
                    };
                    let key = FleetKey {
                        app_id,
                        channel: channel.as_ref().to_owned(),
                        platform,
                        runtime_version: facts.runtime_version.to_owned(),
                        running,
                        day,
                    };
                    e.insert((key, Tally::default())).1.insert(device);
                }
                Entry::Vacant(_) => pending.dropped += 1,
            }
        }
    }

    fn fatal_error(
        &self,
        pending: &mut Pending,
        app_id: i64,
        update_id: Uuid,
        platform: Platform,
        day: i64,
        text: &str,
    ) {
        let key = FatalKey {
            app_id,
            update_id,
            platform,
            day,
            message_hash: ContentHash::of(text.as_bytes()).to_string(),
        };
        if let Some((_, reports)) = pending.fatal.get_mut(&key) {
            *reports += 1;
            return;
        }
        let texts = pending.fatal_texts.entry((update_id, platform, day)).or_default();
        if *texts >= MAX_FATAL_TEXTS {
            return;
        }
        *texts += 1;
        pending.fatal.insert(key, (text.to_owned(), 1));
    }

    /// Records an asset download: an install when it is the launch asset of the update the
    /// device asked for.
    pub(crate) fn asset(&self, snapshot: &Snapshot, file: &ContentHash, requested: Uuid, client_id: &str, now: Millis) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let Some((app_id, update)) = snapshot.update(&requested) else {
            return;
        };
        if update.launch_asset.as_ref() != Some(file) {
            return;
        }
        let slug = snapshot.slug_of(app_id).unwrap_or_default();
        let key = DeviceKey {
            app_id,
            update_id: requested,
            platform: update.platform,
            day: day_of(now),
            event: Event::Installed,
        };
        if let Ok(mut pending) = self.pending.lock() {
            pending.count(app_id, slug, key.platform, Series::Install);
            pending.device(key, device_hash(client_id));
        }
    }

    /// What changed since the last store: the whole count of every changed distinct count and
    /// the counters' increments. Counts of past days that are stored already are let go.
    pub(crate) fn take(&self, now: Millis) -> Batch {
        let today = day_of(now);
        let Ok(mut pending) = self.pending.lock() else {
            return Batch::default();
        };
        let mut batch = Batch::default();
        pending.devices.retain(|key, tally| {
            if tally.dirty {
                batch.devices.push((key.clone(), tally.devices.encode()));
                tally.dirty = false;
                true
            } else {
                key.day >= today
            }
        });
        pending.fleet.retain(|_, (key, tally)| {
            if tally.dirty {
                batch.fleet.push((key.clone(), tally.devices.encode()));
                tally.dirty = false;
                true
            } else {
                key.day >= today
            }
        });
        batch.fatal_errors = pending.fatal.drain().map(|(k, (text, n))| (k, text, n)).collect();
        pending.fatal_texts.retain(|(_, _, day), _| *day >= today);
        batch.unknown_channels = pending
            .unknown
            .drain()
            .map(|((app, channel, day), n)| (app, channel, day, n))
            .collect();
        pending.unknown_names.retain(|(_, day), _| *day >= today);
        let dropped = std::mem::take(&mut pending.dropped);
        self.dropped.increment(dropped);
        batch
    }

    /// Puts back a batch that could not be stored, so the next flush stores it.
    pub(crate) fn put_back(&self, batch: Batch) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for (key, _) in batch.devices {
            if let Some(tally) = pending.devices.get_mut(&key) {
                tally.dirty = true;
            }
        }
        for (key, _) in batch.fleet {
            for (k, tally) in pending.fleet.values_mut() {
                if *k == key {
                    tally.dirty = true;
                }
            }
        }
        for (key, text, n) in batch.fatal_errors {
            pending.fatal.entry(key).or_insert((text, 0)).1 += n;
        }
        for (app, channel, day, n) in batch.unknown_channels {
            *pending.unknown.entry((app, channel, day)).or_default() += n;
        }
    }

    /// Stores what was counted since the last store; what fails is kept for the next.
    pub(crate) async fn store(&self, db: &Database) {
        let batch = self.take(Millis::now());
        self.memory_gauge.set(self.memory() as f64);
        if batch.is_empty() {
            return;
        }
        if let Err(e) = insights::store(db, &self.replica, &batch).await {
            tracing::warn!(error = %e, "storing insights failed; kept for the next try");
            self.put_back(batch);
        }
    }

    /// Memory held by the counts, in bytes (the distinct counts themselves and their keys).
    pub(crate) fn memory(&self) -> usize {
        let Ok(pending) = self.pending.lock() else {
            return 0;
        };
        let devices: usize = pending
            .devices
            .values()
            .map(|t| t.devices.memory() + std::mem::size_of::<(DeviceKey, Tally)>())
            .sum();
        let fleet: usize = pending
            .fleet
            .values()
            .map(|(k, t)| {
                t.devices.memory()
                    + std::mem::size_of::<(u64, FleetKey, Tally)>()
                    + k.channel.len()
                    + k.runtime_version.len()
                    + k.running.len()
            })
            .sum();
        devices + fleet
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use crate::protocol::manifest::ChannelOf;

    use super::*;

    const NOW: Millis = Millis(20_000 * DAY_MS + 1_000);

    fn check<'a>(client: &'a str, running: Running, served: Option<Uuid>, failed: Vec<Uuid>) -> Facts<'a> {
        Facts {
            app_id: Some(1),
            slug: "demo",
            channel: Some(ChannelOf::Named("production")),
            channel_known: true,
            platform: Some(Platform::Ios),
            runtime_version: "1.0.0",
            client_id: Some(client),
            running,
            failed,
            fatal_error: None,
            served,
        }
    }

    fn count(batch: &Batch, update: Uuid, event: Event) -> Option<u64> {
        batch
            .devices
            .iter()
            .find(|(k, _)| k.update_id == update && k.event == event)
            .map(|(_, bytes)| Distinct::decode(bytes).unwrap().count())
    }

    #[test]
    fn a_check_counts_each_device_once_per_event() {
        let recorder = Recorder::default();
        let (u1, u2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for _ in 0..3 {
            recorder.check(&check("A", Running::Update(u1), Some(u2), vec![]), 200, NOW);
            recorder.check(&check("a", Running::Update(u1), None, vec![u2]), 204, NOW);
            recorder.check(&check("B", Running::Embedded, Some(u2), vec![]), 200, NOW);
        }
        let batch = recorder.take(NOW);
        assert_eq!(count(&batch, u1, Event::Launched), Some(1));
        assert_eq!(count(&batch, u2, Event::Served), Some(2));
        assert_eq!(count(&batch, u2, Event::Failed), Some(1));
        assert_eq!(count(&batch, u1, Event::Served), None);
        let running: Vec<(&str, u64)> = batch
            .fleet
            .iter()
            .map(|(k, b)| (k.running.as_str(), Distinct::decode(b).unwrap().count()))
            .collect();
        assert!(running.contains(&(EMBEDDED, 1)), "{running:?}");
        assert!(running.contains(&(u1.to_string().as_str(), 1)), "{running:?}");
        // Nothing changed since: nothing to store.
        assert!(recorder.take(NOW).is_empty());
    }

    #[test]
    fn what_could_not_be_stored_is_stored_with_the_next_batch() {
        let recorder = Recorder::default();
        let u1 = Uuid::from_u128(1);
        let mut facts = check("A", Running::Update(u1), None, vec![]);
        facts.fatal_error = Some(Cow::Borrowed("boom"));
        recorder.check(&facts, 204, NOW);
        let mut unknown = check("B", Running::Embedded, None, vec![]);
        unknown.channel_known = false;
        unknown.channel = Some(ChannelOf::Named("typo"));
        recorder.check(&unknown, 204, NOW);
        let failed = recorder.take(NOW);
        assert_eq!(failed.fatal_errors.len(), 1);
        assert_eq!(failed.unknown_channels, vec![(1, "typo".to_owned(), 20_000, 1)]);
        recorder.put_back(failed);
        recorder.check(&facts, 204, NOW);
        let again = recorder.take(NOW);
        assert_eq!(count(&again, u1, Event::Launched), Some(1));
        assert_eq!(again.fatal_errors[0].2, 2);
        assert_eq!(again.unknown_channels, vec![(1, "typo".to_owned(), 20_000, 1)]);
    }

    #[test]
    fn counts_of_a_past_day_are_let_go_once_stored() {
        let recorder = Recorder::default();
        recorder.check(&check("A", Running::Update(Uuid::from_u128(1)), None, vec![]), 204, NOW);
        assert!(!recorder.take(NOW).is_empty());
        assert!(recorder.memory() > 0);
        assert!(recorder.take(Millis(NOW.0 + DAY_MS)).is_empty());
        assert_eq!(recorder.memory(), 0);
    }

    /// The figure in the documentation: a million devices a day checking, running one of two
    /// updates, served one of them.
    #[test]
    fn a_million_devices_a_day_take_bounded_memory() {
        let recorder = Recorder::default();
        let (u1, u2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for i in 0..1_000_000u32 {
            let client = format!("{i:08x}-0000-4000-8000-000000000000");
            let running = if i % 2 == 0 {
                Running::Update(u1)
            } else {
                Running::Embedded
            };
            recorder.check(&check(&client, running, Some(u2), vec![]), 200, NOW);
        }
        let memory = recorder.memory();
        println!("insight counts for 1,000,000 devices: {memory} bytes");
        // Three counts (launched, served, and the fleet split's two) of 16 KiB each, and keys.
        assert!(memory < 100 * 1024, "{memory}");
        let batch = recorder.take(NOW);
        let served = count(&batch, u2, Event::Served).unwrap();
        assert!((served as f64 - 1e6).abs() / 1e6 < 0.02, "{served}");
    }
}
