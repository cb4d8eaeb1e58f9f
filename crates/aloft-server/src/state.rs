use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use aloft_core::ContentHash;
use aloft_store::{BlobStore, Database};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Mutex, Notify};

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
    /// Wakes the background pass that makes the variants of blobs recorded without them.
    pub(crate) variants_wanted: Arc<Notify>,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub health: crate::sync::Health,
    pub(crate) bytes_cache: crate::protocol::bytes_cache::BytesCache,
    pub(crate) request_metrics: crate::metrics::RequestMetrics,
}

impl AppState {
    /// Loads the served state from the database and starts the background pass that gives blobs
    /// recorded without variants (by older versions) theirs.
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
            variants_wanted: Arc::default(),
            metrics,
            health: crate::sync::Health::default(),
            bytes_cache,
            request_metrics: crate::metrics::RequestMetrics::default(),
        }));
        tokio::spawn(make_missing_variants(
            Arc::downgrade(&state.0),
            state.variants_wanted.clone(),
        ));
        Ok(state)
    }

    /// Asks the background pass to look for blobs without variants again now.
    pub(crate) fn want_variants(&self) {
        self.variants_wanted.notify_one();
    }
}

/// First and longest wait between passes that left a blob without its variants.
const VARIANT_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Makes the variants of every blob recorded without them, one blob at a time; a pass that
/// fails for any of them (a locked database, a full disk) is retried with exponential backoff,
/// so no blob stays identity-only until a restart. Then sleeps until woken. Ends with the state.
async fn make_missing_variants(state: Weak<Shared>, wanted: Arc<Notify>) {
    let mut backoff = VARIANT_RETRY.0;
    loop {
        let done = match state.upgrade() {
            None => return,
            Some(state) => variants_pass(&state).await,
        };
        if done {
            backoff = VARIANT_RETRY.0;
            wanted.notified().await;
        } else {
            // Woken early by an upload that met such a blob: try at once.
            let _ = tokio::time::timeout(backoff, wanted.notified()).await;
            backoff = (backoff * 2).min(VARIANT_RETRY.1);
        }
    }
}

/// One pass; whether every blob has its variants now.
async fn variants_pass(state: &Shared) -> bool {
    let hashes = match aloft_store::db::blobs::uncompressed(&state.db).await {
        Ok(hashes) => hashes,
        Err(e) => {
            tracing::warn!(error = %e, "listing blobs without compressed variants failed; retrying");
            return false;
        }
    };
    let mut done = true;
    for hash in hashes {
        match state.blobs.make_variants(&state.db, &hash).await {
            Ok(()) => tracing::info!(%hash, "made the compressed variants of a blob recorded without them"),
            Err(e) => {
                tracing::warn!(%hash, error = %e, "making compressed variants failed; serving identity until a retry succeeds");
                done = false;
            }
        }
    }
    done
}
