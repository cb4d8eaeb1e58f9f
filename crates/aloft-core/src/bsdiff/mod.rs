//! Binary patches in the classic bsdiff 4.x format (`BSDIFF40`), the format the expo-updates
//! clients on iOS and Android apply to an old JavaScript bundle to rebuild a new one.
//!
//! [`diff`] writes a patch from an old and a new file; [`patch`] applies one. Both are pure
//! Rust: the three blocks of a patch are compressed with the `bzip2` crate's Rust backend.
//!
//! # The format
//!
//! A patch is a 32-byte header followed by three independent bzip2 streams:
//!
//! | bytes | content |
//! | --- | --- |
//! | 0..8 | the magic `BSDIFF40` |
//! | 8..16 | length of the compressed control block |
//! | 16..24 | length of the compressed diff block |
//! | 24..32 | size of the new file |
//! | 32.. | control block, then diff block, then extra block (the rest of the patch) |
//!
//! Every number, in the header and in the control block, is an 8-byte signed integer: the
//! magnitude in little-endian order, with the sign in the top bit of the last byte.
//!
//! The control block is a list of entries of three numbers `(x, y, z)`. Each entry says: take
//! `x` bytes from the diff block and add them, byte by byte and wrapping, to the `x` bytes of
//! the old file at the current old position; then copy `y` bytes from the extra block as they
//! are; then move the old position by `z` (which may be negative). The new file is complete
//! when its size, from the header, is reached.
//!
//! # How patches are made
//!
//! [`diff`] follows the matching of bsdiff 4.3 step by step, so its patches are those of the
//! `bsdiff` command, byte for byte (the bzip2 backend compresses as libbz2 does; the tests
//! check this against Debian's `bsdiff`). A suffix array of the old file finds, for each
//! position of the new file, a long match in the old one; a match is taken only when it beats
//! the current alignment by more than eight bytes (or agrees with it exactly), and each
//! stretch between two taken matches is split into an approximate match extended forwards
//! from the previous one and backwards from the next one (stored as byte differences, which
//! compress very well where the two files mostly agree) and the bytes in between (stored as
//! they are).
//!
//! The suffix array is built with SA-IS in linear time as 4-byte entries, where bsdiff 4.3
//! uses a slower sort over two arrays of 8-byte ones: for a 1.4 MB bundle, a diff takes about
//! a quarter of a second and 20 MB at peak.

mod read;
mod suffix;
mod write;

#[cfg(test)]
mod tests;

pub use read::{Block, HeaderField, PatchError, patch};
pub use write::{DiffError, diff};

/// The first eight bytes of every patch.
pub const MAGIC: &[u8; 8] = b"BSDIFF40";

/// The size of the header: the magic and three numbers.
pub const HEADER_LEN: usize = 32;

/// The largest old or new file [`diff`] accepts and the largest new file [`patch`] builds,
/// 512 MiB: far above any app bundle, and a bound on what a hostile patch can make us allocate.
pub const MAX_SIZE: usize = 512 << 20;

/// bzip2's block size, in units of 100 kB: 9, the best compression, as bsdiff uses.
const BZIP2_LEVEL: u32 = 9;

/// Writes `value` as bsdiff does: little-endian magnitude, sign in the top bit of the last byte.
fn encode_i64(value: i64) -> [u8; 8] {
    let mut bytes = value.unsigned_abs().to_le_bytes();
    if value < 0 {
        bytes[7] |= 0x80;
    }
    bytes
}

/// Reads a number written by [`encode_i64`]. A "negative zero" reads as zero.
fn decode_i64(mut bytes: [u8; 8]) -> i64 {
    let negative = bytes[7] & 0x80 != 0;
    bytes[7] &= 0x7f;
    // With the top bit clear the magnitude is at most i64::MAX, so it converts and negates.
    let magnitude = i64::from_le_bytes(bytes);
    if negative { -magnitude } else { magnitude }
}
