//! Rollout bucketing: which devices get the new side of a rollout.
//!
//! A device's bucket is a salted SHA-256 of its `EAS-Client-ID`, lower-cased (iOS sends it
//! upper-case, Android lower-case), reduced to 0..10000. A device is in a rollout of `p` percent
//! when its bucket is below `p * 100`, so the same device always gets the same answer for the
//! same salt, and raising the percentage only ever adds devices. A device without an id is never
//! in a rollout (it gets the control side).

use sha2::{Digest, Sha256};

/// Buckets per rollout: percentages are whole, so 100 buckets per point.
pub const BUCKETS: u32 = 10_000;

/// A fresh random salt for a new rollout.
pub fn new_salt() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The device's bucket in `0..BUCKETS` for this salt.
pub fn bucket(salt: &str, client_id: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    // Lower-cased in chunks on the stack: the hasher is fed a few slices, not one call per byte.
    let mut chunk = [0u8; 64];
    for part in client_id.trim().as_bytes().chunks(chunk.len()) {
        let lower = &mut chunk[..part.len()];
        lower.copy_from_slice(part);
        lower.make_ascii_lowercase();
        hasher.update(lower);
    }
    let digest = hasher.finalize();
    let n = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    (n % u64::from(BUCKETS)) as u32
}

/// Whether the device gets the rollout's new side at `percentage` (0-100).
pub fn is_in(salt: &str, client_id: Option<&str>, percentage: u8) -> bool {
    match client_id.map(str::trim).filter(|id| !id.is_empty()) {
        None => false,
        Some(id) => bucket(salt, id) < u32::from(percentage.min(100)) * (BUCKETS / 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_and_stable() {
        let salt = "s1";
        let upper = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";
        assert_eq!(bucket(salt, upper), bucket(salt, &upper.to_lowercase()));
        assert_eq!(bucket(salt, upper), bucket(salt, upper));
        assert_ne!(bucket("s1", upper), bucket("s2", upper), "salts decorrelate rollouts");
    }

    #[test]
    fn buckets_are_fixed() {
        // Pinned values: a change here would move devices between the sides of live rollouts.
        let digest = Sha256::digest(b"s1:0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
        let expected = (u64::from_be_bytes(digest[..8].try_into().unwrap()) % u64::from(BUCKETS)) as u32;
        assert_eq!(bucket("s1", "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"), expected);
        // Ids longer than one stack chunk hash the same as their lower-cased whole.
        let long = "AbC".repeat(50);
        let digest = Sha256::digest(format!("salt:{}", long.to_lowercase()).as_bytes());
        let expected = (u64::from_be_bytes(digest[..8].try_into().unwrap()) % u64::from(BUCKETS)) as u32;
        assert_eq!(bucket("salt", &format!("  {long} ")), expected);
    }

    #[test]
    fn edges_and_missing_ids() {
        assert!(!is_in("s", None, 100));
        assert!(!is_in("s", Some(""), 100));
        assert!(is_in("s", Some("x"), 100));
        assert!(!is_in("s", Some("x"), 0));
    }

    #[test]
    fn monotonic_and_close_to_the_percentage() {
        let ids: Vec<String> = (0..20_000u32)
            .map(|i| format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919))
            .collect();
        let mut previous: Vec<bool> = vec![false; ids.len()];
        for pct in [1u8, 5, 10, 25, 50, 75, 99, 100] {
            let now: Vec<bool> = ids.iter().map(|id| is_in("salt", Some(id), pct)).collect();
            for (was, is) in previous.iter().zip(&now) {
                assert!(!was || *is, "raising to {pct}% dropped a device");
            }
            let share = now.iter().filter(|x| **x).count() as f64 / ids.len() as f64 * 100.0;
            assert!((share - f64::from(pct)).abs() < 1.5, "{pct}% gave {share:.2}%");
            previous = now;
        }
    }
}
