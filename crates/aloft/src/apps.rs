use std::path::PathBuf;

use aloft_core::api::{AppInfo, CreateApp, SetSigningKey};
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
                outln!("{}\t{}\t{}", app.slug, app.manifest_url, signing)?;
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
    }
    Ok(())
}
