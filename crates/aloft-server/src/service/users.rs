//! Dashboard users: created and given sign-in links by an admin (`aloft users`), signed in with a
//! password they set through a link. A user's role is a token scope: `admin`, `publisher` of
//! some apps (scope `publish`) or `viewer` of some apps (scope `read`).

use aloft_store::db::Database;
use aloft_store::db::tokens::Scope;
use aloft_store::db::users::{self, User};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::json;

use super::tokens::parse_scope;
use super::{Actor, Error, Write};
use crate::state::AppState;

/// How long a sign-in link works.
pub(crate) const LINK_VALID_MS: i64 = 24 * 3_600_000;
/// How long a session lasts after sign-in.
pub(crate) const SESSION_VALID_MS: i64 = 7 * 24 * 3_600_000;
/// Password length bounds (characters).
pub(crate) const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;

/// The role names people use, as token scopes.
pub(crate) fn parse_role(role: &str, apps: &[String]) -> Result<Scope, Error> {
    let scope = match role {
        "admin" => "admin",
        "publisher" | "publish" => "publish",
        "viewer" | "read" => "read",
        other => {
            return Err(Error::invalid(
                "invalid_role",
                format!("role {other:?} is not admin, publisher or viewer"),
            ));
        }
    };
    parse_scope(scope, apps).map_err(|e| match e {
        Error::Invalid {
            code: "invalid_scope", ..
        } => Error::invalid(
            "invalid_role",
            match scope {
                "admin" => "an admin is for every app; give no apps",
                _ => "a publisher or viewer needs the apps they are for",
            },
        ),
        other => other,
    })
}

/// The role name of a scope.
pub(crate) fn role_name(scope: &Scope) -> &'static str {
    match scope {
        Scope::Admin => "admin",
        Scope::Publish(_) => "publisher",
        Scope::Read(_) => "viewer",
    }
}

/// An email address as stored: trimmed, lower case, one `@` with text on both sides.
pub(crate) fn email(value: &str) -> Result<String, Error> {
    let email = value.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !valid {
        return Err(Error::invalid(
            "invalid_email",
            format!("{value:?} is not an email address"),
        ));
    }
    Ok(email)
}

/// The sign-in link of a link secret.
pub(crate) fn link_url(public_url: &str, secret: &str) -> String {
    format!("{public_url}/sign-in/link/{secret}")
}

/// Who changes users offline (`aloft users create/reset` against a database, no server), as
/// the audit log names them.
pub(crate) fn offline_actor() -> Actor {
    Actor {
        who: "aloft users (offline)".to_owned(),
        name: "aloft users (offline)".to_owned(),
        remote: String::new(),
    }
}

async fn find(db: &Database, address: &str) -> Result<User, Error> {
    users::by_email(db, address)
        .await?
        .ok_or_else(|| Error::not_found("user_not_found", format!("no user {address:?}")))
}

/// Adds a user (an admin, or offline); returns them with their sign-in link's secret.
pub(crate) async fn create(
    db: &Database,
    by: &Actor,
    email_text: &str,
    role: &str,
    apps: &[String],
) -> Result<(User, String), Error> {
    let address = email(email_text)?;
    let scope = parse_role(role, apps)?;
    let mut write = Write::on(db).await?;
    let user = users::insert(&mut write.tx, &address, &scope).await?;
    let secret = users::insert_link(&mut write.tx, user.id, LINK_VALID_MS).await?;
    write
        .commit(by.entry(
            None,
            "user.create",
            address,
            json!({"role": role_name(&scope), "apps": apps}),
        ))
        .await?;
    Ok((user, secret))
}

/// A new sign-in link for a user (admin): their earlier links stop working; their password and
/// sessions stay until the link is used.
pub(crate) async fn reset(db: &Database, by: &Actor, email_text: &str) -> Result<(User, String), Error> {
    let address = email(email_text)?;
    let user = find(db, &address).await?;
    let mut write = Write::on(db).await?;
    let secret = users::insert_link(&mut write.tx, user.id, LINK_VALID_MS).await?;
    write.commit(by.entry(None, "user.reset", address, json!({}))).await?;
    Ok((user, secret))
}

/// Removes a user and ends their sessions (admin).
pub(crate) async fn remove(state: &AppState, by: &Actor, email_text: &str) -> Result<(), Error> {
    let address = email(email_text)?;
    let user = find(&state.db, &address).await?;
    let mut write = Write::begin(state).await?;
    users::delete(&mut write.tx, user.id).await?;
    write.commit(by.entry(None, "user.remove", address, json!({}))).await?;
    Ok(())
}

/// The Argon2id settings: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
fn hasher() -> Result<Argon2<'static>, Error> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| Error::internal("argon2 parameters", &e))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_password(password: &str) -> Result<String, Error> {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| Error::internal("a password salt", &e))?;
    Ok(hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::internal("hashing a password", &e))?
        .to_string())
}

/// Whether `password` matches the stored hash; with no hash, a hash of nothing is checked anyway
/// so that an unknown email takes as long as a wrong password.
fn verify_password(password: &str, stored: Option<&str>) -> bool {
    const DECOY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$W4V6m6rXbYyvdM7IqvDqN3s5k5MQrLJ5cdE6hFJ3Q8E";
    let Ok(argon) = hasher() else { return false };
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(DECOY)) else {
        return false;
    };
    argon.verify_password(password.as_bytes(), &parsed).is_ok() && stored.is_some()
}

/// Sets the password of the user of a sign-in link, uses the link up, ends the user's other
/// sessions and starts one: returns the user and the session's secret.
pub(crate) async fn set_password(
    state: &AppState,
    link_secret: &str,
    password: &str,
    remote: &str,
) -> Result<(User, String), Error> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return Err(Error::invalid(
            "invalid_password",
            format!("a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    let owned = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
        .await
        .map_err(|e| Error::internal("hashing a password", &e))??;
    let mut write = Write::begin(state).await?;
    let Some(user) = users::use_link(&mut write.tx, link_secret).await? else {
        return Err(Error::not_found(
            "link_not_valid",
            "this sign-in link was used already, was replaced by a newer one, or expired; ask an admin for a new one",
        ));
    };
    users::set_password(&mut write.tx, user.id, &hash).await?;
    users::end_sessions(&mut write.tx, user.id).await?;
    let session = users::insert_session(&mut write.tx, user.id, SESSION_VALID_MS, remote).await?;
    let by = Actor {
        who: user.email.clone(),
        name: user.email.clone(),
        remote: remote.to_owned(),
    };
    write
        .commit(by.entry(None, "user.password", user.email.clone(), json!({})))
        .await?;
    Ok((user, session))
}

/// Signs a user in: the session's secret, or `None` for a wrong email or password.
pub(crate) async fn sign_in(
    state: &AppState,
    email_text: &str,
    password: &str,
    remote: &str,
) -> Result<Option<String>, Error> {
    let user = match email(email_text) {
        Ok(address) => users::by_email(&state.db, &address).await?,
        Err(_) => None,
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let owned = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&owned, stored.as_deref()))
        .await
        .map_err(|e| Error::internal("checking a password", &e))?;
    let (true, Some(user)) = (ok, user) else {
        return Ok(None);
    };
    let mut tx = state.db.begin_write().await?;
    let session = users::insert_session(&mut tx, user.id, SESSION_VALID_MS, remote).await?;
    tx.commit().await.map_err(aloft_store::DbError::from)?;
    Ok(Some(session))
}

/// Ends every session of the user.
pub(crate) async fn sign_out_everywhere(state: &AppState, user: &User) -> Result<(), Error> {
    let mut tx = state.db.begin_write().await?;
    users::end_sessions(&mut tx, user.id).await?;
    tx.commit().await.map_err(aloft_store::DbError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_the_decoy_never_does() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(!verify_password("", None));
        assert!(!verify_password("anything at all", None));
    }

    #[test]
    fn emails_and_roles() {
        assert_eq!(email(" Ann@Example.COM ").expect("valid"), "ann@example.com");
        for bad in ["", "ann", "@x", "ann@", "a b@x", "a@b@c"] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_role("admin", &[]).expect("admin"), Scope::Admin);
        assert_eq!(
            parse_role("viewer", &["app".into()]).expect("viewer"),
            Scope::Read(vec!["app".into()])
        );
        assert!(parse_role("viewer", &[]).is_err());
        assert!(parse_role("admin", &["app".into()]).is_err());
        assert!(parse_role("owner", &[]).is_err());
    }
}
