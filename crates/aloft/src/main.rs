//! `aloft`: the server (`aloft serve`) and the tools that feed it (`publish`, `apps`, `tokens`,
//! `keys`).

mod apps;
mod client;
mod embedded;
mod insights;
mod keys;
mod output;
mod publish;
mod release;
mod rollout;
mod serve;
mod tokens;
mod users;
mod webhooks;

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
    /// Bring a database's schema up to date (`aloft serve` also does this at start).
    Migrate(serve::MigrateArgs),
    /// Publish the output of `npx expo export` as a new update group.
    Publish(publish::PublishArgs),
    /// Manage apps on a server.
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Dashboard users: add one (printing a sign-in link), a new link, list, remove.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Code-signing keys and certificates.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Channels: which branch each serves, and branch rollouts.
    #[command(subcommand)]
    Channels(release::ChannelsCommand),
    /// Branches: ordered lists of update groups.
    #[command(subcommand)]
    Branches(release::BranchesCommand),
    /// Embedded bundles of store builds: the bases of patches to a build's first updates.
    #[command(subcommand)]
    Embedded(embedded::EmbeddedCommand),
    /// Update groups: list, show (with each update's patches), disable, delete.
    #[command(subcommand)]
    Updates(release::UpdatesCommand),
    /// Per-group rollouts: raise, complete, revert, and their status against the halt policy.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Republish an update group (new ids, newer createdAt, same assets).
    Republish(release::RepublishArgs),
    /// Roll a channel back to its previous update, or to the embedded update.
    Rollback(release::RollbackArgs),
    /// What devices did with an update group (installs, launches, failures), or what an app's
    /// devices run per channel and runtime version.
    Insights(insights::InsightsArgs),
    /// Webhooks: an app's events sent as signed JSON to a URL, and their delivery log.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Show the audit log.
    Audit(release::AuditArgs),
    /// Remove stored files no update references any more.
    Gc(release::GcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Migrate(args) => serve::migrate(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Apps(cmd) => apps::run(cmd).await,
            Command::Tokens(cmd) => tokens::run(cmd).await,
            Command::Users(cmd) => users::run(cmd).await,
            Command::Keys(cmd) => keys::run(cmd),
            Command::Channels(cmd) => release::channels(cmd).await,
            Command::Branches(cmd) => release::branches(cmd).await,
            Command::Updates(cmd) => release::updates(cmd).await,
            Command::Embedded(cmd) => embedded::run(cmd).await,
            Command::Rollout(cmd) => rollout::rollout(cmd).await,
            Command::Republish(args) => release::republish(args).await,
            Command::Rollback(args) => release::rollback(args).await,
            Command::Insights(args) => insights::run(args).await,
            Command::Webhooks(cmd) => webhooks::run(cmd).await,
            Command::Audit(args) => release::audit(args).await,
            Command::Gc(args) => release::gc(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`aloft audit | head -3`): nothing more to say.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages may carry a server's text: escaped like everything else printed.
            output::errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
