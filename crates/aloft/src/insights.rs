//! `aloft insights`: what devices did with an update group, or what an app's fleet runs.

use aloft_core::api::{FleetInsights, GroupInsights};
use anyhow::bail;
use clap::Args;

use crate::output::{self, outln};
use crate::release::AppArgs;

#[derive(Args, Debug)]
pub struct InsightsArgs {
    /// The update group to report on. Without it, `--channel` (or every channel) shows what the
    /// app's devices run today.
    group: Option<String>,
    /// The fleet of one channel: devices per runtime version on the embedded update or on each
    /// update, today (UTC).
    #[arg(long, conflicts_with = "group")]
    channel: Option<String>,
    /// Days back the group report covers, today included (1 to 90).
    #[arg(long, default_value_t = 14, requires = "group")]
    days: u32,
    #[command(flatten)]
    app: AppArgs,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: InsightsArgs) -> anyhow::Result<()> {
    let client = crate::client::Client::new(&args.app.server)?;
    let app = &args.app.app;
    if let Some(group) = &args.group {
        if !(1..=90).contains(&args.days) {
            bail!("--days must be 1 to 90, not {}", args.days);
        }
        let report: GroupInsights = client
            .get(&format!("/apps/{app}/groups/{group}/insights?days={}", args.days))
            .await?;
        if args.json {
            return output::json(&report);
        }
        print_group(&report)?;
        return Ok(());
    }
    let path = match &args.channel {
        Some(channel) => format!("/apps/{app}/insights?channel={}", query_value(channel)),
        None => format!("/apps/{app}/insights"),
    };
    let fleet: FleetInsights = client.get(&path).await?;
    if args.json {
        return output::json(&fleet);
    }
    print_fleet(&fleet)?;
    Ok(())
}

/// Percent-encodes a query value (channel names are plain, but a typo should reach the server
/// as typed, to be refused there with its reason).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.2} %"))
}

fn print_group(report: &GroupInsights) -> anyhow::Result<()> {
    outln!("Group {} since {} (UTC)", report.group_id, report.since)?;
    for p in &report.platforms {
        let estimate = if p.exact { "" } else { " (estimates, within about 2 %)" };
        outln!("")?;
        outln!("{}  update {}{estimate}", p.platform.as_str(), p.update_id)?;
        outln!(
            "  devices {}  installs {}  launches {}  failures {}  failure rate {}",
            p.devices,
            p.installs,
            p.launches,
            p.failures,
            rate(p.failure_rate)
        )?;
        if p.patches_served > 0 {
            outln!(
                "  bundle patches served {}  bytes saved {}",
                p.patches_served,
                p.patch_bytes_saved
            )?;
        }
        for day in &p.daily {
            outln!(
                "  {}  devices {:>7}  installs {:>7}  launches {:>7}  failures {:>7}  {}",
                day.date,
                day.devices,
                day.installs,
                day.launches,
                day.failures,
                rate(day.failure_rate)
            )?;
        }
        if !p.fatal_errors.is_empty() {
            outln!("  fatal errors:")?;
            for e in &p.fatal_errors {
                let first_line = e.message.lines().next().unwrap_or_default();
                outln!("  {:>7}  {first_line}", e.count)?;
            }
        }
    }
    Ok(())
}

fn print_fleet(fleet: &FleetInsights) -> anyhow::Result<()> {
    outln!("Devices seen today ({} UTC)", fleet.date)?;
    if fleet.runtimes.is_empty() {
        outln!("  none yet")?;
    }
    for r in &fleet.runtimes {
        outln!("")?;
        outln!("{}  {}  runtime {}", r.channel, r.platform.as_str(), r.runtime_version)?;
        outln!("  {:>7}  embedded", r.embedded)?;
        for u in &r.updates {
            outln!("  {:>7}  {}", u.devices, u.update_id)?;
        }
    }
    if !fleet.unknown_channels.is_empty() {
        outln!("")?;
        outln!("Checks for channels that do not exist:")?;
        for c in &fleet.unknown_channels {
            outln!("  {:>7}  {}", c.checks, c.channel)?;
        }
    }
    Ok(())
}
