//! The device hook: every request a device makes passes through here, whichever lane took it.
//!
//! Update checks arrive from three lanes (the wire lane straight off the socket, the front lane
//! in the tower service, and the router for `HEAD` and unusual paths) and asset downloads from
//! two (the wire lane, and the router for the rest). Each is answered, measured and logged here, once. A per-request concern for
//! device traffic (metrics, the log line, and the fleet insights to come) belongs in
//! [`Devices::finish`], never in a router layer, which the fast lanes do not pass through.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method};
use axum::response::{IntoResponse, Response};

use aloft_core::ContentHash;
use aloft_core::time::Millis;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::insights::Recorder;
use crate::metrics::RequestMetrics;
use crate::protocol::assets::{self, Assets};
use crate::protocol::manifest::{self, CheckHeaders, Facts};
use crate::protocol::patches::{self, LaunchRequest, PatchAsk};
use crate::protocol::{
    ASSET_ROUTE, CURRENT_UPDATE_ID, EAS_CLIENT_ID, EMBEDDED_UPDATE_ID, MANIFEST_ROUTE, REQUESTED_UPDATE_ID,
};
use crate::served::Served;

/// What answering a device may use: the served state, the metrics and the insights recorder.
/// The database and blob storage are not here, so a check cannot wait on them. Cloning is three
/// reference counts.
#[derive(Clone)]
pub(crate) struct Devices {
    served: Arc<Served>,
    metrics: Arc<RequestMetrics>,
    insights: Arc<Recorder>,
}

impl Devices {
    pub(crate) fn new(served: Arc<Served>, metrics: Arc<RequestMetrics>, insights: Arc<Recorder>) -> Self {
        Self {
            served,
            metrics,
            insights,
        }
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
        let params = match manifest::params(query) {
            Ok(params) => params,
            Err(refused) => return self.finish(MANIFEST_ROUTE, method, path, refused.into_response(), start),
        };
        let mut facts = Facts::default();
        let response = manifest::answer(&self.served, &self.metrics, slug, &params, headers, &mut facts)
            .unwrap_or_else(IntoResponse::into_response);
        self.insights.check(&facts, response.status().as_u16(), Millis::now());
        self.finish(MANIFEST_ROUTE, method, path, response, start)
    }

    /// Whether a download is of a launch asset, and if so which patch would answer it
    /// (docs/protocol.md §9): with `A-IM: bsdiff`, for the launch asset of the update in
    /// `Expo-Requested-Update-ID`, of an app with patches on, from the device's current update
    /// (`Expo-Current-Update-ID`, the embedded update's id when it runs that), else its embedded
    /// update. Never for any other asset.
    fn launch_request(&self, hash: &ContentHash, headers: &HeaderMap) -> Option<LaunchRequest> {
        let snapshot = self.served.snapshot();
        if !snapshot.is_launch_asset(hash) {
            return None;
        }
        let asks = patches::asks_bsdiff(headers);
        let patch = asks
            .then(|| {
                let target = header_uuid(headers, &REQUESTED_UPDATE_ID)?;
                let (app_id, update) = snapshot.update(&target)?;
                if update.launch_asset.as_ref() != Some(hash) || !snapshot.patches_on(app_id) {
                    return None;
                }
                let base =
                    header_uuid(headers, &CURRENT_UPDATE_ID).or_else(|| header_uuid(headers, &EMBEDDED_UPDATE_ID))?;
                (base != target).then_some(PatchAsk { target, base })
            })
            .flatten();
        Some(LaunchRequest { asks, patch })
    }

    /// An asset download (`GET` or `HEAD`), from any lane: `file` as the path names it, or why
    /// the path was refused. Answered by the asset module; an install is recorded here.
    pub(crate) async fn asset(
        &self,
        assets: &Assets,
        method: &Method,
        path: &str,
        file: Result<&str, ApiError>,
        headers: &HeaderMap,
    ) -> Response {
        let start = Instant::now();
        let name = file.as_ref().ok().copied();
        let response = match file {
            Ok(file) => {
                let launch = assets::hash_of(file).and_then(|hash| self.launch_request(&hash, headers));
                assets::answer(assets, file, method, headers, launch)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            }
            Err(refused) => refused.into_response(),
        };
        // An install: the launch asset of the update the device is downloading, fetched (not a
        // `HEAD`, which only warms a cache). Asset requests carry the device's headers (§1.2).
        if method == Method::GET
            && (response.status().is_success() || response.status() == axum::http::StatusCode::NOT_MODIFIED)
            && let Some(hash) = name.and_then(assets::hash_of)
            && let Some(requested) = header_uuid(headers, &REQUESTED_UPDATE_ID)
            && let Some(client_id) = headers.get(&EAS_CLIENT_ID).and_then(|v| v.to_str().ok())
        {
            self.insights
                .asset(&self.served.snapshot(), &hash, requested, client_id, Millis::now());
        }
        self.finish(ASSET_ROUTE, method, path, response, start)
    }

    /// Where every device request ends: metrics and the log line. (What the request tells about
    /// the device is recorded by the insights before this, from what answering it found out.)
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

/// The router's asset handler: the paths the wire lane leaves to the router (percent-encoded
/// names, connections hyper took over). Answered by [`Devices::asset`], like the wire lane's.
pub(crate) async fn asset(
    State(devices): State<Devices>,
    State(assets): State<Arc<Assets>>,
    method: Method,
    file: Result<ApiPath<String>, ApiError>,
    request: Request,
) -> Response {
    let file = match &file {
        Ok(ApiPath(file)) => Ok(file.as_str()),
        Err(refused) => Err(refused.clone()),
    };
    devices
        .asset(&assets, &method, request.uri().path(), file, request.headers())
        .await
}

fn header_uuid(headers: &HeaderMap, name: &HeaderName) -> Option<Uuid> {
    Uuid::parse_str(headers.get(name)?.to_str().ok()?.trim()).ok()
}
