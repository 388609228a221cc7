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

const SQLITE: &[Migration] = migrations!("sqlite": 1 "0001_setup", 2 "0002_engine", 3 "0003_call_log", 4 "0004_lease_session", 5 "0005_landing_in_row", 6 "0006_session_indexes", 7 "0007_write_fewer_indexes", 8 "0008_exhaustion_in_row", 9 "0009_number_state_one_tree", 10 "0010_number_display", 11 "0011_fewer_lease_indexes", 12 "0012_no_number_state");
const POSTGRES: &[Migration] = migrations!("postgres": 1 "0001_setup", 2 "0002_engine", 3 "0003_call_log", 4 "0004_lease_session", 5 "0005_landing_in_row", 6 "0006_session_indexes", 7 "0007_write_fewer_indexes", 8 "0008_exhaustion_in_row", 9 "0009_number_state_one_tree", 10 "0010_number_display", 11 "0011_fewer_lease_indexes");

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
            fill_displays(&mut conn).await?;
            Ok(done)
        }
        .await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7412001)").await?;
        }
        result
    }
}

/// Give every tracking number written without its display form (before migration 0010,
/// or by an older calltrail sharing the database) the form it is shown in.
async fn fill_displays(conn: &mut sqlx::AnyConnection) -> Result<()> {
    let rows = sqlx::query("SELECT id, number FROM tracking_numbers WHERE display IS NULL")
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let number: String = r.try_get("number")?;
        sqlx::query("UPDATE tracking_numbers SET display = $1 WHERE id = $2 AND number = $3")
            .bind(calltrail_core::phone::display(&number))
            .bind(&id)
            .bind(&number)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// An SQLite database in memory with every migration, for unit tests of the SQL.
#[cfg(test)]
pub(crate) fn sqlite_in_memory() -> rusqlite::Connection {
    let db = rusqlite::Connection::open_in_memory().expect("an SQLite database in memory");
    for m in SQLITE {
        db.execute_batch(m.sql).expect("the migrations apply");
    }
    db
}

#[cfg(test)]
mod tests {
    use super::SQLITE;

    /// An SQLite database in memory with the migrations before `version`.
    fn migrated_before(version: i64) -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for m in SQLITE.iter().filter(|m| m.version < version) {
            db.execute_batch(m.sql).unwrap();
        }
        db
    }

    /// The first column of every row a query gives.
    fn strings(db: &rusqlite::Connection, sql: &str) -> Vec<String> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A database with the migrations up to `version`, that one included.
    fn migrated_through(version: i64) -> rusqlite::Connection {
        let db = migrated_before(version);
        let m = SQLITE.iter().find(|m| m.version == version).unwrap();
        db.execute_batch(m.sql).unwrap();
        db
    }

    /// How SQLite would run `sql`: the plan's lines.
    fn plan(db: &rusqlite::Connection, sql: &str) -> Vec<String> {
        db.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A database written before migration 0007 keeps every page view and exhaustion, and
    /// loses only the index entries nobody read.
    #[test]
    fn migration_7_keeps_what_sqlite_held() {
        let db = migrated_before(7);
        db.execute_batch(
            "INSERT INTO page_views (id, session_id, at, kind, url, title) VALUES \
             ('p1', 's1', 10, 'pageview', 'https://a.example/', 'A'), \
             ('p2', 's1', 20, 'call_click', 'https://a.example/b', NULL); \
             INSERT INTO exhaustions (id, site_id, pool_id, session_id, at, outcome, number_id) \
             VALUES ('e1', 'site', 'pool', 's1', 30, 'fallback', 'n9');",
        )
        .unwrap();
        let seven = SQLITE.iter().find(|m| m.version == 7).unwrap();
        db.execute_batch(seven.sql).unwrap();
        let pages: Vec<(String, i64, Option<String>)> = db
            .prepare("SELECT id, at, title FROM page_views WHERE session_id = 's1' ORDER BY at")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pages,
            vec![
                ("p1".to_owned(), 10, Some("A".to_owned())),
                ("p2".to_owned(), 20, None)
            ]
        );
        let exhausted: (String, String, Option<String>) = db
            .query_row(
                "SELECT id, outcome, number_id FROM exhaustions WHERE site_id = 'site' AND at >= 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            exhausted,
            (
                "e1".to_owned(),
                "fallback".to_owned(),
                Some("n9".to_owned())
            )
        );
        let indexes = strings(
            &db,
            "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('page_views', 'exhaustions', 'sessions') ORDER BY name",
        );
        assert_eq!(
            indexes,
            [
                "exhaustions_site",
                "page_views_session",
                "sessions_code",
                "sqlite_autoindex_sessions_1"
            ]
        );
        let code_columns = strings(
            &db,
            "SELECT name FROM pragma_index_info('sessions_code') ORDER BY seqno",
        );
        assert_eq!(code_columns, ["site_id", "track_code"]);
    }

    /// A database written before migration 0009 keeps every number's latest lease, in one
    /// b-tree (no rowid, no index beside its key), and still refuses a second row for a number.
    #[test]
    fn migration_9_keeps_the_latest_leases_in_one_tree() {
        let db = migrated_before(9);
        db.execute_batch(
            "INSERT INTO number_state (number_id, pool_id, lease_id) VALUES \
             ('n1', 'p1', 'l1'), ('n2', 'p1', 'l2');",
        )
        .unwrap();
        let nine = SQLITE.iter().find(|m| m.version == 9).unwrap();
        db.execute_batch(nine.sql).unwrap();
        let rows: Vec<(String, String, String)> = db
            .prepare("SELECT number_id, pool_id, lease_id FROM number_state ORDER BY number_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |n: &str, l: &str| (n.to_owned(), "p1".to_owned(), l.to_owned());
        assert_eq!(rows, vec![row("n1", "l1"), row("n2", "l2")]);
        let trees = strings(
            &db,
            "SELECT name FROM sqlite_master WHERE tbl_name = 'number_state' ORDER BY name",
        );
        assert_eq!(trees, ["number_state"]);
        let sql: String = db
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'number_state'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        assert!(db
            .execute(
                "INSERT INTO number_state (number_id, pool_id, lease_id) VALUES ('n1', 'p1', 'l3')",
                [],
            )
            .is_err());
        // The upsert allocation writes moves a number on to its new lease.
        db.execute(
            "INSERT INTO number_state (number_id, pool_id, lease_id) VALUES ('n1', 'p1', 'l3') \
             ON CONFLICT (number_id) DO UPDATE SET lease_id = excluded.lease_id",
            [],
        )
        .unwrap();
        let lease: String = db
            .query_row(
                "SELECT lease_id FROM number_state WHERE number_id = 'n1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(lease, "l3");
    }

    /// After migration 0011 a lease writes two indexes besides its key (by number, and by
    /// visitor alone); the numbers a returning visitor held are still read through one.
    #[test]
    fn migration_11_leaves_two_lease_indexes() {
        let db = migrated_through(11);
        let indexes = strings(
            &db,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'leases' ORDER BY name",
        );
        assert_eq!(
            indexes,
            [
                "leases_number",
                "leases_visitor",
                "sqlite_autoindex_leases_1"
            ]
        );
        let visitor = strings(
            &db,
            "SELECT name FROM pragma_index_info('leases_visitor') ORDER BY seqno",
        );
        assert_eq!(visitor, ["visitor_id"]);
        let plan = plan(
            &db,
            "SELECT number_id FROM leases WHERE site_id = 's' AND pool_id = 'p' \
             AND visitor_id IN ('v1', 'v2')",
        );
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX leases_visitor")),
            "{plan:?}"
        );
    }

    /// After migration 0012 SQLite keeps no `number_state`: the latest lease of a number is
    /// read through `leases_number`, without a sort.
    #[test]
    fn migration_12_reads_latest_leases_through_the_number_index() {
        let db = migrated_through(12);
        let tables = strings(
            &db,
            "SELECT name FROM sqlite_master WHERE name LIKE 'number_state%'",
        );
        assert!(tables.is_empty(), "{tables:?}");
        let plan = plan(
            &db,
            "SELECT l0.rowid FROM leases l0 WHERE l0.number_id = 'n' \
             ORDER BY l0.leased_at DESC, l0.rowid DESC LIMIT 1",
        );
        assert!(
            plan.iter()
                .any(|p| p.contains("USING COVERING INDEX leases_number"))
                && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
