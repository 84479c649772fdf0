use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{Result, StoreError};

/// Which database engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool on one of the two supported databases.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same query-building expression against whichever pool the store
/// holds. The expression is compiled once per backend, so a query that one
/// engine's driver cannot type fails the build for both.
#[macro_export]
#[doc(hidden)]
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::Store::Sqlite($pool) => $body,
            $crate::Store::Postgres($pool) => $body,
        }
    };
}

impl Store {
    /// Opens the database named by `url`; an empty url means the embedded
    /// SQLite file `<data_dir>/tally.db`, created on first start.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store> {
        Store::open_with_password(url, data_dir, None).await
    }

    /// [`Store::open`], signing in to PostgreSQL with `password` instead of
    /// the url's (an Entra ID token; see [`Store::set_password`]).
    pub async fn open_with_password(url: &str, data_dir: &Path, password: Option<&str>) -> Result<Store> {
        if url.is_empty() {
            std::fs::create_dir_all(data_dir)
                .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
            return Store::open_sqlite(SqliteConnectOptions::new().filename(data_dir.join("tally.db"))).await;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
                .application_name("tally")
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
            let opts = match password {
                Some(p) => opts.password(p),
                None => opts,
            };
            let pool = PgPoolOptions::new()
                .max_connections(16)
                // Short: with the database down, sqlx keeps trying to
                // connect until this passes, and every request waiting on
                // it should get its 503 (and come back) rather than hang.
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts)
                .await?;
            return Ok(Store::Postgres(pool));
        }
        if password.is_some() {
            return Err(StoreError::InvalidUrl("a sign-in password (Entra ID token) needs a postgres:// url".into()));
        }
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
            return Store::open_sqlite(opts).await;
        }
        Err(StoreError::InvalidUrl("expected postgres://…, sqlite:… or empty for the embedded database".into()))
    }

    /// The password for connections opened from now on; the pool and its
    /// open connections stay (PostgreSQL checks a password only at sign-in).
    /// No effect on SQLite.
    pub fn set_password(&self, password: &str) {
        if let Store::Postgres(pool) = self {
            let opts = (*pool.connect_options()).clone().password(password);
            pool.set_connect_options(opts);
        }
    }

    async fn open_sqlite(opts: SqliteConnectOptions) -> Result<Store> {
        // WAL lets readers (queries, /readyz) run beside the writer; FULL
        // synchronous makes a committed transaction survive power loss, which
        // billing data needs.
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Store::Sqlite(pool))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations for this backend (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Store::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// Starts a write transaction. On SQLite `BEGIN IMMEDIATE` takes the write
/// lock at once (waiting up to the busy timeout): a deferred transaction that
/// reads before it writes fails at once with SQLITE_BUSY if another writer
/// committed in between, and the busy timeout does not help it.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(&self) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(&self) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(&self) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>>> + Send {
        self.begin()
    }
}
