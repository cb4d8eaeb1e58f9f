//! What the blob tests share: a store on a fresh folder, upload bodies, and decoders.

use std::io::Read;
use std::path::PathBuf;

use aloft_core::ContentHash;
use bytes::Bytes;
use futures::Stream;

use super::{BlobStore, Encoding};
use crate::db::Database;

pub(super) async fn setup() -> (tempfile::TempDir, Database, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(&dir.path().join("aloft.db")).await.unwrap();
    let blobs = BlobStore::local(dir.path()).unwrap();
    (dir, db, blobs)
}

pub(super) fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter(parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect::<Vec<_>>())
}

pub(super) async fn read(blobs: &BlobStore, hash: &ContentHash, encoding: Encoding) -> Bytes {
    blobs.get(hash, encoding, None).await.unwrap().bytes().await.unwrap()
}

pub(super) fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut plain).unwrap();
    plain
}

pub(super) fn ungzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain).unwrap();
    plain
}

pub(super) fn count(p: PathBuf) -> usize {
    std::fs::read_dir(p).unwrap().count()
}
