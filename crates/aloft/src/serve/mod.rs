//! `aloft serve`: start-up and graceful shutdown. Its settings and their layering (defaults,
//! TOML file, `ALOFT_*` env, flags) are in `settings`.

mod settings;

use std::path::{Path, PathBuf};

use aloft_server::{AppState, ServerConfig};
use aloft_store::db::DbOptions;
use aloft_store::{BlobStore, Database};
use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;

use crate::output::{self, outln};
pub use settings::{LogFormat, defaults};
use settings::{Options, StorageTarget, resolve};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the flags, e.g. `listen = "0.0.0.0:3000"`).
    #[arg(long, env = "ALOFT_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: Options,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(defaults::LOG_FILTER_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(defaults::LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Which database: SQLite in the data folder, or a URL.
#[derive(Clone)]
pub enum DatabaseTarget {
    DataDir(PathBuf),
    Url(String),
}

impl std::fmt::Debug for DatabaseTarget {
    /// Never prints credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::DataDir(dir) => write!(f, "sqlite in {}", dir.join("aloft.db").display()),
            DatabaseTarget::Url(url) => {
                let scheme = url.split("://").next().unwrap_or("?");
                let host = url.rsplit('@').next().unwrap_or("").split('/').next().unwrap_or("");
                write!(f, "{scheme}://…@{host}")
            }
        }
    }
}

impl DatabaseTarget {
    pub fn resolve(url: Option<String>, data_dir: &Path) -> anyhow::Result<Self> {
        match url {
            None => Ok(DatabaseTarget::DataDir(data_dir.to_owned())),
            Some(url)
                if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:") =>
            {
                Ok(DatabaseTarget::Url(url))
            }
            Some(_) => bail!("database-url must start with postgres:// (or sqlite:)"),
        }
    }

    pub async fn open(&self, max_connections: u32) -> anyhow::Result<Database> {
        self.open_with(DbOptions {
            max_connections,
            ..DbOptions::default()
        })
        .await
    }

    pub async fn open_with(&self, options: DbOptions) -> anyhow::Result<Database> {
        match self {
            DatabaseTarget::DataDir(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating data folder {}", dir.display()))?;
                let path = dir.join("aloft.db");
                Database::open_sqlite_opts(&path, options)
                    .await
                    .map_err(|e| with_hint(e, format!("opening database {}", path.display())))
            }
            DatabaseTarget::Url(url) => Database::connect_with(url, options)
                .await
                .map_err(|e| with_hint(e, format!("connecting to {self:?}"))),
        }
    }
}

/// A database error at start-up, with what to do about it when its kind is known.
fn with_hint(err: aloft_store::DbError, context: String) -> anyhow::Error {
    let hint = aloft_server::database_hint(&err);
    let err = anyhow::Error::new(err).context(context);
    match hint {
        Some(hint) => err.context(hint),
        None => err,
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = resolve(&args)?;
    if args.check_config {
        output::block(&format!("{settings:#?}"))?;
        return Ok(());
    }
    init_logging(settings.log_format);

    // Everything is built before the port is bound: a bad setting fails here.
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data folder {}", settings.data_dir.display()))?;
    // One server per data folder: a second would share its SQLite file and empty its upload
    // staging folder. Replicas each get their own data folder.
    let lock_path = settings.data_dir.join("aloft.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another `aloft serve` is using the data folder {}; give each server its own --data-dir",
            settings.data_dir.display()
        );
    }
    let db = settings
        .database
        .open_with(DbOptions {
            max_connections: settings.db_max_connections,
            lock_timeout: settings.db_lock_timeout,
        })
        .await?;
    let blobs = match &settings.storage {
        StorageTarget::File => BlobStore::local(&settings.data_dir),
        StorageTarget::S3(s3) => BlobStore::s3(s3, &settings.data_dir),
    }
    .context("preparing blob storage")?;
    // Each connection and each blob file held open for sending is a descriptor.
    aloft_server::raise_open_file_limit();
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
    let metrics = aloft_server::install_recorder().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let config = ServerConfig {
        asset_base_url: settings.asset_base_url.clone(),
        asset_delivery: settings.asset_delivery,
        asset_cache_bytes: settings.asset_cache_bytes,
        dashboard: settings.dashboard,
        listen: bound,
        public_url: public_url.clone(),
        max_upload_bytes: settings.max_upload_bytes,
    };
    let state = AppState::new(config, db.clone(), blobs, Some(metrics))
        .await
        .context("loading served state")?;
    // Background work: compressed variants still missing, metrics upkeep, and replica sync
    // (changes made through other replicas, or other processes on the same data, show up here
    // within one poll).
    state.record_insights(settings.insights);
    state.set_patch_workers(settings.patch_workers);
    let jobs = aloft_server::Jobs::start(&state, std::time::Duration::from_millis(200));
    let app = aloft_server::app(state);

    tracing::info!(%bound, %public_url, data_dir = %settings.data_dir.display(), "aloft is serving");
    let shutdown = shutdown_signal()?;
    // A machine-readable line on stdout, for scripts and tests that start on port 0.
    // Serving goes on even if nobody reads stdout any more.
    let _ = outln!("listening on http://{bound}");
    // Idle keep-alive connections close at once; requests in flight get up to 30 s.
    aloft_server::serve(
        listener,
        app,
        shutdown,
        std::time::Duration::from_secs(30),
        settings.idle_timeout,
    )
    .await
    .context("serving")?;
    jobs.shutdown().await;
    db.close().await;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data folder whose SQLite database to migrate.
    #[arg(long, env = "ALOFT_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// A database URL (postgres://…) instead.
    #[arg(long, env = "ALOFT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let target = DatabaseTarget::resolve(args.database_url, &args.data_dir)?;
    let db = target.open(2).await?;
    db.close().await;
    outln!("{target:?}: schema up to date")?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives right after start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
}
