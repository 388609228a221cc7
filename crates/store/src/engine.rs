//! The engine's store operations: sessions, atomic number allocation, heartbeats, calls.
//!
//! Each public operation is one transaction. Allocation serialises per pool: SQLite through
//! the in-process writer lock, PostgreSQL through `SELECT ... FOR UPDATE` on the pool row,
//! so two calltrail nodes sharing a database never lease one number twice.

use std::fmt::Write as _;

use calltrail_core::engine::{self, Allocation, Lease, Millis, Requester, Slot};
use calltrail_core::ExhaustionPolicy;
use rand::Rng;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{from_ms, new_id, Backend, PageView, Result, Session, Store, StoreError};

/// How a session's number is chosen.
#[derive(Debug, Clone)]
pub enum Target {
    /// Leave the site's own number.
    None,
    /// Show this static number.
    Static { number_id: String, number: String },
    /// Lease a number from a pool.
    Pool(PoolTarget),
}

#[derive(Debug, Clone)]
pub struct PoolTarget {
    pub pool_id: String,
    pub hold_minutes: i64,
    pub policy: ExhaustionPolicy,
    /// The pool's fallback number: `(id, E.164)`.
    pub fallback: Option<(String, String)>,
}

impl PoolTarget {
    fn hold(&self) -> Millis {
        self.hold_minutes * engine::MINUTE
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
    /// The tracking number to show (E.164), `None` to keep the site's own.
    pub number: Option<String>,
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

const LEASE_COLS: &str = "l.id AS l_id, l.number_id AS l_number_id, l.session_id AS l_session_id, \
    l.visitor_id AS l_visitor_id, l.source AS l_source, l.leased_at AS l_leased_at, \
    l.last_activity AS l_last_activity, l.hold_until AS l_hold_until, l.ended_at AS l_ended_at";

fn lease_row(r: &AnyRow) -> Result<Option<Lease>> {
    let Some(id) = r.try_get::<Option<String>, _>("l_id")? else {
        return Ok(None);
    };
    Ok(Some(Lease {
        id,
        number_id: r.try_get("l_number_id")?,
        session_id: r.try_get("l_session_id")?,
        visitor_id: r.try_get("l_visitor_id")?,
        source: r.try_get("l_source")?,
        leased_at: r.try_get("l_leased_at")?,
        last_activity: r.try_get("l_last_activity")?,
        hold_until: r.try_get("l_hold_until")?,
        ended_at: r.try_get("l_ended_at")?,
    }))
}

pub(crate) const SESSION_COLS: &str = "id, site_id, visitor_id, started_at, last_activity, track_code, channel, \
    source, medium, campaign, content, keyword, referrer, referrer_domain, landing_url, landing_path, \
    gclid, yclid, fbclid, ga_client_id, ym_client_id, user_agent, device, browser, os, ip, city, screen, \
    lang, is_bot, rule_id, pool_id, number_id, lease_id, page_count";

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

/// A session's state inside a transaction.
struct Live {
    id: String,
    visitor_id: String,
    source: String,
    track_code: String,
    pool_id: Option<String>,
    number_id: Option<String>,
    /// The E.164 form of `number_id`, read with the session.
    number: Option<String>,
    lease_id: Option<String>,
}

impl Store {
    /// Open a session and give it its number, in one transaction.
    pub async fn open_session(
        &self,
        s: &NewSession,
        target: &Target,
        now: Millis,
    ) -> Result<Shown> {
        let _guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let id = new_id();
        let code = unique_track_code(&mut tx, &s.site_id, now).await?;
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35)"
        ))
        .bind(&id)
        .bind(&s.site_id)
        .bind(&s.visitor_id)
        .bind(now)
        .bind(now)
        .bind(&code)
        .bind(&s.channel)
        .bind(&s.source)
        .bind(&s.medium)
        .bind(s.campaign.clone())
        .bind(s.content.clone())
        .bind(s.keyword.clone())
        .bind(s.referrer.clone())
        .bind(s.referrer_domain.clone())
        .bind(&s.landing_url)
        .bind(&s.landing_path)
        .bind(s.gclid.clone())
        .bind(s.yclid.clone())
        .bind(s.fbclid.clone())
        .bind(s.ga_client_id.clone())
        .bind(s.ym_client_id.clone())
        .bind(s.user_agent.clone())
        .bind(s.device.clone())
        .bind(s.browser.clone())
        .bind(s.os.clone())
        .bind(s.ip.clone())
        .bind(s.city.clone())
        .bind(s.screen.clone())
        .bind(s.lang.clone())
        .bind(i64::from(s.is_bot))
        .bind(s.rule_id.clone())
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(1_i64)
        .execute(&mut *tx)
        .await?;
        insert_page(
            &mut tx,
            &id,
            now,
            "pageview",
            &s.landing_url,
            s.title.as_deref(),
        )
        .await?;
        let live = Live {
            id,
            visitor_id: s.visitor_id.clone(),
            source: s.source.clone(),
            track_code: code,
            pool_id: None,
            number_id: None,
            number: None,
            lease_id: None,
        };
        let mut shown = self
            .apply_target(&mut tx, &s.site_id, &live, target, now)
            .await?;
        shown.is_bot = s.is_bot;
        tx.commit().await?;
        Ok(shown)
    }

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
        let _guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT s.id, s.visitor_id, s.source, s.track_code, s.pool_id, s.number_id, s.lease_id, \
             s.last_activity, n.number, n.kind FROM sessions s \
             LEFT JOIN tracking_numbers n ON n.id = s.number_id \
             WHERE s.id = $1 AND s.site_id = $2",
        )
        .bind(session_id)
        .bind(site_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let last: Millis = row.try_get("last_activity")?;
        if now - last > engine::SESSION_TIMEOUT {
            return Ok(None);
        }
        let live = Live {
            id: row.try_get("id")?,
            visitor_id: row.try_get("visitor_id")?,
            source: row.try_get("source")?,
            track_code: row.try_get("track_code")?,
            pool_id: row.try_get("pool_id")?,
            number_id: row.try_get("number_id")?,
            number: row.try_get("number")?,
            lease_id: row.try_get("lease_id")?,
        };
        let shown_number = live.number.clone();
        let kind: Option<String> = row.try_get("kind")?;
        let counted = i64::from(page.is_some());
        sqlx::query(
            "UPDATE sessions SET last_activity = $1, page_count = page_count + $2 WHERE id = $3",
        )
        .bind(now.max(last))
        .bind(counted)
        .bind(&live.id)
        .execute(&mut *tx)
        .await?;
        if let Some(p) = page {
            insert_page(&mut tx, &live.id, now, &p.kind, &p.url, p.title.as_deref()).await?;
        }
        let pool = live
            .pool_id
            .as_deref()
            .and_then(|pid| pools.iter().find(|p| p.pool_id == pid));
        let shown = match pool {
            Some(pool) => {
                let target = Target::Pool(pool.clone());
                self.apply_target(&mut tx, site_id, &live, &target, now)
                    .await?
            }
            // A static number, or a session that keeps the site's own number.
            None => Shown {
                session_id: live.id.clone(),
                visitor_id: live.visitor_id.clone(),
                track_code: live.track_code.clone(),
                number: shown_number.filter(|_| kind.as_deref() == Some("static")),
                allocation: None,
                is_bot: false,
                hold_ms: None,
            },
        };
        tx.commit().await?;
        Ok(Some(shown))
    }

    async fn apply_target(
        &self,
        tx: &mut Transaction<'static, Any>,
        site_id: &str,
        s: &Live,
        target: &Target,
        now: Millis,
    ) -> Result<Shown> {
        let mut shown = Shown {
            session_id: s.id.clone(),
            visitor_id: s.visitor_id.clone(),
            track_code: s.track_code.clone(),
            number: None,
            allocation: None,
            is_bot: false,
            hold_ms: None,
        };
        match target {
            Target::None => {}
            Target::Static { number_id, number } => {
                if s.number_id.as_deref() != Some(number_id) {
                    sqlx::query("UPDATE sessions SET number_id = $1 WHERE id = $2")
                        .bind(number_id)
                        .bind(&s.id)
                        .execute(&mut **tx)
                        .await?;
                }
                shown.number = Some(number.clone());
            }
            Target::Pool(pool) => {
                // The common case first: the session's lease is alive, move it on.
                if let Some(lease_id) = &s.lease_id {
                    let hit = sqlx::query(
                        "UPDATE leases SET last_activity = $1, hold_until = $2 \
                         WHERE id = $3 AND ended_at IS NULL AND hold_until >= $1 AND last_activity <= $1",
                    )
                    .bind(now)
                    .bind(now + pool.hold())
                    .bind(lease_id)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if hit == 1 {
                        shown.hold_ms = Some(pool.hold());
                        shown.number.clone_from(&s.number);
                        shown.allocation = s.number_id.clone().map(|number_id| Allocation::Keep {
                            number_id,
                            lease_id: lease_id.clone(),
                        });
                        return Ok(shown);
                    }
                }
                let (alloc, number) = self.allocate_in(tx, site_id, s, pool, now).await?;
                shown.hold_ms = (!matches!(alloc, Allocation::Exhausted)).then(|| pool.hold());
                shown.number = number;
                shown.allocation = Some(alloc);
            }
        }
        Ok(shown)
    }

    /// The atomic allocation of DESIGN.md §4, inside the caller's transaction.
    async fn allocate_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        site_id: &str,
        s: &Live,
        pool: &PoolTarget,
        now: Millis,
    ) -> Result<(Allocation, Option<String>)> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM pools WHERE id = $1 FOR UPDATE")
                .bind(&pool.pool_id)
                .execute(&mut **tx)
                .await?;
        }
        let held_before: Vec<String> = sqlx::query(
            "SELECT number_id FROM leases WHERE site_id = $1 AND visitor_id = $2 AND pool_id = $3 \
             ORDER BY leased_at DESC LIMIT 5",
        )
        .bind(site_id)
        .bind(&s.visitor_id)
        .bind(&pool.pool_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("number_id"))
        .collect::<Result<_, _>>()?;
        // `engine::allocate` over the whole pool decides as it does over the only slots it
        // can pick: the session's own, those held before, the free one idle the longest
        // (chosen here in SQL, same order: never used first, then `last_activity`, then id),
        // and the free one idle the longest whose last holder had the session's source.
        // Reading every number each visit made a visit cost grow with the pool. Reuse
        // compares the live leases, so it still reads them all.
        let mut sql = format!(
            "SELECT n.id AS number_id, n.number, {LEASE_COLS} FROM tracking_numbers n \
             LEFT JOIN number_state st ON st.number_id = n.id \
             LEFT JOIN leases l ON l.id = st.lease_id \
             WHERE n.pool_id = $1 AND n.kind = 'pool'"
        );
        let narrow = pool.policy != ExhaustionPolicy::Reuse;
        if narrow {
            sql.push_str(
                " AND (l.session_id = $2 OR n.id = (SELECT n2.id FROM tracking_numbers n2 \
                 LEFT JOIN number_state st2 ON st2.number_id = n2.id \
                 LEFT JOIN leases l2 ON l2.id = st2.lease_id \
                 WHERE n2.pool_id = $1 AND n2.kind = 'pool' AND (l2.id IS NULL OR $3 > CASE \
                 WHEN l2.ended_at IS NOT NULL AND l2.ended_at < l2.hold_until THEN l2.ended_at \
                 ELSE l2.hold_until END) \
                 ORDER BY CASE WHEN l2.id IS NULL THEN 0 ELSE 1 END, l2.last_activity, n2.id LIMIT 1) \
                 OR n.id = (SELECT n3.id FROM tracking_numbers n3 \
                 JOIN number_state st3 ON st3.number_id = n3.id \
                 JOIN leases l3 ON l3.id = st3.lease_id \
                 WHERE n3.pool_id = $1 AND n3.kind = 'pool' AND l3.source = $4 AND $3 > CASE \
                 WHEN l3.ended_at IS NOT NULL AND l3.ended_at < l3.hold_until THEN l3.ended_at \
                 ELSE l3.hold_until END \
                 ORDER BY l3.last_activity, n3.id LIMIT 1)",
            );
            for i in 0..held_before.len() {
                let _ = write!(sql, " OR n.id = ${}", i + 5);
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql).bind(&pool.pool_id);
        if narrow {
            q = q.bind(&s.id).bind(now).bind(&s.source);
            for h in &held_before {
                q = q.bind(h);
            }
        }
        let rows = q.fetch_all(&mut **tx).await?;
        let mut slots = Vec::with_capacity(rows.len());
        let mut numbers = Vec::with_capacity(rows.len());
        for r in &rows {
            let number_id: String = r.try_get("number_id")?;
            numbers.push((number_id.clone(), r.try_get::<String, _>("number")?));
            slots.push(Slot {
                number_id,
                latest: lease_row(r)?,
            });
        }
        let req = Requester {
            session_id: &s.id,
            visitor_id: &s.visitor_id,
            source: &s.source,
            held_before: &held_before,
        };
        let alloc = engine::allocate(&slots, &req, pool.policy, now);
        let number_of = |id: &str| {
            numbers
                .iter()
                .find(|(n, _)| n == id)
                .map(|(_, e)| e.clone())
        };
        let (number_id, number) = match &alloc {
            Allocation::Keep {
                number_id,
                lease_id,
            } => {
                // A request that read the clock earlier must not move activity back.
                sqlx::query("UPDATE leases SET last_activity = $1, hold_until = $2 WHERE id = $3 AND last_activity <= $1")
                    .bind(now)
                    .bind(now + pool.hold())
                    .bind(lease_id)
                    .execute(&mut **tx)
                    .await?;
                (Some(number_id.clone()), number_of(number_id))
            }
            Allocation::Regain { number_id }
            | Allocation::Fresh { number_id }
            | Allocation::Reuse { number_id, .. } => {
                let previous = slots
                    .iter()
                    .find(|sl| &sl.number_id == number_id)
                    .and_then(|sl| sl.latest.as_ref())
                    .map(|l| l.id.clone());
                if let Some(prev) = previous {
                    // The previous holder's lease ends now, or ended when its hold ran out.
                    sqlx::query(
                        "UPDATE leases SET ended_at = CASE WHEN hold_until < $1 THEN hold_until ELSE $1 END \
                         WHERE id = $2 AND ended_at IS NULL",
                    )
                    .bind(now)
                    .bind(prev)
                    .execute(&mut **tx)
                    .await?;
                }
                let lease_id = new_id();
                sqlx::query(
                    "INSERT INTO leases (id, site_id, pool_id, number_id, session_id, visitor_id, source, \
                     leased_at, last_activity, hold_until, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)",
                )
                .bind(&lease_id)
                .bind(site_id)
                .bind(&pool.pool_id)
                .bind(number_id)
                .bind(&s.id)
                .bind(&s.visitor_id)
                .bind(&s.source)
                .bind(now)
                .bind(now)
                .bind(now + pool.hold())
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO number_state (number_id, pool_id, lease_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (number_id) DO UPDATE SET pool_id = excluded.pool_id, lease_id = excluded.lease_id",
                )
                .bind(number_id)
                .bind(&pool.pool_id)
                .bind(&lease_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET pool_id = $1, number_id = $2, lease_id = $3 WHERE id = $4",
                )
                .bind(&pool.pool_id)
                .bind(number_id)
                .bind(&lease_id)
                .bind(&s.id)
                .execute(&mut **tx)
                .await?;
                (Some(number_id.clone()), number_of(number_id))
            }
            Allocation::Exhausted => {
                let fallback = pool.fallback.clone();
                sqlx::query("UPDATE sessions SET pool_id = $1, number_id = $2, lease_id = NULL WHERE id = $3")
                    .bind(&pool.pool_id)
                    .bind(fallback.as_ref().map(|f| f.0.clone()))
                    .bind(&s.id)
                    .execute(&mut **tx)
                    .await?;
                (
                    fallback.as_ref().map(|f| f.0.clone()),
                    fallback.map(|f| f.1),
                )
            }
        };
        if alloc.is_exhaustion() {
            sqlx::query(
                "INSERT INTO exhaustions (id, site_id, pool_id, session_id, at, outcome, number_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(new_id())
            .bind(site_id)
            .bind(&pool.pool_id)
            .bind(&s.id)
            .bind(now)
            .bind(if matches!(alloc, Allocation::Reuse { .. }) { "reuse" } else { "fallback" })
            .bind(number_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok((alloc, number))
    }

    /// Write heartbeats answered from memory: each `(session id, at, hold)` moves the
    /// session's live lease and activity on, as a heartbeat through the store would. One
    /// transaction for the lot; a lease that ended meanwhile is left alone.
    pub async fn flush_heartbeats(&self, beats: &[(String, Millis, Millis)]) -> Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let _guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        for (session_id, at, hold) in beats {
            sqlx::query(
                "UPDATE leases SET last_activity = $1, hold_until = $2 WHERE session_id = $3 \
                 AND ended_at IS NULL AND hold_until >= $1 AND last_activity <= $1",
            )
            .bind(at)
            .bind(at + hold)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE sessions SET last_activity = $1 WHERE id = $2 AND last_activity <= $1",
            )
            .bind(at)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_session(&self, site_id: &str, session_id: &str) -> Result<Session> {
        let r = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE id = $1 AND site_id = $2"
        ))
        .bind(session_id)
        .bind(site_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("session"))?;
        session_row(&r)
    }

    pub async fn session_pages(&self, session_id: &str) -> Result<Vec<PageView>> {
        let rows = sqlx::query("SELECT at, kind, url, title FROM page_views WHERE session_id = $1 ORDER BY at, id LIMIT 500")
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
            "SELECT {SESSION_COLS} FROM sessions WHERE site_id = $1 AND track_code = $2 AND last_activity >= $3 \
             ORDER BY last_activity DESC LIMIT 1"
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
            .filter_map(|r| lease_row(r).transpose())
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
            .filter_map(|r| lease_row(r).transpose())
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

    /// Pool exhaustions of a site since `since`: `(pool_id, count)`.
    pub async fn exhaustion_counts(
        &self,
        site_id: &str,
        since: Millis,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT pool_id, COUNT(*) AS n FROM exhaustions WHERE site_id = $1 AND at >= $2 GROUP BY pool_id ORDER BY pool_id",
        )
        .bind(site_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
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

async fn unique_track_code(
    tx: &mut Transaction<'static, Any>,
    site_id: &str,
    now: Millis,
) -> Result<String> {
    for attempt in 0..20 {
        // Five digits, six once the site is busy enough for clashes.
        let code = if attempt < 10 {
            rand::thread_rng().gen_range(10_000..100_000).to_string()
        } else {
            rand::thread_rng().gen_range(100_000..1_000_000).to_string()
        };
        let taken = sqlx::query("SELECT 1 AS x FROM sessions WHERE site_id = $1 AND track_code = $2 AND last_activity >= $3 LIMIT 1")
            .bind(site_id)
            .bind(&code)
            .bind(now - TRACK_CODE_LIFE)
            .fetch_optional(&mut **tx)
            .await?;
        if taken.is_none() {
            return Ok(code);
        }
    }
    Err(StoreError::Conflict("no free track code".into()))
}

async fn insert_page(
    tx: &mut Transaction<'static, Any>,
    session_id: &str,
    at: Millis,
    kind: &str,
    url: &str,
    title: Option<&str>,
) -> Result<()> {
    sqlx::query("INSERT INTO page_views (id, session_id, at, kind, url, title) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(new_id())
        .bind(session_id)
        .bind(at)
        .bind(kind)
        .bind(url)
        .bind(title.map(str::to_owned))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
