//! Content-addressed blob storage. A blob is written under a key derived from its SHA-256 only
//! after the upload has been hashed and checked, together with its brotli and gzip variants, and
//! only then is it recorded in the database; a crash at any point leaves either no blob or a
//! whole one with its variants, plus at most a partial file that `gc` removes.
//!
//! On local disk, uploads and variants are written to `<blobs>/.partial/` (the same file system
//! as the blobs) and renamed into place, so an upload needs its own size in free space, once. On
//! S3 they are staged in `<data>/tmp` and then streamed to the bucket.
//!
//! Here: the store, its keys and reads. `backends` opens local disk or S3 and puts finished
//! files there; `ingest` writes blob records; `variants` makes the compressed variants;
//! `partial` owns the partial files and removes what crashes left of them.

mod backends;
#[cfg(test)]
mod fixtures;
mod ingest;
mod partial;
mod variants;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aloft_core::ContentHash;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};

use crate::db::DbError;
use backends::Presigner;
pub use backends::S3Config;
use partial::InFlight;

/// The stored representations of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Brotli,
    Gzip,
}

impl Encoding {
    /// Every representation, the compressed variants first: a removal that stops halfway
    /// leaves the identity bytes, which the blob's record stands for.
    pub const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Identity];

    fn suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `content-encoding` token.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the upload is larger than the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("the uploaded bytes hash to {actual}, not {expected}")]
    Mismatch { expected: ContentHash, actual: ContentHash },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    /// No space left on the file system holding `dir` (ENOSPC, or a quota).
    #[error("no space left on the file system holding {}", dir.display())]
    StorageFull { dir: PathBuf },
    #[error("blob storage failed: {0}")]
    Storage(#[from] object_store::Error),
    #[error("temporary file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl IngestError {
    /// An I/O error while writing under `dir`: [`IngestError::StorageFull`] when the disk is full.
    pub fn writing(err: std::io::Error, dir: &Path) -> Self {
        if is_storage_full(&err) {
            IngestError::StorageFull { dir: dir.to_owned() }
        } else {
            IngestError::Io(err)
        }
    }
}

/// Whether an I/O error says the disk (or the user's quota on it) is full.
pub fn is_storage_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Local disk: the folder the keys live under. Writes go there by rename, not through
    /// `store`.
    local_root: Option<PathBuf>,
    /// Where partial files are written: `<blobs>/.partial` on local disk, `<data>/tmp` for S3.
    staging: PathBuf,
    /// `<data>/tmp`, emptied at start: S3 staging; on local disk only older versions used it.
    tmp_dir: PathBuf,
    in_flight: InFlight,
    /// For S3: signs URLs that let a client fetch a blob straight from the bucket.
    presigner: Option<Presigner>,
}

impl BlobStore {
    /// The size of a blob's stored bytes (for serving when the database is out of reach).
    pub async fn size(&self, hash: &ContentHash) -> Result<u64, object_store::Error> {
        Ok(self.store.head(&Self::key(hash, Encoding::Identity)).await?.size)
    }

    /// `ab/abcdef…` in hex: case-insensitive file systems cannot confuse two keys.
    fn key(hash: &ContentHash, encoding: Encoding) -> ObjectPath {
        let hex = hex::encode(hash.as_bytes());
        ObjectPath::from(format!("{}/{}{}", &hex[..2], hex, encoding.suffix()))
    }

    /// Where a representation lives on local disk.
    fn local_path(root: &Path, hash: &ContentHash, encoding: Encoding) -> PathBuf {
        let hex = hex::encode(hash.as_bytes());
        root.join(&hex[..2]).join(format!("{hex}{}", encoding.suffix()))
    }

    /// A representation of a blob, whole or a byte range of it.
    pub async fn get(
        &self,
        hash: &ContentHash,
        encoding: Encoding,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, object_store::Error> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        self.store.get_opts(&Self::key(hash, encoding), options).await
    }

    /// A representation's file, opened for reading, when blobs are on local disk (for sending
    /// with `sendfile`). `None` on S3, or when the file cannot be opened.
    pub fn open_local(&self, hash: &ContentHash, encoding: Encoding) -> Option<std::fs::File> {
        let root = self.local_root.as_ref()?;
        std::fs::File::open(Self::local_path(root, hash, encoding)).ok()
    }

    /// Removes every representation of a blob whose record `gc` deleted.
    pub async fn delete(&self, hash: &ContentHash) -> Result<(), object_store::Error> {
        for encoding in Encoding::ALL {
            match self.store.delete(&Self::key(hash, encoding)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What blob storage fails with.
pub type StorageError = object_store::Error;

/// Whether a storage error means the object does not exist.
pub fn is_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}
