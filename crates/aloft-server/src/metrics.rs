//! Prometheus metrics and the one-line-per-request log. Requests on the device routes are
//! recorded by the device hook (`device.rs`), whichever lane answered them; the rest by the
//! router's [`track`] middleware. Both write the same series and the same log line.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::protocol::MANIFEST_ROUTE;

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Installs the process-wide recorder (the `metrics` facade is global by design); call once.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The Prometheus exporter's handle, when metrics are on.
#[derive(Clone, Default)]
pub(crate) struct Exporter(pub Option<PrometheusHandle>);

/// `GET /metrics`.
pub(crate) async fn render(State(exporter): State<Exporter>) -> Response {
    match &exporter.0 {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::not_found("metrics_disabled", "metrics are not enabled on this server").into_response(),
    }
}

/// Metric handles per route, method and status, made once: recording a request then costs no
/// allocation and no registry lookup.
pub struct RequestMetrics {
    handles: RwLock<HashMap<String, ByMethodAndStatus>>,
    manifest: [Counter; 3],
    /// `GET` on the manifest route answered 200 and 204: nearly all traffic.
    manifest_get: [OnceLock<Handles>; 2],
}

/// The answers a manifest request can get.
#[derive(Debug, Clone, Copy)]
pub enum ManifestKind {
    Update = 0,
    NoUpdate = 1,
    Directive = 2,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        let kind = |k: &'static str| metrics::counter!("aloft_manifest_responses_total", "kind" => k);
        Self {
            handles: RwLock::default(),
            manifest: [kind("update"), kind("no-update"), kind("directive")],
            manifest_get: Default::default(),
        }
    }
}

type ByMethodAndStatus = HashMap<(Method, u16), Handles>;

#[derive(Clone)]
struct Handles {
    requests: Counter,
    duration: Histogram,
    bytes: Counter,
}

impl RequestMetrics {
    /// Counts a manifest answer by kind.
    pub fn manifest_response(&self, kind: ManifestKind) {
        self.manifest[kind as usize].increment(1);
    }

    /// Counts a check for a channel the app does not have (answered "no update"). Labelled by
    /// app only: channel names come from devices, so they would make the series unbounded.
    pub fn unknown_channel(&self, slug: &str) {
        metrics::counter!("aloft_unknown_channel_checks_total", "app" => slug.to_owned()).increment(1);
    }

    fn handles(&self, route: &str, method: &Method, status: u16) -> Handles {
        if let Some(h) = self
            .handles
            .read()
            .ok()
            .and_then(|m| m.get(route)?.get(&(method.clone(), status)).cloned())
        {
            return h;
        }
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ];
        let h = Handles {
            requests: metrics::counter!("aloft_http_requests_total", &labels),
            duration: metrics::histogram!("aloft_http_request_duration_seconds", "route" => route.to_owned()),
            bytes: metrics::counter!("aloft_http_response_bytes_total", "route" => route.to_owned()),
        };
        if let Ok(mut map) = self.handles.write() {
            map.entry(route.to_owned())
                .or_default()
                .insert((method.clone(), status), h.clone());
        }
        h
    }
}

/// Marks a response whose request is already recorded (by the device hook), so [`track`] does
/// not record it a second time.
#[derive(Clone, Copy)]
pub(crate) struct Recorded;

/// Records route, status, latency and bytes of every request the router answers, and logs one
/// line for it; responses the device hook recorded are left alone.
pub(crate) async fn track(State(metrics): State<Arc<RequestMetrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    if response.extensions().get::<Recorded>().is_some() {
        return response;
    }
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    let h = metrics.handles(route, &method, response.status().as_u16());
    record(&h, &method, uri.path(), &response, start);
    response
}

impl RequestMetrics {
    /// Records a request on a device route (`route` is its pattern), answered by any lane: the
    /// same series and log line as [`track`]. The usual answers to a `GET` of the manifest route
    /// find their handles without a lock or a hash.
    pub(crate) fn device(
        &self,
        route: &'static str,
        method: &Method,
        path: &str,
        response: &mut Response,
        start: Instant,
    ) {
        let status = response.status().as_u16();
        let slot = match (route == MANIFEST_ROUTE && method == Method::GET, status) {
            (true, 200) => Some(&self.manifest_get[0]),
            (true, 204) => Some(&self.manifest_get[1]),
            _ => None,
        };
        let other;
        let h = match slot {
            Some(slot) => slot.get_or_init(|| self.handles(route, method, status)),
            None => {
                other = self.handles(route, method, status);
                &other
            }
        };
        record(h, method, path, response, start);
        response.extensions_mut().insert(Recorded);
    }
}

fn record(h: &Handles, method: &Method, path: &str, response: &Response, start: Instant) {
    let elapsed = start.elapsed();
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(response.body()).exact())
        .unwrap_or(0);
    h.requests.increment(1);
    h.duration.record(elapsed.as_secs_f64());
    h.bytes.increment(bytes);
    tracing::info!(
        target: "aloft::request",
        %method,
        path,
        status = response.status().as_u16(),
        bytes,
        micros = elapsed.as_micros() as u64,
        "request"
    );
}
