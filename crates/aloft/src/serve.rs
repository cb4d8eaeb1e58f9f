//! `aloft serve`: configuration layering (defaults, TOML file, `ALOFT_*` env, flags), start-up
//! and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aloft_server::{AppState, ServerConfig};
use aloft_store::{BlobStore, Database};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use tokio::net::TcpListener;

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
    /// Largest accepted upload of one file, in bytes [default: 268435456].
    #[arg(long, env = "ALOFT_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "ALOFT_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
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
    public_url: Option<String>,
    max_upload_bytes: Option<u64>,
    log_format: Option<LogFormat>,
}

#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    data_dir: PathBuf,
    public_url: Option<String>,
    max_upload_bytes: u64,
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
    if max_upload_bytes == 0 {
        bail!("max-upload-bytes must be at least 1");
    }
    Ok(Settings {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000))),
        data_dir: args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("aloft-data")),
        public_url,
        max_upload_bytes,
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

/// The database file inside a data folder.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("aloft.db")
}

pub async fn open_database(data_dir: &Path) -> anyhow::Result<Database> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data folder {}", data_dir.display()))?;
    let path = database_path(data_dir);
    Database::open_sqlite(&path)
        .await
        .with_context(|| format!("opening database {}", path.display()))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = resolve(&args)?;
    if args.check_config {
        println!("{settings:#?}");
        return Ok(());
    }
    init_logging(settings.log_format);

    // Everything is built before the port is bound: a bad setting fails here.
    let db = open_database(&settings.data_dir).await?;
    let blobs = BlobStore::local(&settings.data_dir).context("preparing blob storage")?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
    let metrics = aloft_server::install_recorder().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let config = ServerConfig {
        listen: bound,
        public_url: public_url.clone(),
        max_upload_bytes: settings.max_upload_bytes,
    };
    let state = AppState::new(config, db.clone(), blobs, Some(metrics))
        .await
        .context("loading served state")?;
    let app = aloft_server::app(state);

    tracing::info!(%bound, %public_url, data_dir = %settings.data_dir.display(), "aloft is serving");
    // A machine-readable line on stdout, for scripts and tests that start on port 0.
    println!("listening on http://{bound}");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
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
}
