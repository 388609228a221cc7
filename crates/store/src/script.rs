//! Statements sent together. Each statement is a round trip to the database (on SQLite, to
//! sqlx's worker thread, which on a busy machine waits to be scheduled), so a transaction's
//! writes are gathered and sent at once: on SQLite as one multi-statement query whose
//! anonymous `?` parameters bind in order across its statements, on PostgreSQL (whose
//! extended protocol takes one statement with parameters at a time) one statement each.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Type};

use crate::{Backend, Result, StoreError};

pub(crate) struct Script {
    backend: Backend,
    /// Finished statements (PostgreSQL: one each; SQLite: all in the current one).
    done: Vec<(String, AnyArguments<'static>)>,
    sql: String,
    args: AnyArguments<'static>,
    /// Parameters of the current statement (PostgreSQL numbers them `$1`, `$2`, ...).
    n: usize,
    error: Option<String>,
}

impl Script {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            done: Vec::new(),
            sql: String::new(),
            args: AnyArguments::default(),
            n: 0,
            error: None,
        }
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
    pub fn val<T>(&mut self, v: T) -> &mut Self
    where
        T: 'static + Encode<'static, Any> + Type<Any>,
    {
        if !(self.sql.is_empty() || self.sql.ends_with(['(', ' ', '\n'])) {
            self.sql.push_str(", ");
        }
        self.n += 1;
        match self.backend {
            Backend::Sqlite => self.sql.push('?'),
            Backend::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.n.to_string());
            }
        }
        if let Err(e) = self.args.add(v) {
            self.error.get_or_insert(e.to_string());
        }
        self
    }

    /// End the current statement.
    pub fn end(&mut self) {
        if self.sql.trim().is_empty() {
            return;
        }
        match self.backend {
            Backend::Sqlite => self.sql.push_str(";\n"),
            Backend::Postgres => {
                let sql = std::mem::take(&mut self.sql);
                let args = std::mem::take(&mut self.args);
                self.done.push((sql, args));
                self.n = 0;
            }
        }
    }

    /// Run every statement in the transaction; the rows any of them return, in order.
    pub async fn run(mut self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>> {
        if let Some(e) = self.error {
            return Err(StoreError::Db(format!("cannot bind a parameter: {e}")));
        }
        self.end();
        let mut rows = Vec::new();
        if self.backend == Backend::Sqlite && !self.sql.is_empty() {
            self.done.push((self.sql, self.args));
        }
        for (sql, args) in self.done {
            rows.extend(sqlx::query_with(&sql, args).fetch_all(&mut *conn).await?);
        }
        Ok(rows)
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
            .val("w".to_owned())
            .push(")");
        s.end();
        s.push("UPDATE t SET a = ")
            .val(2_i64)
            .push(" WHERE b <= ")
            .val(5_i64);
        s.end();
        assert_eq!(
            s.sql,
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?);\nUPDATE t SET a = ? WHERE b <= ?;\n"
        );
        assert_eq!(s.args.len(), 6);
    }
}
