//! The call log: calls built from telephony events (in any order, any number of times),
//! their attribution, the work done on them, and the outbox of events for integrations.
//!
//! A call event is applied in one transaction that also keeps the raw webhook and writes
//! an outbox event, so an acknowledged webhook is durable and no integration misses it.

use std::fmt::Write as _;

use calltrail_core::engine::Millis;
use calltrail_core::Invalid;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{from_ms, new_id, Backend, Call, Page, Result, Store, StoreError};

pub(crate) const CALL_COLS: &str = "c.id, c.site_id, c.provider, c.provider_call_id, c.connection_id, \
    c.tracking_number, c.number_id, c.number_kind, c.caller, c.started_at, c.answered_at, c.ended_at, \
    c.status, c.wait_seconds, c.talk_seconds, c.agent, c.recording_url, c.recording_path, c.first_time, \
    c.method, c.confidence, c.session_id, c.visitor_id, c.channel, c.source, c.medium, c.campaign, \
    c.keyword, c.landing_url, c.category, c.tags, c.deal_value, c.comment, c.created_at, c.updated_at, \
    (SELECT a.name FROM agents a WHERE a.site_id = c.site_id AND a.ext = c.agent) AS agent_name";

pub(crate) fn call_row(r: &AnyRow) -> Result<Call> {
    let opt_ms = |col: &str| -> Result<Option<jiff::Timestamp>> {
        Ok(r.try_get::<Option<i64>, _>(col)?.map(from_ms))
    };
    Ok(Call {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        provider: r.try_get("provider")?,
        provider_call_id: r.try_get("provider_call_id")?,
        connection_id: r.try_get("connection_id")?,
        tracking_number: r.try_get("tracking_number")?,
        number_id: r.try_get("number_id")?,
        number_kind: r.try_get("number_kind")?,
        caller: r.try_get("caller")?,
        started_at: from_ms(r.try_get("started_at")?),
        answered_at: opt_ms("answered_at")?,
        ended_at: opt_ms("ended_at")?,
        status: r.try_get("status")?,
        wait_seconds: r.try_get("wait_seconds")?,
        talk_seconds: r.try_get("talk_seconds")?,
        agent: r.try_get("agent")?,
        agent_name: r.try_get("agent_name")?,
        recording_url: r.try_get("recording_url")?,
        has_recording: r.try_get::<Option<String>, _>("recording_path")?.is_some(),
        first_time: r.try_get::<i64, _>("first_time")? != 0,
        method: r.try_get("method")?,
        confidence: r.try_get("confidence")?,
        session_id: r.try_get("session_id")?,
        visitor_id: r.try_get("visitor_id")?,
        channel: r.try_get("channel")?,
        source: r.try_get("source")?,
        medium: r.try_get("medium")?,
        campaign: r.try_get("campaign")?,
        keyword: r.try_get("keyword")?,
        landing_url: r.try_get("landing_url")?,
        category: r.try_get("category")?,
        tags: serde_json::from_str(&r.try_get::<String, _>("tags")?).unwrap_or_default(),
        deal_value: r.try_get("deal_value")?,
        comment: r.try_get("comment")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

/// What a telephony event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEventKind {
    Started,
    Answered,
    Ended,
    Recording,
}

impl CallEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Answered => "answered",
            Self::Ended => "ended",
            Self::Recording => "recording",
        }
    }
}

/// Final statuses a call ends with.
pub const FINAL_STATUSES: [&str; 5] = ["answered", "missed", "busy", "failed", "voicemail"];

/// One telephony event, normalised from a provider's wire format.
#[derive(Debug, Clone)]
pub struct CallEvent {
    pub account_id: String,
    pub site_id: String,
    pub connection_id: Option<String>,
    pub provider: String,
    pub provider_call_id: String,
    pub kind: CallEventKind,
    /// Caller, E.164 or `hidden`.
    pub from: Option<String>,
    /// The number called, E.164.
    pub to: Option<String>,
    pub started_at: Option<Millis>,
    pub answered_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// For `Ended`: one of [`FINAL_STATUSES`]; derived from the times when absent.
    pub status: Option<String>,
    pub agent: Option<String>,
    pub recording_url: Option<String>,
    /// The body as received, kept in the webhook log.
    pub raw: String,
    pub received_at: Millis,
}

/// Attribution of a new call, decided before its transaction (see `tracking`).
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    pub number_id: Option<String>,
    pub number_kind: Option<String>,
    pub method: String,
    pub confidence: f64,
    pub lease_id: Option<String>,
    pub session_id: Option<String>,
    pub visitor_id: Option<String>,
    pub channel: String,
    pub source: String,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub keyword: Option<String>,
    pub landing_url: Option<String>,
}

/// The state of a call that events move forward.
#[derive(Debug, Clone)]
struct Progress {
    started_at: Millis,
    answered_at: Option<Millis>,
    ended_at: Option<Millis>,
    status: String,
    agent: Option<String>,
    recording_url: Option<String>,
}

impl Progress {
    /// Fold an event in. Events may come in any order and more than once; a call never
    /// goes back from a final status, and the earliest times win.
    fn apply(&mut self, e: &CallEvent) {
        if let Some(t) = e.started_at {
            self.started_at = self.started_at.min(t);
        }
        if let Some(t) = e
            .answered_at
            .or((e.kind == CallEventKind::Answered).then_some(e.received_at))
        {
            self.answered_at = Some(self.answered_at.map_or(t, |a| a.min(t)));
        }
        if let Some(t) = e
            .ended_at
            .or((e.kind == CallEventKind::Ended).then_some(e.received_at))
        {
            self.ended_at = Some(self.ended_at.map_or(t, |a| a.min(t)));
        }
        if e.agent.is_some() {
            self.agent.clone_from(&e.agent);
        }
        if e.recording_url.is_some() {
            self.recording_url.clone_from(&e.recording_url);
        }
        let is_final = FINAL_STATUSES.contains(&self.status.as_str());
        match e.kind {
            CallEventKind::Ended => {
                self.status = e
                    .status
                    .clone()
                    .filter(|s| FINAL_STATUSES.contains(&s.as_str()))
                    .unwrap_or_else(|| {
                        if self.answered_at.is_some() {
                            "answered"
                        } else {
                            "missed"
                        }
                        .to_owned()
                    });
            }
            CallEventKind::Answered if !is_final => self.status = "in_progress".into(),
            _ => {}
        }
        // An answer that arrives after the end still makes a missed call answered.
        if self.status == "missed"
            && self.answered_at.is_some()
            && e.kind == CallEventKind::Answered
        {
            self.status = "answered".into();
        }
    }

    fn wait_seconds(&self) -> i64 {
        self.answered_at
            .or(self.ended_at)
            .map_or(0, |t| ((t - self.started_at) / 1000).max(0))
    }

    fn talk_seconds(&self) -> i64 {
        match (self.answered_at, self.ended_at) {
            (Some(a), Some(e)) => ((e - a) / 1000).max(0),
            _ => 0,
        }
    }
}

/// Filters of the call log; all optional.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub site_id: Option<String>,
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    pub status: Option<String>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub campaign: Option<String>,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub agent: Option<String>,
    pub caller: Option<String>,
    pub first_time: Option<bool>,
    pub min_duration: Option<i64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

/// Changes to the work done on a call; `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CallUpdate {
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    pub deal_value: Option<Option<i64>>,
    pub comment: Option<Option<String>>,
}

pub const CATEGORIES: [&str; 5] = ["target", "service", "non_target", "spam", "unset"];

enum Bind {
    S(String),
    I(i64),
}

impl Store {
    /// Apply a telephony event: create the call on its first event (attributed by
    /// `attribution`, computed by the caller), else move it forward. Returns the call and
    /// whether this event created it.
    pub async fn apply_call_event(
        &self,
        e: &CallEvent,
        attribution: Option<&Attribution>,
    ) -> Result<(Call, bool)> {
        let guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_log (id, connection_id, provider, provider_call_id, kind, received_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(e.connection_id.clone())
        .bind(&e.provider)
        .bind(&e.provider_call_id)
        .bind(e.kind.as_str())
        .bind(e.received_at)
        .bind(&e.raw)
        .execute(&mut *tx)
        .await?;
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let existing = sqlx::query(&format!(
            "SELECT id, started_at, answered_at, ended_at, status, agent, recording_url FROM calls \
             WHERE provider = $1 AND provider_call_id = $2{lock}"
        ))
        .bind(&e.provider)
        .bind(&e.provider_call_id)
        .fetch_optional(&mut *tx)
        .await?;
        let now = crate::now().as_millisecond();
        #[allow(clippy::single_match_else)]
        let (id, created) = match existing {
            Some(r) => {
                let id: String = r.try_get("id")?;
                let mut p = Progress {
                    started_at: r.try_get("started_at")?,
                    answered_at: r.try_get("answered_at")?,
                    ended_at: r.try_get("ended_at")?,
                    status: r.try_get("status")?,
                    agent: r.try_get("agent")?,
                    recording_url: r.try_get("recording_url")?,
                };
                p.apply(e);
                write_progress(&mut tx, &id, &p, now).await?;
                (id, false)
            }
            None => {
                let Some(a) = attribution else {
                    return Err(StoreError::Invalid(Invalid::field(
                        "to",
                        "the first event of a call must name the number called",
                    )));
                };
                let start = e
                    .started_at
                    .or(e.answered_at)
                    .or(e.ended_at)
                    .unwrap_or(e.received_at);
                let mut p = Progress {
                    started_at: start,
                    answered_at: None,
                    ended_at: None,
                    status: "ringing".into(),
                    agent: None,
                    recording_url: None,
                };
                p.apply(e);
                let caller = e.from.clone().unwrap_or_else(|| "hidden".into());
                let first_time = caller == "hidden"
                    || !self
                        .called_before(&mut tx, &e.site_id, &caller, start)
                        .await?;
                let id = new_id();
                sqlx::query(
                    "INSERT INTO calls (id, account_id, site_id, provider, provider_call_id, connection_id, \
                     tracking_number, number_id, number_kind, caller, started_at, answered_at, ended_at, status, \
                     wait_seconds, talk_seconds, agent, recording_url, first_time, method, confidence, lease_id, \
                     session_id, visitor_id, channel, source, medium, campaign, keyword, landing_url, created_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
                )
                .bind(&id)
                .bind(&e.account_id)
                .bind(&e.site_id)
                .bind(&e.provider)
                .bind(&e.provider_call_id)
                .bind(e.connection_id.clone())
                .bind(e.to.clone().unwrap_or_default())
                .bind(a.number_id.clone())
                .bind(a.number_kind.clone())
                .bind(&caller)
                .bind(p.started_at)
                .bind(p.answered_at)
                .bind(p.ended_at)
                .bind(&p.status)
                .bind(p.wait_seconds())
                .bind(p.talk_seconds())
                .bind(p.agent.clone())
                .bind(p.recording_url.clone())
                .bind(i64::from(first_time))
                .bind(&a.method)
                .bind(a.confidence)
                .bind(a.lease_id.clone())
                .bind(a.session_id.clone())
                .bind(a.visitor_id.clone())
                .bind(&a.channel)
                .bind(&a.source)
                .bind(a.medium.clone())
                .bind(a.campaign.clone())
                .bind(a.keyword.clone())
                .bind(a.landing_url.clone())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (id, true)
            }
        };
        let call = fetch_call(&mut tx, &id).await?;
        let kind = if created {
            "call.created".to_owned()
        } else {
            format!("call.{}", e.kind.as_str())
        };
        outbox(&mut tx, &call, &kind, now).await?;
        tx.commit().await?;
        drop(guard);
        Ok((call, created))
    }

    /// A call by its provider id, within an account.
    pub async fn call_by_provider_id(
        &self,
        account_id: &str,
        provider: &str,
        provider_call_id: &str,
    ) -> Result<Option<Call>> {
        let r = sqlx::query(&format!(
            "SELECT {CALL_COLS} FROM calls c WHERE c.account_id = $1 AND c.provider = $2 AND c.provider_call_id = $3"
        ))
        .bind(account_id)
        .bind(provider)
        .bind(provider_call_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(call_row).transpose()
    }

    /// Whether a call with this provider id is stored.
    pub async fn call_exists(&self, provider: &str, provider_call_id: &str) -> Result<bool> {
        let r =
            sqlx::query("SELECT 1 AS x FROM calls WHERE provider = $1 AND provider_call_id = $2")
                .bind(provider)
                .bind(provider_call_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.is_some())
    }

    async fn called_before(
        &self,
        tx: &mut Transaction<'static, Any>,
        site_id: &str,
        caller: &str,
        at: Millis,
    ) -> Result<bool> {
        let r = sqlx::query(
            "SELECT 1 AS x FROM calls c JOIN sites s ON s.id = c.site_id WHERE c.site_id = $1 AND c.caller = $2 \
             AND c.started_at < $3 AND c.started_at >= $3 - s.repeat_window_days * 86400000 LIMIT 1",
        )
        .bind(site_id)
        .bind(caller)
        .bind(at)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(r.is_some())
    }

    pub async fn get_call(&self, account_id: &str, id: &str) -> Result<Call> {
        let r = sqlx::query(&format!(
            "SELECT {CALL_COLS} FROM calls c WHERE c.account_id = $1 AND c.id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("call"))?;
        call_row(&r)
    }

    /// The call log of an account, newest first (or oldest first), filtered.
    pub async fn list_calls(
        &self,
        account_id: &str,
        f: &CallFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Call>> {
        let limit = limit.clamp(1, crate::setup::MAX_PAGE);
        let mut sql = format!("SELECT {CALL_COLS} FROM calls c WHERE c.account_id = $1");
        let mut binds = vec![Bind::S(account_id.to_owned())];
        let mut add = |cond: &str, b: Bind, sql: &mut String| {
            binds.push(b);
            sql.push_str(&cond.replace('?', &format!("${}", binds.len())));
        };
        for (col, v) in [
            ("site_id", &f.site_id),
            ("status", &f.status),
            ("source", &f.source),
            ("channel", &f.channel),
            ("campaign", &f.campaign),
            ("category", &f.category),
            ("agent", &f.agent),
            ("caller", &f.caller),
        ] {
            if let Some(v) = v {
                add(&format!(" AND c.{col} = ?"), Bind::S(v.clone()), &mut sql);
            }
        }
        if let Some(t) = &f.tag {
            add(
                " AND c.tags LIKE ?",
                Bind::S(format!(
                    "%{}%",
                    serde_json::to_string(t).unwrap_or_default()
                )),
                &mut sql,
            );
        }
        if let Some(t) = f.from {
            add(" AND c.started_at >= ?", Bind::I(t), &mut sql);
        }
        if let Some(t) = f.to {
            add(" AND c.started_at < ?", Bind::I(t), &mut sql);
        }
        if let Some(ft) = f.first_time {
            add(" AND c.first_time = ?", Bind::I(i64::from(ft)), &mut sql);
        }
        if let Some(d) = f.min_duration {
            add(" AND c.talk_seconds >= ?", Bind::I(d), &mut sql);
        }
        // The cursor is `<started_at ms>:<id>` of the last row of the previous page.
        if let Some((t, id)) = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id)))
        {
            let op = if f.oldest_first { ">" } else { "<" };
            add(&format!(" AND (c.started_at {op} ?"), Bind::I(t), &mut sql);
            add(" OR (c.started_at = ?", Bind::I(t), &mut sql);
            add(
                &format!(" AND c.id {op} ?))"),
                Bind::S(id.to_owned()),
                &mut sql,
            );
        } else if cursor.is_some_and(|c| !c.is_empty()) {
            return Err(Invalid::field("cursor", "not a cursor from a previous page").into());
        }
        let dir = if f.oldest_first { "ASC" } else { "DESC" };
        let _ = write!(
            sql,
            " ORDER BY c.started_at {dir}, c.id {dir} LIMIT {}",
            i64::from(limit) + 1
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::S(s) => q.bind(s),
                Bind::I(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(call_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|c| format!("{}:{}", c.started_at.as_millisecond(), c.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Record the work done on a call (category, tags, deal value, comment).
    pub async fn update_call(&self, account_id: &str, id: &str, u: &CallUpdate) -> Result<Call> {
        let cur = self.get_call(account_id, id).await?;
        let category = u.category.clone().unwrap_or(cur.category);
        let tags = u.tags.clone().unwrap_or(cur.tags);
        let deal = u.deal_value.unwrap_or(cur.deal_value);
        let comment = u.comment.clone().unwrap_or(cur.comment);
        let guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let now = crate::now().as_millisecond();
        sqlx::query("UPDATE calls SET category = $1, tags = $2, deal_value = $3, comment = $4, updated_at = $5 WHERE account_id = $6 AND id = $7")
            .bind(&category)
            .bind(serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()))
            .bind(deal)
            .bind(comment)
            .bind(now)
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let call = fetch_call(&mut tx, id).await?;
        outbox(&mut tx, &call, "call.updated", now).await?;
        tx.commit().await?;
        drop(guard);
        Ok(call)
    }

    /// Give a call to a session (an operator typed its track code).
    pub async fn attribute_call(
        &self,
        account_id: &str,
        call_id: &str,
        session: &crate::Session,
        method: &str,
        confidence: f64,
    ) -> Result<Call> {
        let guard = self.write_guard().await;
        let mut tx = self.pool.begin().await?;
        let now = crate::now().as_millisecond();
        let n = sqlx::query(
            "UPDATE calls SET session_id = $1, visitor_id = $2, channel = $3, source = $4, medium = $5, \
             campaign = $6, keyword = $7, landing_url = $8, method = $9, confidence = $10, lease_id = NULL, \
             updated_at = $11 WHERE account_id = $12 AND id = $13",
        )
        .bind(&session.id)
        .bind(&session.visitor_id)
        .bind(&session.channel)
        .bind(&session.source)
        .bind(&session.medium)
        .bind(session.campaign.clone())
        .bind(session.keyword.clone())
        .bind(&session.landing_url)
        .bind(method)
        .bind(confidence)
        .bind(now)
        .bind(account_id)
        .bind(call_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("call"));
        }
        let call = fetch_call(&mut tx, call_id).await?;
        outbox(&mut tx, &call, "call.attributed", now).await?;
        tx.commit().await?;
        drop(guard);
        Ok(call)
    }

    /// Where a call's recording is kept, once fetched.
    pub async fn set_recording_path(&self, call_id: &str, path: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        sqlx::query("UPDATE calls SET recording_path = $1 WHERE id = $2")
            .bind(path)
            .bind(call_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn recording_path(&self, account_id: &str, call_id: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT recording_path FROM calls WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("call"))?;
        Ok(r.try_get("recording_path")?)
    }

    /// Outbox events not delivered yet, oldest first.
    pub async fn outbox_pending(&self, limit: u32) -> Result<Vec<OutboxEvent>> {
        let rows = sqlx::query("SELECT id, account_id, site_id, kind, call_id, payload, created_at FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEvent {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    site_id: r.try_get("site_id")?,
                    kind: r.try_get("kind")?,
                    call_id: r.try_get("call_id")?,
                    payload: serde_json::from_str(&r.try_get::<String, _>("payload")?)
                        .unwrap_or_default(),
                    created_at: from_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// How many raw webhooks were kept for a provider call id.
    pub async fn webhook_count(&self, provider: &str, provider_call_id: &str) -> Result<i64> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_log WHERE provider = $1 AND provider_call_id = $2",
        )
        .bind(provider)
        .bind(provider_call_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("n")?)
    }
}

/// An event waiting for integrations.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEvent {
    pub id: String,
    pub account_id: String,
    pub site_id: String,
    pub kind: String,
    pub call_id: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: jiff::Timestamp,
}

async fn write_progress(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    p: &Progress,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE calls SET started_at = $1, answered_at = $2, ended_at = $3, status = $4, wait_seconds = $5, \
         talk_seconds = $6, agent = $7, recording_url = $8, updated_at = $9 WHERE id = $10",
    )
    .bind(p.started_at)
    .bind(p.answered_at)
    .bind(p.ended_at)
    .bind(&p.status)
    .bind(p.wait_seconds())
    .bind(p.talk_seconds())
    .bind(p.agent.clone())
    .bind(p.recording_url.clone())
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn fetch_call(tx: &mut Transaction<'static, Any>, id: &str) -> Result<Call> {
    let r = sqlx::query(&format!("SELECT {CALL_COLS} FROM calls c WHERE c.id = $1"))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    call_row(&r)
}

async fn outbox(
    tx: &mut Transaction<'static, Any>,
    call: &Call,
    kind: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (id, account_id, site_id, kind, call_id, payload, created_at) VALUES ($1, (SELECT account_id FROM calls WHERE id = $2), $3, $4, $2, $5, $6)")
        .bind(new_id())
        .bind(&call.id)
        .bind(&call.site_id)
        .bind(kind)
        .bind(serde_json::to_string(call).unwrap_or_else(|_| "{}".into()))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Calls whose recording is at the provider but not kept here yet.
    pub async fn calls_missing_recordings(&self, limit: u32) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT id, recording_url FROM calls WHERE recording_url IS NOT NULL AND recording_path IS NULL \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("recording_url")?)))
            .collect()
    }

    /// Kept recordings older than their account's retention: `(call id, path)`.
    pub async fn expired_recordings(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT c.id, c.recording_path FROM calls c JOIN accounts a ON a.id = c.account_id \
             WHERE c.recording_path IS NOT NULL AND a.recording_retention_days IS NOT NULL \
             AND c.started_at < $1 - a.recording_retention_days * 86400000 LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("recording_path")?)))
            .collect()
    }

    /// Forget a deleted recording file (the provider's URL stays for reference).
    pub async fn clear_recording(&self, call_id: &str) -> Result<()> {
        let _guard = self.write_guard().await;
        sqlx::query("UPDATE calls SET recording_path = NULL, recording_url = NULL WHERE id = $1")
            .bind(call_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Days recordings are kept for an account (`None`: forever).
    pub async fn recording_retention(&self, account_id: &str) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT recording_retention_days FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        Ok(r.try_get("recording_retention_days")?)
    }

    pub async fn set_recording_retention(&self, account_id: &str, days: Option<i64>) -> Result<()> {
        let _guard = self.write_guard().await;
        sqlx::query("UPDATE accounts SET recording_retention_days = $1 WHERE id = $2")
            .bind(days)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: CallEventKind, at: Millis) -> CallEvent {
        CallEvent {
            account_id: "a".into(),
            site_id: "s".into(),
            connection_id: None,
            provider: "p".into(),
            provider_call_id: "1".into(),
            kind,
            from: None,
            to: None,
            started_at: None,
            answered_at: None,
            ended_at: None,
            status: None,
            agent: None,
            recording_url: None,
            raw: String::new(),
            received_at: at,
        }
    }

    fn fresh() -> Progress {
        Progress {
            started_at: 0,
            answered_at: None,
            ended_at: None,
            status: "ringing".into(),
            agent: None,
            recording_url: None,
        }
    }

    #[test]
    fn events_in_order() {
        let mut p = fresh();
        p.apply(&ev(CallEventKind::Answered, 12_000));
        assert_eq!(p.status, "in_progress");
        p.apply(&ev(CallEventKind::Ended, 72_000));
        assert_eq!(
            (p.status.as_str(), p.wait_seconds(), p.talk_seconds()),
            ("answered", 12, 60)
        );
    }

    #[test]
    fn events_out_of_order_and_twice() {
        let mut p = fresh();
        p.apply(&ev(CallEventKind::Ended, 72_000));
        assert_eq!(p.status, "missed");
        p.apply(&ev(CallEventKind::Answered, 12_000));
        assert_eq!((p.status.as_str(), p.talk_seconds()), ("answered", 60));
        p.apply(&ev(CallEventKind::Answered, 15_000));
        p.apply(&ev(CallEventKind::Started, 1_000));
        assert_eq!(
            (p.status.as_str(), p.answered_at, p.ended_at),
            ("answered", Some(12_000), Some(72_000))
        );
        let mut busy = ev(CallEventKind::Ended, 5_000);
        busy.status = Some("busy".into());
        let mut q = fresh();
        q.apply(&busy);
        assert_eq!((q.status.as_str(), q.wait_seconds()), ("busy", 5));
    }
}
