//! Opening a store, the backend pools, and the handles that scope every query.

use crate::error::{Result, StoreError};
use crate::ipalloc::IpAllocator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tailwarden_types::TenantId;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// An embedded SQLite file (or in-memory database).
    Sqlite,
    /// A PostgreSQL server, possibly shared by several instances.
    Postgres,
}

/// Tuning for [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How node addresses are allocated.
    pub ip_allocator: IpAllocator,
    /// PostgreSQL pool size; for SQLite, the number of read connections (writes always use one connection).
    pub max_connections: u32,
    /// How long SQLite waits for another process's write lock before failing with "database is locked".
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { ip_allocator: IpAllocator::default(), max_connections: 8, busy_timeout: Duration::from_secs(5) }
    }
}

/// The pools of one backend. Query bodies are written once and expanded for each variant by the macros below,
/// so both backends run the same SQL text (`$n` placeholders work in both sqlx drivers).
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// `write` has exactly one connection, so writers in this process queue in the pool instead of fighting
    /// over SQLite's lock; `read` serves concurrent readers (WAL lets them run beside the writer).
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$db` bound to a pool for reads (`&SqlitePool` or `&PgPool`).
macro_rules! read_db {
    ($store:expr, |$db:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { read, .. } => {
                let $db = read;
                $body
            }
            $crate::store::Backend::Postgres(pool) => {
                let $db = pool;
                $body
            }
        }
    };
}

/// Runs the single statement in `$body` with `$db` bound to the pool writes go through.
macro_rules! write_db {
    ($store:expr, |$db:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { write, .. } => {
                let $db = write;
                $body
            }
            $crate::store::Backend::Postgres(pool) => {
                let $db = pool;
                $body
            }
        }
    };
}

/// Runs `$body` (an expression of type `Result<T>` that may use `?`) in one transaction with `$conn` bound to
/// `&mut SqliteConnection` / `&mut PgConnection`; commits on `Ok`, rolls back on `Err`. Evaluates to `Result<T>`.
///
/// SQLite transactions start with `BEGIN IMMEDIATE`: the write lock is taken up front, so a transaction that
/// reads and then writes can never fail half-way with `SQLITE_BUSY` because another process wrote in between.
macro_rules! transaction {
    ($store:expr, |$conn:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { write, .. } => match write.begin_with("BEGIN IMMEDIATE").await {
                Err(e) => Err($crate::StoreError::from(e)),
                Ok(mut tx) => {
                    let out: $crate::Result<_> = async {
                        let $conn: &mut sqlx::SqliteConnection = &mut *tx;
                        $body
                    }
                    .await;
                    $crate::store::finish(tx, out).await
                }
            },
            $crate::store::Backend::Postgres(pool) => match pool.begin().await {
                Err(e) => Err($crate::StoreError::from(e)),
                Ok(mut tx) => {
                    let out: $crate::Result<_> = async {
                        let $conn: &mut sqlx::PgConnection = &mut *tx;
                        $body
                    }
                    .await;
                    $crate::store::finish(tx, out).await
                }
            },
        }
    };
}

pub(crate) use {read_db, transaction, write_db};

/// Commits `tx` if `out` is `Ok`, rolls it back otherwise.
pub(crate) async fn finish<DB: sqlx::Database, T>(tx: sqlx::Transaction<'_, DB>, out: Result<T>) -> Result<T> {
    match out {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            // The original error matters more than a failed rollback; dropping the connection rolls back anyway.
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %rb, "rollback failed");
            }
            Err(e)
        }
    }
}

/// A handle on the database. Cheap to clone; all clones share the pools.
///
/// It offers no row-level queries itself: use [`Store::tenant`] for one tenant's rows and [`Store::system`] for
/// the few operations that span tenants.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) allocator: Arc<IpAllocator>,
    /// Names and addresses in use per tenant, so a registration need not read the whole node table.
    pub(crate) taken: Arc<crate::nodes::TakenCache>,
    /// Where the hot write transactions run.
    pub(crate) writer: Arc<crate::writer::WriterThread>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url` with default options.
    ///
    /// Accepted URLs: `sqlite://path/to/file.db` (created if missing), `sqlite::memory:` (tests),
    /// `postgres://user@host:port/db` (or `postgresql://`).
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, StoreOptions::default()).await
    }

    /// Like [`Store::open`], with explicit options.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store> {
        let scheme = url.split(':').next().unwrap_or_default();
        let backend = match scheme {
            "sqlite" => open_sqlite(url, &options).await?,
            "postgres" | "postgresql" => {
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?;
                // Takes a PostgreSQL advisory lock, so instances starting together migrate one at a time.
                POSTGRES_MIGRATIONS.run(&pool).await?;
                Backend::Postgres(pool)
            }
            other => return Err(StoreError::UnsupportedUrl { scheme: other.to_string() }),
        };
        Ok(Store {
            backend,
            allocator: Arc::new(options.ip_allocator),
            taken: Default::default(),
            writer: Arc::new(crate::writer::WriterThread::start()?),
        })
    }

    /// The rows of one tenant. Every row-level query goes through the returned handle and is bound to `tenant`.
    pub fn tenant(&self, tenant: TenantId) -> TenantStore<'_> {
        TenantStore { store: self, tenant }
    }

    /// Operations that span tenants (listing and creating tenants, resolving a key to its tenant).
    pub fn system(&self) -> SystemStore<'_> {
        SystemStore { store: self }
    }

    /// Which backend this store uses.
    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The allocator new nodes get their addresses from.
    pub fn ip_allocator(&self) -> &IpAllocator {
        &self.allocator
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

async fn open_sqlite(url: &str, options: &StoreOptions) -> Result<Backend> {
    let connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory {
        // Every connection to `:memory:` would be a separate database: use a single one that never closes.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        return Ok(Backend::Sqlite { write: pool.clone(), read: pool });
    }
    let connect = connect.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal);
    // No ping before handing out a connection: a local file cannot drop a connection the way a network can, and
    // the ping is one more round trip to the connection's thread while the single writer is held (a registration
    // is a handful of such trips, and registrations queue behind each other).
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect.clone())
        .await?;
    SQLITE_MIGRATIONS.run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .test_before_acquire(false)
        .connect_with(connect)
        .await?;
    Ok(Backend::Sqlite { write, read })
}

/// One tenant's rows. Every method binds this tenant's id into its query; there is no way to reach another
/// tenant's rows through it. Obtained from [`Store::tenant`].
#[derive(Clone, Copy, Debug)]
pub struct TenantStore<'a> {
    pub(crate) store: &'a Store,
    pub(crate) tenant: TenantId,
}

impl TenantStore<'_> {
    /// The tenant this handle is bound to.
    pub fn id(&self) -> TenantId {
        self.tenant
    }

    /// The tenant id as bound into queries.
    pub(crate) fn tid(&self) -> i64 {
        self.tenant.0
    }
}

/// Cross-tenant operations. Deliberately separate (and easy to grep for) so tenant-scoped code never needs it.
#[derive(Clone, Copy, Debug)]
pub struct SystemStore<'a> {
    pub(crate) store: &'a Store,
}
