//! The state the router's handlers are given, built once at start-up. Each part is owned by the
//! module that uses it; this file only holds them together and hands each handler the part it
//! asks for (`State<Part>` through [`FromRef`]), so a handler that needs less cannot reach more:
//! device routes get [`Devices`] (served state and metrics) and the asset module's [`Assets`],
//! never the database handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aloft_store::{BlobStore, Database};
use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Mutex, Notify};

use crate::device::Devices;
use crate::insights::Recorder;
use crate::metrics::{Exporter, RequestMetrics};
use crate::protocol::assets::{AssetDelivery, Assets};
use crate::served::Served;
use crate::sync::{Health, Probe};

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
    /// Whether the web dashboard is served at `/`.
    pub dashboard: bool,
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

/// Everything the management handlers can reach. Cloning it (axum does, for every extractor and
/// middleware) is one reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds. The settings and the database are open to the tests; the rest is
/// this crate's own.
pub struct Shared {
    pub config: ServerConfig,
    pub db: Database,
    pub(crate) blobs: BlobStore,
    pub(crate) served: Arc<Served>,
    /// Asset delivery and its caches.
    pub(crate) assets: Arc<Assets>,
    /// Publishes are serialised so `createdAt` is strictly increasing per app.
    pub(crate) publish_lock: Arc<Mutex<()>>,
    /// Wakes the background pass (`jobs.rs`) that makes the variants of blobs recorded without.
    pub(crate) variants_wanted: Arc<Notify>,
    pub(crate) exporter: Exporter,
    pub(crate) health: Arc<Health>,
    pub(crate) request_metrics: Arc<RequestMetrics>,
    /// What devices report, counted until the insights job stores it.
    pub(crate) insights: Arc<Recorder>,
    /// Wakes the patches job (`jobs.rs`): a publish recorded patches to compute.
    pub(crate) patches_wanted: Arc<Notify>,
    /// How many bundle patches this process computes at once (0: none, it only serves them).
    patch_workers: AtomicUsize,
}

impl AppState {
    /// Loads the served state from the database. Background work is started separately, with
    /// [`crate::Jobs::start`].
    pub async fn new(
        config: ServerConfig,
        db: Database,
        blobs: BlobStore,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, aloft_store::DbError> {
        let served = Arc::new(Served::load(&db).await?);
        let health = Arc::new(Health::default());
        let assets = Arc::new(Assets::new(
            db.clone(),
            blobs.clone(),
            health.clone(),
            config.asset_delivery,
            config.asset_cache_bytes,
        ));
        Ok(Self(Arc::new(Shared {
            config,
            db,
            blobs,
            served,
            assets,
            publish_lock: Arc::default(),
            variants_wanted: Arc::default(),
            exporter: Exporter(metrics),
            health,
            request_metrics: Arc::default(),
            insights: Arc::default(),
            patches_wanted: Arc::default(),
            patch_workers: AtomicUsize::new(1),
        })))
    }

    /// Turns recording what devices report on or off (`--insights`); on by default.
    pub fn record_insights(&self, on: bool) {
        self.insights.set_enabled(on);
    }

    /// How many bundle patches this process computes at once (`--patch-workers`, default 1;
    /// 0: none, another replica computes them). Read when the jobs start.
    pub fn set_patch_workers(&self, workers: usize) {
        self.patch_workers.store(workers, Ordering::Relaxed);
    }

    pub(crate) fn patch_workers(&self) -> usize {
        self.patch_workers.load(Ordering::Relaxed)
    }

    /// Wakes the patches job: there are new patches to compute.
    pub(crate) fn want_patches(&self) {
        self.patches_wanted.notify_one();
    }

    /// Asks the background pass to look for blobs without variants again now.
    pub(crate) fn want_variants(&self) {
        self.variants_wanted.notify_one();
    }

    /// What answering devices may use.
    pub(crate) fn devices(&self) -> Devices {
        Devices::new(self.served.clone(), self.request_metrics.clone(), self.insights.clone())
    }
}

impl FromRef<AppState> for Devices {
    fn from_ref(state: &AppState) -> Self {
        state.devices()
    }
}

impl FromRef<AppState> for Arc<Assets> {
    fn from_ref(state: &AppState) -> Self {
        state.assets.clone()
    }
}

impl FromRef<AppState> for Arc<RequestMetrics> {
    fn from_ref(state: &AppState) -> Self {
        state.request_metrics.clone()
    }
}

impl FromRef<AppState> for Exporter {
    fn from_ref(state: &AppState) -> Self {
        state.exporter.clone()
    }
}

impl FromRef<AppState> for Probe {
    fn from_ref(state: &AppState) -> Self {
        Probe {
            db: state.db.clone(),
            health: state.health.clone(),
        }
    }
}
