//! Applying a patch, checking every number in it before it is used.

use std::fmt;
use std::io::{self, Read};

use bzip2::bufread::BzDecoder;

use super::{HEADER_LEN, MAGIC, MAX_SIZE, decode_i64};

/// A number of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    /// The length of the compressed control block.
    ControlLength,
    /// The length of the compressed diff block.
    DiffLength,
    /// The size of the new file.
    NewSize,
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ControlLength => "control block length",
            Self::DiffLength => "diff block length",
            Self::NewSize => "new file size",
        })
    }
}

/// One of the three compressed blocks of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The control entries.
    Control,
    /// The byte differences.
    Diff,
    /// The bytes copied as they are.
    Extra,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Control => "control",
            Self::Diff => "diff",
            Self::Extra => "extra",
        })
    }
}

/// Why [`patch`] refused a patch. Every malformed patch ends in one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch is shorter than its header.
    #[error("the patch is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TruncatedHeader {
        /// The patch's length.
        len: usize,
    },
    /// The patch does not start with `BSDIFF40`.
    #[error("not a BSDIFF40 patch: it does not start with the magic")]
    BadMagic,
    /// A number of the header is negative.
    #[error("the header's {field} is negative: {value}")]
    NegativeLength {
        /// Which number.
        field: HeaderField,
        /// Its value.
        value: i64,
    },
    /// The new file would be larger than [`MAX_SIZE`].
    #[error("the new file would be {size} bytes, over the {MAX_SIZE}-byte limit")]
    NewTooLarge {
        /// The size the header gives.
        size: u64,
    },
    /// The control and diff blocks, by the header's lengths, run past the end of the patch.
    #[error("the header's block lengths ({control} + {diff} bytes) run past the {available} bytes after it")]
    BlocksPastEnd {
        /// The control block's length.
        control: u64,
        /// The diff block's length.
        diff: u64,
        /// The bytes after the header.
        available: usize,
    },
    /// A block is not valid bzip2.
    #[error("the {block} block is not valid bzip2: {source}")]
    Corrupt {
        /// Which block.
        block: Block,
        /// The decompressor's error.
        source: io::Error,
    },
    /// A block ended (or its bzip2 stream was cut off) before the control entries were done
    /// with it. For the control block this means the new file came out shorter than its size.
    #[error("the {block} block ended early, with {written} of the new file's {expected} bytes written")]
    BlockEnded {
        /// Which block.
        block: Block,
        /// How much of the new file was written.
        written: usize,
        /// The new file's size, from the header.
        expected: usize,
    },
    /// A block's bzip2 stream is cut off after the data the control entries used.
    #[error("the {block} block's bzip2 stream is cut off before its end")]
    Unfinished {
        /// Which block.
        block: Block,
    },
    /// A block holds more data than the control entries use. bsdiff writes no such patch;
    /// refusing it also means every bzip2 checksum of the patch has been checked.
    #[error("the {block} block holds more data than the control entries use")]
    Leftover {
        /// Which block.
        block: Block,
    },
    /// A control entry has a negative count of diff or extra bytes.
    #[error("control entry {entry} has a negative length: {value}")]
    NegativeControl {
        /// The entry's index, from 0.
        entry: usize,
        /// The negative length.
        value: i64,
    },
    /// A control entry writes past the new file's size.
    #[error("control entry {entry} writes {len} bytes at {at}, past the new file's {expected} bytes")]
    PastNewEnd {
        /// The entry's index, from 0.
        entry: usize,
        /// Where it writes.
        at: usize,
        /// How many bytes.
        len: u64,
        /// The new file's size.
        expected: usize,
    },
    /// A control entry adds differences to old bytes outside the old file. (Classic bspatch
    /// reads such bytes as zeros; bsdiff never writes such an entry, so this reader refuses it.)
    #[error("control entry {entry} reads {len} old bytes at {at}, outside the old file's {old_len} bytes")]
    PastOldEnd {
        /// The entry's index, from 0.
        entry: usize,
        /// The old position it reads at.
        at: i64,
        /// How many bytes.
        len: u64,
        /// The old file's size.
        old_len: usize,
    },
    /// A control entry moves the old position beyond what a 64-bit number holds.
    #[error("control entry {entry} moves the old position out of range")]
    SeekOverflow {
        /// The entry's index, from 0.
        entry: usize,
    },
    /// There are more control entries than the new file has bytes, plus one. bsdiff writes at
    /// most that many (each moves further along the new file, bar possibly the first), and the
    /// limit keeps a block of empty entries from spinning.
    #[error("more control entries than the new file's {expected} bytes allow")]
    TooManyEntries {
        /// The new file's size.
        expected: usize,
    },
}

/// The file that `patch`, a `BSDIFF40` patch, makes from `old`.
///
/// Stricter than classic bspatch in three ways, none of which a patch written by bsdiff (or
/// by [`super::diff`]) runs into: differences may only be added to bytes inside the old file,
/// each bzip2 stream must be complete, and no block may hold data that is not used.
///
/// Memory is the new file (at most [`MAX_SIZE`], its size from the header, grown as it is
/// written) plus bzip2's working space for three streams, about 12 MB.
pub fn patch(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, PatchError> {
    let header: &[u8; HEADER_LEN] = patch
        .first_chunk()
        .ok_or(PatchError::TruncatedHeader { len: patch.len() })?;
    if &header[..8] != MAGIC {
        return Err(PatchError::BadMagic);
    }
    let number = |field: HeaderField, at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        let value = decode_i64(bytes);
        u64::try_from(value).map_err(|_| PatchError::NegativeLength { field, value })
    };
    let control_len = number(HeaderField::ControlLength, 8)?;
    let diff_len = number(HeaderField::DiffLength, 16)?;
    let new_size = number(HeaderField::NewSize, 24)?;
    let expected = match usize::try_from(new_size) {
        Ok(size) if size <= MAX_SIZE => size,
        _ => return Err(PatchError::NewTooLarge { size: new_size }),
    };
    let body = &patch[HEADER_LEN..];
    let past_end = PatchError::BlocksPastEnd {
        control: control_len,
        diff: diff_len,
        available: body.len(),
    };
    let control_end = usize::try_from(control_len).ok().filter(|&len| len <= body.len());
    let Some(control_end) = control_end else {
        return Err(past_end);
    };
    let diff_end = usize::try_from(diff_len)
        .ok()
        .and_then(|len| control_end.checked_add(len));
    let Some(diff_end) = diff_end.filter(|&end| end <= body.len()) else {
        return Err(past_end);
    };

    let mut control = Stream::new(Block::Control, &body[..control_end], expected);
    let mut diff = Stream::new(Block::Diff, &body[control_end..diff_end], expected);
    let mut extra = Stream::new(Block::Extra, &body[diff_end..], expected);
    let mut new = Vec::new();
    let mut old_pos: i64 = 0;
    let mut entry = 0;
    while new.len() < expected {
        if entry > expected {
            return Err(PatchError::TooManyEntries { expected });
        }
        let mut numbers = [0u8; 24];
        control.read(&mut numbers, new.len())?;
        let field = |k: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&numbers[8 * k..8 * k + 8]);
            decode_i64(bytes)
        };
        let (matched, extra_len, seek) = (field(0), field(1), field(2));
        let length = |value: i64| u64::try_from(value).map_err(|_| PatchError::NegativeControl { entry, value });
        let (matched, extra_len) = (length(matched)?, length(extra_len)?);

        // The diff bytes, added to the old bytes at the old position.
        let at = new.len();
        let matched_len = fits_new(entry, at, matched, expected)?;
        if matched_len > 0 {
            let old_range = usize::try_from(old_pos)
                .ok()
                .and_then(|start| Some(start..start.checked_add(matched_len)?))
                .filter(|range| range.end <= old.len());
            let Some(old_range) = old_range else {
                return Err(PatchError::PastOldEnd {
                    entry,
                    at: old_pos,
                    len: matched,
                    old_len: old.len(),
                });
            };
            grow(&mut new, matched_len, expected);
            new.resize(at + matched_len, 0);
            diff.read(&mut new[at..], at)?;
            for (byte, &base) in new[at..].iter_mut().zip(&old[old_range]) {
                *byte = byte.wrapping_add(base);
            }
        }

        // The extra bytes, as they are.
        let at = new.len();
        let extra_len = fits_new(entry, at, extra_len, expected)?;
        if extra_len > 0 {
            grow(&mut new, extra_len, expected);
            new.resize(at + extra_len, 0);
            extra.read(&mut new[at..], at)?;
        }

        // Both counts are at most MAX_SIZE, so they convert; the seek may overflow.
        old_pos = old_pos
            .checked_add(matched_len as i64)
            .and_then(|pos| pos.checked_add(seek))
            .ok_or(PatchError::SeekOverflow { entry })?;
        entry += 1;
    }
    control.finish()?;
    diff.finish()?;
    extra.finish()?;
    Ok(new)
}

/// `len` as a `usize`, if writing that many bytes at `at` stays within the new file.
fn fits_new(entry: usize, at: usize, len: u64, expected: usize) -> Result<usize, PatchError> {
    usize::try_from(len)
        .ok()
        .filter(|&len| len <= expected - at)
        .ok_or(PatchError::PastNewEnd {
            entry,
            at,
            len,
            expected,
        })
}

/// Makes room for `more` bytes in `new`, doubling its capacity as a `Vec` does but never past
/// `limit`, the new file's size: a patch can make us allocate no more than it claims to build.
fn grow(new: &mut Vec<u8>, more: usize, limit: usize) {
    let needed = new.len() + more;
    if needed > new.capacity() {
        let target = needed.max(new.capacity().saturating_mul(2)).min(limit);
        new.reserve_exact(target - new.len());
    }
}

/// One block's bzip2 stream, read in exact amounts.
struct Stream<'a> {
    block: Block,
    decoder: BzDecoder<&'a [u8]>,
    expected: usize,
}

impl<'a> Stream<'a> {
    fn new(block: Block, compressed: &'a [u8], expected: usize) -> Self {
        Self {
            block,
            decoder: BzDecoder::new(compressed),
            expected,
        }
    }

    /// Fills `buf`; `written` (bytes of the new file so far) goes into the error if it ends.
    fn read(&mut self, buf: &mut [u8], written: usize) -> Result<(), PatchError> {
        self.decoder.read_exact(buf).map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => PatchError::BlockEnded {
                block: self.block,
                written,
                expected: self.expected,
            },
            _ => PatchError::Corrupt {
                block: self.block,
                source,
            },
        })
    }

    /// Checks that the stream is at its end: not cut off, and with nothing left over.
    fn finish(mut self) -> Result<(), PatchError> {
        let block = self.block;
        match self.decoder.read(&mut [0u8; 1]) {
            Ok(0) => Ok(()),
            Ok(_) => Err(PatchError::Leftover { block }),
            Err(source) if source.kind() == io::ErrorKind::UnexpectedEof => Err(PatchError::Unfinished { block }),
            Err(source) => Err(PatchError::Corrupt { block, source }),
        }
    }
}
