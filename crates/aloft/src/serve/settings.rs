//! The settings of `aloft serve`, each declared once. [`Options`] is at the same time the flags
//! with their `ALOFT_*` variables (clap) and the TOML file (serde): every field optional,
//! unknown keys rejected, a key being its flag without `--`. The defaults are the constants in
//! [`defaults`]: [`resolve`] applies them and `--help` shows them. A test holds the tables of
//! docs/deploying.md and README.md to the same names and defaults.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aloft_server::AssetDelivery;
use aloft_store::S3Config;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::{DatabaseTarget, ServeArgs};

/// What each setting is when nothing sets it. Values are used by [`resolve`]; the texts say what
/// an unset setting falls back to, which `resolve` and start-up work out.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use super::{DeliveryMode, LogFormat, Switch};

    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 3000));
    /// Relative to the working folder.
    pub const DATA_DIR: &str = "aloft-data";
    pub const PUBLIC_URL: &str = "http://<listen address>";
    pub const DATABASE_URL: &str = "SQLite in the data folder";
    pub const DB_MAX_CONNECTIONS: u32 = 16;
    pub const DB_LOCK_TIMEOUT_SECONDS: u64 = 10;
    pub const STORAGE: &str = "file";
    pub const S3_ENDPOINT: &str = "AWS";
    pub const S3_REGION: &str = "AWS_REGION";
    pub const ASSET_BASE_URL: &str = "the public URL";
    pub const ASSET_DELIVERY: DeliveryMode = DeliveryMode::Proxy;
    pub const PRESIGN_TTL_SECONDS: u64 = 3600;
    pub const ASSET_CACHE_BYTES: usize = 64 << 20;
    pub const PATCH_WORKERS: usize = 1;
    pub const MAX_UPLOAD_BYTES: u64 = 256 << 20;
    pub const IDLE_TIMEOUT_SECONDS: u64 = 75;
    pub const LOG_FORMAT: LogFormat = LogFormat::Text;
    pub const INSIGHTS: Switch = Switch::On;
    pub const DASHBOARD: Switch = Switch::On;
    /// The variable holding the tracing filter. Read by logging itself, not an [`super::Options`]
    /// setting: it has no flag and no TOML key.
    pub const LOG_FILTER_ENV: &str = "ALOFT_LOG";
    pub const LOG_FILTER: &str = "info";
}

/// Every `aloft serve` setting: a flag, an `ALOFT_*` variable and a key of the TOML file.
///
/// The fields are in the order the file's "unknown field" error lists the keys; `--help` lists
/// `--public-url` after `--data-dir` (its `display_order`), as it always has.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    #[arg(long, env = "ALOFT_LISTEN", help = help("Address to listen on", defaults::LISTEN))]
    listen: Option<SocketAddr>,
    #[arg(long, env = "ALOFT_DATA_DIR", help = help(
        "Folder for the SQLite database and blobs, created on first start",
        format!("./{}", defaults::DATA_DIR),
    ))]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "ALOFT_DATABASE_URL", hide_env_values = true, help = help(
        "Database: `postgres://user:pass@host/db` for PostgreSQL",
        defaults::DATABASE_URL,
    ))]
    database_url: Option<String>,
    #[arg(long, env = "ALOFT_DB_MAX_CONNECTIONS", help = help(
        "Database connections per process",
        defaults::DB_MAX_CONNECTIONS,
    ))]
    db_max_connections: Option<u32>,
    #[arg(long, env = "ALOFT_DB_LOCK_TIMEOUT_SECONDS", help = help(
        "How long a change waits for the database write lock before it is refused with 503 \
         `database_busy`, in seconds (SQLite's busy timeout; on PostgreSQL, the wait for the \
         advisory lock writers share)",
        defaults::DB_LOCK_TIMEOUT_SECONDS,
    ))]
    db_lock_timeout_seconds: Option<u64>,
    #[arg(long, env = "ALOFT_STORAGE", help = help(
        "Blob storage: `file` (the data folder) or `s3://bucket/prefix` (credentials from the \
         usual AWS_* variables)",
        defaults::STORAGE,
    ))]
    storage: Option<String>,
    #[arg(long, env = "ALOFT_S3_ENDPOINT", help = help(
        "S3 endpoint, for S3-compatible servers (MinIO, R2, Garage, GCS)",
        defaults::S3_ENDPOINT,
    ))]
    s3_endpoint: Option<String>,
    #[arg(long, env = "ALOFT_S3_REGION", help = help("S3 region", defaults::S3_REGION))]
    s3_region: Option<String>,
    /// Path-style S3 requests (endpoint/bucket/key), as most S3-compatible servers want.
    // A flag, off unless given: on when the flag, the variable (`true` or `false`) or the file
    // says so.
    #[arg(long, env = "ALOFT_S3_PATH_STYLE")]
    #[serde(default)]
    s3_path_style: bool,
    #[arg(long, env = "ALOFT_ASSET_BASE_URL", help = help(
        "Base URL of a CDN in front of Aloft: manifests link assets as \
         `<asset-base-url>/assets/<sha256>.<ext>`",
        defaults::ASSET_BASE_URL,
    ))]
    asset_base_url: Option<String>,
    #[arg(long, env = "ALOFT_ASSET_DELIVERY", help = help(
        "`proxy` streams assets through Aloft; `redirect` answers with a presigned S3 URL \
         (S3 storage only)",
        value_name(defaults::ASSET_DELIVERY),
    ))]
    asset_delivery: Option<DeliveryMode>,
    #[arg(long, env = "ALOFT_PRESIGN_TTL_SECONDS", help = help(
        "Lifetime of presigned asset URLs, in seconds",
        defaults::PRESIGN_TTL_SECONDS,
    ))]
    presign_ttl_seconds: Option<u64>,
    #[arg(long, env = "ALOFT_ASSET_CACHE_BYTES", help = help(
        "Memory for asset bytes kept between requests; 0 turns the cache off",
        defaults::ASSET_CACHE_BYTES,
    ))]
    asset_cache_bytes: Option<usize>,
    #[arg(long, env = "ALOFT_PATCH_WORKERS", help = help(
        "Bundle patches computed at once by this process (each holds about 14 times a bundle in \
         memory); 0 computes none, leaving them to other replicas",
        defaults::PATCH_WORKERS,
    ))]
    patch_workers: Option<usize>,
    #[arg(long, env = "ALOFT_PUBLIC_URL", display_order = 2, help = help(
        "Base URL devices reach this server at; asset URLs in manifests start with it",
        defaults::PUBLIC_URL,
    ))]
    public_url: Option<String>,
    #[arg(long, env = "ALOFT_MAX_UPLOAD_BYTES", help = help(
        "Largest accepted upload of one file, in bytes",
        defaults::MAX_UPLOAD_BYTES,
    ))]
    max_upload_bytes: Option<u64>,
    #[arg(long, env = "ALOFT_IDLE_TIMEOUT_SECONDS", help = help(
        "Close a connection that sends no request (or only part of one) for this long, in seconds",
        defaults::IDLE_TIMEOUT_SECONDS,
    ))]
    idle_timeout_seconds: Option<u64>,
    #[arg(long, env = "ALOFT_LOG_FORMAT", help = help("Log format", value_name(defaults::LOG_FORMAT)))]
    log_format: Option<LogFormat>,
    #[arg(long, env = "ALOFT_INSIGHTS", help = help(
        "Record what devices report in their checks and downloads (insights, self-halting rollouts)",
        value_name(defaults::INSIGHTS),
    ))]
    insights: Option<Switch>,
    #[arg(long, env = "ALOFT_DASHBOARD", help = help(
        "Serve the web dashboard at / (people sign in with links from `aloft users create`)",
        value_name(defaults::DASHBOARD),
    ))]
    dashboard: Option<Switch>,
}

/// A setting's help line: what it is, then its default.
fn help(text: &str, default: impl Display) -> String {
    format!("{text} [default: {default}]")
}

/// How a value of a `ValueEnum` is written on the command line and in the file.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

impl Options {
    /// These options (flags, and variables for flags not given) over those of `file`.
    fn over(self, file: Options) -> Options {
        Options {
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            database_url: self.database_url.or(file.database_url),
            db_max_connections: self.db_max_connections.or(file.db_max_connections),
            db_lock_timeout_seconds: self.db_lock_timeout_seconds.or(file.db_lock_timeout_seconds),
            storage: self.storage.or(file.storage),
            s3_endpoint: self.s3_endpoint.or(file.s3_endpoint),
            s3_region: self.s3_region.or(file.s3_region),
            s3_path_style: self.s3_path_style || file.s3_path_style,
            asset_base_url: self.asset_base_url.or(file.asset_base_url),
            asset_delivery: self.asset_delivery.or(file.asset_delivery),
            presign_ttl_seconds: self.presign_ttl_seconds.or(file.presign_ttl_seconds),
            asset_cache_bytes: self.asset_cache_bytes.or(file.asset_cache_bytes),
            patch_workers: self.patch_workers.or(file.patch_workers),
            public_url: self.public_url.or(file.public_url),
            max_upload_bytes: self.max_upload_bytes.or(file.max_upload_bytes),
            idle_timeout_seconds: self.idle_timeout_seconds.or(file.idle_timeout_seconds),
            log_format: self.log_format.or(file.log_format),
            insights: self.insights.or(file.insights),
            dashboard: self.dashboard.or(file.dashboard),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    Proxy,
    Redirect,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// What `aloft serve` runs with: the options with their defaults, checked. `--check-config`
/// prints it.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) listen: SocketAddr,
    pub(super) data_dir: PathBuf,
    pub(super) database: DatabaseTarget,
    pub(super) db_max_connections: u32,
    pub(super) db_lock_timeout: Duration,
    pub(super) storage: StorageTarget,
    pub(super) asset_base_url: Option<String>,
    pub(super) asset_delivery: AssetDelivery,
    pub(super) asset_cache_bytes: usize,
    pub(super) patch_workers: usize,
    pub(super) public_url: Option<String>,
    pub(super) max_upload_bytes: u64,
    pub(super) idle_timeout: Duration,
    pub(super) log_format: LogFormat,
    pub(super) insights: bool,
    pub(super) dashboard: bool,
}

#[derive(Debug, Clone)]
pub(super) enum StorageTarget {
    File,
    S3(S3Config),
}

/// The settings from the flags and variables in `args` over the file it names, over the
/// defaults.
pub(super) fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
    let file: Options = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in configuration file {}", path.display()))?
        }
        None => Options::default(),
    };
    let options = args.options.clone().over(file);
    let public_url = options.public_url.map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = &public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("public-url must start with http:// or https://, got {url:?}");
    }
    let max_upload_bytes = options.max_upload_bytes.unwrap_or(defaults::MAX_UPLOAD_BYTES);
    let idle_timeout_seconds = options.idle_timeout_seconds.unwrap_or(defaults::IDLE_TIMEOUT_SECONDS);
    if idle_timeout_seconds == 0 {
        bail!("--idle-timeout-seconds must be at least 1");
    }
    if max_upload_bytes == 0 {
        bail!("max-upload-bytes must be at least 1");
    }
    let db_lock_timeout_seconds = options
        .db_lock_timeout_seconds
        .unwrap_or(defaults::DB_LOCK_TIMEOUT_SECONDS);
    if !(1..=3600).contains(&db_lock_timeout_seconds) {
        bail!("db-lock-timeout-seconds must be between 1 and 3600, got {db_lock_timeout_seconds}");
    }
    let data_dir = options.data_dir.unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
    let database = DatabaseTarget::resolve(options.database_url, &data_dir)?;
    let storage = match options.storage.as_deref().unwrap_or(defaults::STORAGE) {
        "file" => StorageTarget::File,
        url => {
            let Some((bucket, prefix)) = S3Config::parse_url(url) else {
                bail!("storage must be `file` or `s3://bucket/prefix`, got {url:?}");
            };
            StorageTarget::S3(S3Config {
                bucket,
                prefix,
                endpoint: options.s3_endpoint,
                region: options.s3_region,
                path_style: options.s3_path_style,
            })
        }
    };
    let asset_base_url = options.asset_base_url;
    if let Some(url) = &asset_base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("asset-base-url must start with http:// or https://, got {url:?}");
    }
    let asset_delivery = match options.asset_delivery.unwrap_or(defaults::ASSET_DELIVERY) {
        DeliveryMode::Proxy => AssetDelivery::Proxy,
        DeliveryMode::Redirect => {
            if !matches!(storage, StorageTarget::S3(_)) {
                bail!("asset-delivery redirect needs S3 storage (--storage s3://bucket/prefix)");
            }
            let secs = options.presign_ttl_seconds.unwrap_or(defaults::PRESIGN_TTL_SECONDS);
            if !(60..=7 * 24 * 3600).contains(&secs) {
                bail!("presign-ttl-seconds must be between 60 and 604800");
            }
            AssetDelivery::Redirect {
                ttl: Duration::from_secs(secs),
            }
        }
    };
    Ok(Settings {
        asset_cache_bytes: options.asset_cache_bytes.unwrap_or(defaults::ASSET_CACHE_BYTES),
        patch_workers: options.patch_workers.unwrap_or(defaults::PATCH_WORKERS),
        asset_base_url,
        asset_delivery,
        listen: options.listen.unwrap_or(defaults::LISTEN),
        data_dir,
        database,
        db_max_connections: options.db_max_connections.unwrap_or(defaults::DB_MAX_CONNECTIONS),
        db_lock_timeout: Duration::from_secs(db_lock_timeout_seconds),
        storage,
        public_url,
        max_upload_bytes,
        idle_timeout: Duration::from_secs(idle_timeout_seconds),
        log_format: options.log_format.unwrap_or(defaults::LOG_FORMAT),
        insights: options.insights.unwrap_or(defaults::INSIGHTS) == Switch::On,
        dashboard: options.dashboard.unwrap_or(defaults::DASHBOARD) == Switch::On,
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

/// The docs' tables of `aloft serve` settings, held to the declaration above: the same variables,
/// flags and defaults (as `--help` shows them), one row for each setting and none for anything
/// else. `ALOFT_LOG` is read by logging, not declared here; it is checked against its constants.
#[cfg(test)]
mod documented {
    use std::collections::BTreeMap;

    use clap::{ArgAction, CommandFactory, Parser};

    use super::{ServeArgs, defaults};

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// A setting as the code declares it, or as a table row names it.
    #[derive(Debug, PartialEq, Eq)]
    struct Row {
        flag: String,
        default: String,
    }

    /// Every setting, by variable: its flag and the default `--help` shows ("off" for a flag that
    /// is off unless given, "none" when there is no default), plus `ALOFT_LOG`.
    fn declared() -> BTreeMap<String, Row> {
        let mut rows = BTreeMap::new();
        for arg in Serve::command().get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue; // `--check-config` and `--help`: actions, not settings
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let default = match help.rsplit_once(" [default: ") {
                Some((_, shown)) => shown.strip_suffix(']').expect("help ends with its default").to_owned(),
                None if matches!(arg.get_action(), ArgAction::SetTrue) => "off".to_owned(),
                None => "none".to_owned(),
            };
            let row = Row {
                flag: format!("--{long}"),
                default,
            };
            rows.insert(env.to_string_lossy().into_owned(), row);
        }
        let log = Row {
            flag: "none".to_owned(),
            default: defaults::LOG_FILTER.to_owned(),
        };
        rows.insert(defaults::LOG_FILTER_ENV.to_owned(), log);
        rows
    }

    /// The rows of the table whose header line is `header` in `doc`, as cells without their
    /// backticks. `\|` inside a cell is a literal bar.
    fn table(doc: &str, header: &str) -> Vec<BTreeMap<String, String>> {
        let mut lines = doc.lines().skip_while(|l| l.trim() != header);
        let names: Vec<String> = cells(lines.next().expect("the table is in the document"));
        lines
            .skip(1) // | --- | --- |
            .take_while(|l| l.starts_with('|'))
            .map(|l| names.iter().cloned().zip(cells(l)).collect())
            .collect()
    }

    fn cells(line: &str) -> Vec<String> {
        let line = line.trim().trim_start_matches('|').trim_end_matches('|');
        line.replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.replace('\u{0}', "|").replace('`', "").trim().to_owned())
            .collect()
    }

    /// Whether a documented default says what the code's does: the same text, perhaps followed
    /// by more about it (`67108864 (64 MiB)`, `AWS_REGION, else …`).
    fn same_default(documented: &str, declared: &str) -> bool {
        documented == declared
            || documented.starts_with(&format!("{declared} ("))
            || documented.starts_with(&format!("{declared}, "))
    }

    /// Checks one document's table: `variable` and `flag` name the columns holding them; a flag
    /// cell may go on with a value (`--storage file|s3://…`).
    fn check(path: &str, header: &str, variable: &str, flag: &str) {
        let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let mut declared = declared();
        let mut wrong = Vec::new();
        for row in table(&doc, header) {
            let env = &row[variable];
            let documented_flag = row[flag].split_whitespace().next().unwrap_or_default();
            let documented_default = &row["default"];
            match declared.remove(env) {
                None => wrong.push(format!("{env}: no such setting (or a second row for it)")),
                Some(code) => {
                    if documented_flag != code.flag {
                        wrong.push(format!("{env}: flag {documented_flag}, the code's is {}", code.flag));
                    }
                    if !same_default(documented_default, &code.default) {
                        wrong.push(format!(
                            "{env}: default {documented_default:?}, the code's is {:?}",
                            code.default
                        ));
                    }
                }
            }
        }
        for env in declared.keys() {
            wrong.push(format!("{env}: a setting with no row"));
        }
        assert!(
            wrong.is_empty(),
            "{path} disagrees with the code:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_deploying_guide_names_every_setting_and_its_default() {
        check(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploying.md"),
            "| variable | flag | default | notes |",
            "variable",
            "flag",
        );
    }

    #[test]
    fn the_readme_names_every_setting_and_its_default() {
        check(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"),
            "| flag | env | default |",
            "env",
            "flag",
        );
    }

    #[test]
    fn every_flag_of_a_setting_is_a_key_of_the_file() {
        // serde lists the keys it knows when it meets one it does not.
        let err = toml::from_str::<super::Options>("no-such-key = 1")
            .unwrap_err()
            .to_string();
        let (_, list) = err.split_once("expected one of ").expect("serde lists the keys");
        let mut keys: Vec<&str> = list.split(", ").map(|k| k.trim().trim_matches('`')).collect();
        keys.sort_unstable();
        let mut flags: Vec<String> = declared()
            .into_values()
            .filter_map(|row| row.flag.strip_prefix("--").map(str::to_owned))
            .filter(|flag| flag != "config")
            .collect();
        flags.sort_unstable();
        assert_eq!(keys, flags);
    }
}
