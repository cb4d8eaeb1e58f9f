//! Release management commands: channels, branches, update groups, rollouts, rollbacks,
//! republishing, the audit log and garbage collection. Each is a thin client of `/api/v1`.

use aloft_core::Platform;
use aloft_core::api::{
    AuditEntry, BranchInfo, ChannelInfo, ChannelRolloutAction, ChannelRolloutRequest, CreateBranch, CreateChannel,
    EditChannel, GcRequest, GcResult, GroupInfo, Outcome, RepublishRequest, RollbackRequest,
};
use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::client::{Client, HaltArgs, ServerArgs, SigningArgs};
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
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.server)
    }

    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", self.app)
    }
}

pub(crate) fn print_outcome(outcome: &Outcome, json: bool) -> anyhow::Result<()> {
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
pub(crate) fn signed_operation(signing: &SigningArgs) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(aloft_core::api::SignedOperation {
        commit: None,
        allow_unsigned: signing.allow_unsigned,
    })?)
}
