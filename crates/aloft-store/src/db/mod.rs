//! The database: one SQLite file by default. Small query modules per aggregate.

pub mod apps;
pub mod audit;
pub mod blobs;
pub mod channels;
pub mod idempotency;
pub mod tokens;
pub mod updates;

use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

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
    #[error("the database URL must start with sqlite: or postgres://")]
    UnsupportedUrl,
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database engines Aloft runs on. Queries are written once, in the SQL both accept (`$N`
/// placeholders, `ON CONFLICT`, `RETURNING`, window functions); each engine has its own
/// migration history, kept in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection, as the query functions that compose into one transaction take it.
pub type Conn = sqlx::AnyConnection;
/// An open write transaction (see [`Database::begin_write`]); it derefs to a [`Conn`].
pub type WriteTx = sqlx::Transaction<'static, sqlx::Any>;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    engine: Engine,
}

/// Any key for the advisory lock that serialises writers across replicas on PostgreSQL.
const WRITE_LOCK_KEY: i64 = 0x616c_6f66_7400;

impl Database {
    /// Opens (creating if needed) the SQLite file at `path` and brings its schema up to date.
    pub async fn open_sqlite(path: &Path) -> Result<Self, DbError> {
        Self::open_sqlite_with(path, 8).await
    }

    /// As [`Database::open_sqlite`], with a pool of `max_connections`.
    pub async fn open_sqlite_with(path: &Path, max_connections: u32) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        }
        let absolute = std::path::absolute(path).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        Self::connect(&format!("sqlite://{}?mode=rwc", absolute.display()), max_connections).await
    }

    /// Connects to `sqlite://…` or `postgres://…` and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5));
        if engine == Engine::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 10000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let db = Self { pool, engine };
        db.migrate().await?;
        Ok(db)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.engine {
            Engine::Sqlite => &SQLITE_MIGRATIONS,
            Engine::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations; refuses a schema newer than this binary.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = self.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
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
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A transaction that holds the write lock from its start: SQLite's `BEGIN IMMEDIATE` (a
    /// deferred transaction that reads first and writes later fails at once if another connection
    /// wrote in between), PostgreSQL's transaction-scoped advisory lock (so writers on different
    /// replicas take turns and `createdAt` stays strictly increasing).
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        match self.engine {
            Engine::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// A pooled connection for reads that span several queries.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, DbError> {
        Ok(self.pool.acquire().await?)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl DbError {
    /// The database could not be reached (as opposed to refusing a request).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Sqlx(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
            )
        )
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
