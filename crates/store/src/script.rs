//! Statements gathered for a batch and run together ([`Conn::query`]).
//!
//! On PostgreSQL they go through sqlx in the caller's transaction, one statement each. On
//! SQLite the page-load writer runs them on a connection of its own
//! ([`Script::query_sqlite`]), on the calling thread, so a batch's transaction is no hand-off
//! at all. Through sqlx it cost two (the script to sqlx's worker thread, the results back to
//! the async runtime), each a wait for a thread to be woken and scheduled, together longer
//! than SQLite's own work on a batch; and every argument was copied twice on the way.

use std::borrow::Cow;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Row as _};

use crate::{Backend, Result, StoreError};

/// A statement parameter. NULLs keep their type: PostgreSQL wants to know it. Text is
/// borrowed where the script's caller holds it for as long as the script lives (a batch's
/// sessions, say), so that a batch does not copy every string it binds: SQLite copies each
/// when it is bound anyway.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Self::Text(Some(Cow::Owned(v)))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(v: Option<String>) -> Self {
        Self::Text(v.map(Cow::Owned))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::Text(v.map(Cow::Borrowed))
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Int(Some(v)) => ValueRef::Integer(*v),
            Self::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Self::Int(None) | Self::Text(None) => ValueRef::Null,
        }))
    }
}

pub(crate) struct Script<'a> {
    backend: Backend,
    /// Finished statements with their parameters, in order.
    done: Vec<(String, Vec<Value<'a>>)>,
    sql: String,
    args: Vec<Value<'a>>,
}

impl<'a> Script<'a> {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            done: Vec::new(),
            sql: String::new(),
            args: Vec::new(),
        }
    }

    /// The backend the script is written for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Append SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Start a write statement: `verb` is `INSERT` or `UPDATE`. On SQLite it reads
    /// `INSERT OR ROLLBACK`: a script is one transaction that fails as a whole if any of its
    /// statements fails, so SQLite need not keep a statement journal to undo just the
    /// failing statement (for a multi-row write that is a copy of every page it touches,
    /// made before its first change).
    pub fn write(&mut self, verb: &str) -> &mut Self {
        self.sql.push_str(verb);
        if self.backend == Backend::Sqlite {
            self.sql.push_str(" OR ROLLBACK");
        }
        self.sql.push(' ');
        self
    }

    /// Append a parameter bound to `v`, after a comma unless it opens a list.
    pub fn val(&mut self, v: impl Into<Value<'a>>) -> &mut Self {
        if !(self.sql.is_empty() || self.sql.ends_with(['(', ' ', '\n'])) {
            self.sql.push_str(", ");
        }
        self.args.push(v.into());
        match self.backend {
            Backend::Sqlite => self.sql.push('?'),
            Backend::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// The statements' text, in order.
    #[cfg(test)]
    pub fn texts(&self) -> Vec<&str> {
        self.done.iter().map(|(sql, _)| sql.as_str()).collect()
    }

    /// End the current statement.
    pub fn end(&mut self) {
        if self.sql.trim().is_empty() {
            return;
        }
        let sql = std::mem::take(&mut self.sql);
        let args = std::mem::take(&mut self.args);
        self.done.push((sql, args));
    }

    /// Run every statement through sqlx, one by one (PostgreSQL's extended protocol takes
    /// one statement with parameters at a time), in the caller's transaction; the rows any
    /// of them return, in order.
    async fn run(mut self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>> {
        self.end();
        let mut rows = Vec::new();
        for (sql, args) in self.done {
            let args = any_arguments(args)?;
            rows.extend(sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }

    /// Run every statement on an SQLite connection of our own, on this thread (see the
    /// module's text); `f` of every row any of them return. Each statement is prepared
    /// once and kept (a batch's statements differ only with its size).
    pub fn query_sqlite<T>(
        mut self,
        conn: &rusqlite::Connection,
        mut f: impl FnMut(&Row<'_, '_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.end();
        let mut out = Vec::new();
        for (sql, args) in &self.done {
            let mut stmt = conn.prepare_cached(sql)?;
            for (i, v) in args.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                out.push(f(&Row::Sqlite(row))?);
            }
        }
        Ok(out)
    }

    /// [`Script::query_sqlite`], keeping the first column of each row, as text.
    pub fn run_sqlite(self, conn: &rusqlite::Connection) -> Result<Vec<String>> {
        self.query_sqlite(conn, |r| r.at(0))
    }
}

/// Where the statements of a batch go: a PostgreSQL transaction through sqlx, or the SQLite
/// page-load writer's own connection (see the module's text).
pub(crate) enum Conn<'a> {
    Any(&'a mut AnyConnection),
    /// Held as `&mut` across the batch's awaits: a shared reference to it is not `Send`.
    Sqlite(&'a mut rusqlite::Connection),
}

impl Conn<'_> {
    /// Run `script`; `f` of every row it returns.
    pub async fn query<T>(
        &mut self,
        script: Script<'_>,
        mut f: impl FnMut(&Row<'_, '_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Self::Any(c) => script
                .run(c)
                .await?
                .iter()
                .map(|r| f(&Row::Any(r)))
                .collect(),
            Self::Sqlite(c) => script.query_sqlite(c, f),
        }
    }

    /// Run `script`, which returns no rows.
    pub async fn execute(&mut self, script: Script<'_>) -> Result<()> {
        self.query(script, |_| Ok(())).await.map(drop)
    }

    /// The sqlx connection, for what only PostgreSQL runs.
    pub fn any(&mut self) -> Option<&mut AnyConnection> {
        match self {
            Self::Any(c) => Some(c),
            Self::Sqlite(_) => None,
        }
    }
}

/// A row of either connection, its columns read by name.
pub(crate) enum Row<'a, 'r> {
    Any(&'a AnyRow),
    Sqlite(&'a rusqlite::Row<'r>),
}

/// What a column can be read as on both connections.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql
{
}

impl Row<'_, '_> {
    pub fn get<T: Column>(&self, name: &str) -> Result<T> {
        match self {
            Self::Any(r) => Ok(r.try_get(name)?),
            Self::Sqlite(r) => Ok(r.get(name)?),
        }
    }

    pub fn at<T: Column>(&self, i: usize) -> Result<T> {
        match self {
            Self::Any(r) => Ok(r.try_get(i)?),
            Self::Sqlite(r) => Ok(r.get(i)?),
        }
    }
}

fn any_arguments(values: Vec<Value<'_>>) -> Result<AnyArguments<'static>> {
    let mut args = AnyArguments::default();
    for v in values {
        let added = match v {
            Value::Int(v) => args.add(v),
            Value::Text(v) => args.add(v.map(Cow::into_owned)),
        };
        added.map_err(|e| StoreError::Db(format!("cannot bind a parameter: {e}")))?;
    }
    Ok(args)
}

/// An error of the page-load writer's own SQLite connection: a locked or unreadable
/// database is "unavailable" (the tracking endpoints answer 503), as through sqlx.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::DiskFull,
            ) => Self::Unavailable(e.to_string()),
            _ => Self::Db(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        let mut s = Script::new(Backend::Postgres);
        s.push("INSERT INTO t (a, b) VALUES (")
            .val(1_i64)
            .val("x".to_owned())
            .push(")");
        s.end();
        s.push("UPDATE t SET a = ")
            .val(2_i64)
            .push(" WHERE b IN (")
            .val("y".to_owned())
            .val("z".to_owned())
            .push(")");
        s.end();
        assert_eq!(s.done[0].0, "INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(s.done[1].0, "UPDATE t SET a = $1 WHERE b IN ($2, $3)");
        let mut s = Script::new(Backend::Sqlite);
        s.push("INSERT INTO t (a, b) VALUES (")
            .val(1_i64)
            .val("x".to_owned())
            .push("), (")
            .val(3_i64)
            .val(None::<String>)
            .push(")");
        s.end();
        s.push("UPDATE t SET a = ")
            .val(2_i64)
            .push(" WHERE b <= ")
            .val(5_i64);
        s.end();
        assert_eq!(s.done[0].0, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        assert_eq!(s.done[1].0, "UPDATE t SET a = ? WHERE b <= ?");
        assert_eq!(s.done[0].1[3], Value::Text(None));
        assert_eq!(s.done[1].1, vec![Value::Int(Some(2)), Value::Int(Some(5))]);
    }

    /// A database another connection holds locked is "unavailable" (the tracking endpoints
    /// answer 503 and the page keeps its number); a broken statement is a database error.
    #[test]
    fn a_locked_database_is_unavailable() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("t.db");
        let holder = rusqlite::Connection::open(&file).unwrap();
        holder
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (a INTEGER); BEGIN IMMEDIATE")
            .unwrap();
        let other = rusqlite::Connection::open(&file).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let mut s = Script::new(Backend::Sqlite);
        s.push("BEGIN IMMEDIATE").end();
        let e = s.run_sqlite(&other).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        let mut s = Script::new(Backend::Sqlite);
        s.push("SELECT nope FROM t").end();
        let e = s.run_sqlite(&other).unwrap_err();
        assert!(matches!(e, StoreError::Db(_)), "{e}");
    }

    #[test]
    fn an_sqlite_script_runs_whole_or_not_at_all() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .unwrap();
        let mut s = Script::new(Backend::Sqlite);
        s.push("BEGIN IMMEDIATE").end();
        s.write("INSERT")
            .push("INTO t (a, b) VALUES (")
            .val(1_i64)
            .val("x")
            .push("), (")
            .val(2_i64)
            .val(None::<String>)
            .push(")")
            .end();
        s.push("SELECT b FROM t WHERE b IS NOT NULL").end();
        s.push("COMMIT").end();
        assert_eq!(s.run_sqlite(&conn).unwrap(), vec!["x".to_owned()]);
        // A statement that fails stops the script, and its transaction undoes the rest.
        let mut s = Script::new(Backend::Sqlite);
        s.push("BEGIN IMMEDIATE").end();
        s.write("INSERT")
            .push("INTO t (a, b) VALUES (")
            .val(3_i64)
            .val("y")
            .push(")")
            .end();
        s.write("INSERT")
            .push("INTO t (a, b) VALUES (")
            .val(1_i64)
            .val("again")
            .push(")")
            .end();
        s.push("COMMIT").end();
        let e = s.run_sqlite(&conn).unwrap_err();
        assert!(matches!(e, StoreError::Db(_)), "{e}");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "the failed script left a row behind");
    }
}
