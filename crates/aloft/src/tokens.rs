use std::path::PathBuf;

use aloft_store::db::tokens;
use clap::Subcommand;

use crate::serve::open_database;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an admin token directly in a server's data folder (works offline, also on a fresh
    /// server). The secret is printed once; only its hash is stored.
    Create {
        /// The server's data folder.
        #[arg(long, env = "ALOFT_DATA_DIR", default_value = "aloft-data")]
        data_dir: PathBuf,
        /// A name to recognise the token by (shown as the publisher of updates).
        #[arg(long, default_value = "admin")]
        name: String,
    },
}

pub async fn run(cmd: TokensCommand) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create { data_dir, name } => {
            let db = open_database(&data_dir).await?;
            let secret = tokens::create(&db, &name, "admin").await?;
            db.close().await;
            println!("{secret}");
            eprintln!("token {name:?} created; store it now, it cannot be shown again");
        }
    }
    Ok(())
}
