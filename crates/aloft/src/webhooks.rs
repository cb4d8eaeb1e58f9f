//! `aloft webhooks`: an app's webhooks (add, list, remove) and their delivery log.

use aloft_core::api::{CreateWebhook, CreatedWebhook, WebhookDelivery, WebhookInfo};
use aloft_core::webhook::Event;
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;

use crate::client::Client;
use crate::output::{self, errln, outln};
use crate::release::AppArgs;

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Send the app's events to URL as signed JSON POSTs (docs/webhooks.md). The secret they are
    /// signed with is printed once.
    Add {
        /// An http:// or https:// URL.
        url: String,
        /// Comma-separated: publish, rollout, halt, rollback, disable.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// The signing secret; one is made when not given.
        #[arg(long, env = "ALOFT_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[command(flatten)]
        app: AppArgs,
        /// Print the server's JSON answer (with the secret).
        #[arg(long)]
        json: bool,
    },
    /// List the app's webhooks.
    List {
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook (by id, from `aloft webhooks list`) and its delivery log.
    Remove {
        id: i64,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The delivery log, newest first: each event sent, its state and every attempt's status.
    Deliveries {
        /// Only this webhook's deliveries.
        #[arg(long)]
        webhook: Option<i64>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        app: AppArgs,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::Add {
            url,
            events,
            secret,
            app,
            json,
        } => {
            let events: Vec<String> = events
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
            if let Some(bad) = events.iter().find(|e| Event::parse(e).is_none()) {
                bail!("--events: {bad:?} is not one of publish, rollout, halt, rollback, disable");
            }
            let client = Client::new(&app.server)?;
            let body = CreateWebhook { url, events, secret };
            let created: CreatedWebhook = client.post(&format!("/apps/{}/webhooks", app.app), &body).await?;
            if json {
                return output::json(&created);
            }
            outln!("{}", created.secret)?;
            errln!(
                "webhook {} added: {} gets {}; the secret above signs its payloads, store it now, it cannot be shown again",
                created.webhook.id,
                created.webhook.url,
                created.webhook.events.join(",")
            );
        }
        WebhooksCommand::List { app, json } => {
            let client = Client::new(&app.server)?;
            let hooks: Vec<WebhookInfo> = client.get(&format!("/apps/{}/webhooks", app.app)).await?;
            if json {
                return output::json(&hooks);
            }
            outln!("{:<5} {:<36} {:<26} URL", "ID", "EVENTS", "CREATED")?;
            for h in &hooks {
                outln!("{:<5} {:<36} {:<26} {}", h.id, h.events.join(","), h.created_at, h.url)?;
            }
        }
        WebhooksCommand::Remove { id, app } => {
            let client = Client::new(&app.server)?;
            client
                .send_empty(client.request(Method::DELETE, &format!("/apps/{}/webhooks/{id}", app.app)))
                .await?;
            outln!("webhook {id} removed")?;
        }
        WebhooksCommand::Deliveries {
            webhook,
            limit,
            app,
            json,
        } => {
            if !(1..=1000).contains(&limit) {
                bail!("--limit must be 1 to 1000, not {limit}");
            }
            let client = Client::new(&app.server)?;
            let mut path = format!("/apps/{}/webhooks/deliveries?limit={limit}", app.app);
            if let Some(id) = webhook {
                path.push_str(&format!("&webhook={id}"));
            }
            let deliveries: Vec<WebhookDelivery> = client.get(&path).await?;
            if json {
                return output::json(&deliveries);
            }
            print_deliveries(&deliveries)?;
        }
    }
    Ok(())
}

fn print_deliveries(deliveries: &[WebhookDelivery]) -> anyhow::Result<()> {
    outln!(
        "{:<36} {:<7} {:<9} {:<26} {:<9} ATTEMPTS (status)",
        "DELIVERY",
        "WEBHOOK",
        "EVENT",
        "OCCURRED",
        "STATE"
    )?;
    for d in deliveries {
        let attempts: Vec<String> = d
            .attempts
            .iter()
            .map(|a| match (a.status, &a.error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.clone(),
                (None, None) => "-".to_owned(),
            })
            .collect();
        let next = d
            .next_attempt_at
            .as_ref()
            .map(|at| format!(" (next {at})"))
            .unwrap_or_default();
        outln!(
            "{:<36} {:<7} {:<9} {:<26} {:<9} {}{next}",
            d.id,
            d.webhook_id,
            d.event,
            d.occurred_at,
            d.state,
            if attempts.is_empty() {
                "none yet".to_owned()
            } else {
                attempts.join(", ")
            }
        )?;
    }
    Ok(())
}
