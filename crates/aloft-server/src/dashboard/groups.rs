//! A branch's page (its update groups, newest first, paginated) and an update group's page (per
//! platform: the update, its manifest, assets, signature, what devices did with it, a QR code for
//! development builds), with the group's controls: rollout, complete, revert, republish, disable.

use aloft_core::ContentHash;
use aloft_core::api::{RepublishRequest, RolloutStatus};
use aloft_store::db::apps::App;
use aloft_store::db::updates::{self, Group};
use aloft_store::db::{blobs, channels};
use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::confirm::{Confirm, confirmed};
use super::session::{Posted, Signed};
use super::view::{self, bytes, can_write, percent, server_can_sign, when};
use super::{Dash, Failure, Head, PageResult, chart, done, page};
use crate::api::auth::Need;
use crate::api::insights::{group_report, rollout_report};
use crate::service::operation::{Operation, Record};
use crate::service::{self, input, publish as publishing, release};

const PER_PAGE: usize = 20;

#[derive(Deserialize, Default)]
pub(super) struct BranchQuery {
    page: Option<usize>,
    notice: Option<String>,
}

struct GroupRow {
    id: String,
    message: String,
    runtime_versions: String,
    platforms: String,
    created: String,
    by: String,
    rollout: String,
    signed: &'static str,
    state: &'static str,
    state_class: String,
}

#[derive(Template)]
#[template(path = "dashboard/branch.html")]
struct BranchPage {
    head: Head,
    slug: String,
    branch: String,
    groups: Vec<GroupRow>,
    page: usize,
    newer: Option<usize>,
    older: Option<usize>,
}

fn join_unique(values: impl Iterator<Item = String>) -> String {
    let mut all: Vec<String> = values.collect();
    all.sort();
    all.dedup();
    all.join(", ")
}

pub(super) async fn branch(
    State(dash): State<Dash>,
    signed: Signed,
    Path((slug, branch)): Path<(String, String)>,
    Query(q): Query<BranchQuery>,
) -> PageResult {
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Read).await?;
    let name = input::branch_name(&branch)?;
    let page_no = q.page.unwrap_or(1).max(1);
    let mut conn = dash.state.db.conn().await?;
    let branch_id = channels::branch_id(&mut conn, app.id, name.as_str()).await?;
    // Every newer group is read too: whether a group is superseded depends on them.
    let wanted = page_no * PER_PAGE + 1;
    let groups = updates::list_groups(&mut conn, app.id, Some(branch_id), wanted as i64).await?;
    let states = view::states(&groups);
    let mut rows = Vec::new();
    for (g, state) in groups.iter().zip(&states).skip((page_no - 1) * PER_PAGE).take(PER_PAGE) {
        let stored = updates::stored_updates(&mut conn, g.id).await?;
        let signed_count = stored.iter().filter(|u| u.signature.is_some()).count();
        rows.push(GroupRow {
            id: g.id.to_string(),
            message: g.message.clone(),
            runtime_versions: join_unique(g.updates.iter().map(|u| u.runtime_version.to_string())),
            platforms: join_unique(g.updates.iter().map(|u| u.platform.to_string())),
            created: when(g.created_at),
            by: g.published_by.clone(),
            rollout: g
                .rollout
                .as_ref()
                .map_or_else(|| "–".to_owned(), |r| format!("{}%", r.percentage)),
            signed: match signed_count {
                0 => "unsigned",
                n if n == stored.len() => "signed",
                _ => "partly signed",
            },
            state,
            state_class: format!("state-{}", state.replace(' ', "-")),
        });
    }
    Ok(page(&BranchPage {
        head: Head::new(format!("Branch {branch} of {slug}"), Some(&signed)).with_notice(q.notice.as_deref()),
        slug: app.slug.to_string(),
        branch,
        groups: rows,
        page: page_no,
        newer: (page_no > 1).then(|| page_no - 1),
        older: (groups.len() > page_no * PER_PAGE).then_some(page_no + 1),
    }))
}

struct AssetRow {
    key: String,
    kind: String,
    size: String,
    br: String,
    gz: String,
}

/// A platform's live figures against the halt policy.
struct LiveRow {
    platform: String,
    runtime_version: String,
    installs: u64,
    launches: u64,
    failures: u64,
    rate: String,
    control: String,
    past: bool,
}

struct PlatformPanel {
    platform: String,
    update_id: String,
    runtime_version: String,
    withdrawn: Option<String>,
    signature: String,
    manifest: String,
    assets: Vec<AssetRow>,
    devices: u64,
    installs: u64,
    launches: u64,
    failures: u64,
    failure_rate: String,
    patches_served: u64,
    patch_bytes_saved: String,
    fatal_errors: Vec<(String, i64)>,
    chart: String,
    daily: Vec<(String, u64, u64, u64)>,
}

#[derive(Template)]
#[template(path = "dashboard/group.html")]
struct GroupPage {
    head: Head,
    slug: String,
    csrf: String,
    id: String,
    message: String,
    branch: String,
    created: String,
    by: String,
    state: &'static str,
    state_class: String,
    percentage: Option<u8>,
    next_percentage: u8,
    policy: String,
    halt_rate: String,
    halt_min: u64,
    live: Vec<LiveRow>,
    platforms: Vec<PlatformPanel>,
    can_write: bool,
    can_sign: bool,
    qr: String,
    dev_url: String,
    qr_channel: String,
}

#[derive(Deserialize, Default)]
pub(super) struct GroupQuery {
    notice: Option<String>,
    fragment: Option<String>,
}

async fn find_group(dash: &Dash, app: &App, id: &str) -> Result<Group, Failure> {
    let id = Uuid::parse_str(id).map_err(|_| {
        Failure::from(service::Error::not_found(
            "group_not_found",
            "no update group with that id",
        ))
    })?;
    let mut conn = dash.state.db.conn().await?;
    Ok(updates::group(&mut conn, app.id, id).await?)
}

fn state_name(status: &RolloutStatus, group: &Group) -> &'static str {
    match status.state.as_str() {
        "rolling_out" => "rolling out",
        "halted" => "halted",
        "reverted" => "reverted",
        "disabled" => "disabled",
        _ if group.disabled.is_some() => "disabled",
        _ => "live",
    }
}

/// The asset rows of a manifest body (launch asset first), with stored sizes.
async fn assets(dash: &Dash, manifest: &Value) -> Result<Vec<AssetRow>, Failure> {
    let launch = manifest.get("launchAsset").into_iter().map(|a| (a, "launch asset"));
    let others = manifest
        .get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| (a, "asset"));
    let mut rows = Vec::new();
    for (asset, kind) in launch.chain(others) {
        let text = |k: &str| asset.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let record = match ContentHash::parse(&text("hash")) {
            Ok(hash) => blobs::get(&dash.state.db, &hash).await?,
            Err(_) => None,
        };
        let size = |s: Option<u64>| s.map_or_else(|| "–".to_owned(), bytes);
        rows.push(AssetRow {
            key: format!("{}{}", text("key"), text("fileExtension")),
            kind: format!("{kind} ({})", text("contentType")),
            size: size(record.as_ref().map(|r| r.size)),
            br: size(record.as_ref().and_then(|r| r.br_size)),
            gz: size(record.as_ref().and_then(|r| r.gz_size)),
        });
    }
    Ok(rows)
}

/// The app's URL scheme, from the app config in a manifest (`extra.expoClient.scheme`).
fn scheme(manifest: &Value) -> Option<String> {
    let scheme = manifest.pointer("/extra/expoClient/scheme")?;
    match scheme {
        Value::String(s) => Some(s.clone()),
        Value::Array(all) => all.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

pub(super) async fn group(
    State(dash): State<Dash>,
    signed: Signed,
    Path((slug, id)): Path<(String, String)>,
    Query(q): Query<GroupQuery>,
) -> PageResult {
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Read).await?;
    let group = find_group(&dash, &app, &id).await?;
    let status = rollout_report(&dash.state, &app, &group).await?;
    let insights = group_report(&dash.state, &group, 14).await?;
    let mut conn = dash.state.db.conn().await?;
    let stored = updates::stored_updates(&mut conn, group.id).await?;
    let qr_channel = channels::list(&dash.state.db, app.id)
        .await?
        .into_iter()
        .find(|c| c.branch_id == group.branch_id)
        .map_or_else(|| app.default_channel.to_string(), |c| c.name);
    drop(conn);
    let mut platforms = Vec::new();
    let mut app_scheme = None;
    for u in &group.updates {
        let body = stored.iter().find(|s| s.id == u.id);
        let manifest: Value = body
            .and_then(|s| serde_json::from_slice(&s.body).ok())
            .unwrap_or(Value::Null);
        app_scheme = app_scheme.or_else(|| scheme(&manifest));
        let report = insights.platforms.iter().find(|p| p.update_id == u.id);
        let daily = report.map(|r| r.daily.clone()).unwrap_or_default();
        platforms.push(PlatformPanel {
            platform: u.platform.to_string(),
            update_id: u.id.to_string(),
            runtime_version: u.runtime_version.to_string(),
            withdrawn: u.withdrawn.clone(),
            signature: match body.and_then(|s| s.signature.as_ref()) {
                Some(sig) => format!("signed, key id {:?}", sig.keyid),
                None => "unsigned".to_owned(),
            },
            manifest: serde_json::to_string_pretty(&manifest).unwrap_or_default(),
            assets: assets(&dash, &manifest).await?,
            devices: report.map_or(0, |r| r.devices),
            installs: report.map_or(0, |r| r.installs),
            launches: report.map_or(0, |r| r.launches),
            failures: report.map_or(0, |r| r.failures),
            failure_rate: percent(report.and_then(|r| r.failure_rate)),
            patches_served: report.map_or(0, |r| r.patches_served),
            patch_bytes_saved: bytes(report.map_or(0, |r| r.patch_bytes_saved)),
            fatal_errors: report
                .map(|r| r.fatal_errors.iter().map(|e| (e.message.clone(), e.count)).collect())
                .unwrap_or_default(),
            chart: chart::daily(&daily, &format!("Installs and failures per day on {}", u.platform)),
            daily: daily
                .iter()
                .rev()
                .map(|d| (d.date.clone(), d.installs, d.launches, d.failures))
                .collect(),
        });
    }
    let manifest_url = format!(
        "{}?channel={}",
        dash.state.config.manifest_url(app.slug.as_str()),
        view::query_value(&qr_channel)
    );
    let dev_url = format!(
        "exp+{}://expo-development-client/?url={}",
        app_scheme.unwrap_or_else(|| app.slug.to_string()),
        view::query_value(&manifest_url)
    );
    let state = state_name(&status, &group);
    let live = status
        .platforms
        .iter()
        .map(|f| LiveRow {
            platform: f.platform.to_string(),
            runtime_version: f.runtime_version.clone(),
            installs: f.installs,
            launches: f.launches,
            failures: f.failures,
            rate: percent(f.failure_rate),
            control: percent(f.control_failure_rate),
            past: f.past_policy,
        })
        .collect();
    let page_data = GroupPage {
        head: Head::new(format!("Update group {}", group.message), Some(&signed)).with_notice(q.notice.as_deref()),
        slug: app.slug.to_string(),
        csrf: signed.session.csrf.clone(),
        id: group.id.to_string(),
        message: group.message.clone(),
        branch: group.branch.clone(),
        created: when(group.created_at),
        by: group.published_by.clone(),
        state,
        state_class: format!("state-{}", state.replace(' ', "-")),
        percentage: status.percentage,
        next_percentage: status.percentage.map_or(100, |p| (p + 10).min(100)),
        policy: match &status.policy {
            Some(p) => format!(
                "halts by itself when more than {}% of devices fail, once {} installed it",
                p.failure_rate, p.min_devices
            ),
            None => "never halts by itself".to_owned(),
        },
        halt_rate: status
            .policy
            .as_ref()
            .map_or(aloft_core::halt::DEFAULT_POLICY.failure_rate, |p| p.failure_rate)
            .to_string(),
        halt_min: status
            .policy
            .as_ref()
            .map_or(aloft_core::halt::DEFAULT_POLICY.min_devices, |p| p.min_devices),
        live,
        platforms,
        can_write: can_write(&signed.caller),
        can_sign: server_can_sign(&dash.state, &app).await?,
        qr: view::qr(&dev_url),
        dev_url,
        qr_channel,
    };
    if q.fragment.as_deref() == Some("live") {
        return Ok(page(&GroupLive { page: &page_data }));
    }
    Ok(page(&page_data))
}

/// The live figures of a group's page alone (refreshed by the page's script).
#[derive(Template)]
#[template(path = "dashboard/group_live_fragment.html")]
struct GroupLive<'a> {
    page: &'a GroupPage,
}

#[derive(Deserialize)]
pub(super) struct ActForm {
    percentage: Option<String>,
    /// The halt policy form: `policy` (with the two numbers) or `off`.
    mode: Option<String>,
    failure_rate: Option<String>,
    min_devices: Option<String>,
    confirmed: Option<String>,
}

pub(super) async fn act(
    State(dash): State<Dash>,
    Path((slug, id, action)): Path<(String, String, String)>,
    posted: Posted<ActForm>,
) -> PageResult {
    let Posted { signed, form } = posted;
    let app = view::app(&dash.state, &signed.caller, &slug, Need::Write).await?;
    let group = find_group(&dash, &app, &id).await?;
    let back = format!("/apps/{slug}/groups/{id}");
    let status = rollout_report(&dash.state, &app, &group).await?;
    if action == "halt" {
        // The rollout's own halt policy: what devices get does not change, so no confirmation.
        let halt = super::apps::halt_from_form(
            form.mode.as_deref().unwrap_or_default(),
            form.failure_rate.as_deref(),
            form.min_devices.as_deref(),
        )?;
        let current = input::Percentage::new(status.percentage.unwrap_or(100))?;
        let by = signed.caller.actor();
        let op = Operation::commit(
            &by,
            Record {
                action: "rollout.set",
                target: id.clone(),
                summary: format!("halt policy of the rollout of {id} changed"),
                details: Value::Null,
            },
        );
        release::set_rollout(&dash.state, &app, group.id, current, halt, op).await?;
        return Ok(done(&back, "halt-policy"));
    }
    let controls: Vec<String> = status
        .platforms
        .iter()
        .map(|f| match f.control_update_id {
            Some(c) => format!("{} {}: update {c}", f.platform, f.runtime_version),
            None => format!(
                "{} {}: what they ran before (the embedded update, or no newer update)",
                f.platform, f.runtime_version
            ),
        })
        .collect();
    let (lines, button, danger, fields): (Vec<String>, &str, bool, Vec<(&str, String)>) = match action.as_str() {
        "rollout" => {
            let text = form.percentage.clone().unwrap_or_default();
            let p = view::percentage(Some(&text))?.get();
            let mut lines = vec![format!(
                "{p}% of the devices that check the branch {} will get this group (now {}%); the other {}% keep:",
                group.branch,
                status.percentage.unwrap_or(100),
                100 - u32::from(p)
            )];
            lines.extend(controls);
            lines.push("Devices that have the group already keep it.".to_owned());
            (lines, "Raise the rollout", false, vec![("percentage", text)])
        }
        "complete" => (
            vec![format!(
                "Every device that checks the branch {} will get this group.",
                group.branch
            )],
            "Complete the rollout",
            false,
            vec![],
        ),
        "revert" => {
            let mut lines = vec!["The group is withdrawn; devices that got it are moved back to:".to_owned()];
            lines.extend(controls);
            (lines, "Revert the rollout", true, vec![])
        }
        "disable" => (
            vec![format!(
                "The group is no longer served. If it is the newest on branch {}, devices get the group before it again (republished).",
                group.branch
            )],
            "Disable the group",
            true,
            vec![],
        ),
        "republish" => (
            vec![format!(
                "The group is published again on branch {} with new update ids and a newer date: every device on the branch gets it as its newest update.",
                group.branch
            )],
            "Republish",
            false,
            vec![],
        ),
        other => {
            return Err(
                service::Error::not_found("unknown_action", format!("there is no group action {other:?}")).into(),
            );
        }
    };
    if !confirmed(&form.confirmed) {
        return Ok(Confirm {
            title: format!("{button}: {}?", group.message),
            lines,
            fields,
            button,
            back,
            danger,
        }
        .render(&signed, &format!("/apps/{slug}/groups/{id}/{action}")));
    }
    let by = signed.caller.actor();
    let record = |action: &'static str, summary: String| Record {
        action,
        target: id.clone(),
        summary,
        details: Value::Null,
    };
    let op = |record| Operation::commit(&by, record);
    let notice = match action.as_str() {
        "rollout" => {
            let percentage = view::percentage(form.percentage.as_deref())?;
            let p = percentage.get();
            let op = op(record("rollout.set", format!("rollout of {id} set to {p}%")));
            release::set_rollout(&dash.state, &app, group.id, percentage, None, op).await?;
            "rollout-set"
        }
        "complete" => {
            let op = op(record("rollout.complete", format!("rollout of {id} completed")));
            release::complete_rollout(&dash.state, &app, group.id, op).await?;
            "rollout-complete"
        }
        "revert" => {
            let op = op(record("rollout.revert", format!("rollout of {id} reverted")));
            release::revert_rollout(&dash.state, &app, group.id, op).await?;
            "rollout-revert"
        }
        "disable" => {
            let op = op(record("group.disable", format!("group {id} disabled")));
            release::disable(&dash.state, &app, group.id, op).await?;
            "disabled"
        }
        _ => {
            let request = RepublishRequest {
                channel: None,
                branch: None,
                message: None,
                commit: None,
                allow_unsigned: false,
            };
            let op = op(record("republish", format!("republished {id}")));
            publishing::republish(&dash.state, &app, group.id, None, &request, op).await?;
            "republished"
        }
    };
    Ok(done(&back, notice))
}
