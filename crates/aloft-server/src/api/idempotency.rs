//! Safe retries: a write that carries an `Idempotency-Key` acts once, and a retry with the same
//! key gets the first answer again instead of acting twice.
//!
//! Keys belong to the caller's token, so two tokens never see each other's. The first request
//! with a key claims it in the database before it acts (see `aloft_store::db::idempotency`: a
//! unique row, so that of two requests with one key, on any replica, one acts); later ones get
//! `409 idempotency_in_progress` while it runs, its stored answer (with `idempotent-replayed:
//! true`) once it finished, or `422 idempotency_key_reused` if they are a different request
//! (method, path, query or body). Answers of 5xx, 408 and 429 are not kept: a retry acts again.
//!
//! Once the request is read, the rest runs in a task of its own: a client that goes away (the
//! connection cut that made it retry) cancels neither the write nor the recording of its answer.
//! `?prepare=true` changes nothing and is not recorded, so one key can cover a prepare and the
//! commit that follows it.

use std::sync::atomic::{AtomicI64, Ordering};

use aloft_core::ContentHash;
use aloft_core::time::Millis;
use aloft_store::db::idempotency::{self, Claim, Stored};
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::auth::{Caller, Who};
use crate::error::ApiError;
use crate::state::AppState;

/// The request header.
pub(crate) const HEADER: &str = "idempotency-key";
/// The response header on a replayed answer.
pub(crate) const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Bodies of recorded writes are read whole before they run: the limit the JSON extractors
/// apply anyway (axum's default body limit).
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Expired keys are removed by the first claim after this long (per process). A claim never
/// sees an expired key either way; this only keeps the table small.
const SWEEP_EVERY_MS: i64 = 10 * 60 * 1000;
static LAST_SWEEP: AtomicI64 = AtomicI64::new(i64::MIN);

/// The layer on every route that records its writes (`Endpoint::replays`).
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return next.run(request).await;
    };
    if values.next().is_some() {
        return invalid_key("send one Idempotency-Key header, not several");
    }
    let Some(key) = parse_key(value) else {
        return invalid_key("an Idempotency-Key is 1 to 255 visible ASCII characters (a random UUID is a good one)");
    };
    if super::publish::prepare(request.uri()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(Caller {
        who: Who::Token { id: token_id, .. },
        ..
    }) = Caller::authenticate(&parts, &state).await
    else {
        // The route refuses the caller itself, exactly as it would without a key.
        return next.run(Request::from_parts(parts, body)).await;
    };
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::bad_request("body_interrupted", "the request body ended before it was complete")
                .into_response();
        }
    };
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
    let fingerprint = fingerprint(&parts.method, &uri, &bytes);
    let request = Request::from_parts(parts, Body::from(bytes));
    // Spawned: dropping this future (the client went away) leaves the task running to the end.
    let task = tokio::spawn(act_once(state, token_id, key, fingerprint, request, next));
    match task.await {
        Ok(response) => response,
        Err(e) => ApiError::internal("a recorded request failed", &e).into_response(),
    }
}

/// Claims the key, then acts and records the answer; or answers from the claim's holder.
async fn act_once(
    state: AppState,
    token_id: i64,
    key: String,
    fingerprint: String,
    request: Request,
    next: Next,
) -> Response {
    let now = Millis::now();
    if sweep_due(now) {
        match idempotency::expire(&state.db, now).await {
            Ok(removed) => tracing::debug!(removed, "expired idempotency keys removed"),
            Err(e) => tracing::warn!(error = %e, "removing expired idempotency keys failed"),
        }
    }
    let claimed_at = match idempotency::claim(&state.db, token_id, &key, &fingerprint, now).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Claim::Acquired { claimed_at }) => claimed_at,
        Ok(Claim::Done { fingerprint: first, .. } | Claim::Running { fingerprint: first }) if first != fingerprint => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request (method, path, query or body); \
                 use a new key for a new request",
            )
            .into_response();
        }
        Ok(Claim::Done { answer, .. }) => return replay(answer),
        Ok(Claim::Running { .. }) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running; retry shortly to get its answer",
            )
            .into_response();
        }
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            release(&state, token_id, &key, claimed_at).await;
            return ApiError::internal("producing the answer failed", &e).into_response();
        }
    };
    if transient(parts.status) {
        release(&state, token_id, &key, claimed_at).await;
    } else {
        let answer = Stored {
            status: parts.status.as_u16(),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.to_vec(),
        };
        match idempotency::complete(&state.db, token_id, &key, claimed_at, &answer).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("an Idempotency-Key expired or was taken over before its answer was stored"),
            // The change happened; only its replay is lost. A retry waits out the lease.
            Err(e) => tracing::error!(error = %e, "storing the answer of an Idempotency-Key failed"),
        }
    }
    Response::from_parts(parts, Body::from(body))
}

/// Whether this process should sweep expired keys now (one caller wins per period).
fn sweep_due(now: Millis) -> bool {
    let last = LAST_SWEEP.load(Ordering::Relaxed);
    now.0.saturating_sub(last) >= SWEEP_EVERY_MS
        && LAST_SWEEP
            .compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

async fn release(state: &AppState, token_id: i64, key: &str, claimed_at: Millis) {
    if let Err(e) = idempotency::release(&state.db, token_id, key, claimed_at).await {
        tracing::error!(error = %e, "releasing an Idempotency-Key failed; retries wait out its lease");
    }
}

/// Answers a retry should not get again: it may well succeed.
fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

fn replay(answer: Stored) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(value) = answer.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn invalid_key(message: &str) -> Response {
    ApiError::bad_request("invalid_idempotency_key", message).into_response()
}

/// A key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
fn parse_key(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let visible = (1..=MAX_KEY_LEN).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    visible.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// What makes two requests the same: method, path, query and body.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> String {
    let text = format!(
        "{method}\n{}\n{}\n{}",
        uri.path(),
        uri.query().unwrap_or(""),
        ContentHash::of(body).to_hex()
    );
    ContentHash::of(text.as_bytes()).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        let key = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap());
        assert_eq!(key("a").as_deref(), Some("a"));
        assert_eq!(
            key("6f1c0e1a-3b7d-4c55-9d1e-2f6a8b9c0d1e").as_deref(),
            Some("6f1c0e1a-3b7d-4c55-9d1e-2f6a8b9c0d1e")
        );
        assert_eq!(key(&"~".repeat(255)).map(|k| k.len()), Some(255));
        assert_eq!(key(&"x".repeat(256)), None);
        assert_eq!(key(""), None);
        assert_eq!(key("two words"), None);
        assert_eq!(key("tab\there"), None);
        assert_eq!(parse_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()), None);
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let base = fingerprint(&Method::POST, &uri("/api/v1/apps/a/publish"), b"{}");
        assert_eq!(base, fingerprint(&Method::POST, &uri("/api/v1/apps/a/publish"), b"{}"));
        for other in [
            fingerprint(&Method::PUT, &uri("/api/v1/apps/a/publish"), b"{}"),
            fingerprint(&Method::POST, &uri("/api/v1/apps/b/publish"), b"{}"),
            fingerprint(&Method::POST, &uri("/api/v1/apps/a/publish?x=1"), b"{}"),
            fingerprint(&Method::POST, &uri("/api/v1/apps/a/publish"), b"{ }"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn one_sweep_per_period() {
        let t = Millis(LAST_SWEEP.load(Ordering::Relaxed).max(0) + 10 * SWEEP_EVERY_MS);
        assert!(sweep_due(t));
        assert!(!sweep_due(t));
        assert!(!sweep_due(Millis(t.0 + SWEEP_EVERY_MS - 1)));
        assert!(sweep_due(Millis(t.0 + SWEEP_EVERY_MS)));
    }

    #[test]
    fn only_transient_answers_are_forgotten() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [200, 201, 204, 400, 403, 404, 409, 413, 422] {
            assert!(!transient(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
