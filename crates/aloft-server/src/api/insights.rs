//! Insights out: what devices did with an update group, and what an app's fleet runs.

use std::collections::BTreeMap;

use aloft_core::Platform;
use aloft_core::api::{
    DailyInsights, FatalErrorCount, FleetInsights, GroupInsights, PlatformInsights, RolloutFigures, RolloutStatus,
    RuntimeFleet, UnknownChannel, UpdateShare,
};
use aloft_core::halt::{Halt, should_halt};
use aloft_core::time::Millis;
use aloft_store::db::apps::App;
use aloft_store::db::insights::{self as stored, EMBEDDED};
use aloft_store::db::rollouts::{self, WatchedRollout};
use aloft_store::db::updates::{self, Group};
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use super::grant::AppRead;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::insights::day_of;
use crate::insights::report::{self, Counts};
use crate::service::halt;
use crate::state::AppState;

/// Days a report covers unless `?days=` says otherwise.
const DEFAULT_DAYS: u32 = 14;
const MAX_DAYS: u32 = 90;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupInsightsQuery {
    /// How many days back, today included: 1 to 90 (default 14).
    days: Option<u32>,
}

fn rate(counts: &Counts) -> Option<f64> {
    // Two decimals are all a person reads; the JSON stays stable across platforms.
    counts.failure_rate().map(|r| (r * 100.0).round() / 100.0)
}

pub(super) async fn group_insights(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<GroupInsightsQuery>,
) -> Result<Json<GroupInsights>, ApiError> {
    let days = q.days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("query parameter `days` must be 1 to {MAX_DAYS}, not {days}"),
        ));
    }
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("group_not_found", "no update group with that id"))?;
    let group = find_group(&state, &app, id).await?;
    Ok(Json(group_report(&state, &group, days).await?))
}

/// The app's group `id`.
async fn find_group(state: &AppState, app: &App, id: Uuid) -> Result<Group, ApiError> {
    let mut conn = state.db.conn().await?;
    Ok(updates::group(&mut conn, app.id, id).await?)
}

/// What devices did with a group over the last `days` days (the API's and the dashboard's).
pub(crate) async fn group_report(state: &AppState, group: &Group, days: u32) -> Result<GroupInsights, ApiError> {
    let id = group.id;
    // What this server counted in the last seconds is stored first, so the answer includes it.
    state.insights.store(&state.db).await;
    let since = day_of(Millis::now()) - i64::from(days - 1);
    let keys: Vec<(Uuid, Platform)> = group.updates.iter().map(|u| (u.id, u.platform)).collect();
    let ids: Vec<Uuid> = keys.iter().map(|(id, _)| *id).collect();
    let patches = aloft_store::db::patches::to_updates(&state.db, &ids).await?;
    let patched = |update: Uuid| {
        patches
            .iter()
            .filter(|p| p.target == update)
            .fold((0, 0), |(hits, saved), p| {
                let per_download = p.full_size.unwrap_or(0).saturating_sub(p.size.unwrap_or(0));
                (hits + p.hits, saved + p.hits * per_download)
            })
    };
    let platforms = report::updates(&state.db, &keys, since)
        .await?
        .into_iter()
        .map(|r| PlatformInsights {
            patches_served: patched(r.update_id).0,
            patch_bytes_saved: patched(r.update_id).1,
            platform: r.platform,
            update_id: r.update_id,
            devices: r.totals.devices,
            installs: r.totals.installs,
            launches: r.totals.launches,
            failures: r.totals.failures,
            failure_rate: rate(&r.totals),
            exact: r.totals.exact,
            fatal_errors: r
                .fatal_errors
                .into_iter()
                .map(|(message, count)| FatalErrorCount { message, count })
                .collect(),
            daily: r
                .daily
                .iter()
                .map(|(day, c)| DailyInsights {
                    date: Millis::date_of_day(*day),
                    devices: c.devices,
                    installs: c.installs,
                    launches: c.launches,
                    failures: c.failures,
                    failure_rate: rate(c),
                })
                .collect(),
        })
        .collect();
    Ok(GroupInsights {
        group_id: id,
        since: Millis::date_of_day(since),
        platforms,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetQuery {
    /// One channel (default: every channel). Checks for channels that do not exist are listed
    /// either way: they are what a misconfigured build sends.
    channel: Option<String>,
}

pub(super) async fn fleet_insights(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<FleetInsights>, ApiError> {
    Ok(Json(fleet_report(&state, &app, q.channel.as_deref()).await?))
}

/// What the app's devices run today (the API's and the dashboard's).
pub(crate) async fn fleet_report(
    state: &AppState,
    app: &App,
    channel: Option<&str>,
) -> Result<FleetInsights, ApiError> {
    state.insights.store(&state.db).await;
    let today = day_of(Millis::now());
    let mut runtimes: BTreeMap<(String, String, String), RuntimeFleet> = BTreeMap::new();
    for share in report::fleet(&state.db, app.id, channel, today).await? {
        let Ok(platform) = share.platform.parse::<Platform>() else {
            continue;
        };
        let entry = runtimes
            .entry((
                share.channel.clone(),
                share.platform.clone(),
                share.runtime_version.clone(),
            ))
            .or_insert_with(|| RuntimeFleet {
                channel: share.channel.clone(),
                platform,
                runtime_version: share.runtime_version.clone(),
                embedded: 0,
                updates: Vec::new(),
            });
        if share.running == EMBEDDED {
            entry.embedded += share.devices;
        } else if let Ok(update_id) = Uuid::parse_str(&share.running) {
            entry.updates.push(UpdateShare {
                update_id,
                devices: share.devices,
            });
        }
    }
    let mut runtimes: Vec<RuntimeFleet> = runtimes.into_values().collect();
    for r in &mut runtimes {
        r.updates
            .sort_by(|a, b| b.devices.cmp(&a.devices).then(a.update_id.cmp(&b.update_id)));
    }
    let unknown_channels = stored::unknown_channels(&state.db, app.id, today)
        .await?
        .into_iter()
        .map(|(channel, checks)| UnknownChannel { channel, checks })
        .collect();
    Ok(FleetInsights {
        date: Millis::date_of_day(today),
        runtimes,
        unknown_channels,
    })
}

/// A group's rollout and its live figures against its halt policy.
pub(super) async fn rollout_status(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let group_id =
        Uuid::parse_str(&id).map_err(|_| ApiError::not_found("group_not_found", "no update group with that id"))?;
    let group = find_group(&state, &app, group_id).await?;
    Ok(Json(rollout_report(&state, &app, &group).await?))
}

/// A group's rollout state and live figures (the API's and the dashboard's).
pub(crate) async fn rollout_report(state: &AppState, app: &App, group: &Group) -> Result<RolloutStatus, ApiError> {
    let group_id = group.id;
    let mut conn = state.db.conn().await?;
    let own = rollouts::halt_policy(&mut conn, group_id).await?;
    drop(conn);
    let halt = Halt::resolve(own.as_deref(), app.halt_policy.as_deref());
    let state_name = match (&group.disabled, &group.rollout) {
        (Some((_, reason)), _) => match reason.as_str() {
            "rollout_halted" => "halted",
            "rollout_reverted" => "reverted",
            _ => "disabled",
        },
        (None, Some(_)) => "rolling_out",
        (None, None) => "complete",
    };
    state.insights.store(&state.db).await;
    let platforms = if state_name == "rolling_out" {
        halt::weigh(state, app.slug.as_str(), &WatchedRollout::Group(group_id), halt)
            .await?
            .into_iter()
            .map(|w| RolloutFigures {
                platform: w.platform,
                runtime_version: w.runtime_version,
                update_id: w.update_id,
                installs: w.figures.installs,
                launches: w.figures.launches,
                failures: w.figures.failures,
                failure_rate: w.figures.failure_rate(),
                control_update_id: w.control.map(|(id, _)| id),
                control_failure_rate: w.control.and_then(|(_, f)| f.failure_rate()),
                past_policy: w.halts,
            })
            .collect()
    } else {
        let keys: Vec<(Uuid, Platform)> = group.updates.iter().map(|u| (u.id, u.platform)).collect();
        let since = day_of(Millis::now()) - 6;
        let reports = report::updates(&state.db, &keys, since).await?;
        group
            .updates
            .iter()
            .zip(reports)
            .map(|(u, r)| {
                let figures = r.totals.figures();
                RolloutFigures {
                    platform: u.platform,
                    runtime_version: u.runtime_version.to_string(),
                    update_id: u.id,
                    installs: figures.installs,
                    launches: figures.launches,
                    failures: figures.failures,
                    failure_rate: figures.failure_rate(),
                    control_update_id: None,
                    control_failure_rate: None,
                    past_policy: matches!(halt, Halt::Policy(p) if should_halt(&p, &figures, None)),
                }
            })
            .collect()
    };
    Ok(RolloutStatus {
        group_id,
        state: state_name.to_owned(),
        percentage: group.rollout.as_ref().map(|r| r.percentage),
        policy: match halt {
            Halt::Off => None,
            Halt::Policy(p) => Some(p),
        },
        platforms,
    })
}
