use std::path::PathBuf;

use aloft_core::api::{CreateToken, CreatedToken, TokenInfo};
use aloft_store::db::tokens::{self, Scope};
use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::client::{Client, ServerArgs};
use crate::output::{errln, outln};
use crate::serve::DatabaseTarget;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token. With --data-dir, an admin token is written straight into a server's data
    /// folder (works offline, also on a fresh server); otherwise the server makes it. The secret
    /// is printed once; only its hash is stored.
    Create(CreateArgs),
    /// List tokens (admin).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token by id (admin).
    Revoke {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Make an admin token offline in this data folder, instead of asking a server.
    #[arg(long, conflicts_with_all = ["scope", "apps", "expires_in_days"])]
    data_dir: Option<PathBuf>,
    /// Make an admin token offline in this database (postgres://…), instead of asking a server.
    #[arg(long, conflicts_with_all = ["data_dir", "scope", "apps", "expires_in_days"])]
    database_url: Option<String>,
    /// A name to recognise the token by (shown as the publisher of updates and in the audit log).
    #[arg(long, default_value = "admin")]
    name: String,
    /// admin (everything), publish (release the given apps) or read (read the given apps).
    #[arg(long, default_value = "admin")]
    scope: String,
    /// An app the token is for (repeat for several); for publish and read tokens.
    #[arg(long = "app")]
    apps: Vec<String>,
    #[arg(long)]
    expires_in_days: Option<u32>,
    #[arg(long, env = "ALOFT_SERVER")]
    server: Option<String>,
    #[arg(long, env = "ALOFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn print_tokens(tokens: &[TokenInfo]) -> anyhow::Result<()> {
    outln!(
        "{:<5} {:<20} {:<8} {:<24} {:<26} STATE",
        "ID",
        "NAME",
        "SCOPE",
        "APPS",
        "CREATED"
    )?;
    for t in tokens {
        let state = match (&t.revoked_at, &t.expires_at) {
            (Some(at), _) => format!("revoked {at}"),
            (None, Some(at)) => format!("expires {at}"),
            (None, None) => "active".to_owned(),
        };
        outln!(
            "{:<5} {:<20} {:<8} {:<24} {:<26} {state}",
            t.id,
            t.name,
            t.scope,
            t.apps.join(","),
            t.created_at
        )?;
    }
    Ok(())
}

fn offline_target(args: &CreateArgs) -> anyhow::Result<Option<DatabaseTarget>> {
    match (&args.database_url, &args.data_dir) {
        (Some(url), _) => Ok(Some(DatabaseTarget::resolve(
            Some(url.clone()),
            std::path::Path::new("."),
        )?)),
        (None, Some(dir)) => Ok(Some(DatabaseTarget::DataDir(dir.clone()))),
        (None, None) => Ok(None),
    }
}

pub async fn run(cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create(args) => match (offline_target(&args)?, &args.server) {
            (Some(target), _) => {
                let db = target.open(2).await?;
                let (_, secret) = tokens::create(&db, &args.name, &Scope::Admin, None).await?;
                db.close().await;
                outln!("{secret}")?;
                errln!(
                    "admin token {:?} created; store it now, it cannot be shown again",
                    args.name
                );
            }
            (None, Some(server)) => {
                let Some(token) = &args.token else {
                    bail!("--token (or ALOFT_TOKEN) is needed to ask the server")
                };
                let client = Client::new(&ServerArgs {
                    server: server.clone(),
                    token: token.clone(),
                })?;
                let body = CreateToken {
                    name: args.name.clone(),
                    scope: args.scope.clone(),
                    apps: args.apps.clone(),
                    expires_in_days: args.expires_in_days,
                };
                let created: CreatedToken = client.post("/tokens", &body).await?;
                outln!("{}", created.secret)?;
                errln!(
                    "{} token {:?} (id {}) created; store it now, it cannot be shown again",
                    created.token.scope,
                    created.token.name,
                    created.token.id
                );
            }
            (None, None) => bail!("give --data-dir or --database-url (offline, admin), or --server and --token"),
        },
        TokensCommand::List { server } => {
            let client = Client::new(&server)?;
            let tokens: Vec<TokenInfo> = client.get("/tokens").await?;
            print_tokens(&tokens)?;
        }
        TokensCommand::Revoke { id, server } => {
            let client = Client::new(&server)?;
            client
                .send_empty(client.request(Method::DELETE, &format!("/tokens/{id}")))
                .await?;
            outln!("token {id} revoked")?;
        }
    }
    Ok(())
}
