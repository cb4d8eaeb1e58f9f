//! Channels and branches, and a channel's branch rollout.

use aloft_core::api::{ChannelRolloutAction, ChannelRolloutRequest};
use aloft_core::{BranchName, ChannelName, rollout};
use aloft_store::db::apps::App;
use aloft_store::db::channels::{self, Channel};
use serde_json::json;

use super::Error;
use super::input::{Percentage, branch_name};
use super::operation::{self, Finished, Ids, Operation, Record};
use super::{Actor, Change, release};
use crate::state::AppState;
use aloft_store::db::updates;

pub(crate) async fn create_channel(
    state: &AppState,
    by: &Actor,
    app: &App,
    name: &ChannelName,
    branch: Option<&BranchName>,
) -> Result<Channel, Error> {
    // By default, a branch of the channel's name (the two kinds of name follow the same rule).
    let branch = match branch {
        Some(b) => b.clone(),
        None => branch_name(name.as_str())?,
    };
    let mut change = Change::begin(state).await?;
    let channel = channels::create(&mut change.tx, app.id, name.as_str(), branch.as_str()).await?;
    let entry = by.entry(
        Some(app.slug.as_str()),
        "channel.create",
        &channel.name,
        json!({"branch": channel.branch}),
    );
    change.commit(state, app.id, entry).await?;
    Ok(channel)
}

/// Points a channel at another branch: instant, nothing is republished.
pub(crate) async fn edit_channel(
    state: &AppState,
    by: &Actor,
    app: &App,
    name: &ChannelName,
    branch: &BranchName,
) -> Result<Channel, Error> {
    let mut change = Change::begin(state).await?;
    let channel = channels::get(&mut change.tx, app.id, name.as_str()).await?;
    if channel.rollout.is_some() {
        return Err(Error::conflict(
            "channel_rollout_in_progress",
            "the channel is in a branch rollout; end or revert it first",
        ));
    }
    let branch_id = channels::branch_id(&mut change.tx, app.id, branch.as_str()).await?;
    channels::set_branch(&mut change.tx, channel.id, branch_id).await?;
    let channel = channels::get(&mut change.tx, app.id, name.as_str()).await?;
    let entry = by.entry(
        Some(app.slug.as_str()),
        "channel.edit",
        name.as_str(),
        json!({"branch": branch.as_str()}),
    );
    change.commit(state, app.id, entry).await?;
    Ok(channel)
}

pub(crate) async fn create_branch(state: &AppState, by: &Actor, app: &App, name: &BranchName) -> Result<(), Error> {
    let mut change = Change::begin(state).await?;
    channels::create_branch(&mut change.tx, app.id, name.as_str()).await?;
    let entry = by.entry(Some(app.slug.as_str()), "branch.create", name.as_str(), json!({}));
    change.commit(state, app.id, entry).await?;
    Ok(())
}

pub(crate) async fn delete_branch(state: &AppState, by: &Actor, app: &App, name: &BranchName) -> Result<(), Error> {
    let mut change = Change::begin(state).await?;
    channels::delete_branch(&mut change.tx, app.id, name.as_str()).await?;
    let entry = by.entry(Some(app.slug.as_str()), "branch.delete", name.as_str(), json!({}));
    change.commit(state, app.id, entry).await?;
    Ok(())
}

/// Starts, raises, ends (promotes) or reverts a channel's branch rollout. Ending or reverting
/// republishes the winning branch's newest group when devices on the losing side run something
/// newer, since a device only ever moves to a later `createdAt`.
pub(crate) async fn channel_rollout(
    state: &AppState,
    app: &App,
    name: &ChannelName,
    req: &ChannelRolloutRequest,
    op: Operation<'_>,
) -> Result<Finished, Error> {
    let mut change = Change::begin(state).await?;
    let channel = channels::get(&mut change.tx, app.id, name.as_str()).await?;
    let conflict = |code: &'static str, m: String| Error::conflict(code, m);
    let halt = super::input::halt_setting(req.halt_policy, req.no_halt)?;
    let mut plan = None;
    let ids;
    match &req.action {
        ChannelRolloutAction::Start { branch, percentage } => {
            let percentage = Percentage::new(*percentage)?.get();
            if let Some(r) = &channel.rollout {
                return Err(conflict(
                    "channel_rollout_in_progress",
                    format!("the channel already rolls out branch {:?}", r.branch),
                ));
            }
            let branch = branch_name(branch)?;
            let branch_id = channels::branch_id(&mut change.tx, app.id, branch.as_str()).await?;
            if branch_id == channel.branch_id {
                return Err(Error::invalid(
                    "same_branch",
                    "the channel already points at that branch",
                ));
            }
            channels::set_rollout(
                &mut change.tx,
                channel.id,
                Some((branch_id, percentage, &rollout::new_salt())),
            )
            .await?;
            if let Some(halt) = halt {
                channels::set_rollout_halt_policy(&mut change.tx, channel.id, Some(&halt.to_stored())).await?;
            }
            ids = Ids::fix(&mut change.tx, app.id, None).await?;
        }
        ChannelRolloutAction::Set { percentage } => {
            let Some(r) = &channel.rollout else {
                return Err(conflict(
                    "no_channel_rollout",
                    "the channel has no branch rollout; start one with --branch".into(),
                ));
            };
            let percentage = Percentage::new(*percentage)?.get();
            if percentage < r.percentage {
                return Err(conflict(
                    "rollout_cannot_shrink",
                    format!(
                        "the rollout is at {}%; lowering it would not take updates back from devices; revert it instead",
                        r.percentage
                    ),
                ));
            }
            channels::set_rollout(&mut change.tx, channel.id, Some((r.branch_id, percentage, &r.salt))).await?;
            if let Some(halt) = halt {
                channels::set_rollout_halt_policy(&mut change.tx, channel.id, Some(&halt.to_stored())).await?;
            }
            ids = Ids::fix(&mut change.tx, app.id, None).await?;
        }
        ChannelRolloutAction::End | ChannelRolloutAction::Revert => {
            let Some(r) = channel.rollout.clone() else {
                return Err(conflict(
                    "no_channel_rollout",
                    "the channel has no branch rollout".into(),
                ));
            };
            let promote = matches!(req.action, ChannelRolloutAction::End);
            let (winner, winner_name, loser) = if promote {
                (r.branch_id, r.branch.clone(), channel.branch_id)
            } else {
                (channel.branch_id, channel.branch.clone(), r.branch_id)
            };
            if promote {
                channels::set_branch(&mut change.tx, channel.id, r.branch_id).await?;
            }
            channels::set_rollout(&mut change.tx, channel.id, None).await?;
            ids = Ids::fix(&mut change.tx, app.id, op.fixed).await?;
            // Per platform and runtime version: where the losing side's devices run something newer
            // than the winning side's newest, republish the winner's so they move.
            let winners = updates::served_updates(&mut change.tx, winner).await?;
            let losers = updates::served_updates(&mut change.tx, loser).await?;
            let losers = release::by_key(&losers);
            let sources: Vec<_> = release::by_key(&winners)
                .into_iter()
                .filter(|(key, list)| losers.get(key).is_some_and(|l| l[0].created_at > list[0].created_at))
                .map(|(_, list)| list[0].clone())
                .collect();
            let verb = if promote { "Promote" } else { "Restore" };
            let message = format!("{verb} branch {winner_name:?} on channel {:?}", channel.name);
            plan =
                operation::republish_updates_plan(state, &mut change.tx, &ids, &sources, winner, &winner_name, message)
                    .await?;
        }
    }
    operation::finish(state, app, change, &ids, plan, op).await
}

/// A halted branch rollout whose revert would need the publisher's signatures: the channel
/// stops splitting its devices, and nothing is republished.
pub(crate) async fn stop_channel_rollout(
    state: &AppState,
    app: &App,
    name: &str,
    by: &Actor,
    record: Record,
) -> Result<(), Error> {
    let mut change = Change::begin(state).await?;
    let channel = channels::get(&mut change.tx, app.id, name).await?;
    if channel.rollout.is_none() {
        return Err(Error::conflict(
            "no_channel_rollout",
            "the channel has no branch rollout",
        ));
    }
    channels::set_rollout(&mut change.tx, channel.id, None).await?;
    change.commit(state, app.id, record.entry(by, app, None)).await
}
