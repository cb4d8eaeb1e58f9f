//! Bundle patches: the app setting, and the embedded bundles patches may start from. Computing
//! them is background work (`crate::patches`); serving them is the asset module's.

use aloft_core::api::AddEmbedded;
use aloft_core::time::Millis;
use aloft_store::db::apps::{self, App};
use aloft_store::db::embedded::{self, Embedded};
use aloft_store::db::patches;
use serde_json::json;
use uuid::Uuid;

use super::{Actor, Change, Error, Write, input};
use crate::state::AppState;

/// Turns the app's bundle patches on or off, recorded as `app.patches.set`. It changes what
/// devices are answered, so it commits as a change to the app (every replica reloads it).
pub(crate) async fn set_patches(state: &AppState, by: &Actor, app: &App, on: bool) -> Result<App, Error> {
    let mut change = Change::begin(state).await?;
    apps::set_patches(&mut change.tx, app.id, on).await?;
    let slug = app.slug.as_str();
    let entry = by.entry(Some(slug), "app.patches.set", slug, json!({"enabled": on}));
    change.commit(state, app.id, entry).await?;
    Ok(apps::by_id(&state.db, app.id).await?)
}

/// Registers a store build's embedded bundle (its blob uploaded already) and records the patches
/// from it to the app's newest updates for its platform and runtime version, recorded as
/// `embedded.add`.
pub(crate) async fn add_embedded(
    state: &AppState,
    by: &Actor,
    app: &App,
    body: &AddEmbedded,
) -> Result<Embedded, Error> {
    let runtime_version = input::runtime_version(&body.runtime_version)?;
    let bundle = Embedded {
        app_id: app.id,
        id: body.id,
        platform: body.platform,
        runtime_version,
        bundle: body.bundle,
        created_at: Millis::now(),
    };
    let mut write = Write::begin(state).await?;
    embedded::insert(&mut write.tx, &bundle).await?;
    patches::enqueue_from_embedded(&mut write.tx, &bundle).await?;
    let slug = app.slug.as_str();
    let details = json!({
        "platform": bundle.platform.as_str(),
        "runtime_version": bundle.runtime_version.as_str(),
        "bundle": bundle.bundle.to_string(),
    });
    write
        .commit(by.entry(Some(slug), "embedded.add", bundle.id.to_string(), details))
        .await?;
    state.want_patches();
    Ok(bundle)
}

/// Removes an embedded bundle and the patches from it, recorded as `embedded.remove`.
pub(crate) async fn remove_embedded(state: &AppState, by: &Actor, app: &App, id: Uuid) -> Result<(), Error> {
    let mut write = Write::begin(state).await?;
    let removed = embedded::delete(&mut write.tx, app.id, id).await?;
    let slug = app.slug.as_str();
    let details = json!({"platform": removed.platform.as_str(), "runtime_version": removed.runtime_version.as_str()});
    write
        .commit(by.entry(Some(slug), "embedded.remove", id.to_string(), details))
        .await?;
    Ok(())
}
