//! A byte-bounded in-memory cache of blob representations. Blobs are content-addressed and never
//! change, so a cached copy can never be stale; eviction is first-in, first-out.
//!
//! A representation may also keep its file open (blobs on local disk, sizes where `sendfile`
//! was measured faster than writing from memory): the wire lane sends it from there.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::{Arc, Mutex};

use aloft_core::ContentHash;
use aloft_store::Encoding;
use bytes::Bytes;

type Key = (ContentHash, Encoding);

/// Most files kept open by the cache (each is a file descriptor, as each connection is).
const MAX_FILES: usize = 128;

/// A cached representation: its bytes, and its file when it is kept open.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub bytes: Bytes,
    pub file: Option<Arc<File>>,
}

#[derive(Debug)]
pub(crate) struct BytesCache {
    budget: usize,
    /// Representations larger than this are streamed from storage instead.
    max_item: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Cached>,
    order: VecDeque<Key>,
    used: usize,
    files: usize,
}

impl BytesCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            max_item: budget / 4,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Cached> {
        self.inner.lock().ok()?.map.get(key).cloned()
    }

    /// Whether a representation of `len` bytes would be kept.
    pub(crate) fn admits(&self, len: u64) -> bool {
        len > 0 && len as usize <= self.max_item
    }

    /// Drops every representation of a blob that was removed, closing its files so the disk
    /// space is freed now rather than when the entries would have been evicted.
    pub(crate) fn remove(&self, hash: &ContentHash) {
        let Ok(mut inner) = self.inner.lock() else { return };
        for encoding in Encoding::ALL {
            if let Some(removed) = inner.map.remove(&(*hash, encoding)) {
                inner.used -= removed.bytes.len();
                inner.files -= usize::from(removed.file.is_some());
            }
        }
        inner.order.retain(|(h, _)| h != hash);
    }

    /// Keeps `bytes`, and `file` (the same bytes on disk) while fewer than [`MAX_FILES`] are
    /// open. Returns what is cached under `key` now (what was given, when nothing is kept).
    pub(crate) fn insert(&self, key: Key, bytes: Bytes, file: Option<File>) -> Cached {
        let given = Cached {
            bytes,
            file: file.map(Arc::new),
        };
        if !self.admits(given.bytes.len() as u64) {
            return given;
        }
        let Ok(mut inner) = self.inner.lock() else { return given };
        if let Some(cached) = inner.map.get(&key) {
            return cached.clone();
        }
        while inner.used + given.bytes.len() > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(evicted) = inner.map.remove(&old) {
                inner.used -= evicted.bytes.len();
                inner.files -= usize::from(evicted.file.is_some());
            }
        }
        let mut kept = given;
        if inner.files >= MAX_FILES {
            kept.file = None;
        }
        inner.used += kept.bytes.len();
        inner.files += usize::from(kept.file.is_some());
        inner.order.push_back(key);
        inner.map.insert(key, kept.clone());
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_budget() {
        let cache = BytesCache::new(100);
        let key = |n: u8| (ContentHash::of(&[n]), Encoding::Identity);
        for n in 0..10u8 {
            cache.insert(key(n), Bytes::from(vec![n; 20]), None);
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.used <= 100);
        assert_eq!(inner.map.len(), 5);
        drop(inner);
        assert!(cache.get(&key(9)).is_some());
        assert!(cache.get(&key(0)).is_none(), "oldest evicted first");
        cache.insert(key(42), Bytes::from(vec![0; 26]), None);
        assert!(cache.get(&key(42)).is_none(), "larger than a quarter of the budget");
    }

    #[test]
    fn a_removed_blob_gives_back_its_bytes_and_files() {
        let cache = BytesCache::new(1000);
        let hash = ContentHash::of(b"gone");
        let file = tempfile::tempfile().unwrap();
        let kept = cache.insert((hash, Encoding::Identity), Bytes::from(vec![1; 100]), Some(file));
        assert!(kept.file.is_some());
        cache.insert((hash, Encoding::Brotli), Bytes::from(vec![2; 50]), None);
        let other = (ContentHash::of(b"stays"), Encoding::Identity);
        cache.insert(other, Bytes::from(vec![3; 10]), None);
        cache.remove(&hash);
        assert!(cache.get(&(hash, Encoding::Identity)).is_none());
        assert!(cache.get(&(hash, Encoding::Brotli)).is_none());
        assert!(cache.get(&other).is_some());
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.used, inner.files, inner.order.len()), (10, 0, 1));
    }
}
