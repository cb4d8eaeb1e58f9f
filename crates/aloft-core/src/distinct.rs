//! Counting distinct devices: exactly while there are few, with a HyperLogLog sketch beyond.
//!
//! A [`Distinct`] holds 64-bit device hashes ([`device_hash`]). Up to [`EXACT_LIMIT`] of them
//! it keeps the hashes themselves, so small fleets are counted exactly; past that it turns into
//! a HyperLogLog of 2^14 one-byte registers (16 KiB, a relative standard error of 0.81 %),
//! estimated with Ertl's improved raw estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017), which needs no empirical bias tables and stays unbiased from a
//! few thousand to billions. Two counts merge into the count of the union, whatever their forms,
//! so replicas and days combine by merging; merging is idempotent, so storing a replica's whole
//! count again never counts anyone twice.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Distinct devices counted exactly before the count turns into a sketch.
pub const EXACT_LIMIT: usize = 4096;

/// Index bits: 2^14 registers.
const P: u32 = 14;
const M: usize = 1 << P;
/// Bits left for the rank.
const Q: u32 = 64 - P;

const VERSION: u8 = 1;
const KIND_EXACT: u8 = 0;
const KIND_SKETCH: u8 = 1;

/// A stable 64-bit hash of an `EAS-Client-ID`, the same on every replica and every version: the
/// ASCII-lower-cased bytes (iOS sends upper-case ids, Android lower-case) folded eight at a time,
/// each word mixed with MurmurHash3's finaliser, so every bit of the result depends on every
/// byte. Fast enough to run on every check (a UUID is five words).
pub fn device_hash(client_id: &str) -> u64 {
    let bytes = client_id.trim().as_bytes();
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        for (w, b) in word.iter_mut().zip(chunk) {
            *w = b.to_ascii_lowercase();
        }
        h = mix(h ^ u64::from_le_bytes(word)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    mix(h)
}

/// MurmurHash3's 64-bit finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The keys are hashes already: hashing them again would only cost time.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Hashes = HashSet<u64, BuildHasherDefault<Identity>>;

/// The distinct devices seen, exactly or as a sketch.
#[derive(Clone, Debug, Default)]
pub struct Distinct(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Exact(Hashes),
    Sketch(Box<[u8; M]>),
}

impl Default for Repr {
    fn default() -> Self {
        Self::Exact(Hashes::default())
    }
}

/// Why stored bytes are not a count.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a stored distinct count: {0}")]
pub struct DecodeError(&'static str);

impl Distinct {
    /// Counts one device (by [`device_hash`]).
    pub fn insert(&mut self, hash: u64) {
        match &mut self.0 {
            Repr::Exact(hashes) => {
                hashes.insert(hash);
                if hashes.len() > EXACT_LIMIT {
                    self.0 = Repr::Sketch(to_registers(hashes));
                }
            }
            Repr::Sketch(registers) => add(registers, hash),
        }
    }

    /// The number of distinct devices: exact up to [`EXACT_LIMIT`], estimated beyond.
    pub fn count(&self) -> u64 {
        match &self.0 {
            Repr::Exact(hashes) => hashes.len() as u64,
            Repr::Sketch(registers) => estimate(registers),
        }
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        matches!(self.0, Repr::Exact(_))
    }

    /// Adds every device `other` counted.
    pub fn merge(&mut self, other: &Distinct) {
        match (&mut self.0, &other.0) {
            (Repr::Exact(mine), Repr::Exact(theirs)) => {
                mine.extend(theirs.iter().copied());
                if mine.len() > EXACT_LIMIT {
                    self.0 = Repr::Sketch(to_registers(mine));
                }
            }
            (Repr::Exact(mine), Repr::Sketch(theirs)) => {
                let mut registers = theirs.clone();
                for &hash in mine.iter() {
                    add(&mut registers, hash);
                }
                self.0 = Repr::Sketch(registers);
            }
            (Repr::Sketch(mine), Repr::Exact(theirs)) => {
                for &hash in theirs {
                    add(mine, hash);
                }
            }
            (Repr::Sketch(mine), Repr::Sketch(theirs)) => {
                for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                    *m = (*m).max(*t);
                }
            }
        }
    }

    /// Memory this count holds, in bytes (approximate for the exact form).
    pub fn memory(&self) -> usize {
        match &self.0 {
            // hashbrown: one 8-byte slot and one control byte per bucket.
            Repr::Exact(hashes) => hashes.capacity() * 9,
            Repr::Sketch(_) => M,
        }
    }

    /// The stored form: a version byte, a kind byte, then the sorted hashes (8 bytes each,
    /// little-endian) or the 2^14 registers.
    pub fn encode(&self) -> Vec<u8> {
        match &self.0 {
            Repr::Exact(hashes) => {
                let mut sorted: Vec<u64> = hashes.iter().copied().collect();
                sorted.sort_unstable();
                let mut out = Vec::with_capacity(2 + 8 * sorted.len());
                out.extend_from_slice(&[VERSION, KIND_EXACT]);
                for hash in sorted {
                    out.extend_from_slice(&hash.to_le_bytes());
                }
                out
            }
            Repr::Sketch(registers) => {
                let mut out = Vec::with_capacity(2 + M);
                out.extend_from_slice(&[VERSION, KIND_SKETCH]);
                out.extend_from_slice(&registers[..]);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [version, kind, rest @ ..] = bytes else {
            return Err(DecodeError("too short"));
        };
        if *version != VERSION {
            return Err(DecodeError("unknown version"));
        }
        match *kind {
            KIND_EXACT => {
                if rest.len() % 8 != 0 || rest.len() / 8 > EXACT_LIMIT {
                    return Err(DecodeError("bad length of an exact count"));
                }
                let mut hashes = Hashes::default();
                hashes.reserve(rest.len() / 8);
                for chunk in rest.chunks_exact(8) {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(chunk);
                    hashes.insert(u64::from_le_bytes(word));
                }
                Ok(Self(Repr::Exact(hashes)))
            }
            KIND_SKETCH => {
                let registers: Box<[u8; M]> = rest
                    .to_vec()
                    .into_boxed_slice()
                    .try_into()
                    .map_err(|_| DecodeError("bad length of a sketch"))?;
                if registers.iter().any(|&r| u32::from(r) > Q + 1) {
                    return Err(DecodeError("register out of range"));
                }
                Ok(Self(Repr::Sketch(registers)))
            }
            _ => Err(DecodeError("unknown kind")),
        }
    }
}

fn to_registers(hashes: &Hashes) -> Box<[u8; M]> {
    let mut registers = Box::new([0u8; M]);
    for &hash in hashes {
        add(&mut registers, hash);
    }
    registers
}

fn add(registers: &mut [u8; M], hash: u64) {
    let index = (hash >> Q) as usize;
    // The rank of the remaining bits: the position of their first 1, counting from 1;
    // Q + 1 when they are all zero.
    let rank = ((hash << P).leading_zeros().min(Q) + 1) as u8;
    if registers[index] < rank {
        registers[index] = rank;
    }
}

/// Ertl's improved raw estimator (his algorithm 6).
fn estimate(registers: &[u8; M]) -> u64 {
    let mut histogram = [0u32; (Q + 2) as usize];
    for &r in registers {
        histogram[r as usize] += 1;
    }
    let m = M as f64;
    let mut z = m * tau(1.0 - f64::from(histogram[(Q + 1) as usize]) / m);
    for k in (1..=Q as usize).rev() {
        z = 0.5 * (z + f64::from(histogram[k]));
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    let alpha = 0.5 / std::f64::consts::LN_2;
    (alpha * m * m / z).round() as u64
}

fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count_of(hashes: impl IntoIterator<Item = u64>) -> Distinct {
        let mut d = Distinct::default();
        for h in hashes {
            d.insert(h);
        }
        d
    }

    /// Distinct well-spread hashes, as device ids give.
    fn devices(from: u64, n: u64) -> impl Iterator<Item = u64> {
        (from..from + n).map(|i| device_hash(&format!("device-{i}")))
    }

    #[test]
    fn device_ids_compare_case_insensitively_and_hash_stably() {
        let upper = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";
        assert_eq!(device_hash(upper), device_hash(&upper.to_lowercase()));
        assert_ne!(device_hash(upper), device_hash("0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4E"));
        // Fixed forever: stored counts from older versions must keep matching.
        assert_eq!(device_hash(""), mix(0x9e37_79b9_7f4a_7c15));
        assert_eq!(device_hash(" a "), device_hash("A"));
    }

    #[test]
    fn small_counts_are_exact_and_large_ones_within_two_percent() {
        let exact = count_of(devices(0, EXACT_LIMIT as u64));
        assert!(exact.is_exact());
        assert_eq!(exact.count(), EXACT_LIMIT as u64);
        for n in [EXACT_LIMIT as u64 + 1, 10_000, 50_000, 200_000, 1_000_000] {
            let d = count_of(devices(7, n));
            assert!(!d.is_exact());
            let error = (d.count() as f64 - n as f64).abs() / n as f64;
            assert!(error < 0.02, "{n}: estimated {} ({:.2} %)", d.count(), error * 100.0);
        }
    }

    #[test]
    fn a_sketch_is_smaller_than_the_exact_set_it_replaces() {
        let d = count_of(devices(0, EXACT_LIMIT as u64 + 1));
        assert_eq!(d.memory(), 16 * 1024);
        assert!(count_of(devices(0, EXACT_LIMIT as u64)).memory() > d.memory());
    }

    #[test]
    fn decoding_refuses_what_was_not_encoded() {
        for bad in [&[][..], &[1], &[2, 0], &[1, 0, 1, 2, 3], &[1, 1, 0], &[1, 9]] {
            assert!(Distinct::decode(bad).is_err(), "{bad:?}");
        }
        let mut sketch = vec![1, 1];
        sketch.extend(std::iter::repeat_n(0u8, M - 1));
        sketch.push(60);
        assert!(Distinct::decode(&sketch).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Merging counts the union, whatever the forms and the order, and repeating a merge
        /// changes nothing.
        #[test]
        fn merge_counts_the_union(a in 0u64..9000, b in 0u64..9000, overlap in 0u64..3000) {
            let overlap = overlap.min(a).min(b);
            let left = count_of(devices(0, a));
            let right = count_of(devices(a - overlap, b));
            let union = count_of(devices(0, a).chain(devices(a - overlap, b)));
            let mut merged = left.clone();
            merged.merge(&right);
            let mut other_way = right.clone();
            other_way.merge(&left);
            prop_assert_eq!(merged.count(), other_way.count());
            prop_assert_eq!(merged.count(), union.count());
            let once = merged.count();
            merged.merge(&right);
            merged.merge(&left);
            prop_assert_eq!(merged.count(), once);
            let truth = (a + b - overlap) as f64;
            if union.is_exact() {
                prop_assert_eq!(union.count(), a + b - overlap);
            } else {
                prop_assert!((union.count() as f64 - truth).abs() / truth < 0.03);
            }
        }

        /// What is stored reads back as the same count.
        #[test]
        fn encoding_round_trips(n in 0u64..6000, seed in 0u64..1000) {
            let d = count_of(devices(seed * 10_000, n));
            let back = Distinct::decode(&d.encode()).unwrap();
            prop_assert_eq!(back.count(), d.count());
            prop_assert_eq!(back.encode(), d.encode());
        }
    }
}
