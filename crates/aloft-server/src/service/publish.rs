//! Publishing a new update group, and republishing an existing one.

use std::collections::BTreeSet;

use aloft_core::api::{FileRef, PlatformUpdate, PublishRequest, RepublishRequest};
use aloft_core::halt::Halt;
use aloft_core::manifest::AssetRef;
use aloft_core::{ContentHash, Platform, RuntimeVersion, content_type, rollout};
use aloft_store::db::Conn as SqliteConnection;
use aloft_store::db::apps::App;
use aloft_store::db::updates::{self, GroupKind, RolloutSpec};
use aloft_store::db::{blobs, channels};
use uuid::Uuid;

use super::Change;
use super::Error;
use super::input::{self, Percentage, Target};
use super::operation::{self, Finished, Ids, ManifestParts, Operation, Plan};
use super::release::{self, Key};
use crate::state::AppState;

/// The branch a publish lands on: the channel's (a new channel gets a branch of its own name),
/// or the named branch (created if new).
pub(crate) async fn resolve_target(
    conn: &mut SqliteConnection,
    app: &App,
    target: &Target,
) -> Result<(i64, String), Error> {
    match target {
        Target::Channel(c) => {
            let channel = channels::ensure_channel(conn, app.id, c.as_str()).await?;
            if let Some(r) = &channel.rollout {
                return Err(Error::conflict(
                    "channel_rollout_in_progress",
                    format!(
                        "channel {:?} is rolling out branch {:?} to {}% of devices; publish to a branch with --branch, \
                         or end or revert the channel rollout first",
                        channel.name, r.branch, r.percentage
                    ),
                ));
            }
            Ok((channel.branch_id, channel.branch))
        }
        Target::Branch(b) => {
            let id = channels::ensure_branch(conn, app.id, b.as_str(), aloft_core::time::Millis::now()).await?;
            Ok((id, b.to_string()))
        }
    }
}

/// Refuses to publish onto a branch while a rollout of an update for one of the same platforms
/// and runtime versions is in progress there, unless forced (which completes those rollouts:
/// their groups become ordinary updates under the new one). Rollouts for other runtime versions
/// or platforms go on untouched.
pub(crate) async fn check_rollout(
    conn: &mut SqliteConnection,
    branch_id: i64,
    branch: &str,
    keys: &BTreeSet<Key>,
    force: bool,
) -> Result<(), Error> {
    let Some(release::Blocking { groups, what }) = release::blocking_rollouts(conn, branch_id, keys).await? else {
        return Ok(());
    };
    if !force {
        let group = groups[0];
        return Err(Error::conflict(
            "rollout_in_progress",
            format!(
                "branch {branch:?} has a rollout in progress for the same platform and runtime version: {what}; \
                 complete it (`aloft rollout complete {group}`), revert it (`aloft rollout revert {group}`), \
                 or publish with --force"
            ),
        ));
    }
    for group in groups {
        updates::set_rollout_percentage(conn, group, None).await?;
    }
    Ok(())
}

/// What a publish of `updates` to `target` would be refused for because of where it goes, found without changing anything, so that the CLI can
/// ask before it uploads a file: a channel rollout, a group rollout in progress (unless forced).
/// The names were checked as the publish checks them when `target` was parsed. Answers the branch the publish would land on.
///
/// It runs the publish's own steps, [`resolve_target`] and [`check_rollout`], in a transaction
/// that is rolled back (as `?prepare=true` does), so its answer is the publish's: same status,
/// code and message, and a new channel or branch is not kept. Like the publish, it is refused
/// only by a rollout of the same platform and runtime version.
pub(crate) async fn check_publish(
    state: &AppState,
    app: &App,
    target: &Target,
    updates: &Updates,
    force: bool,
) -> Result<String, Error> {
    let mut change = Change::begin(state).await?;
    let (branch_id, branch) = resolve_target(&mut change.tx, app, target).await?;
    let keys = updates.0.iter().cloned().collect();
    check_rollout(&mut change.tx, branch_id, &branch, &keys, force).await?;
    // Dropping the transaction rolls it back.
    drop(change);
    Ok(branch)
}

async fn asset_ref(state: &AppState, file: &FileRef) -> Result<AssetRef, Error> {
    let ext = file.ext.trim_start_matches('.');
    if !content_type::is_valid_extension(ext) {
        return Err(Error::invalid(
            "invalid_extension",
            format!(
                "extension {:?} of blob {} must be 1-16 letters or digits",
                file.ext, file.hash
            ),
        ));
    }
    let record = blobs::get(&state.db, &file.hash).await?.ok_or_else(|| {
        Error::invalid(
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

/// What one publish updates, each a platform and runtime version: at least one platform, each
/// at most once.
pub(crate) struct Updates(Vec<Key>);

impl Updates {
    pub(crate) fn new(updates: Vec<Key>) -> Result<Self, Error> {
        one_update_per_platform(updates.iter().map(|(p, _)| *p))?;
        Ok(Self(updates))
    }
}

/// A publish has at least one platform, each at most once.
fn one_update_per_platform(platforms: impl ExactSizeIterator<Item = Platform>) -> Result<(), Error> {
    let count = platforms.len();
    if count == 0 {
        return Err(Error::invalid("no_updates", "a publish needs at least one platform"));
    }
    if platforms.collect::<BTreeSet<Platform>>().len() != count {
        return Err(Error::invalid(
            "duplicate_platform",
            "each platform may appear once per publish",
        ));
    }
    Ok(())
}

/// A publish request with every field parsed, at the edge: what the use-case works from. The
/// refusals come in this order: two updates for one platform, `expo_client`, the rollout and
/// its halt setting, each runtime version, the target.
pub(crate) struct Publish<'r> {
    pub(crate) request: &'r PublishRequest,
    pub(crate) target: Target,
    pub(crate) updates: Vec<(Platform, RuntimeVersion, &'r PlatformUpdate)>,
    /// A rollout to this share of devices (below 100).
    pub(crate) rollout: Option<Percentage>,
    pub(crate) halt: Option<Halt>,
}

impl<'r> Publish<'r> {
    pub(crate) fn parse(request: &'r PublishRequest) -> Result<Self, Error> {
        one_update_per_platform(request.updates.iter().map(|u| u.platform))?;
        if request.expo_client.as_ref().is_some_and(|v| !v.is_object()) {
            return Err(Error::invalid(
                "invalid_expo_client",
                "expo_client must be a JSON object (the public app config)",
            ));
        }
        let rollout = request
            .rollout_percentage
            .map(Percentage::new)
            .transpose()?
            .filter(|p| p.get() < 100);
        let halt = input::halt_setting(request.halt_policy, request.no_halt)?;
        if halt.is_some() && rollout.is_none() {
            return Err(Error::invalid(
                "invalid_halt_policy",
                "halt_policy and no_halt go with a rollout_percentage below 100",
            ));
        }
        let updates = request
            .updates
            .iter()
            .map(|u| Ok((u.platform, input::runtime_version(&u.runtime_version)?, u)))
            .collect::<Result<Vec<_>, Error>>()?;
        let target = Target::parse(request.channel.as_deref(), request.branch.as_deref())?;
        Ok(Self {
            request,
            target,
            updates,
            rollout,
            halt,
        })
    }
}

/// Each update's launch asset and other assets, resolved from the stored blobs before any lock
/// is taken.
async fn resolve_files(
    state: &AppState,
    publish: &Publish<'_>,
) -> Result<Vec<(Platform, RuntimeVersion, AssetRef, Vec<AssetRef>)>, Error> {
    let mut out = Vec::new();
    for (platform, rv, update) in &publish.updates {
        let launch = asset_ref(state, &update.launch_asset).await?;
        let mut refs = Vec::with_capacity(update.assets.len());
        let mut seen: BTreeSet<ContentHash> = BTreeSet::new();
        for asset in &update.assets {
            let r = asset_ref(state, asset).await?;
            // The client keys assets by MD5: the same file twice is one asset.
            if r.hash != launch.hash && seen.insert(r.hash) {
                refs.push(r);
            }
        }
        out.push((*platform, rv.clone(), launch, refs));
    }
    Ok(out)
}

pub(crate) async fn publish(
    state: &AppState,
    app: &App,
    publish: &Publish<'_>,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let req = publish.request;
    let files = resolve_files(state, publish).await?;
    let mut change = Change::begin(state).await?;
    let (branch_id, branch) = resolve_target(&mut change.tx, app, &publish.target).await?;
    let keys = files.iter().map(|(p, rv, _, _)| (*p, rv.clone())).collect();
    check_rollout(&mut change.tx, branch_id, &branch, &keys, req.force).await?;
    let ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
    let mut planned = Vec::new();
    for (platform, rv, launch, assets) in &files {
        planned.push(operation::manifest_update(
            state,
            &ids,
            *platform,
            ManifestParts {
                runtime_version: rv,
                launch_asset: launch,
                assets,
                expo_client: req.expo_client.as_ref(),
            },
        )?);
    }
    let rollout = publish.rollout.map(|percentage| RolloutSpec {
        percentage: percentage.get(),
        salt: rollout::new_salt(),
    });
    let plan = Plan {
        group_id: ids.group_id,
        created_at: ids.created_at,
        branch_id,
        branch,
        kind: GroupKind::Update,
        message: req.message.clone(),
        rollout,
        halt_policy: publish.halt.map(Halt::to_stored),
        republished_from: None,
        updates: planned,
    };
    operation::finish(state, app, change, &ids, Some(plan), op).await
}

/// Republishes a group, onto `target` (default: its own branch).
pub(crate) async fn republish(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    target: Option<&Target>,
    req: &RepublishRequest,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let mut change = Change::begin(state).await?;
    let source = updates::group(&mut change.tx, app.id, group_id).await?;
    if source.rollout.is_some() && source.is_served() {
        return Err(Error::conflict(
            "group_in_rollout",
            "this group is being rolled out; complete or revert the rollout before republishing it",
        ));
    }
    let (branch_id, branch) = match target {
        None => (source.branch_id, source.branch.clone()),
        Some(target) => resolve_target(&mut change.tx, app, target).await?,
    };
    let keys = source
        .updates
        .iter()
        .map(|u| (u.platform, u.runtime_version.clone()))
        .collect();
    check_rollout(&mut change.tx, branch_id, &branch, &keys, false).await?;
    let ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
    let message = req
        .message
        .clone()
        .unwrap_or_else(|| format!("Republish of {}: {}", source.id, source.message));
    let plan = operation::republish_plan(state, &mut change.tx, &ids, &source, branch_id, &branch, message).await?;
    operation::finish(state, app, change, &ids, Some(plan), op).await
}
