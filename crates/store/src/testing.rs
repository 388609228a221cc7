//! Fresh databases for tests: an SQLite file always, and a PostgreSQL schema of its own
//! when `CALLTRAIL_TEST_DATABASE_URL` names a server. Used by the conformance suite and
//! by the server's tests, so every case runs on both backends.

use sqlx::Executor;

use crate::{Backend, Store};

pub const ENV: &str = "CALLTRAIL_TEST_DATABASE_URL";

/// A migrated store on a database nobody else uses.
pub struct TestDb {
    pub store: Store,
    /// The URL that reaches the same database (for a second process or pool).
    pub url: String,
    pg_schema: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Drop the test's database. Skipped when a test fails, which leaves it to look at.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((base, schema)) = &self.pg_schema {
            if let Ok(admin) = Store::connect(base, &crate::ConnectOptions::default()).await {
                let _ = admin
                    .pool
                    .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                    .await;
                admin.close().await;
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One fresh database per configured backend: SQLite, and PostgreSQL if configured.
pub async fn databases() -> Vec<TestDb> {
    let mut out = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        out.push(pg);
    }
    out
}

pub async fn sqlite() -> TestDb {
    let dir = std::env::temp_dir().join(format!("calltrail-test-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/calltrail.db", dir.display());
    let store = Store::open(&url).await.expect("open test SQLite database");
    TestDb {
        store,
        url,
        pg_schema: None,
        dir: Some(dir),
    }
}

/// A PostgreSQL schema of the test's own, or `None` when no server is configured.
pub async fn postgres() -> Option<TestDb> {
    let base = std::env::var(ENV).ok().filter(|s| !s.is_empty())?;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = Store::connect(&base, &crate::ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{ENV} is set but PostgreSQL is unreachable: {e}"));
    admin
        .pool
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create test schema");
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::open(&url)
        .await
        .expect("open test PostgreSQL schema");
    Some(TestDb {
        store,
        url,
        pg_schema: Some((base, schema)),
        dir: None,
    })
}
