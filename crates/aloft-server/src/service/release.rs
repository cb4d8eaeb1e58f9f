//! Rollbacks, disabling, and per-group rollouts. On the device only `createdAt` orders updates,
//! so every step that must move devices back publishes something new (a republish or a
//! directive) rather than serving an older update again.

use std::collections::{BTreeMap, BTreeSet};

use aloft_core::halt::Halt;
use aloft_core::{ChannelName, Platform, RuntimeVersion};
use aloft_store::db::Conn as SqliteConnection;
use aloft_store::db::apps::App;
use aloft_store::db::audit;
use aloft_store::db::channels;
use aloft_store::db::rollouts;
use aloft_store::db::updates::{self, BodyKind, Group, GroupKind, UpdateRef};
use uuid::Uuid;

use super::Error;
use super::input::Percentage;
use super::operation::{self, Finished, Ids, Operation, Plan, Record};
use super::{Actor, Change};
use crate::state::AppState;

fn conflict(code: &'static str, message: impl Into<String>) -> Error {
    Error::conflict(code, message)
}

/// The branch a channel serves, refusing while a branch rollout splits it.
async fn channel_branch(conn: &mut SqliteConnection, app: &App, channel: &ChannelName) -> Result<(i64, String), Error> {
    let channel = channels::get(conn, app.id, channel.as_str()).await?;
    if let Some(r) = &channel.rollout {
        return Err(conflict(
            "channel_rollout_in_progress",
            format!(
                "channel {:?} is rolling out branch {:?}; end or revert that first",
                channel.name, r.branch
            ),
        ));
    }
    Ok((channel.branch_id, channel.branch))
}

/// A platform and runtime version: the devices an update is for.
pub(crate) type Key = (Platform, RuntimeVersion);

/// The rollouts in progress on a branch that an operation on some keys would step on.
pub(crate) struct Blocking {
    /// Their groups, newest first.
    pub groups: Vec<Uuid>,
    /// "group G (ios 1.0.0, android 1.0.0)" for each, for a refusal's message.
    pub what: String,
}

/// The rollouts in progress on a branch that an operation on `keys` would step on: those rolling
/// out an update for one of the same platforms and runtime versions. A rollout for runtime
/// version 2.0.0 says nothing about the devices on 1.0.0.
pub(crate) async fn blocking_rollouts(
    conn: &mut SqliteConnection,
    branch_id: i64,
    keys: &BTreeSet<Key>,
) -> Result<Option<Blocking>, Error> {
    let mut groups: Vec<(Uuid, Vec<String>)> = Vec::new();
    for (group, platform, rv) in updates::active_rollouts(conn, branch_id).await? {
        if !keys.contains(&(platform, rv.clone())) {
            continue;
        }
        let what = format!("{platform} {rv}");
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, list)) => list.push(what),
            None => groups.push((group, vec![what])),
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    let what = groups
        .iter()
        .map(|(g, list)| format!("group {g} ({})", list.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Some(Blocking {
        groups: groups.into_iter().map(|(g, _)| g).collect(),
        what,
    }))
}

/// Refuses an operation on `keys` of a branch while a rollout for one of them is in progress.
async fn refuse_active_rollout(
    conn: &mut SqliteConnection,
    branch_id: i64,
    branch: &str,
    keys: &BTreeSet<Key>,
) -> Result<(), Error> {
    if let Some(Blocking { groups, what }) = blocking_rollouts(conn, branch_id, keys).await? {
        let group = groups[0];
        return Err(conflict(
            "rollout_in_progress",
            format!(
                "branch {branch:?} has a rollout in progress for the same platform and runtime version: {what}; \
                 revert it with `aloft rollout revert {group}`, or limit the operation with --platform and --runtime-version"
            ),
        ));
    }
    Ok(())
}

/// A rollback of a channel, as asked for.
pub(crate) struct Rollback {
    pub channel: ChannelName,
    /// To the build's embedded update instead of the previous group.
    pub to_embedded: bool,
    /// Only this platform (default: both).
    pub platform: Option<Platform>,
    /// Only this runtime version (default: every one the channel serves).
    pub runtime_version: Option<RuntimeVersion>,
    pub message: Option<String>,
}

impl Rollback {
    fn platforms(&self) -> Vec<Platform> {
        match self.platform {
            Some(p) => vec![p],
            None => Platform::ALL.to_vec(),
        }
    }
}

/// `aloft rollback --channel C`: republish the group before the one devices run now.
pub(crate) async fn rollback(
    state: &AppState,
    app: &App,
    req: &Rollback,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    if req.to_embedded {
        return rollback_to_embedded(state, app, req, op).await;
    }
    let (platforms, only_rv) = (req.platforms(), req.runtime_version.clone());
    let mut change = Change::begin(state).await?;
    let (branch_id, branch) = channel_branch(&mut change.tx, app, &req.channel).await?;
    // Per platform and runtime version (those asked for): withdraw what devices get now, and
    // republish the newest earlier update with other content.
    let served = updates::served_updates(&mut change.tx, branch_id).await?;
    let mut steps = Vec::new();
    for ((platform, rv), list) in by_key(&served) {
        if !platforms.contains(&platform) || only_rv.as_ref().is_some_and(|only| *only != rv) {
            continue;
        }
        let head = list[0];
        if let Some(previous) = list[1..]
            .iter()
            .find(|u| u.kind == BodyKind::Manifest && u.origin != head.origin)
        {
            steps.push(((platform, rv), head.id, (*previous).clone()));
        }
    }
    let keys: BTreeSet<Key> = steps.iter().map(|(key, _, _)| key.clone()).collect();
    refuse_active_rollout(&mut change.tx, branch_id, &branch, &keys).await?;
    let mut sources = Vec::new();
    for (_, head, previous) in steps {
        updates::withdraw_update(&mut change.tx, head, "rolled_back").await?;
        sources.push(previous);
    }
    if sources.is_empty() {
        return Err(conflict(
            "nothing_to_roll_back",
            format!("branch {branch:?} has no earlier update; roll back to the embedded update with --to-embedded"),
        ));
    }
    let ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
    let message = req
        .message
        .clone()
        .unwrap_or_else(|| format!("Rollback of channel {}", req.channel));
    let plan =
        operation::republish_updates_plan(state, &mut change.tx, &ids, &sources, branch_id, &branch, message).await?;
    operation::finish(state, app, change, &ids, plan, op).await
}

/// Served updates of a branch by platform and runtime version, each list newest first.
pub(crate) fn by_key(served: &[UpdateRef]) -> BTreeMap<(Platform, RuntimeVersion), Vec<&UpdateRef>> {
    let mut map: BTreeMap<(Platform, RuntimeVersion), Vec<&UpdateRef>> = BTreeMap::new();
    for u in served {
        map.entry((u.platform, u.runtime_version.clone())).or_default().push(u);
    }
    map
}

/// `aloft rollback --channel C --to-embedded`: a `rollBackToEmbedded` directive per platform and
/// runtime version, its `commitTime` fixed now.
async fn rollback_to_embedded(
    state: &AppState,
    app: &App,
    req: &Rollback,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let (platforms, only_rv) = (req.platforms(), req.runtime_version.clone());
    let mut change = Change::begin(state).await?;
    let (branch_id, branch) = channel_branch(&mut change.tx, app, &req.channel).await?;
    let mut targets: BTreeSet<Key> = BTreeSet::new();
    match only_rv {
        Some(rv) => {
            targets.extend(platforms.iter().map(|p| (*p, rv.clone())));
        }
        None => {
            for group in updates::served_groups(&mut change.tx, branch_id).await? {
                for u in group.updates {
                    if platforms.contains(&u.platform) {
                        targets.insert((u.platform, u.runtime_version));
                    }
                }
            }
        }
    }
    refuse_active_rollout(&mut change.tx, branch_id, &branch, &targets).await?;
    if targets.is_empty() {
        return Err(conflict(
            "nothing_to_roll_back",
            format!(
                "channel {:?} serves no update to roll back from; give --runtime-version",
                req.channel.as_str()
            ),
        ));
    }
    let ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
    let updates = targets
        .into_iter()
        .map(|(p, rv)| operation::directive_update(&ids, p, rv))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = Plan {
        group_id: ids.group_id,
        created_at: ids.created_at,
        branch_id,
        branch,
        kind: GroupKind::Rollback,
        message: req
            .message
            .clone()
            .unwrap_or_else(|| "Rollback to the embedded update".to_owned()),
        rollout: None,
        halt_policy: None,
        republished_from: None,
        updates,
    };
    operation::finish(state, app, change, &ids, Some(plan), op).await
}

/// Stops serving `group` and, when it was what devices got, republishes the group before it so
/// devices that already took it move off it (a device never goes back to an older `createdAt`).
async fn withdraw(
    state: &AppState,
    app: &App,
    mut change: Change,
    group: Group,
    reason: &str,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    // For each platform and runtime version where the group is what devices get, republish the
    // newest earlier update with other content.
    let served = updates::served_updates(&mut change.tx, group.branch_id).await?;
    let mut sources = Vec::new();
    for list in by_key(&served).into_values() {
        let head = list[0];
        if head.group_id != group.id {
            continue;
        }
        if let Some(previous) = list[1..]
            .iter()
            .find(|u| u.group_id != group.id && u.kind == BodyKind::Manifest && u.origin != head.origin)
        {
            sources.push((*previous).clone());
        }
    }
    updates::disable(&mut change.tx, group.id, reason).await?;
    let ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
    let message = format!("Re-serve the previous updates after withdrawing {}", group.id);
    let plan = operation::republish_updates_plan(
        state,
        &mut change.tx,
        &ids,
        &sources,
        group.branch_id,
        &group.branch,
        message,
    )
    .await?;
    operation::finish(state, app, change, &ids, plan, op).await
}

/// `aloft updates disable GROUP`: the emergency stop.
pub(crate) async fn disable(state: &AppState, app: &App, group_id: Uuid, op: Operation<'_>) -> Result<Finished, Error> {
    let mut change = Change::begin(state).await?;
    let group = updates::group(&mut change.tx, app.id, group_id).await?;
    if !group.is_served() {
        return Err(conflict("already_disabled", "this group is not served already"));
    }
    withdraw(state, app, change, group, "disabled", op).await
}

/// `aloft rollout set GROUP N` (only upwards: a device that has an update keeps it).
pub(crate) async fn set_rollout(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    percentage: Percentage,
    halt: Option<Halt>,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let percentage = percentage.get();
    let mut change = Change::begin(state).await?;
    let group = active_rollout_group(&mut change.tx, app, group_id).await?;
    let current = group.rollout.as_ref().map_or(100, |r| r.percentage);
    if percentage < current {
        return Err(conflict(
            "rollout_cannot_shrink",
            format!(
                "the rollout is at {current}%; lowering it would not take the update back from devices that have it. \
                 Revert the rollout instead (`aloft rollout revert {group_id}`)"
            ),
        ));
    }
    updates::set_rollout_percentage(&mut change.tx, group_id, Some(percentage)).await?;
    if let Some(halt) = halt {
        rollouts::set_halt_policy(&mut change.tx, group_id, Some(&halt.to_stored())).await?;
    }
    let ids = Ids::fix(&mut change.tx, app.id, None).await?;
    operation::finish(state, app, change, &ids, None, op).await
}

/// `aloft rollout complete GROUP`: every device gets the group.
pub(crate) async fn complete_rollout(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let mut change = Change::begin(state).await?;
    active_rollout_group(&mut change.tx, app, group_id).await?;
    updates::set_rollout_percentage(&mut change.tx, group_id, None).await?;
    let ids = Ids::fix(&mut change.tx, app.id, None).await?;
    operation::finish(state, app, change, &ids, None, op).await
}

/// `aloft rollout revert GROUP`: the group is withdrawn; devices that got it are moved back to
/// the control update by a republish of it.
pub(crate) async fn revert_rollout(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    end_in_withdrawal(state, app, group_id, "rollout_reverted", op).await
}

/// A rollout halted by its policy (`service::halt`): reverted as [`revert_rollout`] does,
/// recorded as a halt.
pub(crate) async fn halt_rollout(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    end_in_withdrawal(state, app, group_id, "rollout_halted", op).await
}

/// Withdraws a group whose rollout is in progress, for `reason`.
async fn end_in_withdrawal(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    reason: &str,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let mut change = Change::begin(state).await?;
    let group = active_rollout_group(&mut change.tx, app, group_id).await?;
    withdraw(state, app, change, group, reason, op).await
}

/// A halted rollout whose revert would need the publisher's signatures: the group stops being
/// served, and nothing is republished.
pub(crate) async fn stop_rollout(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    by: &Actor,
    record: Record,
) -> Result<(), Error> {
    let mut change = Change::begin(state).await?;
    let group = active_rollout_group(&mut change.tx, app, group_id).await?;
    updates::disable(&mut change.tx, group.id, "rollout_halted").await?;
    change.commit(state, app.id, record.entry(by, app, None)).await
}

async fn active_rollout_group(conn: &mut SqliteConnection, app: &App, group_id: Uuid) -> Result<Group, Error> {
    let group = updates::group(conn, app.id, group_id).await?;
    if group.rollout.is_none() || !group.is_served() {
        return Err(conflict("no_active_rollout", "this group has no rollout in progress"));
    }
    Ok(group)
}

/// Deletes a group that is no longer served (disable it first), recorded as `entry`. Its files
/// stay until `gc` finds them unreferenced, so no asset URL of a served update breaks.
pub(crate) async fn delete_group(
    state: &AppState,
    app: &App,
    group_id: Uuid,
    entry: audit::Entry,
) -> Result<(), Error> {
    let mut change = Change::begin(state).await?;
    let group = updates::group(&mut change.tx, app.id, group_id).await?;
    if group.is_served() {
        return Err(conflict(
            "group_served",
            format!("group {group_id} is still served; disable it first (`aloft updates disable {group_id}`)"),
        ));
    }
    updates::delete_group(&mut change.tx, group_id).await?;
    change.commit(state, app.id, entry).await?;
    Ok(())
}
