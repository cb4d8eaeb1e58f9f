//! Writing a patch: bsdiff 4.3's matching over a suffix array, then the three bzip2 blocks.

use std::io::{self, Write};

use bzip2::Compression;
use bzip2::write::BzEncoder;

use super::suffix::{find_match, suffix_array};
use super::{BZIP2_LEVEL, HEADER_LEN, MAGIC, MAX_SIZE, encode_i64};

/// Why [`diff`] could not write a patch.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The old or the new file is larger than [`MAX_SIZE`].
    #[error("the {which} file is {size} bytes, over the {MAX_SIZE}-byte limit of a patch")]
    TooLarge {
        /// `"old"` or `"new"`.
        which: &'static str,
        /// Its size in bytes.
        size: usize,
    },
    /// The bzip2 compressor failed. It writes into memory, so this does not happen in practice.
    #[error("bzip2 compression failed: {0}")]
    Compress(#[from] io::Error),
}

/// A `BSDIFF40` patch that turns `old` into `new`, as Debian's `bspatch` and the expo-updates
/// clients apply it.
///
/// Memory is about five bytes per old byte (the suffix array and its build) plus bzip2's
/// working space and the compressed output; time is about linear in the two sizes for files
/// that mostly agree, as app bundles of two releases do.
pub fn diff(old: &[u8], new: &[u8]) -> Result<Vec<u8>, DiffError> {
    for (which, size) in [("old", old.len()), ("new", new.len())] {
        if size > MAX_SIZE {
            return Err(DiffError::TooLarge { which, size });
        }
    }
    let sa = suffix_array(old);
    let mut blocks = Blocks::new();
    Matcher { old, new, sa: &sa }.run(|entry| blocks.push(old, new, &entry))?;
    drop(sa);
    blocks.finish(new.len())
}

/// One control entry, in the terms of where its bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Where the approximate match starts in the new file.
    new_start: usize,
    /// Where it starts in the old file.
    old_start: usize,
    /// Its length: bytes stored as differences from the old file.
    matched: usize,
    /// Bytes stored as they are, right after the match.
    extra: usize,
    /// Where the old position goes next, for the following entry.
    next_old: usize,
}

/// bsdiff 4.3's matching: walks the new file, looking up a long match of each position
/// in the old file, and settles a control entry whenever a match is worth switching to.
struct Matcher<'a> {
    old: &'a [u8],
    new: &'a [u8],
    sa: &'a [u32],
}

impl Matcher<'_> {
    /// Calls `emit` with every control entry in order; stops at the first error it returns.
    fn run<E>(&self, mut emit: impl FnMut(Entry) -> Result<(), E>) -> Result<(), E> {
        let (old, new) = (self.old, self.new);
        // The match being looked at: it starts at `scan` in new and `pos` in old.
        let (mut scan, mut pos, mut len) = (0usize, 0usize, 0usize);
        // Where the last settled match starts (in new and old); `last_offset` is the
        // difference between old and new positions along the alignment it set.
        let (mut last_scan, mut last_pos) = (0usize, 0usize);
        let mut last_offset: isize = 0;
        // Whether the current alignment reproduces the new byte at `i`.
        let aligned = |i: usize, offset: isize| {
            i.checked_add_signed(offset)
                .is_some_and(|j| j < old.len() && old[j] == new[i])
        };

        while scan < new.len() {
            // How many bytes of new[scan..scored] the current alignment already reproduces.
            let mut score = 0isize;
            scan += len;
            let mut scored = scan;
            while scan < new.len() {
                (pos, len) = find_match(old, self.sa, &new[scan..]);
                while scored < scan + len {
                    score += isize::from(aligned(scored, last_offset));
                    scored += 1;
                }
                // Take the match if it is exact along the current alignment (nothing new to
                // say yet, so keep going from its end) or beats that alignment by over 8 bytes.
                let len_score = len as isize;
                if (len_score == score && len != 0) || len_score > score + 8 {
                    break;
                }
                score -= isize::from(aligned(scan, last_offset));
                scan += 1;
            }
            if len as isize == score && scan != new.len() {
                continue;
            }

            // Extend the last match forwards to where agreeing bytes most outnumber the others...
            let mut forward = best_extension(
                (0..(scan - last_scan).min(old.len() - last_pos)).map(|i| old[last_pos + i] == new[last_scan + i]),
            );
            // ...and the new one backwards likewise (not at the end, where there is none)...
            let mut backward = if scan < new.len() {
                best_extension((1..=(scan - last_scan).min(pos)).map(|i| old[pos - i] == new[scan - i]))
            } else {
                0
            };
            // ...and where the two overlap, split the overlap where the most bytes agree.
            if last_scan + forward > scan - backward {
                let overlap = (last_scan + forward) - (scan - backward);
                let (mut balance, mut best, mut split) = (0isize, 0isize, 0usize);
                for i in 0..overlap {
                    let f = last_scan + forward - overlap + i;
                    balance += isize::from(new[f] == old[last_pos + forward - overlap + i]);
                    let b = scan - backward + i;
                    balance -= isize::from(new[b] == old[pos - backward + i]);
                    if balance > best {
                        best = balance;
                        split = i + 1;
                    }
                }
                forward -= overlap - split;
                backward -= split;
            }

            emit(Entry {
                new_start: last_scan,
                old_start: last_pos,
                matched: forward,
                extra: (scan - backward) - (last_scan + forward),
                next_old: pos - backward,
            })?;
            last_scan = scan - backward;
            last_pos = pos - backward;
            last_offset = pos as isize - scan as isize;
        }
        Ok(())
    }
}

/// The length of the prefix of `agree` (whether each successive byte pair agrees) with the
/// best score `2 * agreeing - length`, the first one on ties; 0 if no prefix scores above 0.
fn best_extension(agree: impl Iterator<Item = bool>) -> usize {
    let (mut agreeing, mut best, mut best_len) = (0isize, 0isize, 0usize);
    for (i, same) in agree.enumerate() {
        agreeing += isize::from(same);
        let score = 2 * agreeing - (i as isize + 1);
        if score > best {
            best = score;
            best_len = i + 1;
        }
    }
    best_len
}

/// The three blocks of the patch being written: control entries, then byte differences and
/// extra bytes, each compressed as it comes.
struct Blocks {
    control: BzEncoder<Vec<u8>>,
    diff: BzEncoder<Vec<u8>>,
    extra: BzEncoder<Vec<u8>>,
    /// Where the old position stands after the entries so far.
    old_pos: usize,
    /// Reused buffer for one entry's byte differences.
    scratch: Vec<u8>,
}

impl Blocks {
    fn new() -> Self {
        let encoder = || BzEncoder::new(Vec::new(), Compression::new(BZIP2_LEVEL));
        Self {
            control: encoder(),
            diff: encoder(),
            extra: encoder(),
            old_pos: 0,
            scratch: Vec::new(),
        }
    }

    fn push(&mut self, old: &[u8], new: &[u8], entry: &Entry) -> io::Result<()> {
        debug_assert_eq!(entry.old_start, self.old_pos);
        let new_part = &new[entry.new_start..entry.new_start + entry.matched];
        let old_part = &old[entry.old_start..entry.old_start + entry.matched];
        self.scratch.clear();
        self.scratch
            .extend(new_part.iter().zip(old_part).map(|(n, o)| n.wrapping_sub(*o)));
        self.diff.write_all(&self.scratch)?;
        let extra_start = entry.new_start + entry.matched;
        self.extra.write_all(&new[extra_start..extra_start + entry.extra])?;

        let after_match = entry.old_start + entry.matched;
        let seek = entry.next_old as i64 - after_match as i64;
        self.control.write_all(&encode_i64(entry.matched as i64))?;
        self.control.write_all(&encode_i64(entry.extra as i64))?;
        self.control.write_all(&encode_i64(seek))?;
        self.old_pos = entry.next_old;
        Ok(())
    }

    fn finish(self, new_len: usize) -> Result<Vec<u8>, DiffError> {
        let control = self.control.finish()?;
        let diff = self.diff.finish()?;
        let extra = self.extra.finish()?;
        let mut patch = Vec::with_capacity(HEADER_LEN + control.len() + diff.len() + extra.len());
        patch.extend_from_slice(MAGIC);
        for len in [control.len(), diff.len(), new_len] {
            patch.extend_from_slice(&encode_i64(len as i64));
        }
        patch.extend_from_slice(&control);
        patch.extend_from_slice(&diff);
        patch.extend_from_slice(&extra);
        Ok(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_prefers_the_best_scoring_prefix() {
        assert_eq!(best_extension([].into_iter()), 0);
        assert_eq!(best_extension([false, false].into_iter()), 0);
        assert_eq!(
            best_extension([true, true, false, true, true, false, false].into_iter()),
            5
        );
        // Ties keep the shorter prefix.
        assert_eq!(best_extension([true, false, true].into_iter()), 1);
        assert_eq!(
            best_extension([true, true, false, true, false, false, false].into_iter()),
            2
        );
        assert_eq!(best_extension([true, true, false, false].into_iter()), 2);
    }

    #[test]
    fn identical_files_make_one_entry() {
        let text = b"the same bytes on both sides".repeat(10);
        let sa = suffix_array(&text);
        let mut entries = Vec::new();
        Matcher {
            old: &text,
            new: &text,
            sa: &sa,
        }
        .run(|e| {
            entries.push(e);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            entries,
            [Entry {
                new_start: 0,
                old_start: 0,
                matched: text.len(),
                extra: 0,
                next_old: entries[0].next_old
            }]
        );
    }

    #[test]
    fn refuses_files_over_the_limit_before_any_work() {
        // The limit is checked on the lengths alone: the zeroed pages are never touched.
        let big = vec![0u8; MAX_SIZE + 1];
        assert!(matches!(diff(&big, b""), Err(DiffError::TooLarge { which: "old", .. })));
        assert!(matches!(diff(b"", &big), Err(DiffError::TooLarge { which: "new", .. })));
    }
}
