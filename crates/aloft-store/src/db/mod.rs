//! The database: one SQLite file by default. Small query modules per aggregate.

pub mod apps;
pub mod audit;
pub mod blobs;
pub mod channels;
pub mod embedded;
pub mod idempotency;
pub mod insights;
pub mod patches;
pub mod rollouts;
pub mod tokens;
pub mod updates;
pub mod users;
pub mod webhooks;

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
    #[error("no such embedded update")]
    NoSuchEmbedded,
    #[error("embedded update {0} is already registered")]
    EmbeddedAlreadyExists(String),
    #[error("no such webhook")]
    NoSuchWebhook,
    #[error("no such user")]
    NoSuchUser,
    #[error("a user with email {0:?} already exists")]
    UserAlreadyExists(String),
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
    /// The database answers but refuses writes (found by [`Database::check_writable`]).
    #[error("the database is read-only: {0}")]
    ReadOnly(&'static str),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A stored value that does not read back as its type.
pub(crate) fn decode(e: impl std::fmt::Display) -> DbError {
    DbError::Sqlx(sqlx::Error::Decode(e.to_string().into()))
}

/// A stored UUID.
pub(crate) fn uuid(s: &str) -> Result<uuid::Uuid, DbError> {
    uuid::Uuid::parse_str(s).map_err(decode)
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
    lock_timeout: Duration,
}

/// How to open the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbOptions {
    pub max_connections: u32,
    /// How long a writer waits for the write lock before giving up with a busy error: SQLite's
    /// `busy_timeout`, PostgreSQL's `lock_timeout` on the advisory lock.
    pub lock_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// What is wrong with the database (or the disk under it), as an operator would name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// No space left: SQLite's "database or disk is full", PostgreSQL's `disk_full`.
    StorageFull,
    /// Another writer held the write lock for longer than the lock timeout.
    Busy,
    /// The database answers reads but refuses writes (file permissions, a read-only mount, a
    /// PostgreSQL standby or `default_transaction_read_only`).
    ReadOnly,
    /// Not a database, or a damaged one.
    Corrupt,
    /// The database cannot be reached or opened.
    Unreachable,
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
        Self::open_sqlite_opts(
            path,
            DbOptions {
                max_connections,
                ..DbOptions::default()
            },
        )
        .await
    }

    /// As [`Database::open_sqlite`], with these options.
    pub async fn open_sqlite_opts(path: &Path, options: DbOptions) -> Result<Self, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        }
        let absolute = std::path::absolute(path).map_err(|e| DbError::Sqlx(sqlx::Error::Io(e)))?;
        Self::connect_with(&format!("sqlite://{}?mode=rwc", absolute.display()), options).await
    }

    /// Connects to `sqlite://…` or `postgres://…` and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        Self::connect_with(
            url,
            DbOptions {
                max_connections,
                ..DbOptions::default()
            },
        )
        .await
    }

    /// As [`Database::connect`], with these options.
    pub async fn connect_with(url: &str, db_options: DbOptions) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let lock_timeout = db_options.lock_timeout;
        let mut options = AnyPoolOptions::new()
            .max_connections(db_options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5));
        if engine == Engine::Sqlite {
            let busy_timeout = format!("PRAGMA busy_timeout = {}", lock_timeout.as_millis());
            options = options.after_connect(move |conn, _| {
                let busy_timeout = busy_timeout.clone();
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA foreign_keys = ON",
                        busy_timeout.as_str(),
                    ] {
                        sqlx::query(sqlx::AssertSqlSafe(pragma.to_owned()))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        }
        if engine == Engine::Sqlite {
            // The pool retries a connection that fails until its acquire timeout and then says
            // only "timed out"; one plain connection first reports the real reason (not a
            // database, cannot open, ...).
            use sqlx::Connection as _;
            let mut probe = sqlx::AnyConnection::connect(url).await?;
            sqlx::query("PRAGMA journal_mode = WAL").execute(&mut probe).await?;
            probe.close().await?;
        }
        let pool = options.connect(url).await?;
        let db = Self {
            pool,
            engine,
            lock_timeout,
        };
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

    /// How long a writer waits for the write lock.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// A transaction that holds the write lock from its start: SQLite's `BEGIN IMMEDIATE` (a
    /// deferred transaction that reads first and writes later fails at once if another connection
    /// wrote in between), PostgreSQL's transaction-scoped advisory lock (so writers on different
    /// replicas take turns and `createdAt` stays strictly increasing). Waiting for the lock ends
    /// after the lock timeout with an error whose [`DbError::trouble`] is [`Trouble::Busy`].
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        match self.engine {
            Engine::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres => {
                let mut tx = self.pool.begin().await?;
                // For this transaction only: lock waits (the advisory lock first) end with
                // SQLSTATE 55P03 instead of queueing forever. 0 would mean "no limit".
                let millis = self.lock_timeout.as_millis().max(1);
                sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                    .bind(format!("{millis}ms"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Whether the database accepts writes, without writing and without waiting for the write
    /// lock. SQLite: a write transaction with an update of no rows, rolled back at once, tried
    /// without a busy timeout (a lock held by someone else means the file is writable). PostgreSQL: neither a
    /// standby nor in a read-only transaction mode.
    pub async fn check_writable(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        match self.engine {
            Engine::Sqlite => {
                use sqlx::Connection as _;
                sqlx::query("PRAGMA busy_timeout = 0").execute(&mut *conn).await?;
                let probe = async {
                    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                    // A read-only connection still begins (even IMMEDIATE, in WAL mode), but
                    // refuses any write statement before running it, even one that changes
                    // nothing.
                    sqlx::query("UPDATE blobs SET size = size WHERE 0 = 1")
                        .execute(&mut *tx)
                        .await?;
                    tx.rollback().await
                }
                .await;
                let restore = format!("PRAGMA busy_timeout = {}", self.lock_timeout.as_millis());
                if sqlx::query(sqlx::AssertSqlSafe(restore))
                    .execute(&mut *conn)
                    .await
                    .is_err()
                {
                    // Never hand a connection without its busy timeout back to the pool.
                    conn.close_on_drop();
                }
                match probe.map_err(DbError::from) {
                    Err(e) if e.trouble() == Some(Trouble::Busy) => Ok(()),
                    other => other,
                }
            }
            Engine::Postgres => {
                let row = sqlx::query(
                    "SELECT CAST(pg_is_in_recovery() AS INTEGER) AS recovery, \
                     current_setting('transaction_read_only') AS read_only",
                )
                .fetch_one(&mut *conn)
                .await?;
                use sqlx::Row as _;
                if row.try_get::<i32, _>("recovery")? != 0 {
                    return Err(DbError::ReadOnly("the PostgreSQL server is a standby (in recovery)"));
                }
                if row.try_get::<String, _>("read_only")? == "on" {
                    return Err(DbError::ReadOnly("new PostgreSQL transactions are read-only"));
                }
                Ok(())
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
    /// The database could not be reached or read (as opposed to refusing a request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.trouble(), Some(Trouble::Unreachable | Trouble::Corrupt))
    }

    /// What is wrong with the database, when it is the database (or its disk) and not the
    /// request: from SQLite's result codes, PostgreSQL's SQLSTATEs and I/O errors.
    pub fn trouble(&self) -> Option<Trouble> {
        let err = match self {
            DbError::ReadOnly(_) => return Some(Trouble::ReadOnly),
            DbError::Sqlx(e) => e,
            DbError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
            _ => return None,
        };
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => Some(Trouble::Unreachable),
            sqlx::Error::Io(e) => Some(io_trouble(e)),
            sqlx::Error::Database(e) => {
                if let Some(e) = e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    use sqlx::error::DatabaseError as _;
                    let code: i32 = e.code()?.parse().ok()?;
                    sqlite_trouble(code)
                } else if let Some(e) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    postgres_trouble(e.code())
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The engine that reported the error, when it says.
    pub fn engine(&self) -> Option<Engine> {
        let e = match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => e,
            // Only the PostgreSQL probe names a read-only state itself; SQLite reports a code.
            DbError::ReadOnly(_) => return Some(Engine::Postgres),
            _ => return None,
        };
        if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            Some(Engine::Sqlite)
        } else if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
            Some(Engine::Postgres)
        } else {
            None
        }
    }
}

/// An I/O error talking to the database: a full disk, or no way to reach it.
fn io_trouble(e: &std::io::Error) -> Trouble {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Trouble::StorageFull,
        std::io::ErrorKind::ReadOnlyFilesystem => Trouble::ReadOnly,
        _ => Trouble::Unreachable,
    }
}

/// SQLite result codes (<https://sqlite.org/rescode.html>); extended codes keep the primary code
/// in their low byte.
fn sqlite_trouble(code: i32) -> Option<Trouble> {
    match code & 0xff {
        5 | 6 => Some(Trouble::Busy),              // SQLITE_BUSY, SQLITE_LOCKED
        8 => Some(Trouble::ReadOnly),              // SQLITE_READONLY (all its extended codes)
        13 => Some(Trouble::StorageFull),          // SQLITE_FULL: "database or disk is full"
        11 | 26 => Some(Trouble::Corrupt),         // SQLITE_CORRUPT, SQLITE_NOTADB
        3 | 10 | 14 => Some(Trouble::Unreachable), // SQLITE_PERM, SQLITE_IOERR, SQLITE_CANTOPEN
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn postgres_trouble(code: &str) -> Option<Trouble> {
    match code {
        // lock_not_available (lock_timeout), deadlock_detected
        "55P03" | "40P01" => Some(Trouble::Busy),
        // read_only_sql_transaction
        "25006" => Some(Trouble::ReadOnly),
        // disk_full
        "53100" => Some(Trouble::StorageFull),
        // data_corrupted, index_corrupted
        "XX001" | "XX002" => Some(Trouble::Corrupt),
        // connection exceptions, shutdowns, "cannot connect now", too many connections
        c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => Some(Trouble::Unreachable),
        _ => None,
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn options(lock_timeout_ms: u64, max_connections: u32) -> DbOptions {
        DbOptions {
            max_connections,
            lock_timeout: Duration::from_millis(lock_timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_held_write_lock_is_busy_after_the_lock_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aloft.db");
        let holder = Database::open_sqlite(&path).await.unwrap();
        let db = Database::open_sqlite_opts(&path, options(300, 1)).await.unwrap();
        assert_eq!(db.lock_timeout(), Duration::from_millis(300));
        let held = holder.begin_write().await.unwrap();

        let started = Instant::now();
        let err = db.begin_write().await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(err.trouble(), Some(Trouble::Busy), "{err}");
        assert_eq!(err.engine(), Some(Engine::Sqlite));
        assert!(!err.is_unavailable());
        assert!(waited >= Duration::from_millis(250), "gave up after {waited:?}");
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");

        // The probe does not wait for the lock: a lock held elsewhere means the file is writable.
        let started = Instant::now();
        db.check_writable().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(250));
        // ...and the connection it used waits again as configured.
        let started = Instant::now();
        assert_eq!(db.begin_write().await.unwrap_err().trouble(), Some(Trouble::Busy));
        assert!(started.elapsed() >= Duration::from_millis(250));

        held.rollback().await.unwrap();
        db.begin_write().await.unwrap().rollback().await.unwrap();
    }

    #[tokio::test]
    async fn a_read_only_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aloft.db");
        let rw = Database::open_sqlite(&path).await.unwrap();
        rw.check_writable().await.unwrap();
        // What SQLite does with a file it may not write (permissions, a read-only mount): it
        // opens it read-only. Root ignores file permissions, so open it so explicitly.
        let url = format!("sqlite://{}?mode=ro", path.display());
        let ro = Database::connect(&url, 2).await.unwrap();
        let err = ro.check_writable().await.unwrap_err();
        assert_eq!(err.trouble(), Some(Trouble::ReadOnly), "{err}");
        let err = crate::db::apps::create(&ro, &aloft_core::names::AppSlug::parse("demo").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.trouble(), Some(Trouble::ReadOnly), "{err}");
        assert!(!err.is_unavailable());
    }

    #[tokio::test]
    async fn a_full_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_sqlite_opts(&dir.path().join("aloft.db"), options(1000, 1))
            .await
            .unwrap();
        // SQLite's own "database or disk is full", without filling a disk: cap the file's pages.
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(db.pool())
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
            .execute(db.pool())
            .await
            .unwrap();
        let mut failure = None;
        for i in 0..1000 {
            let hash = aloft_core::ContentHash::of(format!("{i}").as_bytes());
            let md5 = aloft_core::Md5Key::of(b"x");
            if let Err(e) = crate::db::blobs::insert(&db, &hash, &md5, 1, None, None).await {
                failure = Some(e);
                break;
            }
        }
        let err = failure.expect("the capped database filled up");
        assert_eq!(err.trouble(), Some(Trouble::StorageFull), "{err}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aloft.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Database::open_sqlite(&path).await.unwrap_err();
        assert_eq!(err.trouble(), Some(Trouble::Corrupt), "{err}");
        assert!(err.is_unavailable());
    }

    #[test]
    fn codes() {
        // SQLite: primary codes and extended ones (BUSY_SNAPSHOT, READONLY_DIRECTORY, ...).
        assert_eq!(sqlite_trouble(5), Some(Trouble::Busy));
        assert_eq!(sqlite_trouble(517), Some(Trouble::Busy));
        assert_eq!(sqlite_trouble(8), Some(Trouble::ReadOnly));
        assert_eq!(sqlite_trouble(1544), Some(Trouble::ReadOnly));
        assert_eq!(sqlite_trouble(13), Some(Trouble::StorageFull));
        assert_eq!(sqlite_trouble(26), Some(Trouble::Corrupt));
        assert_eq!(sqlite_trouble(2067), None); // SQLITE_CONSTRAINT_UNIQUE: the request's fault
        // PostgreSQL SQLSTATEs.
        assert_eq!(postgres_trouble("55P03"), Some(Trouble::Busy));
        assert_eq!(postgres_trouble("25006"), Some(Trouble::ReadOnly));
        assert_eq!(postgres_trouble("53100"), Some(Trouble::StorageFull));
        assert_eq!(postgres_trouble("XX001"), Some(Trouble::Corrupt));
        assert_eq!(postgres_trouble("57P01"), Some(Trouble::Unreachable));
        assert_eq!(postgres_trouble("08006"), Some(Trouble::Unreachable));
        assert_eq!(postgres_trouble("23505"), None);
        let io = |kind| DbError::Sqlx(sqlx::Error::Io(std::io::Error::from(kind)));
        assert_eq!(
            io(std::io::ErrorKind::StorageFull).trouble(),
            Some(Trouble::StorageFull)
        );
        assert_eq!(
            io(std::io::ErrorKind::ConnectionRefused).trouble(),
            Some(Trouble::Unreachable)
        );
        assert_eq!(DbError::NoSuchApp.trouble(), None);
    }
}
