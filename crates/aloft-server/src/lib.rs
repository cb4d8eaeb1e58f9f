// Only what other crates use is `pub`; everything else is `pub(crate)` or narrower. The lint
// (an error under CI's `-D warnings`) keeps it so.
#![warn(unreachable_pub)]
//! Aloft's HTTP surfaces. [`app`] builds the production service; every test goes through it.
//!
//! - `conn/`: the connection layer: accept loop, the wire lane, the front lane (tower service).
//! - `device`: the hook every device request passes through, on every lane.
//! - `protocol/`: what devices call (manifest, assets): the device routes, answered from memory.
//! - `api/`: the management API under `/api/v1`, bearer-token protected.
//! - `dashboard/`: the web dashboard at `/`, for signed-in users.
//! - `service/`: the use-cases behind the API and the dashboard.
//! - `served`: the in-memory state a check is answered from, rebuilt when a change commits.
//! - `state`: the parts handlers are given; `jobs`: background work and its shutdown;
//!   `patches`: computing bundle patches, one of those jobs.

pub mod api;
mod conn;
mod dashboard;
mod device;
mod error;
mod explain;
mod extract;
mod insights;
mod jobs;
mod metrics;
mod patches;
mod protocol;
mod served;
mod service;
mod state;
mod sync;
mod webhooks;

use axum::Router;
use axum::routing::get;

pub use conn::{Front, raise_open_file_limit, serve};
pub use error::{ApiError, database_hint};
pub use jobs::Jobs;
pub use metrics::install_recorder;
pub use protocol::assets::AssetDelivery;
pub use state::{AppState, ServerConfig};

/// Dashboard users made straight in the database, for `aloft users create/reset` without a
/// server (the first admin of a fresh install). Each returns the user's email and a one-time
/// sign-in link under `public_url`, valid 24 hours; an error is the message to show.
pub mod offline_users {
    use aloft_store::Database;

    /// Adds a user with `role` (admin, publisher or viewer) for `apps`.
    pub async fn create(
        db: &Database,
        public_url: &str,
        email: &str,
        role: &str,
        apps: &[String],
    ) -> Result<(String, String), String> {
        let (user, secret) =
            crate::service::users::create(db, &crate::service::users::offline_actor(), email, role, apps)
                .await
                .map_err(|e| crate::ApiError::from(e).message)?;
        Ok((user.email, crate::service::users::link_url(public_url, &secret)))
    }

    /// A new sign-in link for an existing user; their earlier links stop working.
    pub async fn reset(db: &Database, public_url: &str, email: &str) -> Result<(String, String), String> {
        let (user, secret) = crate::service::users::reset(db, &crate::service::users::offline_actor(), email)
            .await
            .map_err(|e| crate::ApiError::from(e).message)?;
        Ok((user.email, crate::service::users::link_url(public_url, &secret)))
    }
}

/// The whole application: device protocol, management API, health and metrics. Update checks
/// take the front lane; the rest goes to the router.
pub fn app(state: AppState) -> Front {
    Front::new(state.devices(), state.assets.clone(), router(state))
}

fn router(state: AppState) -> Router {
    let dashboard = match state.config.dashboard {
        true => dashboard::routes(&state),
        false => Router::new(),
    };
    Router::new()
        // Device routes: answered and recorded by the device hook.
        .route(protocol::MANIFEST_ROUTE, get(device::check))
        .route(protocol::ASSET_ROUTE, get(device::asset))
        .nest("/api/v1", api::routes(&state))
        .merge(dashboard)
        .route("/healthz", get(healthz))
        .route("/readyz", get(sync::readyz))
        .route("/metrics", get(metrics::render))
        // A route layer sees the matched route; it leaves alone what the device hook recorded.
        .route_layer(axum::middleware::from_fn_with_state(
            state.request_metrics.clone(),
            metrics::track,
        ))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
