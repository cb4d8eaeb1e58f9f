//! Aloft's HTTP surfaces. [`app`] builds the production router; every test goes through it.
//!
//! - `protocol/`: what devices call (manifest, assets). Served from memory; never imports `api`.
//! - `api/`: the management API under `/api/v1` (apps, blobs, publish), bearer-token protected.
//! - `service/`: the use-cases behind the API (publishing).
//! - `served`: the in-memory state a check is answered from, rebuilt when a publish commits.

pub mod api;
pub mod error;
mod explain;
mod extract;
pub mod front;
pub(crate) mod metrics;
pub mod protocol;
pub mod served;
pub mod service;
mod state;
pub mod sync;
mod wire;

use axum::Router;
use axum::routing::get;

pub use error::ApiError;
pub use front::{Front, serve};
pub use metrics::install_recorder;
pub use state::{AppState, AssetDelivery, ServerConfig};

/// The whole application: device protocol, management API, health and metrics. Update checks
/// take the front lane; the rest goes to the router.
pub fn app(state: AppState) -> Front {
    Front::new(state.clone(), router(state))
}

fn router(state: AppState) -> Router {
    Router::new()
        .merge(protocol::routes())
        .nest("/api/v1", api::routes(&state))
        .route("/healthz", get(healthz))
        .route("/readyz", get(sync::readyz))
        .route("/metrics", get(metrics::render))
        // A route layer sees the matched route; unmatched requests are logged by the fallbacks.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}
