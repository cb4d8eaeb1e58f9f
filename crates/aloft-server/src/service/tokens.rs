//! API tokens: created (the secret is shown once) and revoked by an admin.

use aloft_core::AppSlug;
use aloft_core::time::Millis;
use aloft_store::db::tokens::{self, Scope, Token};
use serde_json::json;

use super::Error;
use super::{Actor, Write};
use crate::state::AppState;

pub(crate) fn parse_scope(scope: &str, apps: &[String]) -> Result<Scope, Error> {
    for app in apps {
        AppSlug::parse(app.as_str()).map_err(|e| Error::invalid("invalid_slug", e.to_string()))?;
    }
    match (scope, apps.is_empty()) {
        ("admin", true) => Ok(Scope::Admin),
        ("admin", false) => Err(Error::invalid(
            "invalid_scope",
            "an admin token is for every app; give no apps",
        )),
        ("publish" | "read", true) => Err(Error::invalid(
            "invalid_scope",
            "a publish or read token needs the apps it is for",
        )),
        ("publish", false) => Ok(Scope::Publish(apps.to_vec())),
        ("read", false) => Ok(Scope::Read(apps.to_vec())),
        (other, _) => Err(Error::invalid(
            "invalid_scope",
            format!("scope {other:?} is not admin, publish or read"),
        )),
    }
}

/// A new token named `name`, for `scope` (as asked: `scope_text` and `apps`), expiring after
/// `expires_in_days` if given. Returns it with its secret.
pub(crate) async fn create_token(
    state: &AppState,
    by: &Actor,
    name: &str,
    scope_text: &str,
    apps: &[String],
    expires_in_days: Option<u32>,
) -> Result<(Token, String), Error> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Error::invalid("invalid_name", "a token name is 1-100 characters"));
    }
    let scope = parse_scope(scope_text, apps)?;
    let expires = expires_in_days.map(|d| Millis(Millis::now().0 + i64::from(d) * 86_400_000));
    let mut write = Write::begin(state).await?;
    let (token, secret) = tokens::insert(&mut write.tx, name, &scope, expires).await?;
    write
        .commit(by.entry(
            None,
            "token.create",
            format!("{}", token.id),
            json!({"name": name, "scope": scope_text, "apps": apps}),
        ))
        .await?;
    Ok((token, secret))
}

pub(crate) async fn revoke_token(state: &AppState, by: &Actor, id: i64) -> Result<(), Error> {
    let mut write = Write::begin(state).await?;
    tokens::set_revoked(&mut write.tx, id).await?;
    write
        .commit(by.entry(None, "token.revoke", id.to_string(), json!({})))
        .await
}
