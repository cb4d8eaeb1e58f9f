//! Signing in and out: the sign-in page, the page of a one-time link (set a password), sign-out
//! of this browser or of every browser.

use aloft_store::db::users;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{PRE_COOKIE, Posted, PreForm, SESSION_COOKIE, cookie, set_cookie};
use super::{Dash, Failure, Head, PageResult, page};
use crate::service::users::{self as service, MIN_PASSWORD, SESSION_VALID_MS};

#[derive(Template)]
#[template(path = "dashboard/sign_in.html")]
struct SignInPage {
    head: Head,
    csrf: String,
    next: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/set_password.html")]
struct SetPasswordPage {
    head: Head,
    csrf: String,
    secret: String,
    email: String,
    min: usize,
    error: Option<String>,
}

/// Where to go after signing in: a path on this site only.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// The token of a sign-in form, and the cookie that must come back with it.
fn pre_token(dash: &Dash, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, PRE_COOKIE) {
        Some(existing) if existing.len() == 64 => (existing.to_owned(), None),
        _ => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let set = set_cookie(dash, PRE_COOKIE, Some(&token), 3600);
            (token, Some(set))
        }
    }
}

fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = String>) -> Response {
    for c in cookies {
        if let Ok(value) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn page_for(
    dash: &Dash,
    headers: &HeaderMap,
    next: String,
    email: String,
    error: Option<String>,
) -> Response {
    let (csrf, set) = pre_token(dash, headers);
    let response = page(&SignInPage {
        head: Head::new("Sign in", None),
        csrf,
        next,
        email,
        error,
    });
    with_cookies(response, set)
}

pub(super) async fn show(State(dash): State<Dash>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    page_for(&dash, &headers, safe_next(q.next.as_deref()), String::new(), None).await
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
}

pub(super) async fn submit(State(dash): State<Dash>, headers: HeaderMap, form: PreForm<SignInForm>) -> PageResult {
    let PreForm { remote, form } = form;
    let next = safe_next(form.next.as_deref());
    if let Some(wait) = dash.limiter.blocked(&form.email, &remote) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let mut response = page_for(
            &dash,
            &headers,
            next,
            form.email.clone(),
            Some(format!(
                "Too many failed sign-ins for this email or from this address; try again in {minutes} minute(s)."
            )),
        )
        .await;
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return Ok(response);
    }
    match service::sign_in(&dash.state, &form.email, &form.password, &remote).await? {
        Some(secret) => {
            dash.limiter.succeeded(&form.email);
            Ok(signed_in(&dash, &secret, &next))
        }
        None => {
            dash.limiter.failed(&form.email, &remote);
            let mut response = page_for(
                &dash,
                &headers,
                next,
                form.email.clone(),
                Some("That email and password do not match a user.".to_owned()),
            )
            .await;
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(response)
        }
    }
}

/// The answer that starts a session: its cookie, the sign-in form's cookie removed.
fn signed_in(dash: &Dash, secret: &str, next: &str) -> Response {
    let session = set_cookie(dash, SESSION_COOKIE, Some(secret), SESSION_VALID_MS / 1000);
    let pre = set_cookie(dash, PRE_COOKIE, None, 0);
    (
        AppendHeaders([(header::SET_COOKIE, session), (header::SET_COOKIE, pre)]),
        Redirect::to(next),
    )
        .into_response()
}

fn link_gone() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "link_not_valid",
        "this sign-in link was used already, was replaced by a newer one, or expired; ask an admin for a new one \
         (aloft users reset EMAIL)",
    )
}

pub(super) async fn link_page(State(dash): State<Dash>, headers: HeaderMap, Path(secret): Path<String>) -> PageResult {
    let user = users::link_user(&dash.state.db, &secret).await?.ok_or_else(link_gone)?;
    let (csrf, set) = pre_token(&dash, &headers);
    let response = page(&SetPasswordPage {
        head: Head::new("Set your password", None),
        csrf,
        secret,
        email: user.email,
        min: MIN_PASSWORD,
        error: None,
    });
    Ok(with_cookies(response, set))
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    password: String,
}

pub(super) async fn set_password(
    State(dash): State<Dash>,
    headers: HeaderMap,
    Path(secret): Path<String>,
    form: PreForm<PasswordForm>,
) -> PageResult {
    let PreForm { remote, form } = form;
    let user = users::link_user(&dash.state.db, &secret).await?.ok_or_else(link_gone)?;
    let problem = (form.password.chars().count() < MIN_PASSWORD)
        .then(|| format!("A password is at least {MIN_PASSWORD} characters."));
    if let Some(problem) = problem {
        let (csrf, set) = pre_token(&dash, &headers);
        let mut response = page(&SetPasswordPage {
            head: Head::new("Set your password", None),
            csrf,
            secret,
            email: user.email,
            min: MIN_PASSWORD,
            error: Some(problem),
        });
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(with_cookies(response, set));
    }
    let (_, session) = service::set_password(&dash.state, &secret, &form.password, &remote).await?;
    Ok(signed_in(&dash, &session, "/"))
}

#[derive(Deserialize)]
pub(super) struct Nothing {}

pub(super) async fn sign_out(State(dash): State<Dash>, posted: Posted<Nothing>) -> PageResult {
    users::end_session(&dash.state.db, &posted.signed.session.hash).await?;
    Ok(signed_out(&dash))
}

pub(super) async fn sign_out_everywhere(State(dash): State<Dash>, posted: Posted<Nothing>) -> PageResult {
    service::sign_out_everywhere(&dash.state, &posted.signed.session.user).await?;
    Ok(signed_out(&dash))
}

fn signed_out(dash: &Dash) -> Response {
    (
        AppendHeaders([(header::SET_COOKIE, set_cookie(dash, SESSION_COOKIE, None, 0))]),
        Redirect::to("/sign-in"),
    )
        .into_response()
}
