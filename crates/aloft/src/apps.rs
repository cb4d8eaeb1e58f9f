use std::path::PathBuf;

use aloft_core::api::{AppInfo, CreateApp, SetHaltPolicy, SetPatches, SetSigningKey};
use aloft_core::halt::{DEFAULT_POLICY, HaltPolicy};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;

use crate::client::{Client, ServerArgs};
use crate::output::outln;

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Create an app and print its manifest URL (the `updates.url` of your app config).
    Create {
        /// Lower-case letters, digits, '-' and '_'.
        slug: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the apps on the server.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Give an app a server-side signing key: publishes without `--signing-key` are then signed
    /// by the server.
    SetSigningKey {
        slug: String,
        /// PEM private key (PKCS#1 or PKCS#8), e.g. keys/private-key.pem.
        #[arg(long)]
        private_key: PathBuf,
        /// Key id the app's `codeSigningMetadata.keyid` names.
        #[arg(long, default_value = "main")]
        keyid: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// When the app's rollouts halt by themselves, unless a rollout sets its own policy: when,
    /// on a platform, more than --failure-rate percent of the devices that ran the rolled-out
    /// update report it failed, once --min-devices installed it.
    SetHaltPolicy {
        slug: String,
        /// Percent of devices, 0 to 100 [default: 5].
        #[arg(long, value_name = "PCT", conflicts_with_all = ["off", "default"])]
        failure_rate: Option<f64>,
        /// Installs on a platform before its rate counts [default: 50].
        #[arg(long, value_name = "N", conflicts_with_all = ["off", "default"])]
        min_devices: Option<u64>,
        /// The app's rollouts never halt by themselves (unless a rollout sets a policy).
        #[arg(long, conflicts_with = "default")]
        off: bool,
        /// Back to the built-in policy (5 % once 50 devices installed).
        #[arg(long)]
        default: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn bundle patches on or off (on by default): when on, a device that asks for a new
    /// bundle with `A-IM: bsdiff` gets a small bsdiff patch from the update it runs, once one is
    /// computed. iOS clients ask even when the app disabled patch support in its config
    /// (expo/expo#50318), so turn them off here if such an app must get whole bundles.
    SetPatches {
        slug: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::Create { slug, server } => {
            let client = Client::new(&server)?;
            let app: AppInfo = client.post("/apps", &CreateApp { slug }).await?;
            outln!("created app {}", app.slug)?;
            outln!("manifest URL (updates.url): {}", app.manifest_url)?;
        }
        AppsCommand::List { server } => {
            let client = Client::new(&server)?;
            let apps: Vec<AppInfo> = client.get("/apps").await?;
            for app in apps {
                let signing = if app.server_signing { "server-signed" } else { "" };
                let patches = if app.patches { "" } else { "patches off" };
                outln!("{}\t{}\t{}\t{}", app.slug, app.manifest_url, signing, patches)?;
            }
        }
        AppsCommand::SetSigningKey {
            slug,
            private_key,
            keyid,
            server,
        } => {
            let pem = std::fs::read_to_string(&private_key)
                .with_context(|| format!("reading private key {}", private_key.display()))?;
            let client = Client::new(&server)?;
            let body = SetSigningKey {
                private_key_pem: pem,
                keyid,
            };
            let _: AppInfo = client
                .send(
                    client
                        .request(Method::PUT, &format!("/apps/{slug}/signing-key"))
                        .json(&body),
                )
                .await?;
            outln!("app {slug} now signs its updates on the server")?;
        }
        AppsCommand::SetHaltPolicy {
            slug,
            failure_rate,
            min_devices,
            off,
            default,
            server,
        } => {
            let policy = (failure_rate.is_some() || min_devices.is_some()).then(|| HaltPolicy {
                failure_rate: failure_rate.unwrap_or(DEFAULT_POLICY.failure_rate),
                min_devices: min_devices.unwrap_or(DEFAULT_POLICY.min_devices),
            });
            if policy.is_none() && !off && !default {
                anyhow::bail!("give --failure-rate and/or --min-devices, or --off, or --default");
            }
            let client = Client::new(&server)?;
            let body = SetHaltPolicy { policy, off };
            let app: AppInfo = client
                .send(
                    client
                        .request(Method::PUT, &format!("/apps/{slug}/halt-policy"))
                        .json(&body),
                )
                .await?;
            match app.halt_policy {
                Some(p) => outln!(
                    "app {slug}: rollouts halt when more than {} % of devices fail on a platform, once {} installed the update",
                    p.failure_rate,
                    p.min_devices
                )?,
                None => outln!("app {slug}: rollouts never halt by themselves unless they set a policy")?,
            }
        }
        AppsCommand::SetPatches { slug, state, server } => {
            let client = Client::new(&server)?;
            let body = SetPatches { enabled: state == "on" };
            let app: AppInfo = client
                .send(
                    client
                        .request(Method::PUT, &format!("/apps/{slug}/patches"))
                        .json(&body),
                )
                .await?;
            if app.patches {
                outln!("app {slug}: devices that ask get bundle patches")?;
            } else {
                outln!("app {slug}: devices always get whole bundles")?;
            }
        }
    }
    Ok(())
}
