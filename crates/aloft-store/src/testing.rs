//! Backends for tests. The same test bodies run on the embedded default (SQLite + local disk) and,
//! with `ALOFT_TEST_BACKEND=postgres-s3`, on a real PostgreSQL and a real S3 server (started by
//! `.ci/services`, which prints the variables read here). Each test gets a fresh database and a
//! fresh bucket prefix.

use std::path::Path;

use crate::{BlobStore, Database, S3Config};

/// Where a test keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    Local,
    PostgresS3 { postgres_admin_url: String, s3: S3Config },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn in_ci() -> bool {
    env("CI").is_some_and(|v| v != "false" && v != "0")
}

impl Backend {
    /// The PostgreSQL + S3 servers from the environment, if they are configured.
    pub fn postgres_s3_from_env() -> Result<Self, String> {
        let url = env("ALOFT_TEST_POSTGRES_URL").ok_or("ALOFT_TEST_POSTGRES_URL is not set")?;
        let endpoint = env("ALOFT_TEST_S3_ENDPOINT").ok_or("ALOFT_TEST_S3_ENDPOINT is not set")?;
        let bucket = env("ALOFT_TEST_S3_BUCKET").ok_or("ALOFT_TEST_S3_BUCKET is not set")?;
        let prefix = format!("t{}", hex::encode(rand::random::<[u8; 8]>()));
        Ok(Backend::PostgresS3 {
            postgres_admin_url: url,
            s3: S3Config {
                bucket,
                prefix,
                endpoint: Some(endpoint),
                region: env("AWS_REGION"),
                path_style: true,
            },
        })
    }

    /// The backend the suite runs on: `ALOFT_TEST_BACKEND` (`local`, the default, or
    /// `postgres-s3`). Asking for PostgreSQL + S3 without them configured is an error.
    pub fn from_env() -> Self {
        match env("ALOFT_TEST_BACKEND").as_deref() {
            None | Some("local") => Backend::Local,
            Some("postgres-s3") => Self::postgres_s3_from_env().unwrap_or_else(|why| {
                panic!("ALOFT_TEST_BACKEND=postgres-s3 but {why}; start the servers with: eval \"$(.ci/services)\"")
            }),
            Some(other) => panic!("unknown ALOFT_TEST_BACKEND {other:?}: use local or postgres-s3"),
        }
    }

    /// For tests that only make sense on PostgreSQL + S3 (replicas): the backend, or `None` after
    /// printing why the test is skipped. In CI a missing server is a failure, never a skip.
    pub fn require_postgres_s3(test: &str) -> Option<Self> {
        match Self::postgres_s3_from_env() {
            Ok(b) => Some(b),
            Err(why) if in_ci() => panic!("{test} needs PostgreSQL and S3 in CI, but {why}"),
            Err(why) => {
                eprintln!("SKIPPED {test}: {why} (start the servers with: eval \"$(.ci/services)\")");
                None
            }
        }
    }

    /// A fresh, empty database for one test: its URL.
    pub fn fresh_database_url(&self, dir: &Path) -> String {
        match self {
            Backend::Local => format!(
                "sqlite://{}?mode=rwc",
                std::path::absolute(dir.join("aloft.db")).unwrap_or_default().display()
            ),
            Backend::PostgresS3 { postgres_admin_url, .. } => {
                let name = format!("aloft_t_{}", hex::encode(rand::random::<[u8; 8]>()));
                let out = std::process::Command::new("psql")
                    .args([
                        postgres_admin_url.as_str(),
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-q",
                        "-c",
                        &format!("CREATE DATABASE {name}"),
                    ])
                    .output()
                    .unwrap_or_else(|e| panic!("running psql to create a test database: {e}"));
                assert!(
                    out.status.success(),
                    "CREATE DATABASE failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let base = postgres_admin_url
                    .rsplit_once('/')
                    .map_or(postgres_admin_url.as_str(), |(b, _)| b);
                format!("{base}/{name}")
            }
        }
    }

    /// A fresh place for one test's state: a new database and a new bucket prefix.
    pub fn fresh(&self, dir: &Path) -> Location {
        match self {
            Backend::Local => Location {
                database_url: None,
                s3: None,
                dir: dir.to_owned(),
            },
            Backend::PostgresS3 { s3, .. } => {
                let mut s3 = s3.clone();
                s3.prefix = format!("{}{}", s3.prefix, hex::encode(rand::random::<[u8; 4]>()));
                Location {
                    database_url: Some(self.fresh_database_url(dir)),
                    s3: Some(s3),
                    dir: dir.to_owned(),
                }
            }
        }
    }
}

/// One test's database and blob storage; open it again to play a restart.
#[derive(Debug, Clone)]
pub struct Location {
    /// `None`: SQLite in `dir`.
    pub database_url: Option<String>,
    /// `None`: blobs in `dir`.
    pub s3: Option<S3Config>,
    pub dir: std::path::PathBuf,
}

impl Location {
    pub async fn open(&self) -> (Database, BlobStore) {
        let db = match &self.database_url {
            None => Database::open_sqlite(&self.dir.join("aloft.db"))
                .await
                .expect("open sqlite"),
            Some(url) => Database::connect(url, 8).await.expect("connect to the test database"),
        };
        let blobs = match &self.s3 {
            None => BlobStore::local(&self.dir).expect("local blobs"),
            Some(s3) => BlobStore::s3(s3, &self.dir).expect("S3 blob store"),
        };
        (db, blobs)
    }

    /// `aloft serve` flags for this location (besides `--data-dir`, which it always gets).
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        if let Some(s3) = &self.s3 {
            args.extend([
                "--storage".to_owned(),
                format!("s3://{}/{}", s3.bucket, s3.prefix),
                "--s3-path-style".to_owned(),
            ]);
            if let Some(endpoint) = &s3.endpoint {
                args.extend(["--s3-endpoint".to_owned(), endpoint.clone()]);
            }
        }
        args
    }

    /// `aloft tokens create` flags that reach this location's database offline.
    pub fn token_args(&self) -> Vec<String> {
        match &self.database_url {
            None => vec!["--data-dir".to_owned(), self.dir.display().to_string()],
            Some(url) => vec!["--database-url".to_owned(), url.clone()],
        }
    }
}
