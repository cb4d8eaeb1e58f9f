//! Publishing an update group: build each platform's manifest once, sign it (or accept the
//! publisher's signature over the exact bytes), commit the group atomically, then refresh what
//! devices are served.

use std::collections::BTreeSet;

use aloft_core::api::{
    CommitInfo, FileRef, PlatformUpdate, PreparedGroup, PreparedUpdate, PublishRequest,
    PublishedGroup, PublishedUpdate,
};
use aloft_core::manifest::{self, AssetRef, ManifestInput};
use aloft_core::signature::{CodeSignature, Signer};
use aloft_core::time::Millis;
use aloft_core::{BranchName, ChannelName, ContentHash, Platform, RuntimeVersion, content_type};
use aloft_store::db::apps::App;
use aloft_store::db::blobs;
use aloft_store::db::updates::{self, NewGroup, NewUpdate, Target};
use serde_json::Map;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How far ahead of the server clock a publisher-chosen `createdAt` may be.
const MAX_CLOCK_SKEW_MS: i64 = 60_000;

struct Planned {
    group_id: Uuid,
    created_at: Millis,
    target: Target,
    updates: Vec<PlannedUpdate>,
}

struct PlannedUpdate {
    platform: Platform,
    id: Uuid,
    runtime_version: RuntimeVersion,
    manifest: Vec<u8>,
    blobs: Vec<ContentHash>,
}

fn target(req: &PublishRequest) -> Result<Target, ApiError> {
    match (&req.channel, &req.branch) {
        (Some(c), None) => Ok(Target::Channel(
            ChannelName::parse(c.as_str())
                .map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?
                .into(),
        )),
        (None, Some(b)) => Ok(Target::Branch(
            BranchName::parse(b.as_str())
                .map_err(|e| ApiError::bad_request("invalid_branch", e.to_string()))?
                .into(),
        )),
        _ => Err(ApiError::bad_request(
            "invalid_target",
            "give exactly one of channel or branch",
        )),
    }
}

async fn asset_ref(state: &AppState, file: &FileRef) -> Result<AssetRef, ApiError> {
    let ext = file.ext.trim_start_matches('.');
    if !content_type::is_valid_extension(ext) {
        return Err(ApiError::bad_request(
            "invalid_extension",
            format!(
                "extension {:?} of blob {} must be 1-16 letters or digits",
                file.ext, file.hash
            ),
        ));
    }
    let record = blobs::get(&state.db, &file.hash).await?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_blob",
            format!(
                "blob {} has not been uploaded; upload it with PUT /api/v1/blobs/{} first",
                file.hash, file.hash
            ),
        )
    })?;
    Ok(AssetRef {
        hash: file.hash,
        key: record.md5,
        ext: ext.to_owned(),
    })
}

/// Validates the request and builds every manifest. Ids and `createdAt` come from `commit` when
/// the publisher fixed them in a prepare call, else they are chosen here.
async fn plan(state: &AppState, app: &App, req: &PublishRequest) -> Result<Planned, ApiError> {
    let target = target(req)?;
    if req.updates.is_empty() {
        return Err(ApiError::bad_request(
            "no_updates",
            "a publish needs at least one platform",
        ));
    }
    let platforms: BTreeSet<Platform> = req.updates.iter().map(|u| u.platform).collect();
    if platforms.len() != req.updates.len() {
        return Err(ApiError::bad_request(
            "duplicate_platform",
            "each platform may appear once per publish",
        ));
    }
    if req.expo_client.as_ref().is_some_and(|v| !v.is_object()) {
        return Err(ApiError::bad_request(
            "invalid_expo_client",
            "expo_client must be a JSON object (the public app config)",
        ));
    }
    let newest = updates::newest_created_at(&state.db, app.id).await?;
    let (group_id, created_at) = match &req.commit {
        Some(commit) => {
            let created_at = Millis::parse_iso(&commit.created_at)
                .filter(|t| t.to_iso() == commit.created_at)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_created_at",
                        "created_at must look like 2024-05-01T12:34:56.789Z",
                    )
                })?;
            if created_at.0 > Millis::now().0 + MAX_CLOCK_SKEW_MS {
                return Err(ApiError::bad_request(
                    "invalid_created_at",
                    "created_at is in the future",
                ));
            }
            (commit.group_id, created_at)
        }
        None => (
            Uuid::new_v4(),
            Millis(Millis::now().0.max(newest.map_or(0, |n| n.0 + 1))),
        ),
    };
    let asset_base = state.config.asset_base_url();
    let metadata = Map::new();
    let mut planned = Vec::with_capacity(req.updates.len());
    for update in &req.updates {
        let PlatformUpdate {
            platform,
            runtime_version,
            launch_asset,
            assets,
        } = update;
        let runtime_version = RuntimeVersion::parse(runtime_version.as_str())
            .map_err(|e| ApiError::bad_request("invalid_runtime_version", e.to_string()))?;
        let id = match &req.commit {
            Some(CommitInfo { update_ids, .. }) => *update_ids.get(platform).ok_or_else(|| {
                ApiError::bad_request(
                    "missing_update_id",
                    format!("commit.update_ids has no id for {platform}"),
                )
            })?,
            None => Uuid::new_v4(),
        };
        let launch = asset_ref(state, launch_asset).await?;
        let mut refs = Vec::with_capacity(assets.len());
        let mut seen = BTreeSet::new();
        for asset in assets {
            let r = asset_ref(state, asset).await?;
            // The client keys assets by MD5; the same file twice is one asset.
            if r.hash != launch.hash && seen.insert(r.hash) {
                refs.push(r);
            }
        }
        let bytes = manifest::build(&ManifestInput {
            id,
            created_at,
            runtime_version: &runtime_version,
            launch_asset: &launch,
            assets: &refs,
            metadata: &metadata,
            expo_client: req.expo_client.as_ref(),
            asset_base_url: &asset_base,
        });
        let mut blob_list: Vec<ContentHash> = refs.iter().map(|r| r.hash).collect();
        blob_list.push(launch.hash);
        planned.push(PlannedUpdate {
            platform: *platform,
            id,
            runtime_version,
            manifest: bytes,
            blobs: blob_list,
        });
    }
    Ok(Planned {
        group_id,
        created_at,
        target,
        updates: planned,
    })
}

/// Fixes ids and `createdAt` and returns the exact manifests, for a publisher that signs them.
pub async fn prepare(
    state: &AppState,
    app: &App,
    req: &PublishRequest,
) -> Result<PreparedGroup, ApiError> {
    if req.commit.is_some() {
        return Err(ApiError::bad_request(
            "unexpected_commit",
            "prepare takes no commit; it makes one",
        ));
    }
    let planned = plan(state, app, req).await?;
    Ok(PreparedGroup {
        group_id: planned.group_id,
        created_at: planned.created_at.to_iso(),
        updates: planned
            .updates
            .into_iter()
            .map(|u| PreparedUpdate {
                platform: u.platform,
                id: u.id,
                runtime_version: u.runtime_version.to_string(),
                manifest: String::from_utf8_lossy(&u.manifest).into_owned(),
            })
            .collect(),
    })
}

/// Commits a group. Publishes of one server are serialised so `createdAt` only grows.
pub async fn publish(
    state: &AppState,
    app: &App,
    req: &PublishRequest,
    published_by: &str,
) -> Result<PublishedGroup, ApiError> {
    let _guard = state.publish_lock.lock().await;
    let planned = plan(state, app, req).await?;
    let signer = match (&app.signing_key_pem, &app.signing_keyid) {
        (Some(pem), Some(keyid)) => Some((
            Signer::from_pem(pem)
                .map_err(|e| ApiError::internal("the app's signing key is unusable", &e))?,
            keyid.clone(),
        )),
        _ => None,
    };
    let given = req.commit.as_ref().map(|c| &c.signatures);
    let mut new_updates = Vec::with_capacity(planned.updates.len());
    for u in planned.updates {
        let signature = match (given.and_then(|s| s.get(&u.platform)), &signer) {
            (Some(sig), _) => Some(
                CodeSignature::new(sig.sig.clone(), sig.keyid.clone())
                    .map_err(|e| ApiError::bad_request("invalid_signature", e.to_string()))?,
            ),
            (None, Some((signer, keyid))) => {
                let sig = signer
                    .sign(&u.manifest)
                    .map_err(|e| ApiError::internal("signing failed", &e))?;
                Some(
                    CodeSignature::new(sig, keyid.clone())
                        .map_err(|e| ApiError::internal("signing failed", &e))?,
                )
            }
            (None, None) => None,
        };
        if given.is_some_and(|s| !s.is_empty()) && signature.is_none() {
            return Err(ApiError::bad_request(
                "missing_signature",
                format!("no signature given for {}", u.platform),
            ));
        }
        new_updates.push(NewUpdate {
            id: u.id,
            platform: u.platform,
            runtime_version: u.runtime_version,
            manifest: u.manifest,
            signature,
            blobs: u.blobs,
        });
    }
    let group = NewGroup {
        id: planned.group_id,
        app_id: app.id,
        target: planned.target,
        message: req.message.clone(),
        created_at: planned.created_at,
        published_by: published_by.to_owned(),
        updates: new_updates,
    };
    updates::publish(&state.db, &group).await?;
    state.served.refresh(&state.db, app.id).await?;
    Ok(PublishedGroup {
        group_id: group.id,
        created_at: group.created_at.to_iso(),
        message: group.message,
        manifest_url: state.config.manifest_url(app.slug.as_str()),
        updates: group
            .updates
            .iter()
            .map(|u| PublishedUpdate {
                platform: u.platform,
                id: u.id,
                runtime_version: u.runtime_version.to_string(),
                signed: u.signature.is_some(),
            })
            .collect(),
    })
}
