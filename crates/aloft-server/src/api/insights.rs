//! Insights out: what devices did with an update group, and what an app's fleet runs.

use std::collections::BTreeMap;

use aloft_core::Platform;
use aloft_core::api::{
    DailyInsights, FatalErrorCount, FleetInsights, GroupInsights, PlatformInsights, RuntimeFleet, UnknownChannel,
    UpdateShare,
};
use aloft_core::time::Millis;
use aloft_store::db::insights::{self as stored, EMBEDDED};
use aloft_store::db::updates;
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
use crate::state::AppState;

/// Days a report covers unless `?days=` says otherwise.
const DEFAULT_DAYS: u32 = 14;
const MAX_DAYS: u32 = 90;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInsightsQuery {
    /// How many days back, today included: 1 to 90 (default 14).
    days: Option<u32>,
}

fn rate(counts: &Counts) -> Option<f64> {
    // Two decimals are all a person reads; the JSON stays stable across platforms.
    counts.failure_rate().map(|r| (r * 100.0).round() / 100.0)
}

pub async fn group_insights(
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
    let mut conn = state.db.conn().await?;
    let group = updates::group(&mut conn, app.id, id).await?;
    drop(conn);
    // What this server counted in the last seconds is stored first, so the answer includes it.
    state.insights.store(&state.db).await;
    let since = day_of(Millis::now()) - i64::from(days - 1);
    let keys: Vec<(Uuid, Platform)> = group.updates.iter().map(|u| (u.id, u.platform)).collect();
    let platforms = report::updates(&state.db, &keys, since)
        .await?
        .into_iter()
        .map(|r| PlatformInsights {
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
    Ok(Json(GroupInsights {
        group_id: id,
        since: Millis::date_of_day(since),
        platforms,
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// One channel (default: every channel). Checks for channels that do not exist are listed
    /// either way: they are what a misconfigured build sends.
    channel: Option<String>,
}

pub async fn fleet_insights(
    AppRead { app, .. }: AppRead,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<FleetInsights>, ApiError> {
    state.insights.store(&state.db).await;
    let today = day_of(Millis::now());
    let mut runtimes: BTreeMap<(String, String, String), RuntimeFleet> = BTreeMap::new();
    for share in report::fleet(&state.db, app.id, q.channel.as_deref(), today).await? {
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
    Ok(Json(FleetInsights {
        date: Millis::date_of_day(today),
        runtimes,
        unknown_channels,
    }))
}
