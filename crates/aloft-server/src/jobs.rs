//! Background work, owned in one place: what runs besides answering requests, and how it stops.
//!
//! - **variants**: gives blobs recorded without compressed variants (by older versions, or a
//!   recording that failed) theirs, retrying with backoff; woken by uploads that meet one.
//! - **sync**: polls the apps' revisions and reloads what other replicas changed (`sync.rs`).
//! - **metrics upkeep**: drains the recorder's histogram samples, which otherwise pile up in a
//!   server nobody scrapes.
//! - **insights**: stores what devices reported (`insights/`) every two seconds, and once more
//!   at shutdown; a store that fails is retried with the next.
//! - **halts**: weighs every rollout in progress against its halt policy every two seconds and
//!   reverts those past it (`service::halt`), so a crashing update stops spreading within
//!   seconds of crossing the threshold.
//! - **patches**: records the patches devices asked for that nobody planned, computes pending
//!   bundle patches (`patches.rs`), `--patch-workers` at once,
//!   woken by publishes, by devices asking for such patches and every two seconds; tells the
//!   asset module of each patch it stored; and stores how often each was served.
//! - **webhooks**: every second, turns new audit entries of subscribed events into deliveries
//!   and sends the due ones, four at most at once, each in a task of its own (`webhooks.rs`).
//!
//! Shutdown: [`Jobs::shutdown`] tells every job to stop. A job stops at its next wait; a unit of
//! work in progress (one blob's variants, one poll) finishes first, up to a deadline after which
//! it is abandoned. Every unit is safe to abandon: variants are written beside the blob and
//! recorded in one insert, and a poll only reads. A webhook send in progress gets the deadline
//! too; one abandoned is sent again once its lease runs out (with the same delivery id), and so is
//! a patch computation.

use std::sync::Arc;
use std::time::Duration;

use aloft_core::time::Millis;
use aloft_store::{BlobStore, Database};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::insights::{FLUSH_EVERY, Recorder};
use crate::protocol::patches::PatchAsk;
use crate::served::Served;
use crate::state::AppState;
use crate::sync::{self, Health};
use crate::webhooks;

/// How long [`Jobs::shutdown`] waits for work in progress.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// First and longest wait between variant passes that left a blob without its variants.
const VARIANT_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// How often the metrics recorder is drained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How often the webhook job looks for new events and due deliveries.
const WEBHOOKS_EVERY: Duration = Duration::from_secs(1);

/// Webhook deliveries sent at once, at most.
const WEBHOOK_SENDERS: usize = 4;

/// How often finished deliveries older than [`WEBHOOK_LOG_KEPT`] are deleted.
const WEBHOOK_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long the delivery log keeps a finished delivery.
const WEBHOOK_LOG_KEPT: Duration = Duration::from_secs(30 * 86_400);

/// The running background jobs of one server.
pub struct Jobs {
    stop: watch::Sender<bool>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Jobs {
    /// Starts every job: the variants pass, and replica sync every `sync_every`.
    pub fn start(state: &AppState, sync_every: Duration) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut running = vec![
            (
                "variants",
                tokio::spawn(make_missing_variants(
                    state.db.clone(),
                    state.blobs.clone(),
                    state.variants_wanted.clone(),
                    stopped.clone(),
                )),
            ),
            (
                "sync",
                tokio::spawn(watch_revisions(
                    state.db.clone(),
                    state.served.clone(),
                    state.health.clone(),
                    sync_every,
                    stopped.clone(),
                )),
            ),
            (
                "insights",
                tokio::spawn(store_insights(
                    state.db.clone(),
                    state.insights.clone(),
                    stopped.clone(),
                )),
            ),
            ("halts", tokio::spawn(halt_rollouts(state.clone(), stopped.clone()))),
        ];
        if let Some(handle) = state.exporter.0.clone() {
            running.push((
                "metrics upkeep",
                tokio::spawn(every(UPKEEP_EVERY, stopped.clone(), move || handle.run_upkeep())),
            ));
        }
        running.push(("patches", tokio::spawn(compute_patches(state.clone(), stopped.clone()))));
        running.push(("webhooks", tokio::spawn(deliver_webhooks(state.db.clone(), stopped))));
        Self { stop, running }
    }

    /// Stops every job, waiting up to ten seconds for work in progress.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        for (name, mut job) in self.running {
            if tokio::time::timeout_at(deadline, &mut job).await.is_err() {
                tracing::warn!(job = name, "background job still busy at shutdown; abandoned");
                job.abort();
            }
        }
    }
}

/// Resolves once a stop is asked for.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = stop.wait_for(|&stop| stop).await;
}

/// Runs `tick` every `period` until stopped.
async fn every(period: Duration, mut stop: watch::Receiver<bool>, mut tick: impl FnMut()) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => tick(),
            () = stopping(&mut stop) => return,
        }
    }
}

/// Stores the insights counted since the last store, every [`FLUSH_EVERY`] and at shutdown.
async fn store_insights(db: Database, recorder: Arc<Recorder>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            () = stopping(&mut stop) => true,
        };
        recorder.store(&db).await;
        if last {
            return;
        }
    }
}

/// How often rollouts are weighed against their halt policies.
const HALT_EVERY: Duration = Duration::from_secs(2);

/// Weighs the rollouts in progress every [`HALT_EVERY`] until stopped.
async fn halt_rollouts(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(HALT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopping(&mut stop) => return,
        }
        match crate::service::halt::pass(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rollouts = n, "halted rollouts past their failure policy"),
            Err(e) => tracing::warn!(error = %e, "weighing rollouts against their halt policies failed; retrying"),
        }
    }
}

/// Makes and sends webhook deliveries every [`WEBHOOKS_EVERY`]; each send runs in a task of its
/// own, so a receiver that never answers holds one of [`WEBHOOK_SENDERS`] slots for the timeout
/// and nothing else. At a stop, sends in progress finish (within the shutdown deadline).
async fn deliver_webhooks(db: Database, mut stop: watch::Receiver<bool>) {
    let sender = match webhooks::Sender::new() {
        Ok(sender) => sender,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the HTTP client for webhooks; no webhook will be sent");
            return;
        }
    };
    let mut ticker = tokio::time::interval(WEBHOOKS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sending = tokio::task::JoinSet::new();
    let mut pruned = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopping(&mut stop) => break,
        }
        while sending.try_join_next().is_some() {}
        if let Err(e) = webhooks::enqueue_new(&db).await {
            tracing::warn!(error = %e, "making webhook deliveries failed; retrying");
        }
        match webhooks::claim_due(&db, WEBHOOK_SENDERS.saturating_sub(sending.len())).await {
            Ok(claimed) => {
                for due in claimed {
                    let (db, sender) = (db.clone(), sender.clone());
                    sending.spawn(async move { sender.deliver(&db, due).await });
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming due webhook deliveries failed; retrying"),
        }
        if pruned.elapsed() >= WEBHOOK_PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            let before = Millis(Millis::now().0 - i64::try_from(WEBHOOK_LOG_KEPT.as_millis()).unwrap_or(0));
            if let Err(e) = aloft_store::db::webhooks::prune(&db, before).await {
                tracing::warn!(error = %e, "pruning the webhook delivery log failed; retrying later");
            }
        }
    }
    while sending.join_next().await.is_some() {}
}

/// How often the patches job looks for due patches (publishes also wake it) and stores served
/// counts.
const PATCHES_EVERY: Duration = Duration::from_secs(2);

/// Computes due bundle patches, at most the configured number at once, each in a task of its
/// own; stores the served counts of patches. At a stop, computations in progress get the
/// shutdown deadline (one abandoned is claimed again when its lease ends).
async fn compute_patches(state: AppState, mut stop: watch::Receiver<bool>) {
    let workers = state.patch_workers();
    let mut ticker = tokio::time::interval(PATCHES_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = state.patches_wanted.notified() => {}
            () = state.assets.patches.asked() => {}
            Some(done) = running.join_next(), if !running.is_empty() => learn_stored(&state, done),
            () = stopping(&mut stop) => break,
        }
        while let Some(done) = running.try_join_next() {
            learn_stored(&state, done);
        }
        store_patch_hits(&state).await;
        record_asked_patches(&state).await;
        let free = workers.saturating_sub(running.len());
        if free == 0 {
            continue;
        }
        match crate::patches::claim(&state.db, free).await {
            Ok(jobs) => {
                for job in jobs {
                    running.spawn(crate::patches::compute(state.db.clone(), state.blobs.clone(), job));
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming due bundle patches failed; retrying"),
        }
    }
    store_patch_hits(&state).await;
    while running.join_next().await.is_some() {}
}

/// Tells the asset module of a patch a computation just stored, so it is served at once.
fn learn_stored(state: &AppState, done: Result<Option<PatchAsk>, tokio::task::JoinError>) {
    if let Ok(Some(ask)) = done {
        state.assets.patches.stored(ask);
    }
}

async fn store_patch_hits(state: &AppState) {
    let hits = state.assets.patches.take_hits();
    if hits.is_empty() {
        return;
    }
    if let Err(e) = aloft_store::db::patches::add_hits(&state.db, &hits).await {
        tracing::warn!(error = %e, "storing bundle patch counts failed; retrying");
        state.assets.patches.put_back(hits);
    }
}

/// Records the patches devices asked for that nobody planned, when their bases are known; they
/// are claimed like any other.
async fn record_asked_patches(state: &AppState) {
    for ask in state.assets.patches.take_asked() {
        match aloft_store::db::patches::enqueue_asked(&state.db, ask.target, ask.base).await {
            Ok(true) => {
                tracing::info!(target = %ask.target, base = %ask.base, "a device asked for a patch; computing it")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "recording an asked-for bundle patch failed"),
        }
    }
}

/// Polls the revisions forever: changes made through other replicas (or other processes on the
/// same data) are served here within one period.
async fn watch_revisions(
    db: Database,
    served: Arc<Served>,
    health: Arc<Health>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopping(&mut stop) => return,
        }
        match sync::poll_once(&db, &served, &health).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(apps = n, "reloaded apps changed elsewhere"),
            Err(e) => tracing::debug!(error = %e, "revision poll failed"),
        }
    }
}

/// Makes the variants of every blob recorded without them, one blob at a time; a pass that
/// fails for any of them (a locked database, a full disk) is retried with exponential backoff,
/// so no blob stays identity-only until a restart. Then sleeps until woken.
async fn make_missing_variants(db: Database, blobs: BlobStore, wanted: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut backoff = VARIANT_RETRY.0;
    loop {
        let done = tokio::select! {
            done = variants_pass(&db, &blobs) => done,
            () = stopping(&mut stop) => return,
        };
        let wait = if done {
            backoff = VARIANT_RETRY.0;
            // Until woken by an upload that met such a blob.
            Duration::MAX
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(VARIANT_RETRY.1);
            wait
        };
        tokio::select! {
            // Woken early by an upload that met such a blob: try at once.
            () = wanted.notified() => {}
            () = sleep(wait) => {}
            () = stopping(&mut stop) => return,
        }
    }
}

async fn sleep(wait: Duration) {
    match tokio::time::Instant::now().checked_add(wait) {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// One pass; whether every blob has its variants now.
async fn variants_pass(db: &Database, blobs: &BlobStore) -> bool {
    let hashes = match aloft_store::db::blobs::uncompressed(db).await {
        Ok(hashes) => hashes,
        Err(e) => {
            tracing::warn!(error = %e, "listing blobs without compressed variants failed; retrying");
            return false;
        }
    };
    let mut done = true;
    for hash in hashes {
        match blobs.make_variants(db, &hash).await {
            Ok(()) => tracing::info!(%hash, "made the compressed variants of a blob recorded without them"),
            Err(e) => {
                tracing::warn!(%hash, error = %e, "making compressed variants failed; serving identity until a retry succeeds");
                done = false;
            }
        }
    }
    done
}
