//! The device hook: every request a device makes passes through here, whichever lane took it.
//!
//! Update checks arrive from three lanes (the wire lane straight off the socket, the front lane
//! in the tower service, and the router for `HEAD` and unusual paths) and asset downloads from
//! the router. Each is answered, measured and logged here, once. A per-request concern for
//! device traffic (metrics, the log line, and the fleet insights to come) belongs in
//! [`Devices::finish`], never in a router layer, which the fast lanes do not pass through.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::metrics::RequestMetrics;
use crate::protocol::assets::{self, Assets};
use crate::protocol::manifest::{self, CheckHeaders};
use crate::protocol::{ASSET_ROUTE, MANIFEST_ROUTE};
use crate::served::Served;

/// What answering a device may use: the served state and the metrics. The database and blob
/// storage are not here, so a check cannot wait on them. Cloning is two reference counts.
#[derive(Clone)]
pub(crate) struct Devices {
    served: Arc<Served>,
    metrics: Arc<RequestMetrics>,
}

impl Devices {
    pub(crate) fn new(served: Arc<Served>, metrics: Arc<RequestMetrics>) -> Self {
        Self { served, metrics }
    }

    /// An update check, from any lane: `path` as requested, the slug in it, the query string,
    /// and the headers a check reads.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        slug: &str,
        query: Option<&str>,
        headers: CheckHeaders<'_>,
    ) -> Response {
        let start = Instant::now();
        let response = manifest::answer(&self.served, &self.metrics, slug, query, headers)
            .unwrap_or_else(IntoResponse::into_response);
        self.finish(MANIFEST_ROUTE, method, path, response, start)
    }

    /// Where every device request ends: metrics and the log line.
    fn finish(
        &self,
        route: &'static str,
        method: &Method,
        path: &str,
        mut response: Response,
        start: Instant,
    ) -> Response {
        self.metrics.device(route, method, path, &mut response, start);
        response
    }
}

/// The router's update-check handler: `HEAD`, and the paths the fast lanes leave to the router
/// (percent-encoded slugs, query strings on the wire lane). Answered by [`Devices::check`], like
/// every other check.
pub(crate) async fn check(
    State(devices): State<Devices>,
    slug: Result<ApiPath<String>, ApiError>,
    request: Request,
) -> Response {
    let (method, uri) = (request.method(), request.uri());
    match slug {
        Ok(ApiPath(slug)) => devices.check(
            method,
            uri.path(),
            &slug,
            uri.query(),
            CheckHeaders::scan(request.headers()),
        ),
        Err(refused) => devices.finish(
            MANIFEST_ROUTE,
            method,
            uri.path(),
            refused.into_response(),
            Instant::now(),
        ),
    }
}

/// The router's asset handler: the download is answered by the asset module and recorded here.
pub(crate) async fn asset(
    State(devices): State<Devices>,
    State(assets): State<Arc<Assets>>,
    method: Method,
    file: Result<ApiPath<String>, ApiError>,
    request: Request,
) -> Response {
    let start = Instant::now();
    let path = request.uri().path();
    let headers: &HeaderMap = request.headers();
    let response = match file {
        Ok(ApiPath(file)) => assets::answer(&assets, &file, &method, headers)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(refused) => refused.into_response(),
    };
    devices.finish(ASSET_ROUTE, &method, path, response, start)
}
