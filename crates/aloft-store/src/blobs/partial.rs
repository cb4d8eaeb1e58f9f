//! Partial files: every upload and variant is written under a random name first and renamed
//! (or uploaded) into place only when whole; what a crash leaves behind is removed later.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{BlobStore, IngestError};

/// Paths of the partial files this process is writing right now; `gc` leaves them alone.
pub(super) type InFlight = Arc<Mutex<HashSet<PathBuf>>>;

/// The folder of partial files under the local blob folder. Its name cannot be a key's first
/// segment (two hex digits), and `object_store` never lists it.
pub(super) const PARTIAL_DIR: &str = ".partial";

/// A file being written under a random name, removed when dropped unless it was renamed into
/// place. Its path is registered in `in_flight` before the file exists, so `gc` never removes a
/// file that is being written.
pub(super) struct Partial {
    pub(super) path: PathBuf,
    in_flight: InFlight,
    /// Renamed into place (or never created): nothing to remove.
    settled: bool,
}

impl Partial {
    fn create(dir: &Path, in_flight: &InFlight, what: &str) -> std::io::Result<(Self, std::fs::File)> {
        let path = dir.join(format!("{what}-{:016x}", rand::random::<u64>()));
        if let Ok(mut set) = in_flight.lock() {
            set.insert(path.clone());
        }
        let mut partial = Partial {
            path,
            in_flight: in_flight.clone(),
            settled: false,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial.path)
        {
            Ok(file) => Ok((partial, file)),
            Err(e) => {
                // Not ours to remove (it may even exist already).
                partial.settled = true;
                Err(e)
            }
        }
    }

    /// Renames the file to `target` (same file system), creating the parent folder as needed.
    pub(super) fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let parent = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        match std::fs::rename(&self.path, target) {
            // An emptied shard folder is removed by deletes; make it again once.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.path.exists() => {
                std::fs::create_dir_all(parent)?;
                std::fs::rename(&self.path, target)?;
            }
            other => other?,
        }
        self.settled = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.settled {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(&self.path);
        }
    }
}

impl BlobStore {
    pub(super) fn partial(&self, what: &str) -> Result<(Partial, std::fs::File), IngestError> {
        Partial::create(&self.staging, &self.in_flight, what).map_err(|e| self.full(e))
    }

    /// Names a full disk after the folder being written.
    pub(super) fn full(&self, err: std::io::Error) -> IngestError {
        IngestError::writing(err, self.local_root.as_deref().unwrap_or(&self.staging))
    }

    /// Removes what interrupted writes left behind and nothing is writing any more: partial
    /// files (and `object_store`'s `<key>#<n>` staging files of older versions) last modified
    /// more than `grace` ago. Returns how many it removed.
    pub async fn remove_leftovers(&self, grace: Duration) -> usize {
        let mut folders = vec![self.staging.clone(), self.tmp_dir.clone()];
        let mut shards = Vec::new();
        if let Some(root) = &self.local_root {
            shards.push(root.clone());
        }
        folders.dedup();
        let in_flight = self.in_flight.clone();
        tokio::task::spawn_blocking(move || {
            let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
            let mut candidates = Vec::new();
            for folder in &folders {
                candidates.extend(files_in(folder));
            }
            for root in &shards {
                for shard in files_in_dirs(root) {
                    candidates.extend(
                        files_in(&shard).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains('#'))),
                    );
                }
            }
            let mut removed = 0;
            for path in candidates {
                let busy = in_flight.lock().map(|set| set.contains(&path)).unwrap_or(true);
                let old = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t <= cutoff);
                if busy || !old {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed the leftover of an interrupted write");
                        removed += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a leftover file failed"),
                }
            }
            removed
        })
        .await
        .unwrap_or(0)
    }
}

/// The regular files directly in `dir` (none if it cannot be read).
fn files_in(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
}

/// The shard folders (two hex digits) directly in `dir`.
fn files_in_dirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::Encoding;
    use crate::blobs::fixtures::{body, count, read, setup};
    use aloft_core::ContentHash;

    #[tokio::test]
    async fn leftovers_of_interrupted_writes_are_removed_after_the_grace_period() {
        let (dir, db, blobs) = setup().await;
        let blob_dir = dir.path().join("blobs");
        let day_old = SystemTime::now() - Duration::from_secs(86_400);
        let aged = |path: &Path| {
            std::fs::write(path, b"partial").unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(day_old)
                .unwrap();
        };
        // A partial upload of a killed server, and object_store's staging file of an older one.
        let partial = blob_dir.join(PARTIAL_DIR).join("upload-00000000deadbeef");
        aged(&partial);
        std::fs::create_dir_all(blob_dir.join("ab")).unwrap();
        let staging = blob_dir.join("ab").join(format!("ab{}#1", "0".repeat(62)));
        aged(&staging);
        // A whole blob next to it stays.
        let data: &[u8] = b"a whole blob";
        let hash = ContentHash::of(data);
        blobs.ingest(&db, hash, body(&[data]), 1 << 20).await.unwrap();
        // A file being written now stays, whatever the grace period.
        let (writing, _file) = blobs.partial("upload").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&writing.path)
            .unwrap()
            .set_modified(day_old)
            .unwrap();

        assert_eq!(blobs.remove_leftovers(Duration::from_secs(2 * 86_400)).await, 0);
        assert!(partial.exists() && staging.exists());
        assert_eq!(blobs.remove_leftovers(Duration::from_secs(3600)).await, 2);
        assert!(!partial.exists() && !staging.exists());
        assert!(writing.path.exists());
        assert_eq!(&read(&blobs, &hash, Encoding::Identity).await[..], data);
        drop(writing);
        assert_eq!(count(blob_dir.join(PARTIAL_DIR)), 0);
        assert_eq!(blobs.remove_leftovers(Duration::ZERO).await, 0);
    }
}
