//! Serving bundle patches (docs/protocol.md §9, docs/patches.md): a launch-asset request with
//! `A-IM: bsdiff` from a device whose current (or embedded) update has a stored patch to the
//! requested update is answered `226 IM Used` with the BSDIFF40 body, `im: bsdiff` and
//! `expo-base-update-id`. Everything else gets the full bundle, as before.
//!
//! What decides a patch is per request and comes from the device's headers, so every answer for
//! a launch asset carries [`LAUNCH_VARY`], and an answer to a request that asked for a patch
//! (226, or the full bundle while none is stored yet) is `no-store`: no cache in between may
//! keep it, and one that ignores `Vary` can only ever hand out the full bundle it stored for a
//! request without `A-IM`, which is right for every device.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use aloft_core::ContentHash;
use aloft_store::Database;
use aloft_store::db::patches;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::sync::Notify;
use uuid::Uuid;

use super::A_IM;
use crate::sync::Health;

/// `Vary` of every answer for a launch asset.
pub(crate) const LAUNCH_VARY: &str =
    "accept-encoding, a-im, expo-current-update-id, expo-embedded-update-id, expo-requested-update-id";

/// `Cache-Control` of an answer to a request that asked for a patch.
pub(crate) const NO_STORE: &str = "private, no-store";

/// A launch-asset request, as the device hook found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaunchRequest {
    /// The request carries `A-IM: bsdiff`.
    pub asks: bool,
    /// The patch that would answer it, when its app has patches on: from the device's current
    /// (or embedded) update to the requested one.
    pub patch: Option<PatchAsk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PatchAsk {
    pub target: Uuid,
    pub base: Uuid,
}

/// Whether an `A-IM` header names `bsdiff` (a comma list, case-insensitive, parameters ignored).
pub(crate) fn asks_bsdiff(headers: &HeaderMap) -> bool {
    headers.get_all(&A_IM).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|item| {
                item.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("bsdiff")
            })
        })
    })
}

/// How long "no patch stored" is believed before the database is asked again.
const MISS_KEPT: Duration = Duration::from_secs(2);
/// Most misses remembered (device headers choose the keys, so the map is bounded).
const MISSES_KEPT: usize = 4096;
/// Most asks remembered as passed on, and most waiting to be passed on, for computing patches
/// nobody planned (bounded for the same reason).
const ASKS_KEPT: usize = 4096;
const ASKS_WAITING: usize = 256;

/// The stored patches known to this process, and how often each was served since the last
/// flush. A done patch never changes, so it is kept for good; a miss only briefly, since the
/// patch may be computed any moment. A miss is also passed on, once per process, to the
/// patches job, which records the patch when its base is known (a device on an update older
/// than the ones a publish plans patches from).
#[derive(Default)]
pub(crate) struct PatchIndex {
    found: RwLock<HashMap<PatchAsk, (ContentHash, u64)>>,
    missed: Mutex<HashMap<PatchAsk, Instant>>,
    hits: Mutex<HashMap<PatchAsk, u64>>,
    asked: Mutex<Asked>,
    /// Wakes the patches job when an ask is waiting, so a patch nobody planned is recorded
    /// and computed at once rather than at the job's next tick.
    asks_waiting: Notify,
}

#[derive(Default)]
struct Asked {
    seen: HashSet<PatchAsk>,
    waiting: Vec<PatchAsk>,
}

impl PatchIndex {
    /// The stored patch for `ask`, if there is one: its blob and size. Without the database,
    /// only what is known already.
    pub(crate) async fn lookup(&self, db: &Database, health: &Health, ask: PatchAsk) -> Option<(ContentHash, u64)> {
        if let Some(found) = self.found.read().ok().and_then(|f| f.get(&ask).copied()) {
            return Some(found);
        }
        if let Ok(missed) = self.missed.lock()
            && missed.get(&ask).is_some_and(|at| at.elapsed() < MISS_KEPT)
        {
            return None;
        }
        if !health.database_ok() {
            return None;
        }
        match patches::served(db, ask.target, ask.base).await {
            Ok(Some(found)) => {
                if let Ok(mut known) = self.found.write() {
                    known.insert(ask, found);
                }
                Some(found)
            }
            Ok(None) => {
                if let Ok(mut missed) = self.missed.lock() {
                    if missed.len() >= MISSES_KEPT {
                        missed.clear();
                    }
                    missed.insert(ask, Instant::now());
                }
                self.ask(ask);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up a bundle patch failed; serving the full bundle");
                None
            }
        }
    }

    /// Passes a patch nobody stored on to [`Self::take_asked`], unless it was passed on before.
    fn ask(&self, ask: PatchAsk) {
        let Ok(mut asked) = self.asked.lock() else {
            return;
        };
        if asked.waiting.len() >= ASKS_WAITING || asked.seen.contains(&ask) {
            return;
        }
        if asked.seen.len() >= ASKS_KEPT {
            asked.seen.clear();
        }
        asked.seen.insert(ask);
        asked.waiting.push(ask);
        self.asks_waiting.notify_one();
    }

    /// Returns when a device asked for a patch nobody stored (at once when one is waiting).
    pub(crate) async fn asked(&self) {
        self.asks_waiting.notified().await;
    }

    /// Learns that this process stored the patch for `ask`: the next request looks it up
    /// instead of believing an earlier miss.
    pub(crate) fn stored(&self, ask: PatchAsk) {
        if let Ok(mut missed) = self.missed.lock() {
            missed.remove(&ask);
        }
    }

    /// The patches devices asked for and nobody stored, since the last take.
    pub(crate) fn take_asked(&self) -> Vec<PatchAsk> {
        self.asked
            .lock()
            .map(|mut asked| std::mem::take(&mut asked.waiting))
            .unwrap_or_default()
    }

    /// Forgets a patch that can no longer be read.
    pub(crate) fn forget(&self, ask: PatchAsk) {
        if let Ok(mut found) = self.found.write() {
            found.remove(&ask);
        }
    }

    /// Counts one patch served.
    pub(crate) fn hit(&self, ask: PatchAsk) {
        if let Ok(mut hits) = self.hits.lock() {
            *hits.entry(ask).or_default() += 1;
        }
    }

    /// The counts since the last take: `(target, base, hits)`.
    pub(crate) fn take_hits(&self) -> Vec<(Uuid, Uuid, u64)> {
        self.hits
            .lock()
            .map(|mut hits| hits.drain().map(|(a, n)| (a.target, a.base, n)).collect())
            .unwrap_or_default()
    }

    /// Puts back counts a store failed to write.
    pub(crate) fn put_back(&self, counts: Vec<(Uuid, Uuid, u64)>) {
        if let Ok(mut hits) = self.hits.lock() {
            for (target, base, n) in counts {
                *hits.entry(PatchAsk { target, base }).or_default() += n;
            }
        }
    }
}

/// The headers of a `226 IM Used` answer with a patch of `size` bytes from `base`.
pub(crate) fn patch_headers(base: Uuid, size: u64) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    out.insert(header::VARY, HeaderValue::from_static(LAUNCH_VARY));
    out.insert(HeaderName::from_static("im"), HeaderValue::from_static("bsdiff"));
    if let Ok(v) = HeaderValue::from_str(&base.to_string()) {
        out.insert(HeaderName::from_static("expo-base-update-id"), v);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_im(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(A_IM.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_im_names_bsdiff() {
        assert!(asks_bsdiff(&a_im(&["bsdiff"])));
        assert!(asks_bsdiff(&a_im(&["vcdiff, BSDiff;q=0.5"])));
        assert!(asks_bsdiff(&a_im(&["gzip", "bsdiff"])));
        assert!(!asks_bsdiff(&a_im(&[])));
        assert!(!asks_bsdiff(&a_im(&["bsdiff2, diffe"])));
    }

    #[test]
    fn hits_are_taken_once_and_put_back() {
        let index = PatchIndex::default();
        let ask = PatchAsk {
            target: Uuid::from_u128(1),
            base: Uuid::from_u128(2),
        };
        index.hit(ask);
        index.hit(ask);
        let taken = index.take_hits();
        assert_eq!(taken, vec![(ask.target, ask.base, 2)]);
        assert!(index.take_hits().is_empty());
        index.put_back(taken);
        index.hit(ask);
        assert_eq!(index.take_hits(), vec![(ask.target, ask.base, 3)]);
    }

    #[test]
    fn each_ask_is_passed_on_once() {
        let index = PatchIndex::default();
        let ask = |n| PatchAsk {
            target: Uuid::from_u128(1),
            base: Uuid::from_u128(n),
        };
        index.ask(ask(2));
        index.ask(ask(3));
        index.ask(ask(2));
        assert_eq!(index.take_asked(), vec![ask(2), ask(3)]);
        index.ask(ask(2));
        assert!(index.take_asked().is_empty());
        for n in 0..(ASKS_WAITING as u128 + 10) {
            index.ask(ask(100 + n));
        }
        assert_eq!(index.take_asked().len(), ASKS_WAITING);
    }

    #[tokio::test]
    async fn an_ask_wakes_the_job_and_a_stored_patch_ends_the_miss() {
        let index = PatchIndex::default();
        let ask = PatchAsk {
            target: Uuid::from_u128(1),
            base: Uuid::from_u128(2),
        };
        index.missed.lock().unwrap().insert(ask, Instant::now());
        index.ask(ask);
        // The permit is kept for a job not yet waiting.
        tokio::time::timeout(Duration::from_secs(5), index.asked())
            .await
            .expect("an ask wakes the patches job");
        index.stored(ask);
        assert!(index.missed.lock().unwrap().is_empty());
    }

    #[test]
    fn a_patch_answer_names_its_base() {
        let base = Uuid::from_u128(7);
        let h = patch_headers(base, 123);
        assert_eq!(h["im"], "bsdiff");
        assert_eq!(h["expo-base-update-id"], base.to_string().as_str());
        assert_eq!(h[header::CACHE_CONTROL], NO_STORE);
        assert!(h[header::VARY].to_str().unwrap().contains("expo-current-update-id"));
        assert_eq!(h[header::CONTENT_LENGTH], "123");
    }
}
