//! Release management commands: channels, branches, update groups, rollouts, rollbacks,
//! republishing, the audit log and garbage collection. Each is a thin client of `/api/v1`.

use aloft_core::Platform;
use aloft_core::api::{
    AuditEntry, BranchInfo, ChannelInfo, ChannelRolloutAction, ChannelRolloutRequest, CreateBranch, CreateChannel,
    EditChannel, GcRequest, GcResult, GroupInfo, Outcome, RepublishRequest, RollbackRequest, RolloutStatus, SetRollout,
};
use aloft_core::halt::{DEFAULT_POLICY, HaltPolicy};
use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::client::{Client, ServerArgs, SigningArgs};
use crate::output::{self, outln};

// Server, token and app: what every app-scoped command needs. (A plain comment: clap would take
// a doc comment here as the description of every subcommand that flattens this and has none.)
#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Slug of the app.
    #[arg(long, env = "ALOFT_APP")]
    pub app: String,
}

impl AppArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.server)
    }

    fn path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", self.app)
    }
}

// When a rollout halts by itself (a plain comment, for the reason given above AppArgs).
#[derive(Args, Debug, Clone, Default)]
pub struct HaltArgs {
    /// Halt the rollout by itself when, on a platform, more than PCT percent of the devices that
    /// ran its update report it failed (and more than of the control's) [default: the app's
    /// policy, else 5].
    #[arg(long, value_name = "PCT")]
    pub halt_on_failure_rate: Option<f64>,
    /// ...once at least N devices installed it on that platform [default: the app's policy,
    /// else 50].
    #[arg(long, value_name = "N")]
    pub halt_min_devices: Option<u64>,
    /// Never halt this rollout by itself.
    #[arg(long, conflicts_with_all = ["halt_on_failure_rate", "halt_min_devices"])]
    pub no_halt: bool,
}

impl HaltArgs {
    /// The request's `halt_policy`: given when either flag is, the other from the built-in
    /// default.
    pub fn policy(&self) -> Option<HaltPolicy> {
        if self.halt_on_failure_rate.is_none() && self.halt_min_devices.is_none() {
            return None;
        }
        Some(HaltPolicy {
            failure_rate: self.halt_on_failure_rate.unwrap_or(DEFAULT_POLICY.failure_rate),
            min_devices: self.halt_min_devices.unwrap_or(DEFAULT_POLICY.min_devices),
        })
    }

    pub fn any(&self) -> bool {
        self.no_halt || self.policy().is_some()
    }
}

fn print_outcome(outcome: &Outcome, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(outcome)?;
        return Ok(());
    }
    outln!("{}", outcome.summary)?;
    if let Some(p) = &outcome.published {
        outln!(
            "Published group  {} on branch {} at {}",
            p.group_id,
            p.branch,
            p.created_at
        )?;
        for u in &p.updates {
            let signed = if u.signed { "signed" } else { "unsigned" };
            outln!(
                "  {:<8} {}  (runtime {}, {signed})",
                u.platform.as_str(),
                u.id,
                u.runtime_version
            )?;
        }
    }
    Ok(())
}

async fn delete(client: &Client, path: &str) -> anyhow::Result<()> {
    client.send_empty(client.request(Method::DELETE, path)).await
}

#[derive(Subcommand)]
pub enum ChannelsCommand {
    /// List channels, their branches and any branch rollout.
    List {
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create a channel (pointing at a branch of its name unless --branch).
    Create {
        name: String,
        #[arg(long)]
        branch: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Point a channel at another branch: instant, nothing is republished.
    Edit {
        name: String,
        #[arg(long)]
        branch: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Split a channel's devices with another branch: start (--branch and --percentage), raise
    /// (--percentage), end (--end: the channel then points at the new branch) or --revert.
    Rollout {
        name: String,
        #[arg(long, requires = "percentage", conflicts_with_all = ["end", "revert"])]
        branch: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), conflicts_with_all = ["end", "revert"])]
        percentage: Option<u8>,
        #[arg(long, conflicts_with = "revert")]
        end: bool,
        #[arg(long)]
        revert: bool,
        #[command(flatten)]
        halt: HaltArgs,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
}

pub async fn channels(cmd: ChannelsCommand) -> anyhow::Result<()> {
    match cmd {
        ChannelsCommand::List { app, json } => {
            let channels: Vec<ChannelInfo> = app.client()?.get(&app.path("/channels")).await?;
            if json {
                output::json(&channels)?;
                return Ok(());
            }
            outln!("{:<24} {:<24} ROLLOUT", "CHANNEL", "BRANCH")?;
            for c in channels {
                let rollout = c
                    .rollout
                    .map(|r| format!("{}% to {}", r.percentage, r.branch))
                    .unwrap_or_default();
                outln!("{:<24} {:<24} {rollout}", c.name, c.branch)?;
            }
        }
        ChannelsCommand::Create { name, branch, app } => {
            let c: ChannelInfo = app
                .client()?
                .post(&app.path("/channels"), &CreateChannel { name, branch })
                .await?;
            outln!("channel {} created, pointing at branch {}", c.name, c.branch)?;
        }
        ChannelsCommand::Edit { name, branch, app } => {
            let client = app.client()?;
            let request = client
                .request(Method::PUT, &app.path(&format!("/channels/{name}")))
                .json(&EditChannel { branch });
            let c: ChannelInfo = client.send(request).await?;
            outln!("channel {} now points at branch {}", c.name, c.branch)?;
        }
        ChannelsCommand::Rollout {
            name,
            branch,
            percentage,
            end,
            revert,
            halt,
            signing,
            app,
            json,
        } => {
            if halt.any() && (end || revert) {
                bail!(
                    "--halt-on-failure-rate, --halt-min-devices and --no-halt go with starting or raising a rollout, not --end or --revert"
                );
            }
            let action = match (branch, percentage, end, revert) {
                (Some(branch), Some(percentage), false, false) => ChannelRolloutAction::Start { branch, percentage },
                (None, Some(percentage), false, false) => ChannelRolloutAction::Set { percentage },
                (None, None, true, false) => ChannelRolloutAction::End,
                (None, None, false, true) => ChannelRolloutAction::Revert,
                _ => bail!("give --branch and --percentage to start, --percentage to raise, --end or --revert"),
            };
            let body = serde_json::to_value(ChannelRolloutRequest {
                action,
                halt_policy: halt.policy(),
                no_halt: halt.no_halt,
                commit: None,
                allow_unsigned: signing.allow_unsigned,
            })?;
            let outcome = app
                .client()?
                .operate(
                    &app.path(&format!("/channels/{name}/rollout")),
                    body,
                    signing.load()?.as_ref(),
                )
                .await?;
            print_outcome(&outcome, json)?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum BranchesCommand {
    /// List branches: how many update groups each has and which channels use it.
    List {
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Create an empty branch (publishing with --branch also creates one).
    Create {
        name: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Delete a branch that no channel uses, with its update groups. Assets shared with updates
    /// that are still served stay.
    Delete {
        name: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

pub async fn branches(cmd: BranchesCommand) -> anyhow::Result<()> {
    match cmd {
        BranchesCommand::List { app, json } => {
            let branches: Vec<BranchInfo> = app.client()?.get(&app.path("/branches")).await?;
            if json {
                output::json(&branches)?;
                return Ok(());
            }
            outln!("{:<24} {:>7} {:<26} CHANNELS", "BRANCH", "GROUPS", "CREATED")?;
            for b in branches {
                outln!(
                    "{:<24} {:>7} {:<26} {}",
                    b.name,
                    b.groups,
                    b.created_at,
                    b.channels.join(",")
                )?;
            }
        }
        BranchesCommand::Create { name, app } => {
            let client = app.client()?;
            client
                .send_empty(
                    client
                        .request(Method::POST, &app.path("/branches"))
                        .json(&CreateBranch { name: name.clone() }),
                )
                .await?;
            outln!("branch {name} created")?;
        }
        BranchesCommand::Delete { name, app } => {
            delete(&app.client()?, &app.path(&format!("/branches/{name}"))).await?;
            outln!("branch {name} deleted")?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum UpdatesCommand {
    /// List update groups, newest first.
    List {
        #[arg(long, conflicts_with = "channel")]
        branch: Option<String>,
        #[arg(long)]
        channel: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one update group.
    Show {
        group: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Delete a group that is no longer served (disable it first). Files still used by served
    /// updates stay; `aloft gc` removes the rest.
    Delete {
        group: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Emergency stop: the group is no longer served. If it was the newest, the group before it
    /// is republished so devices that took it move off it.
    Disable {
        group: String,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
}

fn print_groups(groups: &[GroupInfo]) -> anyhow::Result<()> {
    outln!(
        "{:<36} {:<16} {:<10} {:<16} {:<24} {:<8} {:<12} MESSAGE",
        "GROUP",
        "BRANCH",
        "RUNTIME",
        "PLATFORMS",
        "CREATED",
        "ROLLOUT",
        "BY"
    )?;
    for g in groups {
        let mut runtimes: Vec<&str> = g.updates.iter().map(|u| u.runtime_version.as_str()).collect();
        runtimes.dedup();
        let mut platforms: Vec<&str> = g.updates.iter().map(|u| u.platform.as_str()).collect();
        platforms.dedup();
        let rollout = match (&g.disabled, g.rollout_percentage) {
            (Some(reason), _) => reason.clone(),
            (None, Some(p)) => format!("{p}%"),
            (None, None) => String::new(),
        };
        let message = if g.kind == "rollback" {
            format!("[to embedded] {}", g.message)
        } else {
            g.message.clone()
        };
        outln!(
            "{:<36} {:<16} {:<10} {:<16} {:<24} {:<8} {:<12} {message}",
            g.id,
            g.branch,
            runtimes.join(","),
            platforms.join(","),
            g.created_at,
            rollout,
            g.published_by
        )?;
    }
    Ok(())
}

pub async fn updates(cmd: UpdatesCommand) -> anyhow::Result<()> {
    match cmd {
        UpdatesCommand::List {
            branch,
            channel,
            limit,
            app,
            json,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(b) = branch {
                query.push(("branch", b));
            }
            if let Some(c) = channel {
                query.push(("channel", c));
            }
            let client = app.client()?;
            let groups: Vec<GroupInfo> = client
                .send(client.request(Method::GET, &app.path("/groups")).query(&query))
                .await?;
            if json {
                output::json(&groups)?;
            } else {
                print_groups(&groups)?;
            }
        }
        UpdatesCommand::Show { group, app } => {
            let g: GroupInfo = app.client()?.get(&app.path(&format!("/groups/{group}"))).await?;
            output::json(&g)?;
        }
        UpdatesCommand::Delete { group, app } => {
            delete(&app.client()?, &app.path(&format!("/groups/{group}"))).await?;
            outln!("group {group} deleted")?;
        }
        UpdatesCommand::Disable {
            group,
            signing,
            app,
            json,
        } => {
            let outcome = app
                .client()?
                .operate(
                    &app.path(&format!("/groups/{group}/disable")),
                    signed_operation(&signing)?,
                    signing.load()?.as_ref(),
                )
                .await?;
            print_outcome(&outcome, json)?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct RepublishArgs {
    /// The update group to republish.
    group: String,
    /// Republish onto the branch this channel points at (default: the group's own branch).
    #[arg(long, conflicts_with = "branch")]
    channel: Option<String>,
    #[arg(long)]
    branch: Option<String>,
    #[arg(long)]
    message: Option<String>,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    app: AppArgs,
    #[arg(long)]
    json: bool,
}

/// New update ids and a newer createdAt, the same assets: devices move to it.
pub async fn republish(args: RepublishArgs) -> anyhow::Result<()> {
    let body = serde_json::to_value(RepublishRequest {
        channel: args.channel,
        branch: args.branch,
        message: args.message,
        commit: None,
        allow_unsigned: args.signing.allow_unsigned,
    })?;
    let path = args.app.path(&format!("/groups/{}/republish", args.group));
    let outcome = args
        .app
        .client()?
        .operate(&path, body, args.signing.load()?.as_ref())
        .await?;
    print_outcome(&outcome, args.json)
}

#[derive(Args)]
pub struct RollbackArgs {
    #[arg(long)]
    channel: String,
    /// Send devices back to the update embedded in their build (a rollBackToEmbedded directive).
    #[arg(long)]
    to_embedded: bool,
    /// Only this runtime version (default: every one the channel serves), e.g. to roll back an
    /// older build while a newer runtime version is being rolled out.
    #[arg(long)]
    runtime_version: Option<String>,
    /// Only this platform (default: both).
    #[arg(long, value_parser = ["ios", "android"])]
    platform: Option<String>,
    #[arg(long)]
    message: Option<String>,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    app: AppArgs,
    #[arg(long)]
    json: bool,
}

/// Roll a channel back: to the group before the current one (republished, so it is newer than
/// what devices run), or to the embedded update.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let platform = args.platform.as_deref().map(str::parse::<Platform>).transpose()?;
    let body = serde_json::to_value(RollbackRequest {
        channel: args.channel,
        to_embedded: args.to_embedded,
        runtime_version: args.runtime_version,
        platform,
        message: args.message,
        commit: None,
        allow_unsigned: args.signing.allow_unsigned,
    })?;
    let outcome = args
        .app
        .client()?
        .operate(&args.app.path("/rollbacks"), body, args.signing.load()?.as_ref())
        .await?;
    print_outcome(&outcome, args.json)
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Raise a group's rollout to N percent of devices.
    Set {
        group: String,
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percentage: u8,
        #[command(flatten)]
        halt: HaltArgs,
        #[command(flatten)]
        app: AppArgs,
    },
    /// A rollout's state and, per platform, its live failure figures against its halt policy.
    Status {
        group: String,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Complete a group's rollout: every device gets the group.
    Complete {
        group: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Withdraw the group; devices that got it are moved back to the control update.
    Revert {
        group: String,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
}

fn print_status(s: &RolloutStatus) -> anyhow::Result<()> {
    outln!("Group {}: {}", s.group_id, s.state)?;
    if let Some(p) = s.percentage {
        outln!("  rolled out to {p} % of devices")?;
    }
    match &s.policy {
        Some(p) => outln!(
            "  halts when more than {} % of devices fail on a platform, once {} installed it",
            p.failure_rate,
            p.min_devices
        )?,
        None => outln!("  never halts by itself")?,
    }
    for x in &s.platforms {
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2} %"));
        outln!(
            "  {:<8} runtime {}  installs {}  launches {}  failures {}  failure rate {}  (control {}){}",
            x.platform.as_str(),
            x.runtime_version,
            x.installs,
            x.launches,
            x.failures,
            rate(x.failure_rate),
            rate(x.control_failure_rate),
            if x.past_policy { "  PAST THE POLICY" } else { "" }
        )?;
    }
    Ok(())
}

pub async fn rollout(cmd: RolloutCommand) -> anyhow::Result<()> {
    match cmd {
        RolloutCommand::Set {
            group,
            percentage,
            halt,
            app,
        } => {
            let client = app.client()?;
            let request = client
                .request(Method::PUT, &app.path(&format!("/groups/{group}/rollout")))
                .json(&SetRollout {
                    percentage,
                    halt_policy: halt.policy(),
                    no_halt: halt.no_halt,
                });
            let outcome: Outcome = client.send(request).await?;
            print_outcome(&outcome, false)?;
        }
        RolloutCommand::Status { group, app, json } => {
            let status: RolloutStatus = app
                .client()?
                .get(&app.path(&format!("/groups/{group}/rollout")))
                .await?;
            if json {
                output::json(&status)?;
            } else {
                print_status(&status)?;
            }
        }
        RolloutCommand::Complete { group, app } => {
            let outcome: Outcome = app
                .client()?
                .post(&app.path(&format!("/groups/{group}/rollout/complete")), &json!({}))
                .await?;
            print_outcome(&outcome, false)?;
        }
        RolloutCommand::Revert {
            group,
            signing,
            app,
            json,
        } => {
            let path = app.path(&format!("/groups/{group}/rollout/revert"));
            let outcome = app
                .client()?
                .operate(&path, signed_operation(&signing)?, signing.load()?.as_ref())
                .await?;
            print_outcome(&outcome, json)?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only changes to this app (otherwise everything, which needs an admin token).
    #[arg(long, env = "ALOFT_APP")]
    app: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(app) = &args.app {
        query.push(("app", app.clone()));
    }
    let entries: Vec<AuditEntry> = client.send(client.request(Method::GET, "/audit").query(&query)).await?;
    if args.json {
        output::json(&entries)?;
        return Ok(());
    }
    for e in entries {
        outln!(
            "{}  {:<28} {:<12} {:<20} {:<38} {}  {}",
            e.at,
            e.actor,
            e.app.unwrap_or_default(),
            e.action,
            e.target,
            e.details,
            e.remote
        )?;
    }
    Ok(())
}

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Keep unreferenced blobs younger than this many seconds.
    #[arg(long, default_value_t = 86_400)]
    grace_seconds: u64,
}

pub async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let result: GcResult = client
        .post(
            "/gc",
            &GcRequest {
                grace_seconds: Some(args.grace_seconds),
            },
        )
        .await?;
    outln!(
        "removed {} unreferenced blob(s) and {} leftover file(s) of interrupted uploads",
        result.removed.len(),
        result.leftovers_removed
    )?;
    Ok(())
}

/// The body of an operation that has no parameters of its own but may publish.
fn signed_operation(signing: &SigningArgs) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(aloft_core::api::SignedOperation {
        commit: None,
        allow_unsigned: signing.allow_unsigned,
    })?)
}
