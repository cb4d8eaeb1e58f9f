//! What devices call: the manifest endpoint and the asset endpoint (docs/protocol.md §1-§5).

pub(crate) mod assets;
pub mod bytes_cache;
pub(crate) mod manifest;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(crate::metrics::MANIFEST_ROUTE, get(manifest::get_manifest))
        .route("/assets/{file}", get(assets::get_asset))
}
