//! A byte-bounded in-memory cache of blob representations. Blobs are content-addressed and never
//! change, so a cached copy can never be stale; eviction is first-in, first-out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use aloft_core::ContentHash;
use aloft_store::Encoding;
use bytes::Bytes;

type Key = (ContentHash, Encoding);

#[derive(Debug)]
pub(crate) struct BytesCache {
    budget: usize,
    /// Representations larger than this are streamed from storage instead.
    max_item: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
    used: usize,
}

impl BytesCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            max_item: budget / 4,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Bytes> {
        self.inner.lock().ok()?.map.get(key).cloned()
    }

    /// Whether a representation of `len` bytes would be kept.
    pub(crate) fn admits(&self, len: u64) -> bool {
        len > 0 && len as usize <= self.max_item
    }

    pub(crate) fn insert(&self, key: Key, bytes: Bytes) {
        if !self.admits(bytes.len() as u64) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.used + bytes.len() > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(evicted) = inner.map.remove(&old) {
                inner.used -= evicted.len();
            }
        }
        inner.used += bytes.len();
        inner.order.push_back(key);
        inner.map.insert(key, bytes);
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
            cache.insert(key(n), Bytes::from(vec![n; 20]));
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.used <= 100);
        assert_eq!(inner.map.len(), 5);
        drop(inner);
        assert!(cache.get(&key(9)).is_some());
        assert!(cache.get(&key(0)).is_none(), "oldest evicted first");
        cache.insert(key(42), Bytes::from(vec![0; 26]));
        assert!(cache.get(&key(42)).is_none(), "larger than a quarter of the budget");
    }
}
