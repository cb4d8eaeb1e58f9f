//! The database: one SQLite file by default. Small query modules per aggregate.

pub mod apps;
pub mod audit;
pub mod blobs;
pub mod channels;
pub mod tokens;
pub mod updates;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no such app")]
    NoSuchApp,
    #[error("app {0:?} already exists")]
    AppAlreadyExists(String),
    #[error("no such channel")]
    NoSuchChannel,
    #[error("channel {0:?} already exists")]
    ChannelAlreadyExists(String),
    #[error("no such branch")]
    NoSuchBranch,
    #[error("branch {0:?} already exists")]
    BranchAlreadyExists(String),
    #[error("branch {branch:?} is used by channel(s) {}; point them elsewhere first", channels.join(", "))]
    BranchInUse { branch: String, channels: Vec<String> },
    #[error("no such update group")]
    NoSuchGroup,
    #[error("no such token")]
    NoSuchToken,
    #[error("blob {0} has not been uploaded")]
    MissingBlob(String),
    #[error("update {0} already exists")]
    UpdateAlreadyExists(String),
    #[error("createdAt {created_at} is not after the newest update on the branch ({newest}); publish again")]
    StaleCreatedAt { created_at: i64, newest: i64 },
    #[error("the database schema is version {found}, newer than this binary knows ({known}); upgrade aloft")]
    SchemaTooNew { found: i64, known: i64 },
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A connection, as the query functions that compose into one transaction take it.
pub type Conn = sqlx::SqliteConnection;
/// An open write transaction (see [`Database::begin_write`]); it derefs to a [`Conn`].
pub type WriteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: SqlitePool,
}

impl Database {
    /// Opens (creating if needed) the SQLite file at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Self, DbError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies pending migrations; refuses a schema newer than this binary.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten();
        if let Some(found) = found
            && found > known
        {
            return Err(DbError::SchemaTooNew { found, known });
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A transaction that takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
    /// transaction that reads first and writes later fails at once with `SQLITE_BUSY` if another
    /// connection wrote in between; this one waits its turn instead.
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A pooled connection for reads that span several queries.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, DbError> {
        Ok(self.pool.acquire().await?)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
