//! Content-addressed blob storage. A blob is written under a key derived from its SHA-256 only
//! after the upload has been hashed and checked, and only then is it recorded in the database;
//! a crash at any point leaves either no blob or a whole one.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
use object_store::{Attribute, GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt, PutOptions};
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
    #[error("blob storage failed: {0}")]
    Storage(#[from] object_store::Error),
    #[error("temporary file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
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

#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    tmp_dir: PathBuf,
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

impl BlobStore {
    /// Blobs under `<data>/blobs`, upload staging under `<data>/tmp` (emptied at start).
    pub fn local(data_dir: &Path) -> Result<Self, IngestError> {
        let blobs = data_dir.join("blobs");
        std::fs::create_dir_all(&blobs)?;
        let store = LocalFileSystem::new_with_prefix(&blobs)?.with_automatic_cleanup(true);
        Self::with_store(Arc::new(store), data_dir)
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
        let mut blobs = Self::with_store(store, data_dir)?;
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

    fn with_store(store: Arc<dyn ObjectStore>, data_dir: &Path) -> Result<Self, IngestError> {
        let tmp_dir = data_dir.join("tmp");
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)?;
        }
        std::fs::create_dir_all(&tmp_dir)?;
        Ok(Self {
            store,
            tmp_dir,
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

    /// Streams an upload to a temporary file while hashing it, checks it against `expected`,
    /// stores it under its hash and records it. Nothing is visible unless all of that succeeds.
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
        let tmp = tempfile::Builder::new().prefix("upload-").tempfile_in(&self.tmp_dir)?;
        let mut file = tokio::fs::File::from_std(tmp.reopen()?);
        let mut hasher = Hasher::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| IngestError::Body(e.to_string()))?;
            if hasher.len() + chunk.len() as u64 > max {
                return Err(IngestError::TooLarge { max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let (actual, md5, size) = hasher.finish();
        if actual != expected {
            return Err(IngestError::Mismatch { expected, actual });
        }
        file.sync_all().await?;
        drop(file);

        let key = Self::key(&actual, Encoding::Identity);
        if self.store.head(&key).await.is_err() {
            let mut reader = tokio::fs::File::open(tmp.path()).await?;
            let mut writer = BufWriter::new(self.store.clone(), key);
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
        records::insert(db, &actual, &md5, size).await?;
        Ok(records::get(db, &actual)
            .await?
            .ok_or_else(|| DbError::MissingBlob(actual.to_string()))?)
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

    /// Makes the brotli and gzip variants of a stored blob, keeping those that save at least 5 %,
    /// and records the outcome. Already-compressed formats are skipped.
    pub async fn make_variants(&self, db: &Database, hash: &ContentHash) -> Result<(), IngestError> {
        let bytes = self
            .store
            .get(&Self::key(hash, Encoding::Identity))
            .await?
            .bytes()
            .await?;
        let (br, gz) = tokio::task::spawn_blocking(move || {
            if is_precompressed(&bytes) {
                return Ok::<_, std::io::Error>((None, None));
            }
            let worth = |out: Vec<u8>| ((out.len() as f64) < bytes.len() as f64 * (1.0 - MIN_SAVING)).then_some(out);
            let mut br = Vec::new();
            {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 11,
                    lgwin: 22,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &bytes[..], &mut br, &params)?;
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes)?;
            let gz = gz.finish()?;
            Ok((worth(br), worth(gz)))
        })
        .await
        .map_err(|e| IngestError::Body(e.to_string()))??;
        let mut sizes = [None, None];
        for (i, (variant, encoding)) in [(br, Encoding::Brotli), (gz, Encoding::Gzip)].into_iter().enumerate() {
            if let Some(variant) = variant {
                sizes[i] = Some(variant.len() as u64);
                // On S3 the variant carries its encoding, so a presigned download decodes right.
                let mut options = PutOptions::default();
                if self.presigner.is_some()
                    && let Some(token) = encoding.token()
                {
                    options.attributes.insert(Attribute::ContentEncoding, token.into());
                }
                self.store
                    .put_opts(&Self::key(hash, encoding), Bytes::from(variant).into(), options)
                    .await?;
            }
        }
        records::set_variants(db, hash, sizes[0], sizes[1]).await?;
        Ok(())
    }
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

    async fn setup() -> (tempfile::TempDir, Database, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite(&dir.path().join("aloft.db")).await.unwrap();
        let blobs = BlobStore::local(dir.path()).unwrap();
        (dir, db, blobs)
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn ingest_verifies_and_stores() {
        let (_dir, db, blobs) = setup().await;
        let data: &[u8] = b"console.log('hello'); console.log('hello'); console.log('hello');";
        let hash = ContentHash::of(data);
        let rec = blobs
            .ingest(&db, hash, body(&[&data[..10], &data[10..]]), 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.size, data.len() as u64);
        assert_eq!(rec.md5, aloft_core::Md5Key::of(data));
        assert!(!rec.compressed);
        let got = blobs
            .get(&hash, Encoding::Identity, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], data);
        let part = blobs
            .get(&hash, Encoding::Identity, Some(2..5))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&part[..], &data[2..5]);

        blobs.make_variants(&db, &hash).await.unwrap();
        let rec = records::get(&db, &hash).await.unwrap().unwrap();
        assert!(rec.compressed);
        let br = blobs
            .get(&hash, Encoding::Brotli, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut plain).unwrap();
        assert_eq!(plain, data);
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
        // No stored file and no leftover temporary file.
        let count = |p: PathBuf| std::fs::read_dir(p).unwrap().count();
        assert_eq!(count(dir.path().join("blobs")), 0);
        assert_eq!(count(dir.path().join("tmp")), 0);
    }

    #[test]
    fn sniffs_compressed_media() {
        assert!(is_precompressed(b"\x89PNG\r\n\x1a\n"));
        assert!(is_precompressed(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!is_precompressed(b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f"));
    }
}
