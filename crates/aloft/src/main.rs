//! `aloft`: the server (`aloft serve`) and the tools that feed it (`publish`, `apps`, `tokens`,
//! `keys`).

mod apps;
mod client;
mod keys;
mod publish;
mod serve;
mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aloft",
    version,
    about = "Self-hosted over-the-air update server for Expo and React Native apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the update server.
    Serve(serve::ServeArgs),
    /// Publish the output of `npx expo export` as a new update group.
    Publish(publish::PublishArgs),
    /// Manage apps on a server.
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Code-signing keys and certificates.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Apps(cmd) => apps::run(cmd).await,
            Command::Tokens(cmd) => tokens::run(cmd).await,
            Command::Keys(cmd) => keys::run(cmd),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
