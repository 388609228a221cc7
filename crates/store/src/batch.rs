//! Page loads written together: new sessions opened, live ones continued, many to a
//! transaction, and the pool allocation they share.
//!
//! A visit used to be one transaction of about ten statements, each a round trip to the
//! database (on SQLite, to sqlx's worker thread). Now a batch of new sessions decides its
//! allocations in memory, one after another exactly as one-by-one visits at the same instant
//! would decide them, and writes sessions, page views, leases, number states and
//! exhaustions with one multi-row statement each. On SQLite the transaction is one
//! script (`BEGIN IMMEDIATE` .. `COMMIT`) run on the page-load writer's own connection
//! (`script::Conn::Sqlite`, on the writer's thread), after the reads allocation needs
//! (usually none: see [`PoolsSeen`]); track codes are drawn, checked in that script and
//! mended on a clash. Continuing sessions are read in one query and written in one script
//! too. A batch of one is what a single visit runs.

use std::collections::{BTreeMap, HashMap, HashSet};

use calltrail_core::engine::{self, Allocation, Lease, Millis, Picture, Requester, Slot};
use calltrail_core::ExhaustionPolicy;
use rand::Rng;

use crate::engine::{
    lease_row, Live, NewPage, NewSession, PoolTarget, Printed, Shown, Target, LEASE_COLS,
    SESSION_COLS, TRACK_CODE_LIFE,
};
use crate::script::{Conn, Row, Script};
use crate::{id_at, new_id, Backend, Result, Store, StoreError};

/// The most sessions one multi-row statement carries: 38 parameters each, well under what
/// SQLite (32 766) and PostgreSQL (65 535) accept. Larger batches go in several chunks of
/// the same transaction.
pub const MAX_BATCH: usize = 256;

/// Who asks a pool for a number.
pub(crate) struct Asker<'a> {
    pub session_id: &'a str,
    pub visitor_id: &'a str,
    pub source: &'a str,
    /// The session existed before this transaction, so it may hold a lease.
    pub continuing: bool,
    /// The visitor may have held numbers before (its id came from the browser).
    pub known_visitor: bool,
}

/// A page load, event or heartbeat (`page: None`) of a session that may still be live.
#[derive(Debug, Clone)]
pub struct Continuing {
    pub site_id: String,
    pub session_id: String,
    pub page: Option<NewPage>,
    /// The site's pools (the session's is looked up among them).
    pub pools: Vec<PoolTarget>,
}

/// A session a continuing page load names, as read with its number and lease.
struct Found {
    live: Live,
    site_id: String,
    last_activity: Millis,
    /// The kind of the session's number.
    kind: Option<String>,
    lease_ended: Option<Millis>,
    lease_hold: Option<Millis>,
}

impl Found {
    /// What a continuing batch reads of each session, in the order [`Found::read`] takes.
    const COLS: &str = "s.id, s.visitor_id, s.source, s.track_code, s.pool_id, s.number_id, \
        n.number, s.lease_id, s.site_id, s.last_activity, n.kind, l.ended_at, l.hold_until, \
        n.display";

    /// A row of [`Found::COLS`], read by position: every page load of a live session comes
    /// here, and a column found by name is a search of the row's names.
    fn read(r: &Row<'_, '_>) -> Result<Self> {
        Ok(Self {
            live: Live {
                id: r.at(0)?,
                visitor_id: r.at(1)?,
                source: r.at(2)?,
                track_code: r.at(3)?,
                pool_id: r.at(4)?,
                number_id: r.at(5)?,
                number: match r.at::<Option<String>>(6)? {
                    Some(n) => Some(Printed::read(n, r.at(13)?)),
                    None => None,
                },
                lease_id: r.at(7)?,
            },
            site_id: r.at(8)?,
            last_activity: r.at(9)?,
            kind: r.at(10)?,
            lease_ended: r.at(11)?,
            lease_hold: r.at(12)?,
        })
    }
}

/// What a pool gave one asker.
pub(crate) struct Placed {
    pub alloc: Allocation,
    pub number_id: Option<String>,
    /// The number `number_id` names.
    pub number: Option<Printed>,
    pub lease_id: Option<String>,
    /// A new session met an exhausted pool: the outcome, kept in its row.
    pub exhausted: Option<&'static str>,
}

/// What a pool looked like after the last committed allocation on SQLite: every number
/// with its latest lease (an `engine::Picture`, which decides from indexes), and the
/// numbers as visitors are shown them. SQLite has one writer, this
/// process, so what it committed is what the database holds, and reading the whole pool
/// (hundreds of rows and joins) for every batch is work thrown away. Every transaction that
/// uses a pool's picture takes it out first and puts the new one back only after it
/// committed (a failed one leaves nothing, and the next one reads the pool again).
/// Heartbeats written back move the pictures' leases as they moved the rows
/// ([`Store::seen_beats`]); other writes that change a pool (its numbers) forget every
/// picture, and a picture taken before such a write is not put back. PostgreSQL, where other
/// nodes write too, reads the pool every time.
#[derive(Default)]
pub(crate) struct PoolsSeen {
    generation: u64,
    pools: HashMap<String, PoolSeen>,
    /// Pictures of the transaction under way: `(generation taken at, pool, picture)`.
    staged: Vec<(u64, String, PoolSeen)>,
}

pub(crate) struct PoolSeen {
    slots: Picture,
    /// The number at each of the picture's positions, as visitors are shown it.
    numbers: Vec<Option<Printed>>,
}

impl Store {
    fn seen(&self) -> Option<std::sync::MutexGuard<'_, PoolsSeen>> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        // A poisoned lock only means a panic elsewhere; the pictures are then dropped.
        Some(self.pools_seen.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            *g = PoolsSeen::default();
            g
        }))
    }

    /// Take a pool's picture for the transaction under way (the one it staged itself, if
    /// any): `(generation, picture)`.
    fn seen_take(&self, pool_id: &str) -> (u64, Option<PoolSeen>) {
        let Some(mut s) = self.seen() else {
            return (0, None);
        };
        if let Some(i) = s.staged.iter().rposition(|(_, p, _)| p == pool_id) {
            let (generation, _, picture) = s.staged.swap_remove(i);
            return (generation, Some(picture));
        }
        (s.generation, s.pools.remove(pool_id))
    }

    fn seen_stage(&self, generation: u64, pool_id: &str, picture: PoolSeen) {
        if let Some(mut s) = self.seen() {
            s.staged.push((generation, pool_id.to_owned(), picture));
        }
    }

    /// A transaction begins: pictures a failed one left staged are dropped.
    pub(crate) fn seen_begin(&self) {
        if let Some(mut s) = self.seen() {
            s.staged.clear();
        }
    }

    /// The transaction committed: its pictures become the pools' pictures.
    pub(crate) fn seen_commit(&self) {
        if let Some(mut s) = self.seen() {
            let generation = s.generation;
            let staged = std::mem::take(&mut s.staged);
            for (g, pool_id, picture) in staged {
                if g == generation {
                    s.pools.insert(pool_id, picture);
                }
            }
        }
    }

    /// Something changed pools outside allocation: read them again next time.
    pub(crate) fn forget_pools(&self) {
        if let Some(mut s) = self.seen() {
            s.generation += 1;
            s.pools.clear();
            s.staged.clear();
        }
    }

    /// Heartbeats were written back (`Store::flush_heartbeats`, under the writer lock, so no
    /// transaction has a picture out): each `(lease id, at, hold)` the write moved on moves
    /// on in the pictures too, instead of every picture being read again.
    pub(crate) fn seen_beats(&self, moved: &[(String, Millis, Millis)]) {
        if moved.is_empty() {
            return;
        }
        let Some(mut s) = self.seen() else {
            return;
        };
        // A node may serve many pools; each lease is found through the pool's index.
        for p in s.pools.values_mut() {
            for (lease_id, at, hold) in moved {
                if let Some(i) = p.slots.lease_position(lease_id) {
                    p.slots
                        .update(i, |l| l.as_mut().map(|l| l.active_at(*at, *hold)));
                }
            }
        }
    }

    /// A lease's activity moved on (a continuing session kept its number).
    pub(crate) fn seen_touch(&self, pool_id: &str, lease_id: &str, now: Millis, hold: Millis) {
        let (generation, picture) = self.seen_take(pool_id);
        if let Some(mut p) = picture {
            if let Some(i) = p.slots.lease_position(lease_id) {
                p.slots
                    .update(i, |l| l.as_mut().map(|l| l.active_at(now, hold)));
            }
            self.seen_stage(generation, pool_id, p);
        }
    }
}

impl Store {
    /// Open sessions and give each its number, all in one transaction. The result is what
    /// opening them one by one at `now`, in this order, would give.
    ///
    /// On SQLite the whole transaction is one round trip: what allocation must read comes
    /// first (usually nothing: see [`PoolsSeen`]), under the writer lock, which no other
    /// writer of sessions or leases passes; then `BEGIN IMMEDIATE`, every write and
    /// `COMMIT` go as one script. On PostgreSQL the pools are locked and read in the
    /// transaction, and the writes follow it statement by statement.
    pub async fn open_sessions(
        &self,
        items: &[(NewSession, Target)],
        now: Millis,
    ) -> Result<Vec<Shown>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut guard = self.write_guard().await;
        self.seen_begin();
        let mut out = Vec::with_capacity(items.len());
        if self.backend == Backend::Postgres {
            let mut tx = self.pool.begin().await?;
            let mut conn = Conn::Any(&mut tx);
            let mut clashes = Vec::new();
            for chunk in items.chunks(MAX_BATCH) {
                // Each chunk's writes go before the next chunk reads the pool.
                let mut script = Script::new(self.backend);
                out.extend(self.plan_chunk(&mut conn, &mut script, chunk, now).await?);
                clashes.extend(conn.query(script, |r| r.get("clash")).await?);
            }
            clashes.extend(codes_drawn_twice(items, &out));
            self.record_codes(items, &out, &clashes);
            fix_track_codes(self, &mut conn, items, &mut out, &clashes, now).await?;
            tx.commit().await?;
            return Ok(out);
        }
        // SQLite: a later chunk allocates from the picture the earlier one left staged.
        let mut script = Script::new(self.backend);
        let slot = writer_slot(&mut guard)?;
        let mut conn = Conn::Sqlite(self.writer(slot)?);
        script.push("BEGIN IMMEDIATE").end();
        for chunk in items.chunks(MAX_BATCH) {
            out.extend(self.plan_chunk(&mut conn, &mut script, chunk, now).await?);
        }
        script.push("COMMIT").end();
        let mut clashes = run_in_transaction(script, slot)?;
        clashes.extend(codes_drawn_twice(items, &out));
        self.seen_commit();
        // Committed; a clash of track codes is mended at once, before anyone is answered.
        self.record_codes(items, &out, &clashes);
        let mut conn = Conn::Sqlite(self.writer(slot)?);
        fix_track_codes(self, &mut conn, items, &mut out, &clashes, now).await?;
        Ok(out)
    }

    /// Continue sessions (page loads, events, heartbeats), each as `continue_session`
    /// would, in this order, in one transaction per chunk: one read of the sessions, then
    /// the writes. On SQLite the writes are one script (`BEGIN IMMEDIATE` .. `COMMIT`) under
    /// the writer lock; on PostgreSQL they follow in the transaction, and a kept lease is
    /// moved on by an update that checks it is still live (another node may take it).
    pub async fn continue_sessions(
        &self,
        reqs: &[Continuing],
        now: Millis,
    ) -> Result<Vec<Option<Shown>>> {
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(MAX_BATCH) {
            out.extend(self.continue_chunk(chunk, now).await?);
        }
        Ok(out)
    }

    pub(crate) async fn continue_chunk(
        &self,
        reqs: &[Continuing],
        now: Millis,
    ) -> Result<Vec<Option<Shown>>> {
        let mut guard = self.write_guard().await;
        self.seen_begin();
        let mut script = Script::new(self.backend);
        if self.backend == Backend::Postgres {
            let mut tx = self.pool.begin().await?;
            let mut conn = Conn::Any(&mut tx);
            let out = self
                .plan_continues(&mut conn, &mut script, reqs, now)
                .await?;
            conn.execute(script).await?;
            tx.commit().await?;
            return Ok(out);
        }
        let slot = writer_slot(&mut guard)?;
        let mut conn = Conn::Sqlite(self.writer(slot)?);
        script.push("BEGIN IMMEDIATE").end();
        let out = self
            .plan_continues(&mut conn, &mut script, reqs, now)
            .await?;
        script.push("COMMIT").end();
        run_in_transaction(script, slot)?;
        self.seen_commit();
        Ok(out)
    }

    /// Add page views (page loads and events) to sessions, without reading or moving the
    /// sessions: for a node that knows what each session shows and moves its activity on
    /// itself (written back with the heartbeats). The page views are committed before this
    /// returns; a session that no longer exists gets none (`false` in its place). One
    /// statement per chunk: on SQLite in a transaction on the page-load writer's
    /// connection, on PostgreSQL on its own.
    pub async fn add_pages(&self, pages: &[(String, NewPage)], now: Millis) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(pages.len());
        for chunk in pages.chunks(MAX_BATCH) {
            let mut script = Script::new(self.backend);
            if self.backend == Backend::Sqlite {
                script.push("BEGIN IMMEDIATE").end();
            }
            script.write("INSERT").push(
                "INTO page_views (id, session_id, at, kind, url, title) \
                 SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES ",
            );
            for (i, (session_id, p)) in chunk.iter().enumerate() {
                script
                    .push(if i == 0 { "(" } else { ", (" })
                    .val(new_id())
                    .val(session_id.as_str())
                    .val(now)
                    .val(p.kind.as_str())
                    .val(p.url.as_str())
                    .val(p.title.as_deref())
                    .push(")");
            }
            script
                .push(
                    ") v WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.id = v.column2) \
                     RETURNING session_id",
                )
                .end();
            let added: HashSet<String> = if self.backend == Backend::Postgres {
                let mut conn = self.pool.acquire().await?;
                Conn::Any(&mut conn)
                    .query(script, |r| r.at(0))
                    .await?
                    .into_iter()
                    .collect()
            } else {
                script.push("COMMIT").end();
                let mut guard = self.write_guard().await;
                let slot = writer_slot(&mut guard)?;
                self.writer(slot)?;
                run_in_transaction(script, slot)?.into_iter().collect()
            };
            out.extend(chunk.iter().map(|(s, _)| added.contains(s)));
        }
        Ok(out)
    }

    /// Read the sessions, decide what each shows, and add the writes to `script`.
    async fn plan_continues<'s>(
        &self,
        conn: &mut Conn<'_>,
        script: &mut Script<'s>,
        reqs: &'s [Continuing],
        now: Millis,
    ) -> Result<Vec<Option<Shown>>> {
        let mut read = Script::new(self.backend);
        read.push(&format!(
            "SELECT {} FROM sessions s \
             LEFT JOIN tracking_numbers n ON n.id = s.number_id \
             LEFT JOIN leases l ON l.id = s.lease_id WHERE s.id IN (",
            Found::COLS
        ));
        for r in reqs {
            read.val(r.session_id.clone());
        }
        read.push(")");
        let found: HashMap<String, Found> = conn
            .query(read, Found::read)
            .await?
            .into_iter()
            .map(|f| (f.live.id.clone(), f))
            .collect();
        let mut pages = Vec::new();
        // Sessions moved on (each once, though it may come twice).
        let mut moved: Vec<&str> = Vec::new();
        // Live leases kept (SQLite): `(lease, hold until)`.
        let mut keeps: Vec<(String, Millis)> = Vec::new();
        // Answers by session: a session loaded twice in one batch keeps what its first
        // load found.
        let mut answered: HashMap<&str, Shown> = HashMap::new();
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            let Some(row) = found.get(&r.session_id) else {
                out.push(None);
                continue;
            };
            if row.site_id != r.site_id || now - row.last_activity > engine::SESSION_TIMEOUT {
                out.push(None);
                continue;
            }
            if !moved.contains(&r.session_id.as_str()) {
                moved.push(&r.session_id);
            }
            if let Some(p) = &r.page {
                pages.push((r.session_id.clone(), p));
            }
            if let Some(shown) = answered.get(r.session_id.as_str()) {
                out.push(Some(shown.clone()));
                continue;
            }
            let shown = self
                .continue_one(conn, script, &mut keeps, r, row, now)
                .await?;
            answered.insert(&r.session_id, shown.clone());
            out.push(Some(shown));
        }
        // One statement per table whatever the batch's size: a statement of its own per
        // session is compiled anew for every batch (the script's text differs each time),
        // which cost more than running it.
        // The page count is counted from the page views when read (`SESSION_READ`).
        if !moved.is_empty() {
            script
                .write("UPDATE")
                .push("sessions SET last_activity = ")
                .val(now)
                .push(" WHERE last_activity < ")
                .val(now)
                .push(" AND id IN (");
            for id in moved {
                script.val(id);
            }
            script.push(")").end();
        }
        if !keeps.is_empty() {
            // A request that read the clock earlier must not move activity back.
            script
                .write("UPDATE")
                .push("leases SET last_activity = ")
                .val(now)
                .push(", hold_until = CASE id");
            for (id, until) in &keeps {
                script
                    .push(" WHEN ")
                    .val(id.clone())
                    .push(" THEN ")
                    .val(*until);
            }
            script.push(" ELSE hold_until END WHERE last_activity <= ");
            script.val(now).push(" AND id IN (");
            for (id, _) in &keeps {
                script.val(id.clone());
            }
            script.push(")").end();
        }
        if !pages.is_empty() {
            script
                .write("INSERT")
                .push("INTO page_views (id, session_id, at, kind, url, title) VALUES ");
            for (i, (session_id, p)) in pages.into_iter().enumerate() {
                script
                    .push(if i == 0 { "(" } else { ", (" })
                    .val(new_id())
                    .val(session_id)
                    .val(now)
                    .val(p.kind.as_str())
                    .val(p.url.as_str())
                    .val(p.title.as_deref())
                    .push(")");
            }
            script.end();
        }
        Ok(out)
    }

    /// What a live session shows next: its live lease moved on, a number found again, or
    /// its static number; the writes go to `script`.
    async fn continue_one<'s>(
        &self,
        conn: &mut Conn<'_>,
        script: &mut Script<'s>,
        keeps: &mut Vec<(String, Millis)>,
        r: &'s Continuing,
        found: &Found,
        now: Millis,
    ) -> Result<Shown> {
        let Found {
            live,
            kind,
            lease_ended,
            lease_hold,
            ..
        } = found;
        let mut shown = Shown {
            session_id: live.id.clone(),
            visitor_id: live.visitor_id.clone(),
            track_code: live.track_code.clone(),
            number: None,
            allocation: None,
            is_bot: false,
            hold_ms: None,
        };
        let pool = live
            .pool_id
            .as_deref()
            .and_then(|pid| r.pools.iter().find(|p| p.pool_id == pid));
        let lease_live = match (&live.lease_id, pool, conn.any()) {
            (Some(lease_id), Some(pool), Some(conn)) => {
                // PostgreSQL: another node may have taken the number since the read: move
                // the lease on only if it is still live, and see whether it was.
                sqlx::query(
                    "UPDATE leases SET last_activity = $1, hold_until = $2 \
                     WHERE id = $3 AND ended_at IS NULL AND hold_until >= $1 AND last_activity <= $1",
                )
                .bind(now)
                .bind(now + pool.hold())
                .bind(lease_id)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1
            }
            (Some(_), Some(_), None) => {
                lease_ended.is_none() && lease_hold.is_some_and(|h| h >= now)
            }
            _ => false,
        };
        match (pool, &live.lease_id, &live.number_id) {
            // The common case: the session's lease is alive, move it on.
            (Some(pool), Some(lease_id), Some(number_id)) if lease_live => {
                if self.backend == Backend::Sqlite {
                    keeps.push((lease_id.clone(), now + pool.hold()));
                }
                self.seen_touch(&pool.pool_id, lease_id, now, pool.hold());
                shown.hold_ms = Some(pool.hold());
                shown.number.clone_from(&live.number);
                shown.allocation = Some(Allocation::Keep {
                    number_id: number_id.clone(),
                    lease_id: lease_id.clone(),
                });
            }
            (Some(pool), _, _) => {
                self.place_again(conn, script, &r.site_id, live, pool, now, &mut shown)
                    .await?;
            }
            // A static number, or a session that keeps the site's own number.
            (None, _, _) => {
                shown.number = live
                    .number
                    .clone()
                    .filter(|_| kind.as_deref() == Some("static"));
            }
        }
        Ok(shown)
    }

    /// Open one session and give it its number, in one transaction.
    pub async fn open_session(
        &self,
        s: &NewSession,
        target: &Target,
        now: Millis,
    ) -> Result<Shown> {
        let mut shown = self
            .open_sessions(&[(s.clone(), target.clone())], now)
            .await?;
        shown
            .pop()
            .ok_or_else(|| StoreError::Conflict("no session opened".into()))
    }

    /// Decide a chunk of new sessions and add what it writes to `script`.
    async fn plan_chunk<'a>(
        &self,
        conn: &mut Conn<'_>,
        script: &mut Script<'a>,
        items: &'a [(NewSession, Target)],
        now: Millis,
    ) -> Result<Vec<Shown>> {
        let mut shown: Vec<Shown> = items
            .iter()
            .map(|(s, _)| Shown {
                // Time-ordered by `now` (see `exhaustion_counts`).
                session_id: id_at(now),
                visitor_id: s.visitor_id.clone(),
                track_code: self.new_track_code(&s.site_id),
                number: None,
                allocation: None,
                hold_ms: None,
                is_bot: s.is_bot,
            })
            .collect();
        let mut held: Vec<Held> = vec![Held::default(); items.len()];
        let mut by_pool: BTreeMap<&str, (&PoolTarget, Vec<usize>)> = BTreeMap::new();
        for (i, (_, target)) in items.iter().enumerate() {
            match target {
                Target::None => {}
                Target::Static { number_id, number } => {
                    held[i].number_id = Some(number_id.clone());
                    shown[i].number = Some(number.clone());
                }
                Target::Pool(p) => by_pool
                    .entry(&p.pool_id)
                    .or_insert((p, Vec::new()))
                    .1
                    .push(i),
            }
        }
        // Pools in id order, so concurrent PostgreSQL transactions lock them in one order.
        for (pool, idx) in by_pool.into_values() {
            let askers: Vec<Asker<'_>> = idx
                .iter()
                .map(|&i| Asker {
                    session_id: &shown[i].session_id,
                    visitor_id: &items[i].0.visitor_id,
                    source: &items[i].0.source,
                    continuing: false,
                    known_visitor: items[i].0.known_visitor,
                })
                .collect();
            let site_id = &items[idx[0]].0.site_id;
            let placed = self
                .allocate_many(conn, script, site_id, pool, &askers, now)
                .await?;
            for (&i, p) in idx.iter().zip(placed) {
                shown[i].hold_ms = (!matches!(p.alloc, Allocation::Exhausted)).then(|| pool.hold());
                shown[i].number = p.number;
                shown[i].allocation = Some(p.alloc);
                held[i] = Held {
                    pool_id: Some(pool.pool_id.clone()),
                    number_id: p.number_id,
                    lease_id: p.lease_id,
                    exhausted: p.exhausted,
                };
            }
        }
        check_codes(script, items, &shown, now);
        insert_sessions(script, items, &shown, held, now);
        Ok(shown)
    }

    /// The atomic allocation of DESIGN.md §4 for several askers of one pool, inside the
    /// caller's transaction: each decided by `engine::allocate` over the pool as the ones
    /// before it left it.
    pub(crate) async fn allocate_many<'s>(
        &self,
        conn: &mut Conn<'_>,
        script: &mut Script<'s>,
        site_id: &'s str,
        pool: &'s PoolTarget,
        askers: &[Asker<'_>],
        now: Millis,
    ) -> Result<Vec<Placed>> {
        if let Some(conn) = conn.any() {
            sqlx::query("SELECT id FROM pools WHERE id = $1 FOR UPDATE")
                .bind(&pool.pool_id)
                .execute(&mut *conn)
                .await?;
        }
        let held_before = held_before(conn, self.backend, site_id, &pool.pool_id, askers).await?;
        let (generation, picture) = self.seen_take(&pool.pool_id);
        let whole = self.backend == Backend::Sqlite;
        let (mut slots, numbers) = match picture {
            Some(p) => (p.slots, p.numbers),
            None => candidates(conn, self.backend, pool, askers, &held_before, now, whole).await?,
        };
        let mut w = Writes::default();
        let mut out = Vec::with_capacity(askers.len());
        let none = Vec::new();
        for a in askers {
            let req = Requester {
                session_id: a.session_id,
                visitor_id: a.visitor_id,
                source: a.source,
                held_before: held_before.get(a.visitor_id).unwrap_or(&none),
                opens: !a.continuing,
            };
            let (alloc, at) = slots.allocate(&req, pool.policy, now);
            let printed = || at.and_then(|i| numbers.get(i).cloned().flatten());
            let mut placed = match &alloc {
                Allocation::Keep {
                    number_id,
                    lease_id,
                } => {
                    if let Some(i) = at {
                        slots.update(i, |l| l.as_mut().map(|l| l.active_at(now, pool.hold())));
                    }
                    w.keep.push(lease_id.clone());
                    Placed {
                        number: printed(),
                        number_id: Some(number_id.clone()),
                        lease_id: Some(lease_id.clone()),
                        alloc: alloc.clone(),
                        exhausted: None,
                    }
                }
                Allocation::Regain { number_id }
                | Allocation::Fresh { number_id }
                | Allocation::Reuse { number_id, .. } => {
                    let lease = Lease {
                        id: new_id(),
                        number_id: number_id.clone(),
                        session_id: a.session_id.to_owned(),
                        visitor_id: a.visitor_id.to_owned(),
                        source: a.source.to_owned(),
                        leased_at: now,
                        last_activity: now,
                        hold_until: now + pool.hold(),
                        ended_at: None,
                    };
                    let prev = at.and_then(|i| slots.update(i, |l| l.replace(lease.clone())));
                    // On SQLite a lease whose hold ran out has ended already (`Lease::end`):
                    // writing its end would rewrite its row for nothing. A heartbeat written
                    // back late cannot bring it back: the write-back moves only a number's
                    // latest lease (`Store::flush_heartbeats`), and every other write of a
                    // lease is decided under the one writer, after its clock reading. On
                    // PostgreSQL another node may move the lease on with a clock read
                    // before its hold ran out: the end written here is what stops it.
                    let live = |p: &Lease| p.ended_at.is_none() && p.hold_until >= now;
                    if let Some(prev) =
                        prev.filter(|p| self.backend == Backend::Postgres || live(p))
                    {
                        w.end(&prev.id, now);
                    }
                    if self.backend == Backend::Postgres {
                        w.state.insert(number_id.clone(), lease.id.clone());
                    }
                    let lease_id = lease.id.clone();
                    w.leases.push(lease);
                    Placed {
                        number: printed(),
                        number_id: Some(number_id.clone()),
                        lease_id: Some(lease_id),
                        alloc: alloc.clone(),
                        exhausted: None,
                    }
                }
                Allocation::Exhausted => Placed {
                    number_id: pool.fallback.as_ref().map(|f| f.0.clone()),
                    number: pool.fallback.as_ref().map(|f| f.1.clone()),
                    lease_id: None,
                    alloc: Allocation::Exhausted,
                    exhausted: None,
                },
            };
            if alloc.is_exhaustion() {
                let outcome = if matches!(alloc, Allocation::Reuse { .. }) {
                    "reuse"
                } else {
                    "fallback"
                };
                if a.continuing {
                    w.exhaustions.push((
                        a.session_id.to_owned(),
                        outcome,
                        placed.number_id.clone(),
                    ));
                } else {
                    // Written with the new session's row (migration 0008).
                    placed.exhausted = Some(outcome);
                }
            }
            out.push(placed);
        }
        w.write(script, site_id, pool, now);
        if whole {
            self.seen_stage(generation, &pool.pool_id, PoolSeen { slots, numbers });
        }
        Ok(out)
    }
}

/// What one pool's allocations write.
#[derive(Default)]
struct Writes {
    /// Live leases whose activity moves on to now.
    keep: Vec<String>,
    /// Leases (written before) that end now, or when their hold ran out.
    ends: Vec<String>,
    /// New leases (one may already have ended, taken by a later asker of the batch).
    leases: Vec<Lease>,
    /// The latest lease of each number leased anew (PostgreSQL's `number_state`).
    state: BTreeMap<String, String>,
    /// `(session, outcome, number shown)`.
    exhaustions: Vec<(String, &'static str, Option<String>)>,
}

impl Writes {
    fn end(&mut self, lease_id: &str, now: Millis) {
        match self.leases.iter_mut().find(|l| l.id == lease_id) {
            Some(l) => {
                if l.ended_at.is_none() {
                    l.ended_at = Some(l.hold_until.min(now));
                }
            }
            None => self.ends.push(lease_id.to_owned()),
        }
    }

    /// Its statements, into `script`; the strings it holds move there.
    fn write<'s>(
        self,
        script: &mut Script<'s>,
        site_id: &'s str,
        pool: &'s PoolTarget,
        now: Millis,
    ) {
        if !self.keep.is_empty() {
            // A request that read the clock earlier must not move activity back.
            script.write("UPDATE").push("leases SET last_activity = ");
            script
                .val(now)
                .push(", hold_until = ")
                .val(now + pool.hold());
            script
                .push(" WHERE last_activity <= ")
                .val(now)
                .push(" AND id IN (");
            for id in self.keep {
                script.val(id);
            }
            script.push(")").end();
        }
        if !self.ends.is_empty() {
            script
                .write("UPDATE")
                .push("leases SET ended_at = CASE WHEN hold_until < ");
            script.val(now).push(" THEN hold_until ELSE ").val(now);
            script.push(" END WHERE ended_at IS NULL AND id IN (");
            for id in self.ends {
                script.val(id);
            }
            script.push(")").end();
        }
        if !self.leases.is_empty() {
            script.write("INSERT").push(
                "INTO leases (id, site_id, pool_id, number_id, session_id, visitor_id, source, \
                 leased_at, last_activity, hold_until, ended_at) VALUES ",
            );
            for (i, l) in self.leases.into_iter().enumerate() {
                script.push(if i == 0 { "(" } else { ", (" });
                script
                    .val(l.id)
                    .val(site_id)
                    .val(pool.pool_id.as_str())
                    .val(l.number_id)
                    .val(l.session_id)
                    .val(l.visitor_id)
                    .val(l.source)
                    .val(l.leased_at)
                    .val(l.last_activity)
                    .val(l.hold_until)
                    .val(l.ended_at)
                    .push(")");
            }
            script.end();
        }
        // Empty on SQLite, which keeps no `number_state` (migration 0012): a number's latest
        // lease is read through `leases_number` when a pool's picture is made.
        if !self.state.is_empty() {
            script
                .write("INSERT")
                .push("INTO number_state (number_id, pool_id, lease_id) VALUES ");
            for (i, (number_id, lease_id)) in self.state.into_iter().enumerate() {
                script.push(if i == 0 { "(" } else { ", (" });
                script
                    .val(number_id)
                    .val(pool.pool_id.as_str())
                    .val(lease_id)
                    .push(")");
            }
            script.push(
                " ON CONFLICT (number_id) DO UPDATE SET pool_id = excluded.pool_id, lease_id = excluded.lease_id",
            );
            script.end();
        }
        if !self.exhaustions.is_empty() {
            script.write("INSERT").push("INTO exhaustions (id, site_id, pool_id, session_id, at, outcome, number_id) VALUES ",
            );
            for (i, (session_id, outcome, number_id)) in self.exhaustions.into_iter().enumerate() {
                script.push(if i == 0 { "(" } else { ", (" });
                script
                    .val(new_id())
                    .val(site_id)
                    .val(pool.pool_id.as_str())
                    .val(session_id)
                    .val(now)
                    .val(outcome)
                    .val(number_id)
                    .push(")");
            }
            script.end();
        }
    }
}

/// The numbers of this pool each (possibly returning) visitor held, most recent first, five
/// at most.
async fn held_before(
    conn: &mut Conn<'_>,
    backend: Backend,
    site_id: &str,
    pool_id: &str,
    askers: &[Asker<'_>],
) -> Result<HashMap<String, Vec<String>>> {
    let mut visitors: Vec<&str> = askers
        .iter()
        .filter(|a| a.known_visitor || a.continuing)
        .map(|a| a.visitor_id)
        .collect();
    visitors.sort_unstable();
    visitors.dedup();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if visitors.is_empty() {
        return Ok(out);
    }
    let mut q = Script::new(backend);
    q.push(
        "SELECT visitor_id, number_id, rn FROM (SELECT visitor_id, number_id, \
         ROW_NUMBER() OVER (PARTITION BY visitor_id ORDER BY leased_at DESC) AS rn FROM leases \
         WHERE site_id = ",
    )
    .val(site_id.to_owned())
    .push(" AND pool_id = ")
    .val(pool_id.to_owned())
    .push(" AND visitor_id IN (");
    for v in &visitors {
        q.val((*v).to_owned());
    }
    q.push(")) t WHERE rn <= 5 ORDER BY visitor_id, rn");
    let rows = conn
        .query(q, |r| Ok((r.get("visitor_id")?, r.get("number_id")?)))
        .await?;
    for (visitor, number) in rows {
        out.entry(visitor).or_default().push(number);
    }
    Ok(out)
}

/// The pool's numbers `engine::allocate` could pick for these askers, with their latest
/// leases, and every candidate's E.164 form.
///
/// Over the whole pool it decides as it does over the only numbers it can pick: the
/// sessions' own, those their visitors held before, the `k` free ones idle the longest
/// (chosen here in SQL in its order: never used first, then `last_activity`, then id) and,
/// per source, the free ones idle the longest whose last holder had that source, as many as
/// the batch has askers of it. Each asker takes at most one, so the ones after it still
/// find their pick among the rest. Reading every number made a visit's cost grow with the
/// pool; `reuse` compares the live leases, so it still reads them all, and so does a
/// `whole` read (a picture of the pool to keep, on SQLite).
async fn candidates(
    conn: &mut Conn<'_>,
    backend: Backend,
    pool: &PoolTarget,
    askers: &[Asker<'_>],
    held_before: &HashMap<String, Vec<String>>,
    now: Millis,
    whole: bool,
) -> Result<(Picture, Vec<Option<Printed>>)> {
    const FREE_ENDED: &str =
        "CASE WHEN {l}.ended_at IS NOT NULL AND {l}.ended_at < {l}.hold_until \
        THEN {l}.ended_at ELSE {l}.hold_until END";
    // SQLite has no `number_state` to narrow by (and makes a whole picture anyway).
    let narrow = backend == Backend::Postgres && !whole && pool.policy != ExhaustionPolicy::Reuse;
    let own: Vec<&str> = askers
        .iter()
        .filter(|a| a.continuing)
        .map(|a| a.session_id)
        .collect();
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    for a in askers {
        *sources.entry(a.source).or_default() += 1;
    }
    let mut held: Vec<&str> = held_before.values().flatten().map(String::as_str).collect();
    held.sort_unstable();
    held.dedup();
    // Each number's latest lease: on PostgreSQL the one `number_state` names; on SQLite
    // (no `number_state`) the last one leased, found in `leases_number` (whose entries end
    // in the rowid, so the order is the index's own, and a tie of two leases in one batch
    // goes to the one written last, as `number_state` had it).
    let latest = match backend {
        Backend::Postgres => {
            "LEFT JOIN number_state st ON st.number_id = n.id \
             LEFT JOIN leases l ON l.id = st.lease_id"
        }
        Backend::Sqlite => {
            "LEFT JOIN leases l ON l.rowid = (SELECT l0.rowid FROM leases l0 \
             WHERE l0.number_id = n.id ORDER BY l0.leased_at DESC, l0.rowid DESC LIMIT 1)"
        }
    };
    let mut q = Script::new(backend);
    q.push(&format!(
        "SELECT n.id AS number_id, n.number, n.display, {LEASE_COLS} FROM tracking_numbers n \
         {latest} WHERE n.pool_id = "
    ))
    .val(pool.pool_id.clone())
    .push(" AND n.kind = 'pool'");
    if narrow {
        q.push(
            " AND (n.id IN (SELECT n2.id FROM tracking_numbers n2 \
             LEFT JOIN number_state st2 ON st2.number_id = n2.id \
             LEFT JOIN leases l2 ON l2.id = st2.lease_id WHERE n2.pool_id = ",
        )
        .val(pool.pool_id.clone())
        .push(" AND n2.kind = 'pool' AND (l2.id IS NULL OR ")
        .val(now)
        .push(&format!(
            " > {}) ORDER BY CASE WHEN l2.id IS NULL THEN 0 ELSE 1 END, l2.last_activity, n2.id \
             LIMIT {})",
            FREE_ENDED.replace("{l}", "l2"),
            askers.len()
        ));
        for (source, k) in &sources {
            q.push(
                " OR n.id IN (SELECT n3.id FROM tracking_numbers n3 \
                 JOIN number_state st3 ON st3.number_id = n3.id \
                 JOIN leases l3 ON l3.id = st3.lease_id WHERE n3.pool_id = ",
            )
            .val(pool.pool_id.clone())
            .push(" AND n3.kind = 'pool' AND l3.source = ")
            .val((*source).to_owned())
            .push(" AND ")
            .val(now)
            .push(&format!(
                " > {} ORDER BY l3.last_activity, n3.id LIMIT {k})",
                FREE_ENDED.replace("{l}", "l3"),
            ));
        }
        if !own.is_empty() {
            q.push(" OR l.session_id IN (");
            for id in &own {
                q.val((*id).to_owned());
            }
            q.push(")");
        }
        if !held.is_empty() {
            q.push(" OR n.id IN (");
            for id in &held {
                q.val((*id).to_owned());
            }
            q.push(")");
        }
        q.push(")");
    }
    let rows = conn
        .query(q, |r| {
            let number_id: String = r.get("number_id")?;
            let number = Printed::read(r.get("number")?, r.get("display")?);
            Ok((number_id, number, lease_row(r)?))
        })
        .await?;
    let mut slots = Vec::with_capacity(rows.len());
    let mut numbers = Vec::with_capacity(rows.len());
    for (number_id, number, latest) in rows {
        numbers.push((number_id.clone(), number));
        slots.push(Slot { number_id, latest });
    }
    let picture = Picture::new(slots);
    let mut printed = vec![None; picture.slots().len()];
    for (number_id, number) in numbers {
        if let Some(i) = picture.position(&number_id) {
            printed[i] = Some(number);
        }
    }
    Ok((picture, printed))
}

/// Run a script that opens and commits its own transaction on the page-load writer's own
/// connection, on this thread (see `script`); the first column of the rows it returns.
/// When a statement fails, nothing after it ran, so the transaction may still be open: it
/// is undone (an error from the `ROLLBACK` means none was open), and the writer let go (the
/// next batch opens a new one), so a connection left in a bad state cannot fail every
/// batch after it.
///
/// The caller is the visit writer, on its own thread (crates/server/src/visits.rs): a batch
/// is at most a few hundred page loads, a few milliseconds of SQLite's work.
fn run_in_transaction(
    script: Script<'_>,
    slot: &mut Option<rusqlite::Connection>,
) -> Result<Vec<String>> {
    let Some(w) = slot.as_mut() else {
        return Err(no_writer());
    };
    match script.run_sqlite(w) {
        Ok(rows) => Ok(rows),
        Err(e) => {
            let _ = w.execute_batch("ROLLBACK");
            *slot = None;
            Err(e)
        }
    }
}

/// The writer's place behind the write guard (SQLite only).
fn writer_slot<'a>(
    guard: &'a mut Option<tokio::sync::MutexGuard<'_, Option<rusqlite::Connection>>>,
) -> Result<&'a mut Option<rusqlite::Connection>> {
    guard.as_deref_mut().ok_or_else(no_writer)
}

pub(crate) fn no_writer() -> StoreError {
    StoreError::Unavailable("no writer connection".into())
}

/// Codes a site hands out before it may count as crowded.
const CODE_SAMPLE: u64 = 100;
/// A site is crowded once more than one code in this many clashed; it then hands out six
/// digits.
const CROWDED_AT: u64 = 20;
/// Candidates tried per clashing session in each round of the repair.
const CANDIDATES: usize = 4;

/// Each site's track codes in this process. Codes are handed out in turn from a random
/// start: five digits, so a site's live sessions share no code until 90 000 sessions were
/// opened within [`TRACK_CODE_LIFE`] (random draws clash far sooner: one draw in a hundred
/// with 900 sessions live), and the new sessions of a batch sit side by side in the code
/// index, so writing them touches a page or two of it rather than a page each. A code
/// that clashes anyway (another process, a restart, a busy site that went round) sends the
/// site's turn to a new random place; a site where more than one code in [`CROWDED_AT`]
/// clashed hands out six digits from then on.
#[derive(Default)]
pub(crate) struct TrackCodes {
    sites: HashMap<String, SiteCodes>,
}

struct SiteCodes {
    next: u32,
    six: bool,
    handed: u64,
    clashed: u64,
}

impl SiteCodes {
    fn new() -> Self {
        let mut s = Self {
            next: 0,
            six: false,
            handed: 0,
            clashed: 0,
        };
        s.jump();
        s
    }

    fn range(&self) -> std::ops::Range<u32> {
        if self.six {
            100_000..1_000_000
        } else {
            10_000..100_000
        }
    }

    fn jump(&mut self) {
        self.next = rand::thread_rng().gen_range(self.range());
    }

    fn take(&mut self) -> String {
        let code = self.next;
        self.next = if code + 1 >= self.range().end {
            self.range().start
        } else {
            code + 1
        };
        code.to_string()
    }

    /// Hand out six digits from now on.
    fn crowd(&mut self) {
        if !self.six {
            self.six = true;
            self.jump();
        }
    }

    fn record(&mut self, clashed: bool) {
        self.handed += 1;
        if !clashed {
            return;
        }
        self.clashed += 1;
        if self.handed >= CODE_SAMPLE && self.clashed * CROWDED_AT > self.handed {
            self.crowd();
        } else {
            self.jump();
        }
    }
}

impl TrackCodes {
    /// Work on the site's turn, started on first use. Called for every new session, so the
    /// site's id is copied only the first time.
    fn site<R>(&mut self, site_id: &str, f: impl FnOnce(&mut SiteCodes) -> R) -> R {
        if let Some(site) = self.sites.get_mut(site_id) {
            return f(site);
        }
        f(self
            .sites
            .entry(site_id.to_owned())
            .or_insert_with(SiteCodes::new))
    }
}

impl Store {
    fn track_codes(&self) -> std::sync::MutexGuard<'_, TrackCodes> {
        // A poisoned lock only means a panic elsewhere; any state of it is usable.
        self.track_codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A track code for a new session of `site_id` (checked once written: see
    /// [`fix_track_codes`]).
    fn new_track_code(&self, site_id: &str) -> String {
        self.track_codes().site(site_id, SiteCodes::take)
    }

    /// Count the codes the batch handed out and those that clashed.
    fn record_codes(&self, items: &[(NewSession, Target)], shown: &[Shown], clashes: &[String]) {
        let mut codes = self.track_codes();
        for ((s, _), sh) in items.iter().zip(shown) {
            let clashed = clashes.contains(&sh.session_id);
            codes.site(&s.site_id, |site| site.record(clashed));
        }
    }

    /// Candidate codes for a session whose code clashed: the next few in the site's turn
    /// (which the clash sent elsewhere); six digits once `crowded`.
    fn code_candidates(&self, site_id: &str, crowded: bool) -> Vec<String> {
        self.track_codes().site(site_id, |site| {
            if crowded {
                site.crowd();
            }
            (0..CANDIDATES).map(|_| site.take()).collect()
        })
    }
}

/// Draw new track codes for the sessions of the batch whose code clashed with a live
/// session of their site (or with one another). Each round takes a few candidates per
/// session from its site's turn and checks them all with one query per site against the
/// site's sessions active within [`TRACK_CODE_LIFE`]; a round where all of a session's
/// candidates were taken sends the site's turn elsewhere, and from the third round on the
/// site hands out six digits. The codes given are written with one statement.
async fn fix_track_codes(
    store: &Store,
    conn: &mut Conn<'_>,
    items: &[(NewSession, Target)],
    shown: &mut [Shown],
    clashes: &[String],
    now: Millis,
) -> Result<()> {
    if clashes.is_empty() {
        return Ok(());
    }
    // Codes the batch shows, by site: a new code must not be one of them either.
    let mut given: HashSet<(&str, String)> = items
        .iter()
        .zip(shown.iter())
        .filter(|(_, sh)| !clashes.contains(&sh.session_id))
        .map(|((s, _), sh)| (s.site_id.as_str(), sh.track_code.clone()))
        .collect();
    let mut open: Vec<usize> = (0..shown.len())
        .filter(|&i| clashes.contains(&shown[i].session_id))
        .collect();
    let mut fixed: Vec<usize> = Vec::with_capacity(open.len());
    for round in 0..6 {
        if open.is_empty() {
            break;
        }
        let mut by_site: BTreeMap<&str, Vec<(usize, Vec<String>)>> = BTreeMap::new();
        for &i in &open {
            // Two rounds that found nothing free: the site's codes are crowded.
            let draws = store.code_candidates(&items[i].0.site_id, round >= 2);
            by_site
                .entry(items[i].0.site_id.as_str())
                .or_default()
                .push((i, draws));
        }
        let mut still = Vec::new();
        for (site_id, wanted) in by_site {
            let mut q = Script::new(store.backend);
            q.push("SELECT DISTINCT track_code FROM sessions WHERE site_id = ")
                .val(site_id.to_owned())
                .push(" AND last_activity >= ")
                .val(now - TRACK_CODE_LIFE)
                .push(" AND track_code IN (");
            for code in wanted.iter().flat_map(|(_, d)| d) {
                q.val(code.clone());
            }
            q.push(")");
            let taken: HashSet<String> = conn
                .query(q, |r| r.get("track_code"))
                .await?
                .into_iter()
                .collect();
            for (i, draws) in wanted {
                let free = draws
                    .into_iter()
                    .find(|c| !taken.contains(c) && !given.contains(&(site_id, c.clone())));
                if let Some(code) = free {
                    given.insert((site_id, code.clone()));
                    shown[i].track_code = code;
                    fixed.push(i);
                } else {
                    store.track_codes().site(site_id, SiteCodes::jump);
                    still.push(i);
                }
            }
        }
        open = still;
    }
    if !open.is_empty() {
        return Err(StoreError::Conflict("no free track code".into()));
    }
    let mut w = Script::new(store.backend);
    w.push("UPDATE sessions SET track_code = CASE id");
    for &i in &fixed {
        w.push(" WHEN ")
            .val(shown[i].session_id.clone())
            .push(" THEN ")
            .val(shown[i].track_code.clone());
    }
    w.push(" END WHERE id IN (");
    for &i in &fixed {
        w.val(shown[i].session_id.clone());
    }
    w.push(")");
    conn.execute(w).await?;
    Ok(())
}

/// Which new sessions drew a track code a live session of their site shows (the rows'
/// `clash` column names them), checked before the new sessions are written.
///
/// On SQLite only the latest session that drew a code is read: a session stops counting
/// after [`TRACK_CODE_LIFE`] without activity, far past the time after which it cannot
/// continue, and a code is handed to a new session only when no session that shows it
/// counts, so of a code's sessions only the latest can still count. Looked up through
/// `sessions_code` from its end, that is one index seek and one row whatever the number of
/// sessions a busy site has drawn the code for over the years (each of which the plain
/// `EXISTS` reads). PostgreSQL has no row order to read it by, and asks whether any counts.
fn check_codes<'a>(
    script: &mut Script<'a>,
    items: &'a [(NewSession, Target)],
    shown: &[Shown],
    now: Millis,
) {
    script.push("SELECT v.column1 AS clash FROM (VALUES ");
    for (i, ((s, _), sh)) in items.iter().zip(shown).enumerate() {
        script.push(if i == 0 { "(" } else { ", (" });
        script
            .val(sh.session_id.clone())
            .val(s.site_id.as_str())
            .val(sh.track_code.clone())
            .push(")");
    }
    // The test of the code's sessions' activity (the latest one's on SQLite, any one's on
    // PostgreSQL), around the time it is compared to.
    let (before, after) = match script.backend() {
        Backend::Sqlite => (
            ") v WHERE (SELECT o.last_activity FROM sessions o WHERE o.site_id = v.column2 \
             AND o.track_code = v.column3 ORDER BY o.rowid DESC LIMIT 1) >= ",
            "",
        ),
        Backend::Postgres => (
            ") v WHERE EXISTS (SELECT 1 FROM sessions o WHERE o.site_id = v.column2 \
             AND o.track_code = v.column3 AND o.last_activity >= ",
            ")",
        ),
    };
    script
        .push(before)
        .val(now - TRACK_CODE_LIFE)
        .push(after)
        .end();
}

/// New sessions of the batch that drew the code an earlier one of their site drew in it.
fn codes_drawn_twice(items: &[(NewSession, Target)], shown: &[Shown]) -> Vec<String> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(shown.len());
    items
        .iter()
        .zip(shown)
        .filter(|((s, _), sh)| !seen.insert((s.site_id.as_str(), sh.track_code.as_str())))
        .map(|(_, sh)| sh.session_id.clone())
        .collect()
}

/// What a new session holds.
#[derive(Clone, Default)]
struct Held {
    pool_id: Option<String>,
    number_id: Option<String>,
    lease_id: Option<String>,
    exhausted: Option<&'static str>,
}

/// The new sessions' rows; their strings are bound from `items`, not copied.
fn insert_sessions<'a>(
    script: &mut Script<'a>,
    items: &'a [(NewSession, Target)],
    shown: &[Shown],
    held: Vec<Held>,
    now: Millis,
) {
    script.write("INSERT").push(&format!(
        "INTO sessions ({SESSION_COLS}, landing_title, landing_in_row, exhausted) VALUES "
    ));
    for (i, (((s, _), sh), h)) in items.iter().zip(shown).zip(held).enumerate() {
        script.push(if i == 0 { "(" } else { ", (" });
        script
            .val(sh.session_id.clone())
            .val(s.site_id.as_str())
            .val(s.visitor_id.as_str())
            .val(now)
            .val(now)
            .val(sh.track_code.clone())
            .val(s.channel.as_str())
            .val(s.source.as_str())
            .val(s.medium.as_str())
            .val(s.campaign.as_deref())
            .val(s.content.as_deref())
            .val(s.keyword.as_deref())
            .val(s.referrer.as_deref())
            .val(s.referrer_domain.as_deref())
            .val(s.landing_url.as_str())
            .val(s.landing_path.as_str())
            .val(s.gclid.as_deref())
            .val(s.yclid.as_deref())
            .val(s.fbclid.as_deref())
            .val(s.ga_client_id.as_deref())
            .val(s.ym_client_id.as_deref())
            .val(s.user_agent.as_deref())
            .val(s.device.as_deref())
            .val(s.browser.as_deref())
            .val(s.os.as_deref())
            .val(s.ip.as_deref())
            .val(s.city.as_deref())
            .val(s.screen.as_deref())
            .val(s.lang.as_deref())
            .val(i64::from(s.is_bot))
            .val(s.rule_id.as_deref())
            .val(h.pool_id)
            .val(h.number_id)
            .val(h.lease_id)
            .val(1_i64)
            // The first page view: see `Store::session_pages`.
            .val(s.title.as_deref())
            .val(1_i64)
            .val(h.exhausted)
            .push(")");
    }
    script.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 100 * engine::HOUR;

    /// New sessions of `site` that drew `codes`.
    fn drawn(site: &str, codes: &[&str]) -> (Vec<(NewSession, Target)>, Vec<Shown>) {
        let items = codes
            .iter()
            .map(|_| {
                let s = NewSession {
                    site_id: site.to_owned(),
                    ..NewSession::default()
                };
                (s, Target::None)
            })
            .collect();
        let shown = codes
            .iter()
            .enumerate()
            .map(|(i, code)| Shown {
                session_id: format!("new-{i}"),
                visitor_id: "v".into(),
                track_code: (*code).to_owned(),
                number: None,
                allocation: None,
                hold_ms: None,
                is_bot: false,
            })
            .collect();
        (items, shown)
    }

    /// Sessions written in this order: `(id, site, code, last activity)`.
    fn sessions(db: &rusqlite::Connection, rows: &[(&str, &str, &str, Millis)]) {
        for (id, site, code, at) in rows {
            db.execute(
                "INSERT INTO sessions (id, site_id, visitor_id, started_at, last_activity, \
                 track_code, channel, source, medium, landing_url, landing_path, is_bot, \
                 page_count) VALUES (?1, ?2, 'v', ?3, ?3, ?4, 'direct', '(direct)', '(none)', \
                 'https://shop.example/', '/', 0, 1)",
                rusqlite::params![id, site, at, code],
            )
            .unwrap_or_else(|e| panic!("insert {id}: {e}"));
        }
    }

    #[test]
    fn a_code_clashes_when_its_latest_session_still_counts() {
        let db = crate::migrate::sqlite_in_memory();
        let long_ago = NOW - TRACK_CODE_LIFE - 1;
        sessions(
            &db,
            &[
                // 11111: drawn long ago, then again by a session that still counts.
                ("a", "site", "11111", long_ago),
                ("b", "site", "11111", NOW - engine::HOUR),
                // 22222: its only session stopped counting.
                ("c", "site", "22222", long_ago),
                // 33333: another site's.
                ("d", "other", "33333", NOW),
            ],
        );
        let (items, shown) = drawn("site", &["11111", "22222", "33333", "44444"]);
        let mut script = Script::new(Backend::Sqlite);
        check_codes(&mut script, &items, &shown, NOW);
        let plan: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {}", script.texts()[0]))
            .and_then(|mut q| {
                let nulls = vec![rusqlite::types::Null; q.parameter_count()];
                q.query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))?
                    .collect()
            })
            .unwrap_or_else(|e| panic!("plan: {e}"));
        assert!(
            plan.iter().any(|l| l.contains("sessions_code"))
                && !plan.iter().any(|l| l.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        let clashes = script
            .run_sqlite(&db)
            .unwrap_or_else(|e| panic!("check: {e}"));
        assert_eq!(clashes, ["new-0"]);
    }

    #[test]
    fn a_batch_that_drew_one_code_twice_mends_the_second() {
        let (mut items, mut shown) = drawn("site", &["11111", "22222", "11111"]);
        let (other, other_shown) = drawn("other", &["11111"]);
        items.extend(other);
        shown.extend(other_shown.into_iter().map(|s| Shown {
            session_id: "other-0".into(),
            ..s
        }));
        assert_eq!(codes_drawn_twice(&items, &shown), ["new-2"]);
    }
}
