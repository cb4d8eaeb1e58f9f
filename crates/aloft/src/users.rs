use std::path::PathBuf;

use aloft_core::api::{CreateUser, UserInfo, UserSignInLink};
use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::client::{Client, ServerArgs};
use crate::output::{errln, outln};
use crate::serve::{DatabaseTarget, defaults};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a dashboard user and print a one-time sign-in link (24 hours) where they set a
    /// password. With --data-dir or --database-url the user is written straight into a server's
    /// database (works offline, also on a fresh server, for the first admin); otherwise the
    /// server adds them (admin token).
    Create(CreateArgs),
    /// Print a new one-time sign-in link for a user (for a forgotten password); their earlier
    /// links stop working.
    Reset(ResetArgs),
    /// List dashboard users (admin).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a dashboard user and end their sessions (admin).
    Remove {
        email: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where a user is written: a server's database (offline), or a server. With neither given,
/// the data folder `aloft serve` uses by default (`./aloft-data`), when it exists.
#[derive(Args)]
pub struct Target {
    /// Write into this data folder (offline) instead of asking a server.
    #[arg(long, env = "ALOFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Write into this database (postgres://… or sqlite:…, offline) instead of asking a server.
    #[arg(long, env = "ALOFT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The server's public URL, which the sign-in link starts with (offline only; a server uses
    /// its own).
    #[arg(long, env = "ALOFT_PUBLIC_URL", default_value = "http://127.0.0.1:3000")]
    public_url: String,
    /// Base URL of the Aloft server to ask (with an admin --token), when no --data-dir or
    /// --database-url is given.
    #[arg(long, env = "ALOFT_SERVER")]
    server: Option<String>,
    #[arg(long, env = "ALOFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The user's email address: what they sign in with, and who the audit log names.
    email: String,
    /// admin (everything), publisher (read and release the given apps) or viewer (read them).
    #[arg(long)]
    role: String,
    /// An app a publisher or viewer is for (repeat for several).
    #[arg(long = "app")]
    apps: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct ResetArgs {
    email: String,
    #[command(flatten)]
    target: Target,
}

enum Where {
    Offline(DatabaseTarget, String),
    Server(Client),
}

impl Target {
    fn resolve(&self) -> anyhow::Result<Where> {
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("--public-url must start with http:// or https://, got {public_url:?}");
        }
        let default_dir = PathBuf::from(defaults::DATA_DIR);
        match (&self.database_url, &self.data_dir, &self.server) {
            (Some(url), _, _) => Ok(Where::Offline(
                DatabaseTarget::resolve(Some(url.clone()), std::path::Path::new("."))?,
                public_url,
            )),
            (None, Some(dir), _) => Ok(Where::Offline(DatabaseTarget::DataDir(dir.clone()), public_url)),
            (None, None, Some(server)) => {
                let Some(token) = &self.token else {
                    bail!("--token (or ALOFT_TOKEN) is needed to ask the server")
                };
                Ok(Where::Server(Client::new(&ServerArgs {
                    server: server.clone(),
                    token: token.clone(),
                })?))
            }
            (None, None, None) if default_dir.join("aloft.db").exists() => {
                Ok(Where::Offline(DatabaseTarget::DataDir(default_dir), public_url))
            }
            (None, None, None) => bail!(
                "no ./{} here: give --data-dir or --database-url (the server's database, offline), \
                 or --server and --token (an admin token)",
                defaults::DATA_DIR
            ),
        }
    }
}

fn print_link(email: &str, url: &str, what: &str) -> anyhow::Result<()> {
    outln!("{url}")?;
    errln!("{what} {email:?}: send them this link; it works once, for 24 hours");
    Ok(())
}

pub async fn run(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create(args) => match args.target.resolve()? {
            Where::Offline(target, public_url) => {
                let db = target.open(2).await?;
                let made =
                    aloft_server::offline_users::create(&db, &public_url, &args.email, &args.role, &args.apps).await;
                db.close().await;
                let (email, url) = made.map_err(|m| anyhow!(m))?;
                print_link(&email, &url, "user added:")?;
            }
            Where::Server(client) => {
                let body = CreateUser {
                    email: args.email.clone(),
                    role: args.role.clone(),
                    apps: args.apps.clone(),
                };
                let made: UserSignInLink = client.post("/users", &body).await?;
                print_link(&made.user.email, &made.sign_in_url, "user added:")?;
            }
        },
        UsersCommand::Reset(args) => match args.target.resolve()? {
            Where::Offline(target, public_url) => {
                let db = target.open(2).await?;
                let made = aloft_server::offline_users::reset(&db, &public_url, &args.email).await;
                db.close().await;
                let (email, url) = made.map_err(|m| anyhow!(m))?;
                print_link(&email, &url, "new sign-in link for")?;
            }
            Where::Server(client) => {
                let path = format!("/users/{}/sign-in-link", encode(&args.email));
                let made: UserSignInLink = client.send(client.request(Method::POST, &path)).await?;
                print_link(&made.user.email, &made.sign_in_url, "new sign-in link for")?;
            }
        },
        UsersCommand::List { server } => {
            let client = Client::new(&server)?;
            let users: Vec<UserInfo> = client.get("/users").await?;
            outln!(
                "{:<32} {:<10} {:<24} {:<8} CREATED",
                "EMAIL",
                "ROLE",
                "APPS",
                "PASSWORD"
            )?;
            for u in users {
                outln!(
                    "{:<32} {:<10} {:<24} {:<8} {}",
                    u.email,
                    u.role,
                    u.apps.join(","),
                    if u.password_set { "set" } else { "not set" },
                    u.created_at
                )?;
            }
        }
        UsersCommand::Remove { email, server } => {
            let client = Client::new(&server)?;
            client
                .send_empty(client.request(Method::DELETE, &format!("/users/{}", encode(&email))))
                .await?;
            outln!("user {email} removed")?;
        }
    }
    Ok(())
}

/// An email as one path segment.
fn encode(email: &str) -> String {
    email
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b'@' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
