//! `aloft serve`: configuration layering (defaults, TOML file, `ALOFT_*` env, flags), start-up
//! and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aloft_server::{AppState, AssetDelivery, ServerConfig};
use aloft_store::db::DbOptions;
use aloft_store::{BlobStore, Database, S3Config};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::output::{self, outln};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the flags, e.g. `listen = "0.0.0.0:3000"`).
    #[arg(long, env = "ALOFT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:3000].
    #[arg(long, env = "ALOFT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the SQLite database and blobs, created on first start [default: ./aloft-data].
    #[arg(long, env = "ALOFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Base URL devices reach this server at; asset URLs in manifests start with it
    /// [default: http://<listen address>].
    #[arg(long, env = "ALOFT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Database: `postgres://user:pass@host/db` for PostgreSQL [default: SQLite in the data folder].
    #[arg(long, env = "ALOFT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Database connections per process [default: 16].
    #[arg(long, env = "ALOFT_DB_MAX_CONNECTIONS")]
    db_max_connections: Option<u32>,
    /// How long a change waits for the database write lock before it is refused with 503
    /// `database_busy`, in seconds (SQLite's busy timeout; on PostgreSQL, the wait for the
    /// advisory lock writers share) [default: 10].
    #[arg(long, env = "ALOFT_DB_LOCK_TIMEOUT_SECONDS")]
    db_lock_timeout_seconds: Option<u64>,
    /// Blob storage: `file` (the data folder) or `s3://bucket/prefix` (credentials from the
    /// usual AWS_* variables) [default: file].
    #[arg(long, env = "ALOFT_STORAGE")]
    storage: Option<String>,
    /// S3 endpoint, for S3-compatible servers (MinIO, R2, Garage, GCS) [default: AWS].
    #[arg(long, env = "ALOFT_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION].
    #[arg(long, env = "ALOFT_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style S3 requests (endpoint/bucket/key), as most S3-compatible servers want.
    #[arg(long, env = "ALOFT_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Base URL of a CDN in front of Aloft: manifests link assets as
    /// `<asset-base-url>/assets/<sha256>.<ext>` [default: the public URL].
    #[arg(long, env = "ALOFT_ASSET_BASE_URL")]
    asset_base_url: Option<String>,
    /// `proxy` streams assets through Aloft; `redirect` answers with a presigned S3 URL
    /// (S3 storage only) [default: proxy].
    #[arg(long, env = "ALOFT_ASSET_DELIVERY")]
    asset_delivery: Option<DeliveryMode>,
    /// Lifetime of presigned asset URLs, in seconds [default: 3600].
    #[arg(long, env = "ALOFT_PRESIGN_TTL_SECONDS")]
    presign_ttl_seconds: Option<u64>,
    /// Memory for asset bytes kept between requests; 0 turns the cache off [default: 67108864].
    #[arg(long, env = "ALOFT_ASSET_CACHE_BYTES")]
    asset_cache_bytes: Option<usize>,
    /// Largest accepted upload of one file, in bytes [default: 268435456].
    #[arg(long, env = "ALOFT_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// Close a connection that sends no request (or only part of one) for this long, in
    /// seconds [default: 75].
    #[arg(long, env = "ALOFT_IDLE_TIMEOUT_SECONDS")]
    idle_timeout_seconds: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "ALOFT_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    #[default]
    Proxy,
    Redirect,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    db_lock_timeout_seconds: Option<u64>,
    storage: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_path_style: Option<bool>,
    asset_base_url: Option<String>,
    asset_delivery: Option<DeliveryMode>,
    presign_ttl_seconds: Option<u64>,
    asset_cache_bytes: Option<usize>,
    public_url: Option<String>,
    max_upload_bytes: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    log_format: Option<LogFormat>,
}

#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    data_dir: PathBuf,
    database: DatabaseTarget,
    db_max_connections: u32,
    db_lock_timeout: std::time::Duration,
    storage: StorageTarget,
    asset_base_url: Option<String>,
    asset_delivery: AssetDelivery,
    asset_cache_bytes: usize,
    public_url: Option<String>,
    max_upload_bytes: u64,
    idle_timeout: std::time::Duration,
    log_format: LogFormat,
}

fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in configuration file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let public_url = args
        .public_url
        .clone()
        .or(file.public_url)
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = &public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("public-url must start with http:// or https://, got {url:?}");
    }
    let max_upload_bytes = args.max_upload_bytes.or(file.max_upload_bytes).unwrap_or(256 << 20);
    let idle_timeout_seconds = args.idle_timeout_seconds.or(file.idle_timeout_seconds).unwrap_or(75);
    if idle_timeout_seconds == 0 {
        bail!("--idle-timeout-seconds must be at least 1");
    }
    if max_upload_bytes == 0 {
        bail!("max-upload-bytes must be at least 1");
    }
    let db_lock_timeout_seconds = args
        .db_lock_timeout_seconds
        .or(file.db_lock_timeout_seconds)
        .unwrap_or(10);
    if !(1..=3600).contains(&db_lock_timeout_seconds) {
        bail!("db-lock-timeout-seconds must be between 1 and 3600, got {db_lock_timeout_seconds}");
    }
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("aloft-data"));
    let database = DatabaseTarget::resolve(args.database_url.clone().or(file.database_url), &data_dir)?;
    let storage = match args.storage.clone().or(file.storage).as_deref() {
        None | Some("file") => StorageTarget::File,
        Some(url) => {
            let Some((bucket, prefix)) = S3Config::parse_url(url) else {
                bail!("storage must be `file` or `s3://bucket/prefix`, got {url:?}");
            };
            StorageTarget::S3(S3Config {
                bucket,
                prefix,
                endpoint: args.s3_endpoint.clone().or(file.s3_endpoint),
                region: args.s3_region.clone().or(file.s3_region),
                path_style: args.s3_path_style || file.s3_path_style.unwrap_or(false),
            })
        }
    };
    let asset_base_url = args.asset_base_url.clone().or(file.asset_base_url);
    if let Some(url) = &asset_base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("asset-base-url must start with http:// or https://, got {url:?}");
    }
    let asset_delivery = match args.asset_delivery.or(file.asset_delivery).unwrap_or_default() {
        DeliveryMode::Proxy => AssetDelivery::Proxy,
        DeliveryMode::Redirect => {
            if !matches!(storage, StorageTarget::S3(_)) {
                bail!("asset-delivery redirect needs S3 storage (--storage s3://bucket/prefix)");
            }
            let secs = args.presign_ttl_seconds.or(file.presign_ttl_seconds).unwrap_or(3600);
            if !(60..=7 * 24 * 3600).contains(&secs) {
                bail!("presign-ttl-seconds must be between 60 and 604800");
            }
            AssetDelivery::Redirect {
                ttl: std::time::Duration::from_secs(secs),
            }
        }
    };
    Ok(Settings {
        asset_cache_bytes: args.asset_cache_bytes.or(file.asset_cache_bytes).unwrap_or(64 << 20),
        asset_base_url,
        asset_delivery,
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000))),
        data_dir,
        database,
        db_max_connections: args.db_max_connections.or(file.db_max_connections).unwrap_or(16),
        db_lock_timeout: std::time::Duration::from_secs(db_lock_timeout_seconds),
        storage,
        public_url,
        max_upload_bytes,
        idle_timeout: std::time::Duration::from_secs(idle_timeout_seconds),
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
    })
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALOFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let hint = aloft_server::error::database_hint(&err);
    let err = anyhow::Error::new(err).context(context);
    match hint {
        Some(hint) => err.context(hint),
        None => err,
    }
}

#[derive(Debug, Clone)]
enum StorageTarget {
    File,
    S3(S3Config),
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
    #[arg(long, env = "ALOFT_DATA_DIR", default_value = "aloft-data")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn layers_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("aloft.toml");
        std::fs::write(
            &cfg,
            "listen = \"0.0.0.0:4000\"\npublic-url = \"https://ota.example.com/\"\n",
        )
        .unwrap();
        let t = T::parse_from(["x", "--config", cfg.to_str().unwrap(), "--data-dir", "/tmp/d"]);
        let s = resolve(&t.args).unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:4000");
        assert_eq!(s.public_url.as_deref(), Some("https://ota.example.com"));
        assert_eq!(s.data_dir, PathBuf::from("/tmp/d"));
        let t = T::parse_from(["x", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:5000"]);
        assert_eq!(resolve(&t.args).unwrap().listen.to_string(), "127.0.0.1:5000");

        std::fs::write(&cfg, "listne = \"0.0.0.0:4000\"\n").unwrap();
        let t = T::parse_from(["x", "--config", cfg.to_str().unwrap()]);
        let err = format!("{:#}", resolve(&t.args).unwrap_err());
        assert!(err.contains("unknown field `listne`"), "{err}");
    }

    #[test]
    fn db_lock_timeout_layers() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("aloft.toml");
        let t = T::parse_from(["x"]);
        assert_eq!(resolve(&t.args).unwrap().db_lock_timeout.as_secs(), 10);
        std::fs::write(&cfg, "db-lock-timeout-seconds = 3\n").unwrap();
        let t = T::parse_from(["x", "--config", cfg.to_str().unwrap()]);
        assert_eq!(resolve(&t.args).unwrap().db_lock_timeout.as_secs(), 3);
        let t = T::parse_from(["x", "--config", cfg.to_str().unwrap(), "--db-lock-timeout-seconds", "5"]);
        assert_eq!(resolve(&t.args).unwrap().db_lock_timeout.as_secs(), 5);
        let t = T::parse_from(["x", "--db-lock-timeout-seconds", "0"]);
        let err = format!("{:#}", resolve(&t.args).unwrap_err());
        assert!(err.contains("db-lock-timeout-seconds"), "{err}");
    }
}
