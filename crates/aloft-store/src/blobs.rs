//! Content-addressed blob storage. A blob is written under a key derived from its SHA-256 only
//! after the upload has been hashed and checked, together with its brotli and gzip variants, and
//! only then is it recorded in the database; a crash at any point leaves either no blob or a
//! whole one with its variants, plus at most a partial file that `gc` removes.
//!
//! On local disk, uploads and variants are written to `<blobs>/.partial/` (the same file system
//! as the blobs) and renamed into place, so an upload needs its own size in free space, once. On
//! S3 they are staged in `<data>/tmp` and then streamed to the bucket.

use std::collections::HashSet;
use std::io::{BufReader, BufWriter as StdBufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aloft_core::ContentHash;
use aloft_core::hash::Hasher;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, Signer};
use object_store::{Attribute, Attributes, GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::blobs::{self as records, BlobRecord};
use crate::db::{Database, DbError};

/// The stored representations of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Brotli,
    Gzip,
}

impl Encoding {
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

/// Where S3-compatible storage is: `s3://bucket/prefix` plus endpoint, region and addressing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    /// For MinIO, R2, Garage, GCS and the like; AWS needs none.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones.
    pub path_style: bool,
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse_url(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        (!bucket.is_empty()).then(|| (bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }
}

/// Paths of the partial files this process is writing right now; `gc` leaves them alone.
type InFlight = Arc<Mutex<HashSet<PathBuf>>>;

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

#[derive(Clone, Debug)]
struct Presigner {
    signer: Arc<dyn Signer>,
    /// The bucket prefix the store's keys live under.
    prefix: String,
}

/// Smallest saving for which a compressed variant is kept.
const MIN_SAVING: f64 = 0.05;

/// The folder of partial files under the local blob folder. Its name cannot be a key's first
/// segment (two hex digits), and `object_store` never lists it.
const PARTIAL_DIR: &str = ".partial";

/// A file being written under a random name, removed when dropped unless it was renamed into
/// place. Its path is registered in `in_flight` before the file exists, so `gc` never removes a
/// file that is being written.
struct Partial {
    path: PathBuf,
    in_flight: InFlight,
    /// Renamed into place (or never created): nothing to remove.
    settled: bool,
}

impl Partial {
    fn create(dir: &Path, in_flight: &InFlight, what: &str) -> std::io::Result<(Self, std::fs::File)> {
        let path = dir.join(format!("{what}-{:016x}", rand::random::<u64>()));
        if let Ok(mut set) = in_flight.lock() {
            set.insert(path.clone());
        }
        let mut partial = Partial {
            path,
            in_flight: in_flight.clone(),
            settled: false,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial.path)
        {
            Ok(file) => Ok((partial, file)),
            Err(e) => {
                // Not ours to remove (it may even exist already).
                partial.settled = true;
                Err(e)
            }
        }
    }

    /// Renames the file to `target` (same file system), creating the parent folder as needed.
    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let parent = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        match std::fs::rename(&self.path, target) {
            // An emptied shard folder is removed by deletes; make it again once.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.path.exists() => {
                std::fs::create_dir_all(parent)?;
                std::fs::rename(&self.path, target)?;
            }
            other => other?,
        }
        self.settled = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.settled {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(&self.path);
        }
    }
}

/// The compressed variants of one blob that are worth keeping, as partial files with their sizes.
#[derive(Default)]
struct Variants {
    br: Option<(Partial, u64)>,
    gz: Option<(Partial, u64)>,
}

impl Variants {
    fn sizes(&self) -> (Option<u64>, Option<u64>) {
        (
            self.br.as_ref().map(|(_, size)| *size),
            self.gz.as_ref().map(|(_, size)| *size),
        )
    }

    fn into_files(self) -> impl Iterator<Item = (Encoding, Partial)> {
        [
            self.br.map(|(p, _)| (Encoding::Brotli, p)),
            self.gz.map(|(p, _)| (Encoding::Gzip, p)),
        ]
        .into_iter()
        .flatten()
    }
}

impl BlobStore {
    /// Blobs under `<data>/blobs`, partial files under `<data>/blobs/.partial`.
    pub fn local(data_dir: &Path) -> Result<Self, IngestError> {
        let blobs = data_dir.join("blobs");
        let staging = blobs.join(PARTIAL_DIR);
        std::fs::create_dir_all(&staging)?;
        let store = LocalFileSystem::new_with_prefix(&blobs)?.with_automatic_cleanup(true);
        let mut store = Self::with_store(Arc::new(store), data_dir, staging)?;
        store.local_root = Some(blobs);
        Ok(store)
    }

    /// Blobs in an S3-compatible bucket under `prefix`; upload staging under `<data>/tmp`.
    /// Credentials and anything not given come from the usual `AWS_*` variables.
    pub fn s3(config: &S3Config, data_dir: &Path) -> Result<Self, IngestError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        // Virtual-hosted addressing (bucket.host) unless path style (host/bucket) is asked for.
        builder = builder.with_virtual_hosted_style_request(!config.path_style);
        let s3 = Arc::new(builder.build()?);
        let prefix = config.prefix.trim_matches('/').to_owned();
        let store: Arc<dyn ObjectStore> = match prefix.as_str() {
            "" => s3.clone(),
            prefix => Arc::new(PrefixStore::new(s3.clone(), prefix.to_owned())),
        };
        let mut blobs = Self::with_store(store, data_dir, data_dir.join("tmp"))?;
        blobs.presigner = Some(Presigner { signer: s3, prefix });
        Ok(blobs)
    }

    /// Whether [`BlobStore::presigned_url`] can work (S3 storage).
    pub fn can_presign(&self) -> bool {
        self.presigner.is_some()
    }

    /// A URL that fetches one representation of a blob straight from the bucket for `ttl`.
    pub async fn presigned_url(
        &self,
        hash: &ContentHash,
        encoding: Encoding,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, object_store::Error> {
        let Some(p) = &self.presigner else { return Ok(None) };
        let key = Self::key(hash, encoding);
        let full = match p.prefix.as_str() {
            "" => key,
            prefix => ObjectPath::from(format!("{prefix}/{key}")),
        };
        Ok(Some(p.signer.signed_url(Method::GET, &full, ttl).await?.to_string()))
    }

    fn with_store(store: Arc<dyn ObjectStore>, data_dir: &Path, staging: PathBuf) -> Result<Self, IngestError> {
        let tmp_dir = data_dir.join("tmp");
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)?;
        }
        std::fs::create_dir_all(&tmp_dir)?;
        std::fs::create_dir_all(&staging)?;
        Ok(Self {
            store,
            local_root: None,
            staging,
            tmp_dir,
            in_flight: InFlight::default(),
            presigner: None,
        })
    }

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

    fn partial(&self, what: &str) -> Result<(Partial, std::fs::File), IngestError> {
        Partial::create(&self.staging, &self.in_flight, what).map_err(|e| self.full(e))
    }

    /// Names a full disk after the folder being written.
    fn full(&self, err: std::io::Error) -> IngestError {
        IngestError::writing(err, self.local_root.as_deref().unwrap_or(&self.staging))
    }

    /// Streams an upload to a partial file while hashing it, checks it against `expected`, makes
    /// its brotli and gzip variants (in parallel), stores all of them under its hash and records
    /// it with their sizes. Nothing is visible unless all of that succeeds.
    pub async fn ingest<S, E>(
        &self,
        db: &Database,
        expected: ContentHash,
        mut body: S,
        max: u64,
    ) -> Result<BlobRecord, IngestError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (upload, file) = self.partial("upload")?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Hasher::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| IngestError::Body(e.to_string()))?;
            if hasher.len() + chunk.len() as u64 > max {
                return Err(IngestError::TooLarge { max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| self.full(e))?;
        }
        file.flush().await.map_err(|e| self.full(e))?;
        let (actual, md5, size) = hasher.finish();
        if actual != expected {
            return Err(IngestError::Mismatch { expected, actual });
        }
        file.sync_all().await.map_err(|e| self.full(e))?;
        drop(file);

        let variants = self.make_variant_files(&upload.path, size).await?;
        let (br, gz) = variants.sizes();
        self.store_files(&actual, Some(upload), variants).await?;
        records::insert(db, &actual, &md5, size, br, gz).await?;
        Ok(records::get(db, &actual)
            .await?
            .ok_or_else(|| DbError::MissingBlob(actual.to_string()))?)
    }

    /// Compresses `src` (of `size` bytes) with brotli and gzip at once, each on a blocking
    /// thread, into partial files; keeps those that save at least 5 %. Already-compressed
    /// formats are not tried, nor is a large file whose first [`SAMPLE`] bytes do not shrink at
    /// all (random or encrypted data): brotli's best quality would spend a minute on it for
    /// nothing, while the client waits.
    async fn make_variant_files(&self, src: &Path, size: u64) -> Result<Variants, IngestError> {
        let src_owned = src.to_owned();
        let worth_trying = tokio::task::spawn_blocking(move || {
            let mut head = Vec::with_capacity(SAMPLE);
            std::fs::File::open(&src_owned)?
                .take(SAMPLE as u64)
                .read_to_end(&mut head)?;
            Ok::<_, std::io::Error>(!is_precompressed(&head) && (size <= SAMPLE as u64 || sample_shrinks(&head)))
        })
        .await
        .map_err(|e| IngestError::Io(std::io::Error::other(e)))??;
        if !worth_trying {
            return Ok(Variants::default());
        }
        let (br, gz) = tokio::try_join!(
            self.variant_file(src, size, Encoding::Brotli),
            self.variant_file(src, size, Encoding::Gzip)
        )?;
        Ok(Variants { br, gz })
    }

    async fn variant_file(
        &self,
        src: &Path,
        size: u64,
        encoding: Encoding,
    ) -> Result<Option<(Partial, u64)>, IngestError> {
        let (partial, out) = self.partial(encoding.token().unwrap_or("variant"))?;
        let src = src.to_owned();
        let len = tokio::task::spawn_blocking(move || compress_file(&src, out, encoding))
            .await
            .map_err(|e| IngestError::Io(std::io::Error::other(e)))?
            .map_err(|e| self.full(e))?;
        let worth = (len as f64) < size as f64 * (1.0 - MIN_SAVING);
        Ok(worth.then_some((partial, len)))
    }

    /// Puts the identity (when given) and the variants under their keys: by rename on local
    /// disk (then the folder is synced), by upload to S3 (each variant with its
    /// `Content-Encoding`, so a presigned download decodes right).
    async fn store_files(
        &self,
        hash: &ContentHash,
        identity: Option<Partial>,
        variants: Variants,
    ) -> Result<(), IngestError> {
        let files: Vec<(Encoding, Partial)> = variants
            .into_files()
            .chain(identity.map(|p| (Encoding::Identity, p)))
            .collect();
        if let Some(root) = &self.local_root {
            let root = root.clone();
            let hash = *hash;
            return tokio::task::spawn_blocking(move || {
                let mut folder = None;
                for (encoding, partial) in files {
                    let target = Self::local_path(&root, &hash, encoding);
                    folder = target.parent().map(Path::to_owned);
                    partial.persist(&target)?;
                }
                // The renames are durable once the folder's entries are.
                if let Some(folder) = folder {
                    std::fs::File::open(&folder)?.sync_all()?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| IngestError::Io(std::io::Error::other(e)))?
            .map_err(|e| self.full(e));
        }
        for (encoding, partial) in files {
            let key = Self::key(hash, encoding);
            // Identical bytes may already be there (stored before a crash, or by a replica).
            if encoding == Encoding::Identity && self.store.head(&key).await.is_ok() {
                continue;
            }
            let mut attributes = Attributes::new();
            if let Some(token) = encoding.token() {
                attributes.insert(Attribute::ContentEncoding, token.into());
            }
            let mut reader = tokio::fs::File::open(&partial.path).await?;
            let mut writer = BufWriter::new(self.store.clone(), key).with_attributes(attributes);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                writer.write_all(&buf[..n]).await?;
            }
            writer.shutdown().await?;
        }
        Ok(())
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

    /// Removes every representation of a blob whose record `gc` deleted.
    pub async fn delete(&self, hash: &ContentHash) -> Result<(), object_store::Error> {
        for encoding in [Encoding::Brotli, Encoding::Gzip, Encoding::Identity] {
            match self.store.delete(&Self::key(hash, encoding)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the brotli and gzip variants of a stored blob that has none yet (a row recorded by
    /// an older version), stores those that save at least 5 % and records the outcome.
    pub async fn make_variants(&self, db: &Database, hash: &ContentHash) -> Result<(), IngestError> {
        let (variants, _copy) = match &self.local_root {
            Some(root) => {
                let src = Self::local_path(root, hash, Encoding::Identity);
                let size = std::fs::metadata(&src)?.len();
                (self.make_variant_files(&src, size).await?, None)
            }
            None => {
                // Compress a local copy: the bucket's bytes are read once, in a stream.
                let (copy, file) = self.partial("download")?;
                let mut file = tokio::fs::File::from_std(file);
                let mut stream = self
                    .store
                    .get(&Self::key(hash, Encoding::Identity))
                    .await?
                    .into_stream();
                let mut size = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    file.write_all(&chunk).await.map_err(|e| self.full(e))?;
                }
                file.flush().await.map_err(|e| self.full(e))?;
                drop(file);
                (self.make_variant_files(&copy.path, size).await?, Some(copy))
            }
        };
        let (br, gz) = variants.sizes();
        self.store_files(hash, None, variants).await?;
        records::set_variants(db, hash, br, gz).await?;
        Ok(())
    }

    /// Removes what interrupted writes left behind and nothing is writing any more: partial
    /// files (and `object_store`'s `<key>#<n>` staging files of older versions) last modified
    /// more than `grace` ago. Returns how many it removed.
    pub async fn remove_leftovers(&self, grace: Duration) -> usize {
        let mut folders = vec![self.staging.clone(), self.tmp_dir.clone()];
        let mut shards = Vec::new();
        if let Some(root) = &self.local_root {
            shards.push(root.clone());
        }
        folders.dedup();
        let in_flight = self.in_flight.clone();
        tokio::task::spawn_blocking(move || {
            let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
            let mut candidates = Vec::new();
            for folder in &folders {
                candidates.extend(files_in(folder));
            }
            for root in &shards {
                for shard in files_in_dirs(root) {
                    candidates.extend(
                        files_in(&shard).filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains('#'))),
                    );
                }
            }
            let mut removed = 0;
            for path in candidates {
                let busy = in_flight.lock().map(|set| set.contains(&path)).unwrap_or(true);
                let old = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t <= cutoff);
                if busy || !old {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed the leftover of an interrupted write");
                        removed += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a leftover file failed"),
                }
            }
            removed
        })
        .await
        .unwrap_or(0)
    }
}

/// The regular files directly in `dir` (none if it cannot be read).
fn files_in(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
}

/// The shard folders (two hex digits) directly in `dir`.
fn files_in_dirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|e| e.path())
}

/// How much of a large file is compressed quickly to see whether compressing all of it can pay.
const SAMPLE: usize = 256 << 10;

/// Whether fast gzip saves at least 1 % on `sample`.
fn sample_shrinks(sample: &[u8]) -> bool {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let out = gz.write_all(sample).and_then(|()| gz.finish());
    out.is_ok_and(|out| (out.len() as f64) < sample.len() as f64 * 0.99)
}

/// Compresses the file at `src` into `out` and syncs it; returns the compressed size.
fn compress_file(src: &Path, out: std::fs::File, encoding: Encoding) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::open(src)?);
    let mut writer = StdBufWriter::with_capacity(1 << 16, out);
    match encoding {
        Encoding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: 11,
                lgwin: 22,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut reader, &mut writer, &params)?;
        }
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(writer, flate2::Compression::best());
            std::io::copy(&mut reader, &mut gz)?;
            writer = gz.finish()?;
        }
        Encoding::Identity => {
            std::io::copy(&mut reader, &mut writer)?;
        }
    }
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// What blob storage fails with.
pub type StorageError = object_store::Error;

/// Whether a storage error means the object does not exist.
pub fn is_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Formats that do not shrink: PNG, JPEG, GIF, WebP, zip, gzip, brotli-less guesses aside.
fn is_precompressed(bytes: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x89PNG",
        b"\xff\xd8\xff",
        b"GIF8",
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"wOF2",
        b"\x00\x00\x00\x1cftyp",
        b"\x00\x00\x00\x20ftyp",
        b"\x00\x00\x00\x18ftyp",
    ];
    MAGIC.iter().any(|m| bytes.starts_with(m)) || (bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row as _;

    async fn setup() -> (tempfile::TempDir, Database, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("aloft.db")).await.unwrap();
        let blobs = BlobStore::local(dir.path()).unwrap();
        (dir, db, blobs)
    }

    fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect::<Vec<_>>())
    }

    async fn read(blobs: &BlobStore, hash: &ContentHash, encoding: Encoding) -> Bytes {
        blobs.get(hash, encoding, None).await.unwrap().bytes().await.unwrap()
    }

    fn unbrotli(bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &bytes[..], &mut plain).unwrap();
        plain
    }

    fn ungzip(bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain).unwrap();
        plain
    }

    fn count(p: PathBuf) -> usize {
        std::fs::read_dir(p).unwrap().count()
    }

    #[tokio::test]
    async fn ingest_verifies_and_stores_with_variants() {
        let (dir, db, blobs) = setup().await;
        let data: &[u8] = b"console.log('hello'); console.log('hello'); console.log('hello');";
        let hash = ContentHash::of(data);
        let rec = blobs
            .ingest(&db, hash, body(&[&data[..10], &data[10..]]), 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.size, data.len() as u64);
        assert_eq!(rec.md5, aloft_core::Md5Key::of(data));
        // Recorded in one insert with its variants: no window in which it has none.
        assert!(rec.compressed);
        assert_eq!(&read(&blobs, &hash, Encoding::Identity).await[..], data);
        let part = blobs
            .get(&hash, Encoding::Identity, Some(2..5))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&part[..], &data[2..5]);
        let br = read(&blobs, &hash, Encoding::Brotli).await;
        assert_eq!(unbrotli(&br), data);
        assert_eq!(rec.br_size, Some(br.len() as u64));
        let gz = read(&blobs, &hash, Encoding::Gzip).await;
        assert_eq!(ungzip(&gz), data);
        assert_eq!(rec.gz_size, Some(gz.len() as u64));
        // Written by rename: nothing is left in the partial folder, and no staging copy exists.
        assert_eq!(count(dir.path().join("blobs").join(PARTIAL_DIR)), 0);
        assert_eq!(count(dir.path().join("tmp")), 0);
        // The same upload again is accepted and changes nothing.
        let again = blobs.ingest(&db, hash, body(&[data]), 1 << 20).await.unwrap();
        assert_eq!(again, rec);
    }

    #[tokio::test]
    async fn precompressed_and_incompressible_blobs_have_no_variants() {
        let (_dir, db, blobs) = setup().await;
        let png: &[u8] = b"\x89PNG\r\n\x1a\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let hash = ContentHash::of(png);
        let rec = blobs.ingest(&db, hash, body(&[png]), 1 << 20).await.unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
        assert!(blobs.get(&hash, Encoding::Brotli, None).await.is_err());
        let tiny: &[u8] = b"x";
        let rec = blobs
            .ingest(&db, ContentHash::of(tiny), body(&[tiny]), 1 << 20)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
    }

    #[tokio::test]
    async fn legacy_rows_without_variants_get_them() {
        let (_dir, db, blobs) = setup().await;
        let data = "export default function App() { return null; }\n".repeat(50);
        let hash = ContentHash::of(data.as_bytes());
        blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        // What an older version left: the identity bytes, a row without variants.
        blobs.delete(&hash).await.unwrap();
        let stored = blobs.local_root.clone().unwrap();
        let path = BlobStore::local_path(&stored, &hash, Encoding::Identity);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(records::uncompressed(&db).await.unwrap(), vec![hash]);

        blobs.make_variants(&db, &hash).await.unwrap();
        assert!(records::uncompressed(&db).await.unwrap().is_empty());
        let rec = records::get(&db, &hash).await.unwrap().unwrap();
        let br = read(&blobs, &hash, Encoding::Brotli).await;
        assert_eq!(rec.br_size, Some(br.len() as u64));
        assert_eq!(unbrotli(&br), data.as_bytes());
        assert_eq!(ungzip(&read(&blobs, &hash, Encoding::Gzip).await), data.as_bytes());

        // An upload meeting such a row records the variants it made.
        sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL")
            .execute(db.pool())
            .await
            .unwrap();
        let rec = blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!(rec.br_size, Some(br.len() as u64));
    }

    #[tokio::test]
    async fn mismatch_and_oversize_leave_nothing() {
        let (dir, db, blobs) = setup().await;
        let claimed = ContentHash::of(b"something else");
        let err = blobs
            .ingest(&db, claimed, body(&[b"actual bytes"]), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Mismatch { .. }), "{err}");
        let big = ContentHash::of(b"0123456789");
        let err = blobs
            .ingest(&db, big, body(&[b"01234", b"56789"]), 8)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { max: 8 }), "{err}");
        assert!(records::get(&db, &claimed).await.unwrap().is_none());
        assert!(records::get(&db, &big).await.unwrap().is_none());
        assert!(blobs.get(&claimed, Encoding::Identity, None).await.is_err());
        // No stored file and no leftover partial file.
        assert_eq!(count(dir.path().join("blobs")), 1, "only the partial folder");
        assert_eq!(count(dir.path().join("blobs").join(PARTIAL_DIR)), 0);
        assert!(blobs.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn leftovers_of_interrupted_writes_are_removed_after_the_grace_period() {
        let (dir, db, blobs) = setup().await;
        let blob_dir = dir.path().join("blobs");
        let day_old = SystemTime::now() - Duration::from_secs(86_400);
        let aged = |path: &Path| {
            std::fs::write(path, b"partial").unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(day_old)
                .unwrap();
        };
        // A partial upload of a killed server, and object_store's staging file of an older one.
        let partial = blob_dir.join(PARTIAL_DIR).join("upload-00000000deadbeef");
        aged(&partial);
        std::fs::create_dir_all(blob_dir.join("ab")).unwrap();
        let staging = blob_dir.join("ab").join(format!("ab{}#1", "0".repeat(62)));
        aged(&staging);
        // A whole blob next to it stays.
        let data: &[u8] = b"a whole blob";
        let hash = ContentHash::of(data);
        blobs.ingest(&db, hash, body(&[data]), 1 << 20).await.unwrap();
        // A file being written now stays, whatever the grace period.
        let (writing, _file) = blobs.partial("upload").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&writing.path)
            .unwrap()
            .set_modified(day_old)
            .unwrap();

        assert_eq!(blobs.remove_leftovers(Duration::from_secs(2 * 86_400)).await, 0);
        assert!(partial.exists() && staging.exists());
        assert_eq!(blobs.remove_leftovers(Duration::from_secs(3600)).await, 2);
        assert!(!partial.exists() && !staging.exists());
        assert!(writing.path.exists());
        assert_eq!(&read(&blobs, &hash, Encoding::Identity).await[..], data);
        drop(writing);
        assert_eq!(count(blob_dir.join(PARTIAL_DIR)), 0);
        assert_eq!(blobs.remove_leftovers(Duration::ZERO).await, 0);
    }

    #[test]
    fn a_full_disk_is_named() {
        // A real ENOSPC: /dev/full refuses every write with it.
        let src = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(src.path(), "let x = 1;\n".repeat(10_000)).unwrap();
        let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
        let err = compress_file(src.path(), full, Encoding::Gzip).unwrap_err();
        assert!(is_storage_full(&err), "{err:?}");
        let err = IngestError::writing(err, Path::new("/srv/aloft/blobs"));
        assert!(
            matches!(&err, IngestError::StorageFull { dir } if dir == Path::new("/srv/aloft/blobs")),
            "{err}"
        );
        let other = IngestError::writing(std::io::Error::other("x"), Path::new("/"));
        assert!(matches!(other, IngestError::Io(_)));
    }

    #[tokio::test]
    async fn a_record_is_one_row_with_its_variants() {
        let (_dir, db, blobs) = setup().await;
        let data = "body { color: red }\n".repeat(100);
        let hash = ContentHash::of(data.as_bytes());
        blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        let row = sqlx::query("SELECT compressed, br_size, gz_size FROM blobs")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>("compressed").unwrap(), 1);
        assert!(row.try_get::<Option<i64>, _>("br_size").unwrap().is_some());
        assert!(row.try_get::<Option<i64>, _>("gz_size").unwrap().is_some());
    }

    #[tokio::test]
    async fn large_random_blobs_are_not_compressed() {
        let (_dir, db, blobs) = setup().await;
        let mut random = Vec::new();
        let mut block = ContentHash::of(b"seed").as_bytes().to_vec();
        while random.len() < 2 * SAMPLE {
            block = ContentHash::of(&block).as_bytes().to_vec();
            random.extend_from_slice(&block);
        }
        assert!(!sample_shrinks(&random[..SAMPLE]));
        let rec = blobs
            .ingest(&db, ContentHash::of(&random), body(&[&random]), 1 << 30)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
        // A large compressible one is compressed whole.
        let text = "const answer = 42; // the question is unknown\n".repeat(2 * SAMPLE / 40);
        assert!(sample_shrinks(&text.as_bytes()[..SAMPLE]));
        let rec = blobs
            .ingest(&db, ContentHash::of(text.as_bytes()), body(&[text.as_bytes()]), 1 << 30)
            .await
            .unwrap();
        assert!(rec.br_size.unwrap() < text.len() as u64 / 10);
    }

    #[test]
    fn sniffs_compressed_media() {
        assert!(is_precompressed(b"\x89PNG\r\n\x1a\n"));
        assert!(is_precompressed(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!is_precompressed(b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f"));
    }
}
