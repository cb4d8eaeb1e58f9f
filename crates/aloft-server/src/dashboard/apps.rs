//! The apps page (`/`) and an app's page: channels and the branches they point at, what the
//! fleet runs, and the controls that act on a channel (re-point, branch rollout, rollback) and on
//! the app (halt policy).

use std::collections::BTreeMap;

use aloft_core::api::{ChannelRolloutAction, ChannelRolloutRequest, FleetInsights};
use aloft_core::halt::{DEFAULT_POLICY, Halt, HaltPolicy};
use aloft_store::db::apps::{self, App};
use aloft_store::db::channels::{self, Channel};
use aloft_store::db::updates;
use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::Value;

use super::confirm::{Confirm, confirmed};
use super::session::{Posted, Signed};
use super::view::{self, can_write, server_can_sign, when};
use super::{Dash, Failure, Head, PageResult, done, page};
use crate::api::auth::Need;
use crate::api::insights::fleet_report;
use crate::service::operation::{Operation, Record};
use crate::service::{self, input, release};

#[derive(Deserialize, Default)]
pub(super) struct PageQuery {
    notice: Option<String>,
    fragment: Option<String>,
}

/// What the fleet runs, alone (the app page's script refreshes it).
#[derive(Template)]
#[template(path = "dashboard/app_field.html")]
struct FieldFragment<'a> {
    shares: &'a [ShareRow],
    field: &'a [FieldRow],
    unknown_channels: &'a [(String, i64)],
}

/// The newest served group per runtime version of a branch: (runtime version, group id, message,
/// created).
async fn newest_per_runtime(
    dash: &Dash,
    app: &App,
    branch_id: i64,
) -> Result<Vec<(String, String, String, String)>, Failure> {
    let mut conn = dash.state.db.conn().await?;
    let groups = updates::list_groups(&mut conn, app.id, Some(branch_id), 100).await?;
    let mut newest: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.is_served()) {
        for u in &g.updates {
            newest
                .entry(u.runtime_version.to_string())
                .or_insert_with(|| (g.id.to_string(), g.message.clone(), when(g.created_at)));
        }
    }
    Ok(newest.into_iter().map(|(rv, (id, m, at))| (rv, id, m, at)).collect())
}

fn devices_today(fleet: &FleetInsights) -> u64 {
    fleet
        .runtimes
        .iter()
        .map(|r| r.embedded + r.updates.iter().map(|u| u.devices).sum::<u64>())
        .sum()
}

struct AppRow {
    slug: String,
    channels: Vec<ChannelRow>,
    devices_today: u64,
}

struct ChannelRow {
    name: String,
    branch: String,
    rollout: Option<String>,
    /// (runtime version, group id, message, created)
    newest: Vec<(String, String, String, String)>,
}

#[derive(Template)]
#[template(path = "dashboard/apps.html")]
struct AppsPage {
    head: Head,
    apps: Vec<AppRow>,
}

async fn channel_rows(dash: &Dash, app: &App) -> Result<Vec<ChannelRow>, Failure> {
    let mut rows = Vec::new();
    for c in channels::list(&dash.state.db, app.id).await? {
        rows.push(ChannelRow {
            newest: newest_per_runtime(dash, app, c.branch_id).await?,
            rollout: c
                .rollout
                .as_ref()
                .map(|r| format!("{}% to branch {}", r.percentage, r.branch)),
            name: c.name,
            branch: c.branch,
        });
    }
    Ok(rows)
}

pub(super) async fn index(State(dash): State<Dash>, signed: Signed, Query(q): Query<PageQuery>) -> PageResult {
    let mut rows = Vec::new();
    for app in apps::list(&dash.state.db).await? {
        if !signed.caller.sees(app.slug.as_str()) {
            continue;
        }
        let fleet = fleet_report(&dash.state, &app, None).await?;
        rows.push(AppRow {
            slug: app.slug.to_string(),
            channels: channel_rows(&dash, &app).await?,
            devices_today: devices_today(&fleet),
        });
    }
    Ok(page(&AppsPage {
        head: Head::new("Apps", Some(&signed)).with_notice(q.notice.as_deref()),
        apps: rows,
    }))
}

struct FieldRow {
    channel: String,
    platform: String,
    runtime_version: String,
    embedded: u64,
    ota: u64,
    share: String,
}

struct ShareRow {
    channel: String,
    embedded: u64,
    ota: u64,
    share: String,
}

#[derive(Template)]
#[template(path = "dashboard/app.html")]
struct AppPage {
    head: Head,
    slug: String,
    manifest_url: String,
    csrf: String,
    can_write: bool,
    can_sign: bool,
    channels: Vec<ChannelRow>,
    branches: Vec<(String, i64)>,
    field: Vec<FieldRow>,
    shares: Vec<ShareRow>,
    unknown_channels: Vec<(String, i64)>,
    halt: String,
    halt_rate: String,
    halt_min: u64,
    server_key: bool,
}

fn ota_share(embedded: u64, ota: u64) -> String {
    match embedded + ota {
        0 => "–".to_owned(),
        total => format!("{:.0}% OTA", 100.0 * ota as f64 / total as f64),
    }
}

pub(super) async fn app(
    State(dash): State<Dash>,
    signed: Signed,
    Path(slug): Path<String>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Read).await?;
    let fleet = fleet_report(&dash.state, &app, None).await?;
    let mut per_channel: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let field: Vec<FieldRow> = fleet
        .runtimes
        .iter()
        .map(|r| {
            let ota: u64 = r.updates.iter().map(|u| u.devices).sum();
            let entry = per_channel.entry(r.channel.clone()).or_default();
            entry.0 += r.embedded;
            entry.1 += ota;
            FieldRow {
                channel: r.channel.clone(),
                platform: r.platform.to_string(),
                runtime_version: r.runtime_version.clone(),
                embedded: r.embedded,
                ota,
                share: ota_share(r.embedded, ota),
            }
        })
        .collect();
    let shares: Vec<ShareRow> = per_channel
        .into_iter()
        .map(|(channel, (embedded, ota))| ShareRow {
            share: ota_share(embedded, ota),
            channel,
            embedded,
            ota,
        })
        .collect();
    let branches = channels::list_branches(&dash.state.db, app.id)
        .await?
        .into_iter()
        .map(|b| (b.name, b.groups))
        .collect();
    let (halt, policy) = match Halt::resolve(None, app.halt_policy.as_deref()) {
        Halt::Off => ("off: rollouts never halt by themselves".to_owned(), DEFAULT_POLICY),
        Halt::Policy(p) => (
            format!(
                "halt a rollout when more than {}% of devices fail, once {} have installed it",
                p.failure_rate, p.min_devices
            ),
            p,
        ),
    };
    let unknown_channels: Vec<(String, i64)> = fleet
        .unknown_channels
        .into_iter()
        .map(|u| (u.channel, u.checks))
        .collect();
    if q.fragment.as_deref() == Some("field") {
        return Ok(page(&FieldFragment {
            shares: &shares,
            field: &field,
            unknown_channels: &unknown_channels,
        }));
    }
    Ok(page(&AppPage {
        head: Head::new(format!("App {slug}"), Some(&signed)).with_notice(q.notice.as_deref()),
        manifest_url: dash.state.config.manifest_url(app.slug.as_str()),
        csrf: signed.session.csrf.clone(),
        can_write: can_write(&signed.caller),
        can_sign: server_can_sign(&dash.state, &app).await?,
        channels: channel_rows(&dash, &app).await?,
        branches,
        field,
        shares,
        unknown_channels,
        halt,
        halt_rate: policy.failure_rate.to_string(),
        halt_min: policy.min_devices,
        server_key: app.signing_key_pem.is_some(),
        slug: app.slug.to_string(),
    }))
}

async fn channel_of(dash: &Dash, app: &App, name: &str) -> Result<Channel, Failure> {
    let mut conn = dash.state.db.conn().await?;
    Ok(channels::get(&mut conn, app.id, &input::channel_name(name)?.to_string()).await?)
}

/// What devices of a channel get from a branch, one line per runtime version.
async fn branch_lines(dash: &Dash, app: &App, branch: &str, channel: &str) -> Result<Vec<String>, Failure> {
    let mut conn = dash.state.db.conn().await?;
    let branch_id = channels::branch_id(&mut conn, app.id, branch).await?;
    drop(conn);
    let newest = newest_per_runtime(dash, app, branch_id).await?;
    if newest.is_empty() {
        return Ok(vec![format!(
            "Branch {branch} has no updates: devices on channel {channel} will be told there is no update and keep what they run."
        )]);
    }
    Ok(newest
        .into_iter()
        .map(|(rv, id, message, at)| {
            format!("Devices on channel {channel} with runtime version {rv} will get group {id} (\"{message}\", {at}).")
        })
        .collect())
}

#[derive(Deserialize)]
pub(super) struct RepointForm {
    branch: String,
    confirmed: Option<String>,
}

pub(super) async fn repoint(
    State(dash): State<Dash>,
    Path((slug, channel)): Path<(String, String)>,
    posted: Posted<RepointForm>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let name = input::channel_name(&channel)?;
    let branch = input::branch_name(&form.branch)?;
    let back = format!("/apps/{slug}");
    if !confirmed(&form.confirmed) {
        let current = channel_of(&dash, &app, &channel).await?;
        let mut lines = vec![format!(
            "Channel {channel} points at branch {} now; it will point at branch {}.",
            current.branch, form.branch
        )];
        lines.extend(branch_lines(&dash, &app, branch.as_str(), &channel).await?);
        return Ok(Confirm {
            title: format!("Point channel {channel} at branch {}?", form.branch),
            lines,
            fields: vec![("branch", form.branch.clone())],
            button: "Re-point the channel",
            back,
            danger: false,
        }
        .render(&signed, &format!("/apps/{slug}/channels/{channel}")));
    }
    service::channels::edit_channel(&dash.state, &signed.caller.actor(), &app, &name, &branch).await?;
    Ok(done(&back, "repointed"))
}

#[derive(Deserialize)]
pub(super) struct ChannelRolloutForm {
    action: String,
    branch: Option<String>,
    percentage: Option<String>,
    confirmed: Option<String>,
}

pub(super) async fn channel_rollout(
    State(dash): State<Dash>,
    Path((slug, channel)): Path<(String, String)>,
    posted: Posted<ChannelRolloutForm>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let name = input::channel_name(&channel)?;
    let current = channel_of(&dash, &app, &channel).await?;
    let (action, lines, danger) = match form.action.as_str() {
        "start" => {
            let branch = form.branch.clone().unwrap_or_default();
            let p = view::percentage(form.percentage.as_deref())?.get();
            let mut lines = vec![format!(
                "{p}% of the devices on channel {channel} will get branch {branch}; the rest keep branch {}.",
                current.branch
            )];
            lines.extend(branch_lines(&dash, &app, &branch, &channel).await?);
            (ChannelRolloutAction::Start { branch, percentage: p }, lines, false)
        }
        "set" => {
            let p = view::percentage(form.percentage.as_deref())?.get();
            let to = current.rollout.as_ref().map_or("?", |r| r.branch.as_str());
            (
                ChannelRolloutAction::Set { percentage: p },
                vec![format!(
                    "{p}% of the devices on channel {channel} will get branch {to}; the rest keep branch {}.",
                    current.branch
                )],
                false,
            )
        }
        "end" => {
            let to = current.rollout.as_ref().map_or("?", |r| r.branch.as_str());
            (
                ChannelRolloutAction::End,
                vec![format!(
                    "Every device on channel {channel} will get branch {to}; the channel will point at it."
                )],
                false,
            )
        }
        "revert" => (
            ChannelRolloutAction::Revert,
            vec![format!(
                "Every device on channel {channel} goes back to branch {}; devices that got the other branch's update are moved back.",
                current.branch
            )],
            true,
        ),
        other => {
            return Err(service::Error::invalid("invalid_action", format!("unknown rollout action {other:?}")).into());
        }
    };
    if !confirmed(&form.confirmed) {
        let mut fields = vec![("action", form.action.clone())];
        fields.extend(form.branch.clone().map(|b| ("branch", b)));
        fields.extend(form.percentage.clone().map(|p| ("percentage", p)));
        return Ok(Confirm {
            title: format!("Change the branch rollout of channel {channel}?"),
            lines,
            fields,
            button: "Go ahead",
            back: format!("/apps/{slug}"),
            danger,
        }
        .render(&signed, &format!("/apps/{slug}/channels/{channel}/rollout")));
    }
    let request = ChannelRolloutRequest {
        action,
        halt_policy: None,
        no_halt: false,
        commit: None,
        allow_unsigned: false,
    };
    let by = signed.caller.actor();
    let op = Operation::commit(
        &by,
        Record {
            action: "channel.rollout",
            target: channel.clone(),
            summary: format!("channel {channel}: branch rollout {} (dashboard)", form.action),
            details: Value::Null,
        },
    );
    service::channels::channel_rollout(&dash.state, &app, &name, &request, op).await?;
    Ok(done(&format!("/apps/{slug}"), "channel-rollout"))
}

#[derive(Deserialize)]
pub(super) struct RollbackForm {
    channel: String,
    to: String,
    confirmed: Option<String>,
}

pub(super) async fn rollback(
    State(dash): State<Dash>,
    Path(slug): Path<String>,
    posted: Posted<RollbackForm>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let channel = input::channel_name(&form.channel)?;
    let to_embedded = match form.to.as_str() {
        "embedded" => true,
        "previous" => false,
        other => {
            return Err(service::Error::invalid(
                "invalid_rollback",
                format!("roll back to previous or embedded, not {other:?}"),
            )
            .into());
        }
    };
    if !confirmed(&form.confirmed) {
        let line = if to_embedded {
            format!(
                "Devices on channel {} will be told to run the update embedded in their build (a roll-back-to-embedded directive), on every runtime version the channel serves.",
                form.channel
            )
        } else {
            format!(
                "Devices on channel {} will get the group before the one they run now, republished (new ids), on every runtime version the channel serves.",
                form.channel
            )
        };
        return Ok(Confirm {
            title: format!("Roll back channel {}?", form.channel),
            lines: vec![line],
            fields: vec![("channel", form.channel.clone()), ("to", form.to.clone())],
            button: "Roll back",
            back: format!("/apps/{slug}"),
            danger: true,
        }
        .render(&signed, &format!("/apps/{slug}/rollback")));
    }
    let by = signed.caller.actor();
    let (action, summary) = if to_embedded {
        (
            "rollback.embedded",
            format!("channel {} rolled back to the embedded update", form.channel),
        )
    } else {
        (
            "rollback",
            format!("channel {} rolled back to its previous update", form.channel),
        )
    };
    let op = Operation::commit(
        &by,
        Record {
            action,
            target: form.channel.clone(),
            summary,
            details: Value::Null,
        },
    );
    let request = release::Rollback {
        channel,
        to_embedded,
        platform: None,
        runtime_version: None,
        message: None,
    };
    release::rollback(&dash.state, &app, &request, op).await?;
    Ok(done(&format!("/apps/{slug}"), "rolled-back"))
}

#[derive(Deserialize)]
pub(super) struct HaltForm {
    mode: String,
    failure_rate: Option<String>,
    min_devices: Option<String>,
}

pub(super) async fn halt_policy(
    State(dash): State<Dash>,
    Path(slug): Path<String>,
    posted: Posted<HaltForm>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let halt = halt_from_form(&form.mode, form.failure_rate.as_deref(), form.min_devices.as_deref())?;
    service::apps::set_halt_policy(&dash.state, &signed.caller.actor(), &app, halt).await?;
    Ok(done(&format!("/apps/{slug}"), "halt-policy"))
}

/// A halt policy form's setting: `None` for the built-in default (`mode=default`), off, or a
/// policy of the two numbers.
pub(super) fn halt_from_form(mode: &str, rate: Option<&str>, min: Option<&str>) -> Result<Option<Halt>, Failure> {
    let invalid = |what: &str| Failure::from(service::Error::invalid("invalid_halt_policy", what.to_owned()));
    Ok(match mode {
        "default" => None,
        "off" => input::halt_setting(None, true)?,
        "policy" => {
            let failure_rate: f64 = rate
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| invalid("the failure rate is a number of percent, 0 to 100"))?;
            let min_devices: u64 = min
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| invalid("the minimum of devices is a whole number, at least 1"))?;
            input::halt_setting(
                Some(HaltPolicy {
                    failure_rate,
                    min_devices,
                }),
                false,
            )?
        }
        other => return Err(invalid(&format!("unknown halt policy mode {other:?}"))),
    })
}

/// Apps the caller sees, for the audit filter.
pub(super) async fn visible_apps(dash: &Dash, signed: &Signed) -> Result<Vec<String>, Failure> {
    Ok(apps::list(&dash.state.db)
        .await?
        .into_iter()
        .map(|a| a.slug.to_string())
        .filter(|s| signed.caller.sees(s))
        .collect())
}
