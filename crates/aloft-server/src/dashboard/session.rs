//! Who is signed in, and proof that a form came from their own page.
//!
//! - The session cookie holds a random secret; the database keeps its SHA-256 (so every replica
//!   knows every session). `HttpOnly`, `SameSite=Lax`, and `Secure` when the public URL is https.
//! - Every form carries the session's CSRF token; [`Posted`] refuses a form without it, with
//!   another session's token, or from a browser that is no longer signed in.
//! - The sign-in forms (before there is a session) carry a token that must match a short-lived
//!   cookie of their own ([`PRE_COOKIE`]), so another site cannot sign a browser in.
//! - Failed sign-ins are limited per email and per address ([`Limiter`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aloft_store::db::tokens::constant_time_eq;
use aloft_store::db::users::{self, Session};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::{Dash, Failure};
use crate::api::auth::{Caller, Who, remote};

pub(super) const SESSION_COOKIE: &str = "aloft_session";
pub(super) const PRE_COOKIE: &str = "aloft_pre";

/// The value of cookie `name` in the request.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: the cookie, or its removal when `value` is `None`.
pub(super) fn set_cookie(dash: &Dash, name: &str, value: Option<&str>, max_age_seconds: i64) -> String {
    let secure = if dash.secure_cookies { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

/// A signed-in user: their session, and the caller the access rules see.
pub(super) struct Signed {
    pub session: Session,
    pub caller: Caller,
}

impl Signed {
    async fn from_parts(parts: &Parts, dash: &Dash) -> Result<Option<Self>, Failure> {
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let Some(session) = users::session(&dash.state.db, secret).await.map_err(Failure::store)? else {
            return Ok(None);
        };
        let caller = Caller {
            who: Who::User {
                email: session.user.email.clone(),
            },
            scope: session.user.scope.clone(),
            remote: remote(parts),
        };
        Ok(Some(Self { session, caller }))
    }

    pub(super) fn admin(&self) -> bool {
        matches!(self.caller.scope, aloft_store::db::tokens::Scope::Admin)
    }
}

/// Pages: a signed-in user, or a redirect to the sign-in page (which comes back here).
impl FromRequestParts<Dash> for Signed {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Response> {
        match Self::from_parts(parts, dash).await {
            Ok(Some(signed)) => Ok(signed),
            Ok(None) => {
                let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
                Err(Redirect::to(&format!("/sign-in?next={next}")).into_response())
            }
            Err(failure) => Err(failure.into_response()),
        }
    }
}

/// A form posted by a signed-in user from one of their session's pages: the CSRF token checked,
/// the fields parsed into `T`.
pub(super) struct Posted<T> {
    pub signed: Signed,
    pub form: T,
}

/// The largest form accepted (the biggest is a signing key or a webhook; a few KB).
const MAX_FORM: usize = 64 * 1024;

async fn form_fields(request: Request) -> Result<(Parts, Vec<(String, String)>), Failure> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "form_too_large", "the form is too large"))?;
    let fields = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((parts, fields))
}

fn parse<T: DeserializeOwned>(fields: &[(String, String)]) -> Result<T, Failure> {
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().filter(|(k, _)| k != "csrf"))
        .finish();
    serde_urlencoded::from_str(&encoded).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_form",
            format!("the form is not valid: {e}"),
        )
    })
}

fn csrf_refused() -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "csrf_refused",
        "this form did not come from your current session (it is old, from another browser, or you signed out); \
         reload the page and try again",
    )
}

impl<T: DeserializeOwned + Send> FromRequest<Dash> for Posted<T> {
    type Rejection = Failure;
    async fn from_request(request: Request, dash: &Dash) -> Result<Self, Failure> {
        let (parts, fields) = form_fields(request).await?;
        let Some(signed) = Signed::from_parts(&parts, dash).await? else {
            return Err(csrf_refused());
        };
        let token = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
        if !token.is_some_and(|t| constant_time_eq(t.as_bytes(), signed.session.csrf.as_bytes())) {
            return Err(csrf_refused());
        }
        Ok(Posted {
            signed,
            form: parse(&fields)?,
        })
    }
}

/// A sign-in form (no session yet): its token must match the [`PRE_COOKIE`] its page set.
pub(super) struct PreForm<T> {
    pub remote: String,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Dash> for PreForm<T> {
    type Rejection = Failure;
    async fn from_request(request: Request, _: &Dash) -> Result<Self, Failure> {
        let (parts, fields) = form_fields(request).await?;
        let token = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
        let expected = cookie(&parts.headers, PRE_COOKIE);
        match (token, expected) {
            (Some(t), Some(e)) if constant_time_eq(t.as_bytes(), e.as_bytes()) => {}
            _ => return Err(csrf_refused()),
        }
        Ok(PreForm {
            remote: remote(&parts),
            form: parse(&fields)?,
        })
    }
}

/// How many failed sign-ins are allowed in [`WINDOW`]: per email, and per address.
const PER_EMAIL: usize = 5;
const PER_ADDRESS: usize = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins in the last [`WINDOW`], per email and per address, in this replica's memory.
#[derive(Default)]
pub(crate) struct Limiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    fn keys(email: &str, address: &str) -> [(String, usize); 2] {
        // The port changes per connection; the address is what identifies a client.
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        [
            (format!("email {}", email.trim().to_lowercase()), PER_EMAIL),
            (format!("from {host}"), PER_ADDRESS),
        ]
    }

    /// When sign-in for this email from this address may be tried again, if not now.
    pub(super) fn blocked(&self, email: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(email, address)
            .into_iter()
            .filter_map(|(key, limit)| {
                let times = failures.get_mut(&key)?;
                while times.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                    times.pop_front();
                }
                (times.len() >= limit).then(|| times.front().map_or(WINDOW, |t| WINDOW - now.duration_since(*t)))
            })
            .max()
    }

    pub(super) fn failed(&self, email: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            // Bounded memory under a flood of made-up emails: start over.
            failures.clear();
        }
        for (key, _) in Self::keys(email, address) {
            failures.entry(key).or_default().push_back(Instant::now());
        }
    }

    pub(super) fn succeeded(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("email {}", email.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_blocks_after_five_failures_per_email() {
        let limiter = Limiter::default();
        for _ in 0..PER_EMAIL {
            assert!(limiter.blocked("a@x", "1.2.3.4:5").is_none());
            limiter.failed("A@x", "1.2.3.4:5");
        }
        assert!(
            limiter.blocked("a@x", "9.9.9.9:1").is_some(),
            "per email, from anywhere"
        );
        assert!(limiter.blocked("b@x", "9.9.9.9:1").is_none());
        limiter.succeeded("a@x");
        assert!(limiter.blocked("a@x", "9.9.9.9:1").is_none());
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; aloft_session=abc; b=2".parse().expect("header"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
