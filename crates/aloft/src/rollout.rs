//! `aloft rollout`: raising, completing, reverting a group's rollout, and its status against its
//! halt policy.

use aloft_core::api::{Outcome, RolloutStatus, SetRollout};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::{HaltArgs, SigningArgs};
use crate::output::{self, outln};
use crate::release::{AppArgs, print_outcome, signed_operation};

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
