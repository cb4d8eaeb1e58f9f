//! Where blobs live: a folder on local disk or an S3-compatible bucket; opening either, and
//! putting finished files under their keys there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aloft_core::ContentHash;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, Signer};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::partial::{InFlight, PARTIAL_DIR, Partial};
use super::variants::Variants;
use super::{BlobStore, Encoding, IngestError};

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
pub(super) struct Presigner {
    signer: Arc<dyn Signer>,
    /// The bucket prefix the store's keys live under.
    prefix: String,
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

    /// Puts the identity (when given) and the variants under their keys: by rename on local
    /// disk (then the folder is synced), by upload to S3 (each variant with its
    /// `Content-Encoding`, so a presigned download decodes right).
    pub(super) async fn store_files(
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
}
