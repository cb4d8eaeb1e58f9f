//! The management API under `/api/v1`. Every route requires a bearer token.

mod apps;
mod auth;
mod blobs;
mod publish;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

use crate::state::AppState;

pub use auth::Caller;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps", get(apps::list_apps).post(apps::create_app))
        .route("/apps/{slug}", get(apps::show_app))
        .route(
            "/apps/{slug}/signing-key",
            put(apps::set_signing_key).delete(apps::delete_signing_key),
        )
        .route(
            "/apps/{slug}/publish/prepare",
            post(publish::prepare_publish),
        )
        .route("/apps/{slug}/publish", post(publish::publish))
        .route("/blobs/missing", post(blobs::missing_blobs))
        // Uploads stream to disk under their own size limit.
        .route(
            "/blobs/{hash}",
            put(blobs::upload_blob).layer(DefaultBodyLimit::disable()),
        )
}
