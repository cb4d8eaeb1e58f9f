//! The web dashboard: server-rendered pages (askama templates in `templates/dashboard/`) at `/`
//! of the public URL, for people signed in with an email and password (`session`).
//!
//! Rules every page keeps:
//! - Reading works without JavaScript; the one small script (`ui/aloft.js`) adds the theme
//!   button and refreshes live figures. The CSS and script are compiled into the binary.
//! - Access is the API's: a user's role is a token scope, and each handler asks
//!   [`Caller::app`](crate::api::auth::Caller::app) for the app with the need of its action, as
//!   the API's gates do. A viewer sees no controls, and is refused if they post anyway.
//! - Every change goes through the same `service` function as its API route, with the user's
//!   email as the actor of its audit entry.
//! - Every form carries the session's CSRF token (`session::Posted` checks it); every change
//!   that affects devices shows what devices will get and asks to confirm first.

mod admin;
mod apps;
mod chart;
mod confirm;
mod groups;
mod session;
mod sign_in;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

/// What the dashboard's handlers are given.
#[derive(Clone)]
pub(crate) struct Dash {
    pub state: AppState,
    /// Cookies are `Secure` when the public URL is https.
    pub secure_cookies: bool,
    pub(super) limiter: Arc<session::Limiter>,
}

/// The stylesheet and script, embedded; their URLs carry this version so browsers may keep them.
const CSS: &str = include_str!("ui/aloft.css");
const JS: &str = include_str!("ui/aloft.js");
const UI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The dashboard's routes, to merge into the application's router.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let dash = Dash {
        state: state.clone(),
        secure_cookies: state.config.public_url.starts_with("https://"),
        limiter: Arc::default(),
    };
    Router::new()
        .route("/", get(apps::index))
        .route("/ui/aloft.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route(
            "/ui/aloft.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route("/sign-in", get(sign_in::show).post(sign_in::submit))
        .route(
            "/sign-in/link/{secret}",
            get(sign_in::link_page).post(sign_in::set_password),
        )
        .route("/sign-out", post(sign_in::sign_out))
        .route("/sign-out/everywhere", post(sign_in::sign_out_everywhere))
        .route("/apps/{slug}", get(apps::app))
        .route("/apps/{slug}/channels/{channel}", post(apps::repoint))
        .route("/apps/{slug}/channels/{channel}/rollout", post(apps::channel_rollout))
        .route("/apps/{slug}/rollback", post(apps::rollback))
        .route("/apps/{slug}/halt-policy", post(apps::halt_policy))
        .route("/apps/{slug}/branches/{branch}", get(groups::branch))
        .route("/apps/{slug}/groups/{group}", get(groups::group))
        .route("/apps/{slug}/groups/{group}/{action}", post(groups::act))
        .route("/apps/{slug}/webhooks", get(admin::webhooks).post(admin::add_webhook))
        .route("/apps/{slug}/webhooks/{id}/remove", post(admin::remove_webhook))
        .route("/tokens", get(admin::tokens).post(admin::create_token))
        .route("/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/users", get(admin::users).post(admin::create_user))
        .route("/users/{email}/{action}", post(admin::user_action))
        .route("/audit", get(admin::audit))
        .with_state(dash)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        body,
    )
        .into_response()
}

/// The top of every page: its title, the signed-in user's bar, and a notice of what was just
/// done.
pub(crate) struct Head {
    pub title: String,
    pub chrome: Option<Chrome>,
    pub notice: Option<String>,
    pub ui_version: &'static str,
}

/// The signed-in user, as the header shows them (with the CSRF token of the sign-out form).
pub(crate) struct Chrome {
    pub email: String,
    pub role: &'static str,
    pub admin: bool,
    pub csrf: String,
}

impl Head {
    fn new(title: impl Into<String>, signed: Option<&session::Signed>) -> Self {
        Self {
            title: title.into(),
            chrome: signed.map(|s| Chrome {
                email: s.session.user.email.clone(),
                role: crate::service::users::role_name(&s.caller.scope),
                admin: s.admin(),
                csrf: s.session.csrf.clone(),
            }),
            notice: None,
            ui_version: UI_VERSION,
        }
    }

    fn with_notice(mut self, notice: Option<&str>) -> Self {
        self.notice = notice.and_then(view::notice).map(str::to_owned);
        self
    }
}

/// A page: rendered, with headers that keep it out of shared caches and frames.
fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                         frame-ancestors 'none'; form-action 'self'",
                    ),
                ),
            ],
            Html(html),
        )
            .into_response(),
        Err(e) => Failure::from(ApiError::internal("rendering a page", &e)).into_response(),
    }
}

/// After a change: back to `to`, with the notice of what was done.
fn done(to: &str, notice: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}notice={notice}")).into_response()
}

/// Why a page cannot be shown or an action was refused: an error page with the status, the
/// stable code and the message the API would give.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn store(err: aloft_store::DbError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::new(e.status, e.code, e.message)
    }
}

impl From<crate::service::Error> for Failure {
    fn from(e: crate::service::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<aloft_store::DbError> for Failure {
    fn from(e: aloft_store::DbError) -> Self {
        Self::store(e)
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    head: Head,
    status: u16,
    reason: &'a str,
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            head: Head::new(format!("{} {}", self.status.as_u16(), self.reason()), None),
            status: self.status.as_u16(),
            reason: self.reason(),
            code: self.code,
            message: &self.message,
        };
        let mut response = page_response(&page);
        *response.status_mut() = self.status;
        response
    }
}

impl Failure {
    fn reason(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

fn page_response(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the error page could not be rendered",
        )
            .into_response(),
    }
}

type PageResult = Result<Response, Failure>;
