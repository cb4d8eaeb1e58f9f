//! Prometheus metrics and the one-line-per-request log.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;

use crate::error::ApiError;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

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

pub async fn render(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::not_found("metrics_disabled", "metrics are not enabled on this server").into_response(),
    }
}

/// Records route, status, latency and bytes of every request, and logs one line for it.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(response.body()).exact())
        .unwrap_or(0);
    let labels = [
        ("route", route.clone()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    metrics::counter!("aloft_http_requests_total", &labels).increment(1);
    metrics::histogram!("aloft_http_request_duration_seconds", "route" => route.clone()).record(elapsed.as_secs_f64());
    metrics::counter!("aloft_http_response_bytes_total", "route" => route).increment(bytes);
    tracing::info!(
        target: "aloft::request",
        %method,
        path,
        status,
        bytes,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// Counts a manifest answer by kind: `update`, `no-update` or `directive`.
pub fn manifest_response(kind: &'static str) {
    metrics::counter!("aloft_manifest_responses_total", "kind" => kind).increment(1);
}
