//! The engine's store operations: sessions, atomic number allocation, heartbeats, calls.
//!
//! Each public operation is one transaction. Allocation serialises per pool: SQLite through
//! the in-process writer lock, PostgreSQL through `SELECT ... FOR UPDATE` on the pool row,
//! so two calltrail nodes sharing a database never lease one number twice.

use calltrail_core::engine::{self, Allocation, Lease, Millis};
use calltrail_core::ExhaustionPolicy;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use crate::batch::{Asker, Continuing};
use crate::script::{Conn, Row, Script};
use crate::{from_ms, Backend, PageView, Result, Session, Store, StoreError};

/// How a session's number is chosen.
#[derive(Debug, Clone)]
pub enum Target {
    /// Leave the site's own number.
    None,
    /// Show this static number.
    Static { number_id: String, number: Printed },
    /// Lease a number from a pool.
    Pool(PoolTarget),
}

#[derive(Debug, Clone)]
pub struct PoolTarget {
    pub pool_id: String,
    pub hold_minutes: i64,
    pub policy: ExhaustionPolicy,
    /// The pool's fallback number: `(id, number)`.
    pub fallback: Option<(String, Printed)>,
}

/// A tracking number as visitors are shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Printed {
    /// E.164.
    pub number: String,
    /// As the site prints it (`+7 495 123-45-67`), written with the number (migration 0010).
    pub display: String,
}

impl Printed {
    /// A number and the display form read with it (see [`crate::displayed`]).
    pub(crate) fn read(number: String, display: Option<String>) -> Self {
        Self {
            display: crate::displayed(&number, display),
            number,
        }
    }
}

impl PoolTarget {
    pub(crate) fn hold(&self) -> Millis {
        self.hold_minutes * engine::MINUTE
    }
}

impl crate::TrackingNumber {
    /// The number as visitors are shown it.
    pub fn printed(&self) -> Printed {
        Printed {
            number: self.number.clone(),
            display: self.display.clone(),
        }
    }
}

/// A session to open, with everything known about its first view.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub site_id: String,
    pub visitor_id: String,
    pub channel: String,
    pub source: String,
    pub medium: String,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub keyword: Option<String>,
    pub referrer: Option<String>,
    pub referrer_domain: Option<String>,
    pub landing_url: String,
    pub landing_path: String,
    pub title: Option<String>,
    pub gclid: Option<String>,
    pub yclid: Option<String>,
    pub fbclid: Option<String>,
    pub ga_client_id: Option<String>,
    pub ym_client_id: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub ip: Option<String>,
    pub city: Option<String>,
    pub screen: Option<String>,
    pub lang: Option<String>,
    pub is_bot: bool,
    pub rule_id: Option<String>,
    /// The visitor id came from the browser (the visitor may have held numbers before).
    pub known_visitor: bool,
}

/// A page view or event to add to a continuing session.
#[derive(Debug, Clone)]
pub struct NewPage {
    pub kind: String,
    pub url: String,
    pub title: Option<String>,
}

/// What a visit or heartbeat ends with: the number to show and how it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub session_id: String,
    pub visitor_id: String,
    pub track_code: String,
    /// The tracking number to show, `None` to keep the site's own.
    pub number: Option<Printed>,
    pub allocation: Option<Allocation>,
    /// The hold of the pool whose number the session holds, when it holds one (a
    /// heartbeat can then be answered from memory and written back later).
    pub hold_ms: Option<i64>,
    /// The session was opened for a bot (which sees the site's own number).
    pub is_bot: bool,
}

/// A tracking number found by its E.164 form, with its account.
#[derive(Debug, Clone)]
pub struct NumberOwner {
    pub account_id: String,
    pub site_id: String,
    pub number_id: String,
    pub kind: String,
    pub source: Option<String>,
}

pub(crate) const LEASE_COLS: &str =
    "l.id AS l_id, l.number_id AS l_number_id, l.session_id AS l_session_id, \
    l.visitor_id AS l_visitor_id, l.source AS l_source, l.leased_at AS l_leased_at, \
    l.last_activity AS l_last_activity, l.hold_until AS l_hold_until, l.ended_at AS l_ended_at";

pub(crate) fn lease_row(r: &Row<'_, '_>) -> Result<Option<Lease>> {
    let Some(id) = r.get::<Option<String>>("l_id")? else {
        return Ok(None);
    };
    Ok(Some(Lease {
        id,
        number_id: r.get("l_number_id")?,
        session_id: r.get("l_session_id")?,
        visitor_id: r.get("l_visitor_id")?,
        source: r.get("l_source")?,
        leased_at: r.get("l_leased_at")?,
        last_activity: r.get("l_last_activity")?,
        hold_until: r.get("l_hold_until")?,
        ended_at: r.get("l_ended_at")?,
    }))
}

pub(crate) const SESSION_COLS: &str = "id, site_id, visitor_id, started_at, last_activity, track_code, channel, \
    source, medium, campaign, content, keyword, referrer, referrer_domain, landing_url, landing_path, \
    gclid, yclid, fbclid, ga_client_id, ym_client_id, user_agent, device, browser, os, ip, city, screen, \
    lang, is_bot, rule_id, pool_id, number_id, lease_id, page_count";

/// A session row as read: [`SESSION_COLS`] with the page count counted from its page views
/// (and the landing page, when the row holds it) rather than read from `page_count`, which
/// keeps the 1 it was written with. Page loads add page views without touching the session
/// row (`Store::add_pages`), and a count made from them cannot drift from them.
pub(crate) static SESSION_READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    SESSION_COLS.replace(
        "page_count",
        "(landing_in_row + (SELECT COUNT(*) FROM page_views p WHERE p.session_id = sessions.id)) \
         AS page_count",
    )
});

pub(crate) fn session_row(r: &AnyRow) -> Result<Session> {
    Ok(Session {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        visitor_id: r.try_get("visitor_id")?,
        started_at: from_ms(r.try_get("started_at")?),
        last_activity: from_ms(r.try_get("last_activity")?),
        track_code: r.try_get("track_code")?,
        channel: r.try_get("channel")?,
        source: r.try_get("source")?,
        medium: r.try_get("medium")?,
        campaign: r.try_get("campaign")?,
        content: r.try_get("content")?,
        keyword: r.try_get("keyword")?,
        referrer: r.try_get("referrer")?,
        referrer_domain: r.try_get("referrer_domain")?,
        landing_url: r.try_get("landing_url")?,
        landing_path: r.try_get("landing_path")?,
        gclid: r.try_get("gclid")?,
        yclid: r.try_get("yclid")?,
        fbclid: r.try_get("fbclid")?,
        ga_client_id: r.try_get("ga_client_id")?,
        ym_client_id: r.try_get("ym_client_id")?,
        user_agent: r.try_get("user_agent")?,
        device: r.try_get("device")?,
        browser: r.try_get("browser")?,
        os: r.try_get("os")?,
        ip: r.try_get("ip")?,
        city: r.try_get("city")?,
        screen: r.try_get("screen")?,
        lang: r.try_get("lang")?,
        is_bot: r.try_get::<i64, _>("is_bot")? != 0,
        rule_id: r.try_get("rule_id")?,
        pool_id: r.try_get("pool_id")?,
        number_id: r.try_get("number_id")?,
        lease_id: r.try_get("lease_id")?,
        page_count: r.try_get("page_count")?,
    })
}

impl Shown {
    /// The E.164 form of the number shown, if any.
    pub fn e164(&self) -> Option<&str> {
        self.number.as_ref().map(|p| p.number.as_str())
    }

    /// How the number shown is printed, if any.
    pub fn display(&self) -> Option<&str> {
        self.number.as_ref().map(|p| p.display.as_str())
    }
}

/// A session's state inside a transaction.
pub(crate) struct Live {
    pub id: String,
    pub visitor_id: String,
    pub source: String,
    pub track_code: String,
    pub pool_id: Option<String>,
    pub number_id: Option<String>,
    /// The number `number_id` names, read with the session.
    pub number: Option<Printed>,
    pub lease_id: Option<String>,
}

impl Store {
    /// Continue a session seen within the session timeout: record the page (if any),
    /// extend its lease or find it a number again. `None` when there is no such live session.
    pub async fn continue_session(
        &self,
        site_id: &str,
        session_id: &str,
        page: Option<&NewPage>,
        pools: &[PoolTarget],
        now: Millis,
    ) -> Result<Option<Shown>> {
        let req = Continuing {
            site_id: site_id.to_owned(),
            session_id: session_id.to_owned(),
            page: page.cloned(),
            pools: pools.to_vec(),
        };
        let mut shown = self.continue_chunk(&[req], now).await?;
        Ok(shown.pop().flatten())
    }

    /// A continuing session of a pool whose lease ran out (or was taken): the pool finds
    /// it a number again; the writes go to `script`, the answer to `shown`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn place_again<'s>(
        &self,
        conn: &mut Conn<'_>,
        script: &mut Script<'s>,
        site_id: &'s str,
        s: &Live,
        pool: &'s PoolTarget,
        now: Millis,
        shown: &mut Shown,
    ) -> Result<()> {
        let asker = Asker {
            session_id: &s.id,
            visitor_id: &s.visitor_id,
            source: &s.source,
            continuing: true,
            known_visitor: true,
        };
        let placed = self
            .allocate_many(conn, script, site_id, pool, &[asker], now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Conflict("no allocation".into()))?;
        if !matches!(placed.alloc, Allocation::Keep { .. }) {
            script.push("UPDATE sessions SET pool_id = ");
            script
                .val(pool.pool_id.clone())
                .push(", number_id = ")
                .val(placed.number_id.clone())
                .push(", lease_id = ")
                .val(placed.lease_id.clone())
                .push(" WHERE id = ")
                .val(s.id.clone())
                .end();
        }
        shown.hold_ms = (!matches!(placed.alloc, Allocation::Exhausted)).then(|| pool.hold());
        shown.number = placed.number;
        shown.allocation = Some(placed.alloc);
        Ok(())
    }

    /// Write heartbeats answered from memory: each `(session id, at, hold)` moves the
    /// session's live lease (the one its row names) and its activity on, as a heartbeat
    /// through the store would. One transaction for the lot; a lease that ended meanwhile
    /// is left alone.
    pub async fn flush_heartbeats(&self, beats: &[(String, Millis, Millis)]) -> Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let _guard = self.write_guard().await;
        match self.write_heartbeats(beats).await {
            // The pools' pictures move the same leases on.
            Ok(moved) => {
                self.seen_beats(&moved);
                Ok(())
            }
            // What was written is not known: pools are read afresh next time.
            Err(e) => {
                self.forget_pools();
                Err(e)
            }
        }
    }

    /// The leases the heartbeats moved on, each with the beat's `(at, hold)`. A lease is
    /// found through its session's row (`sessions.lease_id`, the lease the session shows),
    /// not by an index of leases by session, which every new lease would have to write.
    /// Only a number's latest lease moves: one whose hold ran out before its number went
    /// to someone else is not marked ended (allocation does not rewrite it), and a beat
    /// from before that must not make it live again beside the new one.
    async fn write_heartbeats(
        &self,
        beats: &[(String, Millis, Millis)],
    ) -> Result<Vec<(String, Millis, Millis)>> {
        use sqlx::Row as _;
        let mut tx = self.pool.begin().await?;
        let mut moved = Vec::with_capacity(beats.len());
        for (session_id, at, hold) in beats {
            let lease = sqlx::query(
                "UPDATE leases SET last_activity = $1, hold_until = $2 \
                 WHERE id = (SELECT lease_id FROM sessions WHERE id = $3) \
                 AND ended_at IS NULL AND hold_until >= $1 AND last_activity <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM leases l2 WHERE l2.number_id = leases.number_id \
                 AND l2.leased_at > leases.leased_at) RETURNING id",
            )
            .bind(at)
            .bind(at + hold)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = lease {
                moved.push((row.try_get::<String, _>(0)?, *at, *hold));
            }
            sqlx::query(
                "UPDATE sessions SET last_activity = $1 WHERE id = $2 AND last_activity <= $1",
            )
            .bind(at)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    pub async fn get_session(&self, site_id: &str, session_id: &str) -> Result<Session> {
        let r = sqlx::query(&format!(
            "SELECT {} FROM sessions WHERE id = $1 AND site_id = $2",
            *SESSION_READ
        ))
        .bind(session_id)
        .bind(site_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("session"))?;
        session_row(&r)
    }

    /// A session's page views and events in order. The first page view of a session opened
    /// since migration 0005 is its landing page, kept in the session row.
    pub async fn session_pages(&self, session_id: &str) -> Result<Vec<PageView>> {
        let rows = sqlx::query(
            "SELECT at, kind, url, title FROM (\
             SELECT started_at AS at, 'pageview' AS kind, landing_url AS url, landing_title AS title, \
             '' AS id FROM sessions WHERE id = $1 AND landing_in_row = 1 \
             UNION ALL SELECT at, kind, url, title, id FROM page_views WHERE session_id = $1\
             ) p ORDER BY at, id LIMIT 500",
        )
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PageView {
                    at: from_ms(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    url: r.try_get("url")?,
                    title: r.try_get("title")?,
                })
            })
            .collect()
    }

    /// The live session of a site that shows this track code.
    pub async fn session_by_track_code(
        &self,
        site_id: &str,
        code: &str,
        now: Millis,
    ) -> Result<Option<Session>> {
        let r = sqlx::query(&format!(
            "SELECT {} FROM sessions WHERE site_id = $1 AND track_code = $2 AND last_activity >= $3 \
             ORDER BY last_activity DESC LIMIT 1",
            *SESSION_READ
        ))
        .bind(site_id)
        .bind(code)
        .bind(now - TRACK_CODE_LIFE)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(session_row).transpose()
    }

    /// Every lease of a number, in the order they began (for tests and the pool health view).
    pub async fn number_leases(&self, number_id: &str) -> Result<Vec<Lease>> {
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLS} FROM leases l WHERE l.number_id = $1 ORDER BY l.leased_at, l.id"
        ))
        .bind(number_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|r| lease_row(&Row::Any(r)).transpose())
            .collect()
    }

    /// Leases of a number that began at or before `at`, latest first (what matching needs).
    pub async fn leases_before(&self, number_id: &str, at: Millis) -> Result<Vec<Lease>> {
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLS} FROM leases l WHERE l.number_id = $1 AND l.leased_at <= $2 \
             ORDER BY l.leased_at DESC LIMIT 50"
        ))
        .bind(number_id)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|r| lease_row(&Row::Any(r)).transpose())
            .collect()
    }

    pub async fn lease_session(&self, lease_id: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT session_id FROM leases WHERE id = $1")
            .bind(lease_id)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| r.try_get("session_id"))
            .transpose()
            .map_err(Into::into)
    }

    /// Pool exhaustions of a site since `since`: `(pool_id, count)`. New sessions keep
    /// theirs in their rows (migration 0008), others are rows of `exhaustions`. On SQLite the
    /// sessions since `since` are a range of their time-ordered ids (no index is written
    /// for this); PostgreSQL reads its partial index.
    pub async fn exhaustion_counts(
        &self,
        site_id: &str,
        since: Millis,
    ) -> Result<Vec<(String, i64)>> {
        let sqlite = self.backend == Backend::Sqlite;
        let id_range = if sqlite { "id >= $3 AND " } else { "" };
        let sql = format!(
            "SELECT pool_id, COUNT(*) AS n FROM (\
             SELECT pool_id FROM exhaustions WHERE site_id = $1 AND at >= $2 \
             UNION ALL SELECT pool_id FROM sessions WHERE {id_range}site_id = $1 \
             AND started_at >= $2 AND exhausted IS NOT NULL\
             ) e GROUP BY pool_id ORDER BY pool_id"
        );
        let mut q = sqlx::query(&sql).bind(site_id).bind(since);
        if sqlite {
            q = q.bind(crate::id_floor(since));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("pool_id")?, r.try_get("n")?)))
            .collect()
    }

    // ----- calls -----

    /// The tracking number with this E.164 form, wherever it is.
    pub async fn number_owner(&self, e164: &str) -> Result<Option<NumberOwner>> {
        let r = sqlx::query(
            "SELECT account_id, site_id, id, kind, source FROM tracking_numbers WHERE number = $1",
        )
        .bind(e164)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(NumberOwner {
                account_id: r.try_get("account_id")?,
                site_id: r.try_get("site_id")?,
                number_id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                source: r.try_get("source")?,
            })
        })
        .transpose()
    }

    /// Visitors the caller's earlier, confidently attributed calls on a site went to.
    pub async fn caller_visitors(
        &self,
        site_id: &str,
        caller: &str,
        before: Millis,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT visitor_id FROM calls WHERE site_id = $1 AND caller = $2 AND started_at < $3 \
             AND visitor_id IS NOT NULL AND confidence >= $4 ORDER BY started_at DESC LIMIT 5",
        )
        .bind(site_id)
        .bind(caller)
        .bind(before)
        .bind(engine::TRUSTED_CALL_CONFIDENCE)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<String> = Vec::new();
        for r in &rows {
            let v: String = r.try_get("visitor_id")?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// How long a track code stays reserved for its session after the last activity.
pub const TRACK_CODE_LIFE: Millis = 24 * engine::HOUR;
