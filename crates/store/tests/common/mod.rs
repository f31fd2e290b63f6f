//! Test harness: runs one test body against a fresh SQLite file and a fresh PostgreSQL database.

use rand::Rng;
use sqlx::Connection;
use std::future::Future;
use tailwarden_store::Store;

/// Environment variable naming the PostgreSQL server the tests create their databases on.
pub const PG_URL_VAR: &str = "TAILWARDEN_TEST_POSTGRES_URL";
/// Set to `1` to skip (instead of fail) the PostgreSQL variants when no server is configured.
pub const PG_SKIP_VAR: &str = "TAILWARDEN_SKIP_POSTGRES";

/// A fresh database for one test.
pub struct TestDb {
    /// A store opened on it.
    pub store: Store,
    /// Its URL, to open more stores (a second instance, or a reopen after close).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Opens another store on the same database (another instance, or the same one after a restart).
    pub async fn open_again(&self) -> Store {
        Store::open(&self.url).await.expect("reopen")
    }
}

/// Runs `test` on a new SQLite file in a temporary directory.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("tailwarden.db").display());
    let store = Store::open(&url).await.expect("open sqlite");
    test(TestDb { store, url, _dir: Some(dir) }).await;
}

/// Runs `test` on a new PostgreSQL database (random name) that is dropped afterwards, pass or fail.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var(PG_SKIP_VAR).as_deref() == Ok("1") {
                println!("SKIPPED PostgreSQL variant: {PG_URL_VAR} is unset and {PG_SKIP_VAR}=1");
                return;
            }
            panic!(
                "{PG_URL_VAR} is not set, so the PostgreSQL variants of the store tests cannot run.\n\
                 Start a local test server with\n    eval \"$(.ci/postgres.sh)\"\n\
                 (it prints `export {PG_URL_VAR}=postgres://postgres@127.0.0.1:5433/postgres`), \
                 or set {PG_SKIP_VAR}=1 to skip them."
            );
        }
    };
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_VAR}={base}: {e}; is .ci/postgres.sh running?"));
    let name = format!("tw_test_{:016x}", rand::thread_rng().r#gen::<u64>());
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let url = with_database(&base, &name);
    let outcome = match Store::open(&url).await {
        Ok(store) => tokio::spawn(test(TestDb { store, url, _dir: None })).await,
        Err(e) => {
            drop_database(&mut admin, &name).await;
            panic!("open postgres store: {e}");
        }
    };
    drop_database(&mut admin, &name).await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

async fn drop_database(admin: &mut sqlx::PgConnection, name: &str) {
    // FORCE ends the pools the test left open.
    if let Err(e) = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin).await {
        eprintln!("warning: could not drop test database {name}: {e}");
    }
}

/// `base` with its database name replaced by `db` (query parameters kept).
fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let (scheme, rest) = head.split_once("://").unwrap_or(("postgres", head));
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{db}{query}")
}

/// Generates a `#[tokio::test]` per backend for each named `async fn(TestDb)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_postgres(super::$name).await
                }
            )*
        }
    };
}
