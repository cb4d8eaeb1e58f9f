use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use aloft_core::ContentHash;
use aloft_store::{BlobStore, Database};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Mutex, Semaphore};

use crate::served::Served;

/// Settings the HTTP surfaces need, resolved by the binary before start-up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Absolute base URL devices reach this server at, without a trailing slash.
    pub public_url: String,
    /// Largest accepted blob upload, in bytes.
    pub max_upload_bytes: u64,
    /// Base URL asset links in manifests use instead of `public_url` (a CDN in front of Aloft);
    /// links are `{base}/assets/{sha256}.{ext}`.
    pub asset_base_url: Option<String>,
    pub asset_delivery: AssetDelivery,
    /// Memory for asset bytes kept between requests (0: none).
    pub asset_cache_bytes: usize,
}

/// How `/assets/…` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssetDelivery {
    /// Stream the bytes through Aloft.
    #[default]
    Proxy,
    /// Redirect to a presigned URL of the object in S3, valid for this long.
    Redirect { ttl: std::time::Duration },
}

impl ServerConfig {
    /// Absolute prefix of asset URLs written into manifests, ending in `/`.
    pub fn asset_base_url(&self) -> String {
        let base = self.asset_base_url.as_deref().unwrap_or(&self.public_url);
        format!("{}/assets/", base.trim_end_matches('/'))
    }

    pub fn manifest_url(&self, slug: &str) -> String {
        format!("{}/apps/{slug}/manifest", self.public_url)
    }
}

/// Everything a handler can reach. Built eagerly at start-up. Cloning it (axum does, for every
/// extractor and middleware) is one reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: ServerConfig,
    pub db: Database,
    pub blobs: BlobStore,
    pub served: Served,
    /// Blob records whose variants are final, so an asset request needs no database query.
    pub(crate) blob_cache: RwLock<std::collections::HashMap<ContentHash, crate::protocol::assets::Servable>>,
    /// Publishes are serialised so `createdAt` is strictly increasing per app.
    pub(crate) publish_lock: Arc<Mutex<()>>,
    /// Compression runs one blob at a time, off the request path.
    pub(crate) compression: Semaphore,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub health: crate::sync::Health,
    pub(crate) bytes_cache: crate::protocol::bytes_cache::BytesCache,
    pub(crate) request_metrics: crate::metrics::RequestMetrics,
}

impl AppState {
    /// Loads the served state from the database and re-queues unfinished compression.
    pub async fn new(
        config: ServerConfig,
        db: Database,
        blobs: BlobStore,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, aloft_store::DbError> {
        let served = Served::load(&db).await?;
        let bytes_cache = crate::protocol::bytes_cache::BytesCache::new(config.asset_cache_bytes);
        let state = Self(Arc::new(Shared {
            config,
            db,
            blobs,
            served,
            blob_cache: RwLock::default(),
            publish_lock: Arc::default(),
            compression: Semaphore::new(1),
            metrics,
            health: crate::sync::Health::default(),
            bytes_cache,
            request_metrics: crate::metrics::RequestMetrics::default(),
        }));
        for hash in aloft_store::db::blobs::uncompressed(&state.db).await? {
            state.spawn_compression(hash);
        }
        Ok(state)
    }

    /// Makes a blob's brotli and gzip variants in the background.
    pub(crate) fn spawn_compression(&self, hash: ContentHash) {
        let state = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = state.compression.acquire().await else {
                return;
            };
            if let Err(e) = state.blobs.make_variants(&state.db, &hash).await {
                tracing::warn!(%hash, error = %e, "making compressed variants failed; serving identity");
            }
        });
    }
}
