//! Apps and their server-side signing keys.

use aloft_core::AppSlug;
use aloft_core::halt::Halt;
use aloft_core::signature::{CodeSignature, Signer};
use aloft_store::db::apps::{self, App};
use serde_json::json;

use super::Error;
use super::{Actor, Write};
use crate::state::AppState;

/// Creates an app with its channel and branch `production`, and starts serving it.
pub(crate) async fn create_app(state: &AppState, by: &Actor, slug: &AppSlug) -> Result<App, Error> {
    let mut write = Write::begin(state).await?;
    let id = apps::insert(&mut write.tx, slug).await?;
    write
        .commit(by.entry(Some(slug.as_str()), "app.create", slug.as_str(), json!({})))
        .await?;
    state.served.refresh(&state.db, id).await?;
    Ok(apps::by_id(&state.db, id).await?)
}

/// Gives the app a server-side key: publishes without the publisher's signatures are signed with it.
pub(crate) async fn set_signing_key(
    state: &AppState,
    by: &Actor,
    app: &App,
    private_key_pem: &str,
    keyid: &str,
) -> Result<App, Error> {
    let signer = Signer::from_pem(private_key_pem).map_err(|e| unusable_key(&e))?;
    // Prove the key signs and the key id can be sent, before storing anything.
    let sig = signer.sign(b"aloft").map_err(|e| unusable_key(&e))?;
    CodeSignature::new(sig, keyid.to_owned()).map_err(|e| Error::invalid("invalid_keyid", e.to_string()))?;
    let mut write = Write::begin(state).await?;
    apps::set_signing_key(&mut write.tx, app.id, Some((private_key_pem, keyid))).await?;
    let slug = app.slug.as_str();
    write
        .commit(by.entry(Some(slug), "app.signing_key.set", slug, json!({"keyid": keyid})))
        .await?;
    Ok(apps::by_id(&state.db, app.id).await?)
}

/// The key library's reason is logged; the caller is told what is accepted.
fn unusable_key(err: &dyn std::fmt::Display) -> Error {
    tracing::info!(error = %err, "signing key refused");
    Error::invalid(
        "invalid_signing_key",
        "field `private_key_pem` must be an RSA private key of 2048 to 8192 bits in PEM \
         (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`)",
    )
}

pub(crate) async fn delete_signing_key(state: &AppState, by: &Actor, app: &App) -> Result<App, Error> {
    let mut write = Write::begin(state).await?;
    apps::set_signing_key(&mut write.tx, app.id, None).await?;
    let slug = app.slug.as_str();
    write
        .commit(by.entry(Some(slug), "app.signing_key.delete", slug, json!({})))
        .await?;
    Ok(apps::by_id(&state.db, app.id).await?)
}

/// Sets the app's halt setting (`None`: back to the built-in default), recorded as
/// `app.halt_policy.set`.
pub(crate) async fn set_halt_policy(state: &AppState, by: &Actor, app: &App, halt: Option<Halt>) -> Result<App, Error> {
    let stored = halt.map(Halt::to_stored);
    let mut write = Write::begin(state).await?;
    apps::set_halt_policy(&mut write.tx, app.id, stored.as_deref()).await?;
    let slug = app.slug.as_str();
    let details = match halt {
        None => json!({"policy": "default"}),
        Some(Halt::Off) => json!({"policy": "off"}),
        Some(Halt::Policy(p)) => json!({"policy": p}),
    };
    write
        .commit(by.entry(Some(slug), "app.halt_policy.set", slug, details))
        .await?;
    Ok(apps::by_id(&state.db, app.id).await?)
}
