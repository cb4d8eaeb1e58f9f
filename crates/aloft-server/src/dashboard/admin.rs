//! Tokens and users (admins), an app's webhooks with their deliveries, and the audit log.

use aloft_core::time::Millis;
use aloft_store::db::tokens::{self, Scope};
use aloft_store::db::{audit, users, webhooks};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::apps::visible_apps;
use super::session::{Posted, Signed};
use super::view::{self, can_write, when};
use super::{Dash, Failure, Head, PageResult, done, page};
use crate::api::auth::Need;
use crate::service::{self, tokens as token_service, users as user_service, webhooks as webhook_service};

fn admins_only(signed: &Signed) -> Result<(), Failure> {
    if signed.admin() {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin may do this",
        ))
    }
}

/// A list typed as `a, b c`: the non-empty words.
fn words(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard/secret.html")]
struct SecretPage {
    head: Head,
    intro: String,
    secret: String,
    back: String,
}

#[derive(Deserialize, Default)]
pub(super) struct NoticeQuery {
    notice: Option<String>,
}

struct TokenRow {
    id: i64,
    name: String,
    scope: String,
    apps: String,
    created: String,
    state: String,
    live: bool,
}

#[derive(Template)]
#[template(path = "dashboard/tokens.html")]
struct TokensPage {
    head: Head,
    csrf: String,
    tokens: Vec<TokenRow>,
}

pub(super) async fn tokens(State(dash): State<Dash>, signed: Signed, Query(q): Query<NoticeQuery>) -> PageResult {
    admins_only(&signed)?;
    let now = Millis::now();
    let rows = tokens::list(&dash.state.db)
        .await?
        .into_iter()
        .map(|t| {
            let (scope, apps) = match &t.scope {
                Scope::Admin => ("admin", String::new()),
                Scope::Publish(a) => ("publish", a.join(", ")),
                Scope::Read(a) => ("read", a.join(", ")),
            };
            let state = match (t.revoked_at, t.expires_at) {
                (Some(at), _) => format!("revoked {}", when(at)),
                (None, Some(at)) if at.0 <= now.0 => format!("expired {}", when(at)),
                (None, Some(at)) => format!("expires {}", when(at)),
                (None, None) => "active".to_owned(),
            };
            TokenRow {
                live: state == "active" || state.starts_with("expires"),
                id: t.id,
                name: t.name,
                scope: scope.to_owned(),
                apps,
                created: when(t.created_at),
                state,
            }
        })
        .collect();
    Ok(page(&TokensPage {
        head: Head::new("Tokens", Some(&signed)).with_notice(q.notice.as_deref()),
        csrf: signed.session.csrf.clone(),
        tokens: rows,
    }))
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    name: String,
    scope: String,
    apps: Option<String>,
    expires_in_days: Option<String>,
}

pub(super) async fn create_token(State(dash): State<Dash>, posted: Posted<TokenForm>) -> PageResult {
    let Posted { signed, form } = posted;
    admins_only(&signed)?;
    let apps = words(form.apps.as_deref().unwrap_or_default());
    let days = match form.expires_in_days.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => Some(d.parse::<u32>().map_err(|_| {
            Failure::from(service::Error::invalid(
                "invalid_expiry",
                "expires in days is a whole number (or empty for never)",
            ))
        })?),
    };
    let (token, secret) = token_service::create_token(
        &dash.state,
        &signed.caller.actor(),
        &form.name,
        &form.scope,
        &apps,
        days,
    )
    .await?;
    Ok(page(&SecretPage {
        head: Head::new(format!("Token {} created", token.name), Some(&signed)),
        intro: format!(
            "The secret of token {} (id {}). Give it to the program that uses it, as ALOFT_TOKEN.",
            token.name, token.id
        ),
        secret,
        back: "/tokens".to_owned(),
    }))
}

#[derive(Deserialize)]
pub(super) struct Empty {}

pub(super) async fn revoke_token(State(dash): State<Dash>, Path(id): Path<i64>, posted: Posted<Empty>) -> PageResult {
    admins_only(&posted.signed)?;
    token_service::revoke_token(&dash.state, &posted.signed.caller.actor(), id).await?;
    Ok(done("/tokens", "token-revoked"))
}

struct UserRow {
    email: String,
    role: &'static str,
    apps: String,
    password: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "dashboard/users.html")]
struct UsersPage {
    head: Head,
    csrf: String,
    users: Vec<UserRow>,
}

pub(super) async fn users(State(dash): State<Dash>, signed: Signed, Query(q): Query<NoticeQuery>) -> PageResult {
    admins_only(&signed)?;
    let rows = users::list(&dash.state.db)
        .await?
        .into_iter()
        .map(|u| UserRow {
            role: user_service::role_name(&u.scope),
            apps: match &u.scope {
                Scope::Admin => "all".to_owned(),
                Scope::Publish(a) | Scope::Read(a) => a.join(", "),
            },
            password: u.password_hash.is_some(),
            created: when(u.created_at),
            email: u.email,
        })
        .collect();
    Ok(page(&UsersPage {
        head: Head::new("Users", Some(&signed)).with_notice(q.notice.as_deref()),
        csrf: signed.session.csrf.clone(),
        users: rows,
    }))
}

#[derive(Deserialize)]
pub(super) struct UserForm {
    email: String,
    role: String,
    apps: Option<String>,
}

fn link_page(signed: &Signed, email: &str, secret: &str, dash: &Dash) -> axum::response::Response {
    page(&SecretPage {
        head: Head::new(format!("Sign-in link for {email}"), Some(signed)),
        intro: format!("Send {email} this link: it lets them set a password, works once, and expires in 24 hours."),
        secret: user_service::link_url(&dash.state.config.public_url, secret),
        back: "/users".to_owned(),
    })
}

pub(super) async fn create_user(State(dash): State<Dash>, posted: Posted<UserForm>) -> PageResult {
    let Posted { signed, form } = posted;
    admins_only(&signed)?;
    let apps = words(form.apps.as_deref().unwrap_or_default());
    let (user, secret) =
        user_service::create(&dash.state.db, &signed.caller.actor(), &form.email, &form.role, &apps).await?;
    Ok(link_page(&signed, &user.email, &secret, &dash))
}

pub(super) async fn user_action(
    State(dash): State<Dash>,
    Path((email, action)): Path<(String, String)>,
    posted: Posted<Empty>,
) -> PageResult {
    let signed = posted.signed;
    admins_only(&signed)?;
    match action.as_str() {
        "reset" => {
            let (user, secret) = user_service::reset(&dash.state.db, &signed.caller.actor(), &email).await?;
            Ok(link_page(&signed, &user.email, &secret, &dash))
        }
        "remove" => {
            user_service::remove(&dash.state, &signed.caller.actor(), &email).await?;
            Ok(done("/users", "user-removed"))
        }
        other => Err(service::Error::not_found("unknown_action", format!("there is no user action {other:?}")).into()),
    }
}

struct HookRow {
    id: i64,
    url: String,
    events: String,
    created: String,
}

struct DeliveryRow {
    webhook: i64,
    event: String,
    occurred: String,
    state: String,
    attempts: String,
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct WebhooksPage {
    head: Head,
    slug: String,
    csrf: String,
    can_write: bool,
    hooks: Vec<HookRow>,
    deliveries: Vec<DeliveryRow>,
    events: &'static [&'static str],
}

pub(super) async fn webhooks(
    State(dash): State<Dash>,
    signed: Signed,
    Path(slug): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> PageResult {
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Read).await?;
    let hooks = webhooks::list(&dash.state.db, app.id)
        .await?
        .into_iter()
        .map(|w| HookRow {
            id: w.id,
            url: w.url,
            events: w.events.join(", "),
            created: when(w.created_at),
        })
        .collect();
    let deliveries = webhooks::deliveries(&dash.state.db, app.id, None, 50)
        .await?
        .into_iter()
        .map(|d| DeliveryRow {
            webhook: d.webhook_id,
            event: d.event,
            occurred: when(d.occurred_at),
            attempts: d
                .attempts
                .iter()
                .map(|a| match (a.status, &a.error) {
                    (Some(s), _) => format!("{s} in {} ms", a.duration_ms),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "no answer".to_owned(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            state: d.state,
        })
        .collect();
    Ok(page(&WebhooksPage {
        head: Head::new(format!("Webhooks of {slug}"), Some(&signed)).with_notice(q.notice.as_deref()),
        slug: app.slug.to_string(),
        csrf: signed.session.csrf.clone(),
        can_write: can_write(&signed.caller),
        hooks,
        deliveries,
        events: &["publish", "rollout", "halt", "rollback", "disable"],
    }))
}

pub(super) async fn add_webhook(
    State(dash): State<Dash>,
    Path(slug): Path<String>,
    posted: Posted<Vec<(String, String)>>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let url = form
        .iter()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.clone())
        .collect();
    let (hook, secret) =
        webhook_service::add_webhook(&dash.state, &signed.caller.actor(), &app, url.trim(), &events, None).await?;
    Ok(page(&SecretPage {
        head: Head::new(format!("Webhook {} added", hook.id), Some(&signed)),
        intro: format!(
            "The secret webhook {} signs its payloads with (HMAC-SHA256, header aloft-signature). Keep it with the receiver.",
            hook.id
        ),
        secret,
        back: format!("/apps/{slug}/webhooks"),
    }))
}

pub(super) async fn remove_webhook(
    State(dash): State<Dash>,
    Path((slug, id)): Path<(String, i64)>,
    posted: Posted<Empty>,
) -> PageResult {
    let signed = posted.signed;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    webhook_service::remove_webhook(&dash.state, &signed.caller.actor(), &app, id).await?;
    Ok(done(&format!("/apps/{slug}/webhooks"), "webhook-removed"))
}

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    app: Option<String>,
    action: Option<String>,
    actor: Option<String>,
}

struct AuditRow {
    at: String,
    actor: String,
    app: String,
    action: String,
    target: String,
    summary: String,
    remote: String,
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditPage {
    head: Head,
    apps: Vec<String>,
    app: String,
    action: String,
    actor: String,
    entries: Vec<AuditRow>,
}

const AUDIT_ROWS: i64 = 200;

pub(super) async fn audit(State(dash): State<Dash>, signed: Signed, Query(q): Query<AuditQuery>) -> PageResult {
    let app = q.app.clone().filter(|a| !a.is_empty());
    let mut entries = match (&app, signed.admin()) {
        (Some(slug), _) => {
            view::app(&dash.state, &signed.caller, slug, Need::Read).await?;
            audit::list(&dash.state.db, Some(slug), AUDIT_ROWS * 5).await?
        }
        (None, true) => audit::list(&dash.state.db, None, AUDIT_ROWS * 5).await?,
        (None, false) => {
            // Everything of every app this user sees (entries of no app are admins' only).
            let mut all = Vec::new();
            for slug in visible_apps(&dash, &signed).await? {
                all.extend(audit::list(&dash.state.db, Some(&slug), AUDIT_ROWS * 5).await?);
            }
            all.sort_by_key(|e| std::cmp::Reverse(e.at.0));
            all
        }
    };
    let action = q.action.clone().unwrap_or_default();
    let actor = q.actor.clone().unwrap_or_default();
    entries.retain(|e| {
        (action.is_empty() || e.action.contains(action.trim()))
            && (actor.is_empty() || e.actor.to_lowercase().contains(&actor.trim().to_lowercase()))
    });
    entries.truncate(AUDIT_ROWS as usize);
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            at: when(e.at),
            summary: e
                .details
                .get("summary")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    if e.details.is_null() {
                        String::new()
                    } else {
                        e.details.to_string()
                    }
                }),
            actor: e.actor,
            app: e.app.unwrap_or_default(),
            action: e.action,
            target: e.target,
            remote: e.remote,
        })
        .collect();
    Ok(page(&AuditPage {
        head: Head::new("Audit log", Some(&signed)),
        apps: visible_apps(&dash, &signed).await?,
        app: app.unwrap_or_default(),
        action,
        actor,
        entries: rows,
    }))
}
