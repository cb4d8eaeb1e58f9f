//! A fast, unkeyed hasher for maps whose keys are small and not chosen by an attacker to
//! collide (ids, enum tags, short names): a multiply and a rotate per eight bytes, where the
//! standard library's SipHash spends tens of nanoseconds to resist collision attacks. The hot
//! path of an update check hashes several such keys, so this matters there.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// The hasher: each word is folded in as `(h.rotate_left(5) ^ word) * K`.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// For `HashMap<K, V, FastBuild>`.
pub type FastBuild = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};

    fn hash(value: impl Hash) -> u64 {
        FastBuild::default().hash_one(value)
    }

    #[test]
    fn distinct_small_keys_hash_apart() {
        let mut seen = HashSet::new();
        for app in 0..50i64 {
            for name in ["ios", "android", "production", "staging", "1.0.0", "1.0.1"] {
                assert!(seen.insert(hash((app, name))), "{app} {name}");
            }
        }
        // Trailing bytes count, and so does their number.
        assert_ne!(hash("ab"), hash("ab\0"));
        assert_ne!(hash(&b"abcdefgh"[..]), hash(&b"abcdefgh\0"[..]));
    }
}
