//! Computing bundle patches, run by the patches job (`jobs.rs`), never on a request.
//!
//! A publish records the patches its updates want as pending rows in its own transaction
//! (`aloft_store::db::patches`); so does registering an embedded bundle. The job claims due rows
//! under a lease ([`LEASE`]) and computes each on a blocking thread, a bounded number at once:
//! read the two bundles, `bsdiff::diff`, apply the patch with `bsdiff::patch` and check the
//! result hashes to the target (a patch is never stored unverified), then keep it only when it
//! is at least [`MIN_SAVING_PERCENT`] smaller than the target's brotli variant, what a device
//! downloads otherwise. Kept patches are blobs like any other, content-addressed in the blob
//! store, so every replica serves them.
//!
//! Memory: a diff holds both bundles, a suffix array of the old one (4 bytes a byte) and the
//! patch, about 14 times the bundle size at peak (20 MB for a 1.4 MB bundle); bundles above
//! [`MAX_BUNDLE`] are not diffed, so one computation stays under about 450 MB, and the worker
//! count (`--patch-workers`, default 1) bounds the total.

use std::time::Duration;

use aloft_core::time::Millis;
use aloft_core::{ContentHash, bsdiff};
use aloft_store::db::patches::{self, Job, Outcome};
use aloft_store::{BlobStore, Database, Encoding};
use bytes::Bytes;

use crate::protocol::patches::PatchAsk;

/// How long a claim on a patch lasts; its worker renews it every [`RENEW_EVERY`] while it
/// computes, so a patch whose worker crashed (or whose server was killed) is taken over by
/// another worker, or the restarted server, within this.
pub(crate) const LEASE: Duration = Duration::from_secs(15);

/// How often a worker renews its lease while it computes.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// A patch is kept only when it is at least this much smaller than the brotli-compressed
/// bundle: smaller savings are not worth a second code path on the device.
pub(crate) const MIN_SAVING_PERCENT: u64 = 10;

/// Largest bundle diffed (either side), 32 MiB: far above real bundles (a few MB), and a bound
/// on a computation's memory.
pub(crate) const MAX_BUNDLE: u64 = 32 << 20;

/// Attempts before a patch that keeps failing (storage out of reach, say) is given up.
const MAX_ATTEMPTS: i64 = 5;

/// Whether a patch of `patch` bytes is worth serving instead of `full` bytes.
pub(crate) fn worth_it(patch: u64, full: u64) -> bool {
    patch.saturating_mul(100) <= full.saturating_mul(100 - MIN_SAVING_PERCENT)
}

/// Claims up to `free` due patches.
pub(crate) async fn claim(db: &Database, free: usize) -> Result<Vec<Job>, aloft_store::DbError> {
    patches::claim_due(db, Millis::now(), lease_end(), i64::try_from(free).unwrap_or(0)).await
}

fn lease_end() -> Millis {
    Millis(Millis::now().0 + i64::try_from(LEASE.as_millis()).unwrap_or(15_000))
}

/// Computes one claimed patch, renewing the lease meanwhile, and records how it ended; returns
/// the patch when it is stored and recorded (servable from now on).
pub(crate) async fn compute(db: Database, blobs: BlobStore, job: Job) -> Option<PatchAsk> {
    let work = outcome(&db, &blobs, &job);
    tokio::pin!(work);
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = renew.tick() => {
                if let Err(e) = patches::renew(&db, &job, lease_end()).await {
                    tracing::warn!(error = %e, "renewing the lease on a bundle patch failed");
                }
            }
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) if job.attempts >= MAX_ATTEMPTS => {
            tracing::warn!(target_update = %job.target, base = %job.base, %error, "computing a bundle patch failed; giving up");
            Outcome::Failed { error }
        }
        Err(error) => {
            tracing::warn!(target_update = %job.target, base = %job.base, %error, "computing a bundle patch failed; retrying");
            let wait = 10_000i64 << job.attempts.clamp(0, 10);
            Outcome::Retry {
                at: Millis(Millis::now().0 + wait),
                error,
            }
        }
    };
    match &outcome {
        Outcome::Done { size, full_size, .. } => {
            tracing::info!(target_update = %job.target, base = %job.base, size, full_size, "bundle patch stored")
        }
        Outcome::NotWorthIt { size, full_size } => {
            tracing::info!(target_update = %job.target, base = %job.base, size, full_size, "bundle patch not worth serving")
        }
        _ => {}
    }
    if let Err(e) = patches::finish(&db, &job, &outcome).await {
        // The lease runs out and the patch is computed again.
        tracing::warn!(error = %e, "recording a bundle patch failed");
        return None;
    }
    matches!(outcome, Outcome::Done { .. }).then_some(PatchAsk {
        target: job.target,
        base: job.base,
    })
}

/// What computing `job` comes to; an error is worth retrying.
async fn outcome(db: &Database, blobs: &BlobStore, job: &Job) -> Result<Outcome, String> {
    if let Some(known) = patches::computed(db, &job.base_hash, &job.target_hash)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(known);
    }
    let target = aloft_store::db::blobs::get(db, &job.target_hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the target bundle's blob is not recorded")?;
    let full_size = target.br_size.unwrap_or(target.size);
    let base_size = aloft_store::db::blobs::get(db, &job.base_hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the base bundle's blob is not recorded")?
        .size;
    if target.size > MAX_BUNDLE || base_size > MAX_BUNDLE {
        return Ok(Outcome::Failed {
            error: format!("a bundle is larger than {MAX_BUNDLE} bytes; not diffed"),
        });
    }
    let old = read(blobs, &job.base_hash).await?;
    let new = read(blobs, &job.target_hash).await?;
    let expected = job.target_hash;
    let made = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let patch = bsdiff::diff(&old, &new).map_err(|e| e.to_string())?;
        // Never stored unverified: applied, and the result hashed to the target.
        let rebuilt = bsdiff::patch(&old, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
        if ContentHash::of(&rebuilt) != expected {
            return Err("the patch does not rebuild the target bundle".into());
        }
        Ok(patch)
    })
    .await
    .map_err(|e| format!("the diff task ended: {e}"))?;
    let patch = match made {
        Ok(patch) => patch,
        // The same bytes would fail the same way again.
        Err(error) => return Ok(Outcome::Failed { error }),
    };
    let size = patch.len() as u64;
    if !worth_it(size, full_size) {
        return Ok(Outcome::NotWorthIt { size, full_size });
    }
    let hash = ContentHash::of(&patch);
    let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(patch)) });
    blobs
        .ingest(db, hash, Box::pin(body), u64::MAX)
        .await
        .map_err(|e| format!("storing the patch failed: {e}"))?;
    Ok(Outcome::Done {
        patch: hash,
        size,
        full_size,
    })
}

async fn read(blobs: &BlobStore, hash: &ContentHash) -> Result<Bytes, String> {
    let got = blobs
        .get(hash, Encoding::Identity, None)
        .await
        .map_err(|e| format!("reading bundle {hash}: {e}"))?;
    got.bytes().await.map_err(|e| format!("reading bundle {hash}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_must_save_a_tenth() {
        assert!(worth_it(90, 100));
        assert!(!worth_it(91, 100));
        assert!(worth_it(98_000, 528_000));
        assert!(!worth_it(1, 0));
    }
}
