//! Blobs: which ones the server lacks, and garbage collection.
//!
//! Uploads themselves (`api::blobs::upload_blob`) run outside any transaction: a blob is
//! content-addressed and write-once, its bytes are streamed to storage under a temporary name
//! and its record is inserted only once they are verified, so a failed or repeated upload leaves
//! nothing half-done to roll back, and a transaction held open for the length of an upload
//! would stop every other writer.

use std::time::Duration;

use aloft_core::ContentHash;
use aloft_store::db::blobs;
use serde_json::json;

use super::Error;
use super::{Actor, Write};
use crate::state::AppState;

/// Most hashes one question may ask about.
const MAX_HASHES: usize = 10_000;

/// Which of `hashes` the server does not have yet. The ones it has are marked as offered, so
/// `gc` leaves them alone while the publish that asked goes on; asking again changes nothing
/// more, so this is not audited.
pub(crate) async fn missing(state: &AppState, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, Error> {
    if hashes.len() > MAX_HASHES {
        return Err(Error::invalid(
            "too_many_hashes",
            "ask about at most 10000 blobs at a time",
        ));
    }
    Ok(blobs::missing(&state.db, hashes).await?)
}

/// What `gc` removed.
pub(crate) struct Collected {
    pub removed: Vec<ContentHash>,
    pub leftovers_removed: u64,
}

/// Removes the partial files interrupted writes left that are older than the grace period, then
/// the records of blobs no update references and nobody touched for it (with the audit entry, in
/// one transaction), then their bytes. `forget` is called for each removed blob before its
/// bytes go.
pub(crate) async fn collect_garbage(
    state: &AppState,
    by: &Actor,
    grace_seconds: Option<u64>,
    forget: impl Fn(&ContentHash),
) -> Result<Collected, Error> {
    let grace_ms = grace_seconds
        .unwrap_or(86_400)
        .saturating_mul(1000)
        .min(i64::MAX as u64) as i64;
    let leftovers_removed = state
        .blobs
        .remove_leftovers(Duration::from_millis(grace_ms as u64))
        .await as u64;
    let mut write = Write::begin(state).await?;
    let removed = blobs::collect_garbage(&mut write.tx, grace_ms).await?;
    let details = json!({"removed": removed.len(), "leftovers_removed": leftovers_removed, "grace_ms": grace_ms});
    write.commit(by.entry(None, "gc", "", details)).await?;
    for hash in &removed {
        forget(hash);
        if let Err(e) = state.blobs.delete(hash).await {
            // The record is gone, so the blob is unreachable; its bytes are left behind.
            tracing::warn!(%hash, error = %e, "removing an unreferenced blob's bytes failed");
        }
    }
    Ok(Collected {
        removed,
        leftovers_removed,
    })
}
