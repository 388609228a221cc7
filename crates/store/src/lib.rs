//! calltrail-store: persistence for calltrail.
//!
//! One [`Store`] speaks to either backend through sqlx's `Any` driver: SQLite (the default,
//! one WAL file under the data dir) or PostgreSQL (several stateless calltrail nodes share
//! it). The SQL is written once in the dialect both understand; what differs (migrations,
//! pragmas, locking for atomic allocation) is chosen by [`Backend`]. Each backend keeps its
//! own `migrations/` folder. On SQLite, page loads (the hot path: `batch`) are written and
//! read through one connection of their own, opened with rusqlite on the same SQLite
//! library, so a batch runs on the writer's thread without a hand-off (see `script`).

mod batch;
pub use batch::Continuing;
pub mod calls;
pub mod engine;
mod migrate;
mod records;
mod script;
pub mod setup;
pub mod telephony;
pub mod testing;
pub mod tracking;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use calltrail_core::Invalid;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::{Mutex, MutexGuard};

pub use records::*;

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config(format!(
                "database URL must start with sqlite:// or postgres:// (got `{}`)",
                mask_url(url)
            )))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Db(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(e.to_string())
            }
            sqlx::Error::Database(ref d)
                if d.code().as_deref() == Some("57P01") || d.code().as_deref() == Some("08006") =>
            {
                Self::Unavailable(e.to_string())
            }
            other => Self::Db(other.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Replace the password in a database URL with `***`.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

/// The database, whichever backend it is.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer; serialising writers in-process avoids `SQLITE_BUSY` on
    /// lock upgrades. PostgreSQL needs no such lock: it uses row locks. Behind the lock
    /// sits the connection that writes page loads (see [`Store::writer`]).
    write_lock: Option<Arc<Mutex<Option<rusqlite::Connection>>>>,
    /// SQLite: the database file, for the page-load writer's own connection.
    sqlite_file: Option<std::path::PathBuf>,
    /// SQLite only: each pool's numbers and latest leases as the last committed transaction
    /// left them, so allocation need not read the pool (see `batch`).
    pools_seen: Arc<std::sync::Mutex<batch::PoolsSeen>>,
    /// Each site's turn of track codes (see `batch::TrackCodes`).
    track_codes: Arc<std::sync::Mutex<batch::TrackCodes>>,
    /// Held by every clone of the store; the checkpointer (SQLite) stops once the last one
    /// is dropped.
    alive: Arc<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Options for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl Store {
    /// Connect and apply pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url, &ConnectOptions::default()).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connect without migrating.
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        // SQLite: the file sqlx's connections open, for the page-load writer's own.
        let (url, sqlite_file) = match backend {
            Backend::Sqlite => {
                let (url, file) = sqlite_url(url)?;
                (url, Some(file))
            }
            Backend::Postgres => (url.to_owned(), None),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Config(format!("{}: {e}", mask_url(&url))))?;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A file on this machine needs no ping before each use (a round trip to the
            // connection's worker thread); a server connection may have dropped.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PRAGMAS.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to {}: {e}", mask_url(&url)))
            })?;
        let store = Self {
            pool,
            backend,
            write_lock: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(None))),
            sqlite_file,
            pools_seen: Arc::default(),
            track_codes: Arc::default(),
            alive: Arc::default(),
        };
        if backend == Backend::Sqlite {
            // On the caller's runtime: the page-load writer may run on a thread of its own.
            store.start_checkpointer();
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(mut slot) = self.write_guard().await {
            // The page-load writer's connection closes as it is dropped.
            slot.take();
        }
        self.pool.close().await;
    }

    /// SQLite: start the task that checkpoints the WAL for the writer (when the store is
    /// made; it ends with the store). Every [`CHECKPOINT_EVERY`] it copies what it can without
    /// waiting for anyone (`PASSIVE`). Under steady writes that never catches up, and the
    /// WAL only starts over when a writer finds it fully copied, so once the WAL passes
    /// [`WAL_RESTART_PAGES`] it finishes the copy with writers held off (see [`checkpoint`]).
    fn start_checkpointer(&self) {
        let pool = self.pool.clone();
        let alive = Arc::downgrade(&self.alive);
        let (Some(lock), Some(file)) = (self.write_lock.clone(), self.sqlite_file.clone()) else {
            return;
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if alive.strong_count() == 0 || pool.is_closed() {
                    break;
                }
                if let Err(e) = checkpoint(&pool, &lock, &file, WAL_RESTART_PAGES).await {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    }

    /// Serialise writers where the backend needs it (SQLite).
    async fn write_guard(&self) -> Option<MutexGuard<'_, Option<rusqlite::Connection>>> {
        match &self.write_lock {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    /// SQLite: the connection that writes page loads (and makes the reads a batch needs
    /// first), opened on first use. It is not one of sqlx's: a batch's statements run on
    /// the writer task's own thread (see `script`). Always the same connection writes, so
    /// its page cache stays warm: SQLite drops a connection's cache whenever another
    /// connection wrote since its last transaction, which with writes going round the
    /// pool's connections was every batch. It never checkpoints the WAL itself
    /// (`wal_autocheckpoint = 0`): the checkpointer does that on another connection, so the
    /// copy and its fsync stay off the writer's path.
    fn writer<'a>(
        &self,
        slot: &'a mut Option<rusqlite::Connection>,
    ) -> Result<&'a mut rusqlite::Connection> {
        if slot.is_none() {
            let file = self.sqlite_file.as_deref().ok_or_else(batch::no_writer)?;
            let conn = rusqlite::Connection::open(file)?;
            conn.execute_batch(&format!(
                "{} PRAGMA wal_autocheckpoint = 0;",
                *SQLITE_PRAGMAS
            ))?;
            // A batch's statements differ with its size (three of them for new sessions,
            // a few more for continuing ones); room for every size a busy site sees.
            conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
            *slot = Some(conn);
        }
        slot.as_mut().ok_or_else(batch::no_writer)
    }
}

/// Every SQLite connection's settings. A 16 MiB page cache and reads through mmap: visits
/// write to the same few pages of each table and index over and over.
static SQLITE_PRAGMAS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; \
         PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456; \
         PRAGMA temp_store = MEMORY;"
    )
});

/// Statements the page-load writer keeps prepared.
const STATEMENTS_KEPT: usize = 256;
/// How often the checkpointer copies the WAL into the database (SQLite).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL pages past which the checkpointer holds writers off to let the WAL start over.
const WAL_RESTART_PAGES: i64 = 8192;
/// How long an SQLite connection waits for a lock before it gives up.
const BUSY_TIMEOUT_MS: u32 = 5000;
/// How long the checkpoint that lets the WAL start over waits for readers of older pages
/// (writers wait meanwhile): a long report must not hold page loads up; the checkpointer
/// tries again next time.
const RESTART_WAIT_MS: u32 = 50;

/// One checkpoint (SQLite): copy the WAL into the database without waiting for anyone, and
/// once the WAL is longer than `restart_pages`, let it start over.
///
/// The WAL starts over when a writer begins a transaction and finds all of it copied,
/// which under steady writes a passive copy never achieves: the writer adds pages while it
/// runs. A `RESTART` checkpoint achieves it by holding writers off with SQLite's lock, but
/// a writer that finds the lock taken sleeps in its busy handler (1, 2, 5, 10 ms ...) and
/// the checkpoint's copy and the file's fsync all ran within the hold: page loads stalled
/// 12 to 70 ms each time, measured, twice a second under load. Here the copy is done in
/// three steps: the passive pass copies most of the WAL; the database file is flushed to
/// disk with nobody waiting; then, holding the store's own write lock (a writer waits on it
/// without sleeping and is woken the moment it is released), the `RESTART` checkpoint
/// finds no writer, copies the few pages written since, flushes only those, and starts
/// the WAL over. (A second passive pass in its place would leave the start-over to the
/// next write, which skips it while any reader still reads the WAL.)
async fn checkpoint(
    pool: &AnyPool,
    lock: &Mutex<Option<rusqlite::Connection>>,
    file: &std::path::Path,
    restart_pages: i64,
) -> Result<()> {
    use sqlx::Row as _;
    // (busy, pages in the WAL, pages copied)
    async fn passive(pool: &AnyPool) -> Result<i64> {
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await?;
        Ok(row.try_get(1)?)
    }
    if passive(pool).await? <= restart_pages {
        return Ok(());
    }
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_data())
        .await
        .map_err(std::io::Error::other)
        .and_then(|flushed| flushed)
        .map_err(|e| StoreError::Unavailable(format!("cannot flush the database file: {e}")))?;
    let _writers_held = lock.lock().await;
    let mut conn = pool.acquire().await?;
    conn.execute(format!("PRAGMA busy_timeout = {RESTART_WAIT_MS}").as_str())
        .await?;
    let restarted = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *conn)
        .await;
    let reset = conn
        .execute(format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").as_str())
        .await;
    if reset.is_err() {
        // Not back in the pool with the short wait.
        conn.close_on_drop();
    }
    restarted?;
    reset?;
    Ok(())
}

/// Make an SQLite URL create its file, and create the folder it lives in. Also the file,
/// read as sqlx reads the URL (`%xx` in the path decoded).
fn sqlite_url(url: &str) -> Result<(String, std::path::PathBuf)> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (file, query) = path.split_once('?').unwrap_or((path, ""));
    if file.is_empty() || file == ":memory:" {
        return Err(StoreError::Config(
            "SQLite needs a file path (sqlite://./data/calltrail.db)".into(),
        ));
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    let url = format!("sqlite://{file}?{query}");
    let file = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Config(format!("{}: {e}", mask_url(&url))))?
        .get_filename()
        .to_path_buf();
    if let Some(parent) = file.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
    }
    Ok((url, file))
}

/// Milliseconds since the epoch, as stored.
pub(crate) fn ms(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn from_ms(v: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(v).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The current time at the precision the store keeps (milliseconds).
pub fn now() -> jiff::Timestamp {
    from_ms(jiff::Timestamp::now().as_millisecond())
}

/// A number's display form as read with it; a row written without one (by a calltrail
/// older than migration 0010, until the next start fills it) is formatted here.
pub(crate) fn displayed(number: &str, display: Option<String>) -> String {
    display.unwrap_or_else(|| calltrail_core::phone::display(number))
}

/// A fresh, time-ordered id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A time-ordered id (UUIDv7) for a row made at `at` (ms since the epoch): ids of rows made
/// later sort after it, as text too, from [`id_floor`] of their time on.
pub(crate) fn id_at(at: calltrail_core::engine::Millis) -> String {
    let ms = u64::try_from(at).unwrap_or(0);
    let nanos = u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, nanos);
    uuid::Uuid::new_v7(ts).to_string()
}

/// The least id [`id_at`] gives for `at` or any later time.
pub(crate) fn id_floor(at: calltrail_core::engine::Millis) -> String {
    let ms = u64::try_from(at).unwrap_or(0) & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test SQLite database whose WAL holds `rows` rows of 3 000 bytes (a page each), with
    /// its write lock and file.
    async fn sqlite_with_wal(
        rows: usize,
    ) -> (
        testing::TestDb,
        Arc<Mutex<Option<rusqlite::Connection>>>,
        std::path::PathBuf,
    ) {
        let db = testing::sqlite().await;
        let lock = db
            .store
            .write_lock
            .clone()
            .expect("SQLite has a write lock");
        let file = db.store.sqlite_file.clone().expect("SQLite has a file");
        sqlx::query("CREATE TABLE t (a BLOB)")
            .execute(&db.store.pool)
            .await
            .unwrap();
        for _ in 0..rows {
            sqlx::query("INSERT INTO t VALUES (randomblob(3000))")
                .execute(&db.store.pool)
                .await
                .unwrap();
        }
        (db, lock, file)
    }

    /// A long WAL is finished with the store's write lock held: a checkpoint waits while a
    /// writer holds it, then copies the WAL whole and starts it over.
    #[tokio::test]
    async fn a_long_wal_is_copied_whole_with_writers_held_off() {
        use sqlx::Row as _;
        let (db, lock, file) = sqlite_with_wal(20).await;
        let store = db.store.clone();
        let wal = || async {
            let r = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            (r.get::<i64, _>(1), r.get::<i64, _>(2))
        };
        let (log, _) = wal().await;
        assert!(log >= 20, "{log} pages in the WAL");

        let held = lock.lock().await;
        let run = {
            let (pool, lock, file) = (store.pool.clone(), lock.clone(), file.clone());
            tokio::spawn(async move { checkpoint(&pool, &lock, &file, 0).await })
        };
        let mut run = std::pin::pin!(run);
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut run).await;
        assert!(
            waited.is_err(),
            "the checkpoint finished with a writer holding the lock"
        );
        drop(held);
        run.await.unwrap().unwrap();

        let (log, copied) = wal().await;
        assert_eq!(log, copied, "the WAL is copied whole");
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&store.pool)
            .await
            .unwrap();
        let (log, _) = wal().await;
        assert!(log < 5, "the WAL started over: {log} pages in it");
        drop(store);
        db.cleanup().await;
    }

    /// A database file that cannot be flushed fails the checkpoint before writers are held
    /// off: the error is reported and the WAL is left for the next try.
    #[tokio::test]
    async fn a_checkpoint_that_cannot_flush_the_file_holds_no_one_off() {
        let (db, lock, file) = sqlite_with_wal(1).await;
        let store = db.store.clone();
        let gone = file.with_file_name("no-such.db");
        let err = checkpoint(&store.pool, &lock, &gone, 0).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("cannot flush")),
            "{err}"
        );
        assert!(lock.try_lock().is_ok(), "the write lock is free");
        drop(store);
        db.cleanup().await;
    }

    #[test]
    fn ids_sort_by_the_time_they_were_made_at() {
        let t = 1_800_000_000_123;
        let ids: Vec<String> = [t - 1, t, t, t + 1, t + 86_400_000]
            .iter()
            .map(|&at| id_at(at))
            .collect();
        assert!(
            ids.windows(2)
                .all(|w| w[0] < w[1] || w[0][..13] == w[1][..13]),
            "{ids:?}"
        );
        assert!(
            ids[0] < id_floor(t),
            "an id of an earlier time is below the floor"
        );
        assert!(ids[1..].iter().all(|id| *id >= id_floor(t)), "{ids:?}");
        assert!(id_at(t).starts_with(&id_floor(t)[..13]));
        assert_eq!(uuid::Uuid::parse_str(&ids[1]).unwrap().get_version_num(), 7);
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }

    /// The page-load writer opens the file sqlx's connections open, `%xx` in the URL
    /// decoded as sqlx decodes it: what it writes, the rest of calltrail reads.
    #[tokio::test]
    async fn the_writer_and_the_pool_share_one_file() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/my%20data/calltrail.db", d.path().display());
        let store = Store::open(&url).await.unwrap();
        let session = engine::NewSession {
            site_id: "site".into(),
            visitor_id: "v".into(),
            channel: "direct".into(),
            source: "(direct)".into(),
            medium: "(none)".into(),
            landing_url: "https://a.example/".into(),
            landing_path: "/".into(),
            ..Default::default()
        };
        let shown = store
            .open_sessions(&[(session, engine::Target::None)], 1_000)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id = $1")
            .bind(&shown[0].session_id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(d.path().join("my data/calltrail.db").is_file());
        assert!(!d.path().join("my%20data").exists());
        store.close().await;
    }

    #[test]
    fn sqlite_urls() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c.db");
        let (u, file) = sqlite_url(&format!("sqlite://{}", p.display())).unwrap();
        assert_eq!(file, p);
        assert!(u.ends_with("c.db?mode=rwc"), "{u}");
        assert!(p.parent().unwrap().is_dir());
        assert!(sqlite_url("sqlite::memory:").is_err());
        assert!(Backend::from_url("mysql://x").is_err());
    }
}
