//! Self-halting rollouts. Every few seconds (`jobs.rs`) each rollout in progress is weighed
//! against its halt policy with the insights every replica stored; one that fails past its
//! policy is reverted, exactly as `aloft rollout revert` or `aloft channels rollout --revert`
//! would, by the server itself. The revert is a change like any other: under the write lock, it
//! re-checks that the rollout is still in progress, so with several replicas weighing the same
//! rollout, one reverts it and the others find nothing left to do.
//!
//! Reverting republishes what devices outside the rollout run, which needs a signature when the
//! app's updates are signed by the publisher. When the server cannot sign (no server-side key),
//! the halt stops the rollout without republishing: devices that have not taken the update no
//! longer get it, and the audit entry says that `aloft rollout revert` with the key moves the
//! others back.

use aloft_core::ChannelName;
use aloft_core::Platform;
use aloft_core::api::{ChannelRolloutAction, ChannelRolloutRequest};
use aloft_core::halt::{Figures, Halt, HaltPolicy, should_halt};
use aloft_core::time::Millis;
use aloft_store::db::apps::{self, App};
use aloft_store::db::rollouts::{self, Watched, WatchedRollout};
use serde_json::{Value, json};
use uuid::Uuid;

use super::operation::{Operation, Record};
use super::{Actor, Error, channels, release};
use crate::insights::day_of;
use crate::insights::report;
use crate::state::AppState;

/// Days of insights a decision weighs, today included.
const WINDOW_DAYS: i64 = 7;

/// Who halts, in the audit log.
fn halter() -> Actor {
    Actor {
        who: "aloft (automatic halt) (token 0)".to_owned(),
        name: "aloft (automatic halt)".to_owned(),
        remote: String::new(),
    }
}

/// One rolled-out update against what devices outside the rollout get.
#[derive(Debug, Clone)]
pub(crate) struct Weighed {
    pub platform: Platform,
    pub runtime_version: String,
    pub update_id: Uuid,
    pub figures: Figures,
    pub control: Option<(Uuid, Figures)>,
    /// Whether these figures halt the rollout under its policy.
    pub halts: bool,
}

impl Weighed {
    fn describe(&self) -> Value {
        json!({
            "platform": self.platform,
            "runtime_version": self.runtime_version,
            "update_id": self.update_id,
            "installs": self.figures.installs,
            "launches": self.figures.launches,
            "failures": self.figures.failures,
            "failure_rate": self.figures.failure_rate(),
            "control_update_id": self.control.map(|(id, _)| id),
            "control_failure_rate": self.control.and_then(|(_, f)| f.failure_rate()),
        })
    }
}

/// The rolled-out updates of a rollout, with their controls, from what this replica serves.
fn rolled_out(state: &AppState, slug: &str, rollout: &WatchedRollout) -> Vec<(Platform, String, Uuid, Option<Uuid>)> {
    let Some(app) = state.served.app(slug) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match rollout {
        WatchedRollout::Group(group_id) => {
            for by_platform in app.heads.values() {
                for (platform, by_rv) in by_platform {
                    for (rv, head) in by_rv {
                        if head.update.group_id == *group_id
                            && let Some(r) = &head.rollout
                        {
                            out.push((*platform, rv.clone(), head.update.id, r.control.as_ref().map(|c| c.id)));
                        }
                    }
                }
            }
        }
        WatchedRollout::Channel(name) => {
            let Some(route) = app.route(name) else {
                return out;
            };
            let Some((branch, _, _)) = &route.rollout else {
                return out;
            };
            for (platform, by_rv) in app.heads.get(branch).into_iter().flatten() {
                for (rv, head) in by_rv {
                    let control = app.head(route.branch, *platform, rv).map(|h| h.update.id);
                    out.push((*platform, rv.clone(), head.update.id, control));
                }
            }
        }
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

/// Weighs a rollout's updates under `halt` with the stored insights of every replica.
pub(crate) async fn weigh(
    state: &AppState,
    slug: &str,
    rollout: &WatchedRollout,
    halt: Halt,
) -> Result<Vec<Weighed>, Error> {
    let pairs = rolled_out(state, slug, rollout);
    let mut keys: Vec<(Uuid, Platform)> = Vec::new();
    for (platform, _, update, control) in &pairs {
        keys.push((*update, *platform));
        keys.extend(control.map(|c| (c, *platform)));
    }
    let since = day_of(Millis::now()) - (WINDOW_DAYS - 1);
    let reports = report::updates(&state.db, &keys, since).await?;
    let figures_of = |id: Uuid| {
        reports
            .iter()
            .find(|r| r.update_id == id)
            .map_or_else(Figures::default, |r| r.totals.figures())
    };
    Ok(pairs
        .into_iter()
        .map(|(platform, runtime_version, update_id, control)| {
            let figures = figures_of(update_id);
            let control = control.map(|id| (id, figures_of(id)));
            let halts = match halt {
                Halt::Off => false,
                Halt::Policy(policy) => should_halt(&policy, &figures, control.as_ref().map(|(_, f)| f)),
            };
            Weighed {
                platform,
                runtime_version,
                update_id,
                figures,
                control,
                halts,
            }
        })
        .collect())
}

/// One pass over every rollout in progress: halts those past their policy. Returns how many it
/// halted.
pub(crate) async fn pass(state: &AppState) -> Result<usize, Error> {
    // This replica's latest counts first, so the decision sees them.
    state.insights.store(&state.db).await;
    let mut conn = state.db.conn().await?;
    let watched = rollouts::watched(&mut conn).await?;
    drop(conn);
    let mut halted = 0;
    for w in watched {
        let halt = Halt::resolve(w.policy.as_deref(), w.app_policy.as_deref());
        let Halt::Policy(policy) = halt else {
            continue;
        };
        let weighed = weigh(state, &w.app, &w.rollout, halt).await?;
        if weighed.iter().any(|x| x.halts) && halt_one(state, &w, &policy, &weighed).await? {
            halted += 1;
        }
    }
    Ok(halted)
}

/// Halts one rollout; whether this call did (another replica may have been first).
async fn halt_one(state: &AppState, w: &Watched, policy: &HaltPolicy, weighed: &[Weighed]) -> Result<bool, Error> {
    let app = apps::by_id(&state.db, w.app_id).await?;
    let trigger = weighed.iter().find(|x| x.halts).map(Weighed::describe);
    let details = json!({
        "policy": policy,
        "trigger": trigger,
        "figures": weighed.iter().map(Weighed::describe).collect::<Vec<_>>(),
    });
    let (what, target) = match &w.rollout {
        WatchedRollout::Group(id) => (format!("the rollout of group {id}"), id.to_string()),
        WatchedRollout::Channel(name) => (format!("the branch rollout of channel {name:?}"), name.clone()),
    };
    let because = weighed
        .iter()
        .find(|x| x.halts)
        .map(|x| {
            format!(
                "on {} (runtime {}), {} of {} devices that ran update {} failed ({:.2} %; policy: over {} % once {} installed)",
                x.platform.as_str(),
                x.runtime_version,
                x.figures.failures,
                x.figures.launches + x.figures.failures,
                x.update_id,
                x.figures.failure_rate().unwrap_or(0.0),
                policy.failure_rate,
                policy.min_devices
            )
        })
        .unwrap_or_default();
    let by = halter();
    let record = |summary: String| Record {
        action: "rollout.halt",
        target: target.clone(),
        summary,
        details: details.clone(),
    };
    let reverted = match &w.rollout {
        WatchedRollout::Group(id) => {
            let op = Operation::commit(&by, record(format!("halted {what}: {because}")));
            release::halt_rollout(state, &app, *id, op).await
        }
        WatchedRollout::Channel(name) => {
            let name = ChannelName::parse(name.clone()).map_err(|e| Error::internal("a stored channel name", &e))?;
            let request = ChannelRolloutRequest {
                action: ChannelRolloutAction::Revert,
                halt_policy: None,
                no_halt: false,
                commit: None,
                allow_unsigned: false,
            };
            let op = Operation::commit(&by, record(format!("halted {what}: {because}")));
            channels::channel_rollout(state, &app, &name, &request, op).await
        }
    };
    match reverted {
        Ok(_) => {}
        // Another replica halted it first, or a person ended it meanwhile.
        Err(Error::Conflict { code, .. }) if code == "no_active_rollout" || code == "no_channel_rollout" => {
            return Ok(false);
        }
        // Republishing needs the publisher's key: stop the rollout without it.
        Err(Error::Conflict {
            code: "signature_required",
            ..
        }) => {
            let summary = format!(
                "halted {what} without republishing (the updates are signed by the publisher): devices that had \
                 not taken it no longer get it; `aloft rollout revert` with the signing key moves the others back. {because}"
            );
            let stopped = stop_unsigned(state, &app, w, &by, record(summary)).await;
            return match stopped {
                Ok(()) => {
                    metrics::counter!("aloft_rollout_halts_total", "app" => app.slug.to_string()).increment(1);
                    Ok(true)
                }
                Err(Error::Conflict { code, .. }) if code == "no_active_rollout" || code == "no_channel_rollout" => {
                    Ok(false)
                }
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    }
    tracing::warn!(app = %app.slug, rollout = %target, "{because}: rollout halted");
    metrics::counter!("aloft_rollout_halts_total", "app" => app.slug.to_string()).increment(1);
    Ok(true)
}

/// Stops a rollout without republishing anything.
async fn stop_unsigned(state: &AppState, app: &App, w: &Watched, by: &Actor, record: Record) -> Result<(), Error> {
    match &w.rollout {
        WatchedRollout::Group(id) => release::stop_rollout(state, app, *id, by, record).await,
        WatchedRollout::Channel(name) => channels::stop_channel_rollout(state, app, name, by, record).await,
    }
}
