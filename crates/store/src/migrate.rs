//! Embedded migrations, one folder per backend, applied in order and recorded.

use sqlx::{Connection, Executor, Row};

use crate::{Backend, Result, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($version:literal $name:literal),+ $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!($dir, "/migrations/", $name, ".sql")),
        }),+]
    };
}

const SQLITE: &[Migration] = migrations!("sqlite": 1 "0001_setup", 2 "0002_engine", 3 "0003_call_log", 4 "0004_lease_session", 5 "0005_landing_in_row", 6 "0006_session_indexes");
const POSTGRES: &[Migration] = migrations!("postgres": 1 "0001_setup", 2 "0002_engine", 3 "0003_call_log", 4 "0004_lease_session", 5 "0005_landing_in_row", 6 "0006_session_indexes");

impl Store {
    /// Apply every migration not applied yet; returns the names applied now.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        let list = match self.backend {
            Backend::Sqlite => SQLITE,
            Backend::Postgres => POSTGRES,
        };
        let _guard = self.write_guard().await;
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Several nodes may start at once: one migrates, the others wait.
            conn.execute("SELECT pg_advisory_lock(7412001)").await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS calltrail_migrations (\
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
            let applied: Vec<i64> = sqlx::query("SELECT version FROM calltrail_migrations")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?;
            if let Some(max) = applied.iter().max() {
                if *max > list.last().map_or(0, |m| m.version) {
                    return Err(StoreError::Config(format!(
                        "the database is at migration {max}, newer than this calltrail knows; upgrade calltrail"
                    )));
                }
            }
            let mut done = Vec::new();
            for m in list.iter().filter(|m| !applied.contains(&m.version)) {
                let mut tx = conn.begin().await?;
                sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| {
                    StoreError::Db(format!("migration {} failed: {e}", m.name))
                })?;
                sqlx::query(
                    "INSERT INTO calltrail_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(crate::now().as_millisecond())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::info!(migration = m.name, backend = self.backend.as_str(), "applied migration");
                done.push(m.name.to_owned());
            }
            Ok(done)
        }
        .await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7412001)").await?;
        }
        result
    }
}
