//! calltrail on the real store: `Store::visit`, `heartbeat` and `ingest_call` on a
//! temporary SQLite database, with the simulated clock. Slow, but it is exactly what the
//! server runs; the in-memory engine is checked against it.

use std::collections::HashMap;

use anyhow::Context;
use calltrail_core::engine::{MatchMethod, Millis};
use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec};
use calltrail_core::Region;
use calltrail_store::tracking::{CallInput, SiteContext, VisitRequest};
use calltrail_store::Store;

use crate::engines::{Attribution, Shown, Viewed};
use crate::scenario::PoolConfig;

const SITE_NUMBER: &str = "+74951000000";
const FALLBACK: &str = "+74951999999";
const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const CRAWLER: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

pub struct SqlEngine {
    store: Store,
    ctx: SiteContext,
    account_id: String,
    /// E.164 of pool number `i`; the store's ids sort in the same order as `i`, so the
    /// engine's tie-breaks (smaller id first) pick the same numbers as in memory.
    e164: Vec<String>,
    number_ids: Vec<String>,
    by_e164: HashMap<String, u32>,
    sessions: HashMap<u32, String>,
    by_store_session: HashMap<String, u32>,
    sources: Vec<String>,
    calls: u64,
    _dir: tempfile::TempDir,
}

impl SqlEngine {
    pub async fn new(pool: &PoolConfig, sources: Vec<String>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let url = format!("sqlite://{}/sim.db", dir.path().display());
        let store = Store::open(&url)
            .await
            .context("opening the simulation store")?;
        let acc = store.create_account("simulation").await?;
        let domains = vec!["shop.example".to_owned()];
        let site_numbers = vec![SITE_NUMBER.to_owned()];
        let site = store
            .create_site(
                &acc.id,
                &SiteSpec::parse(&SiteInput {
                    name: "Simulated site",
                    domains: &domains,
                    timezone: "Europe/Moscow",
                    default_region: "RU",
                    site_numbers: &site_numbers,
                    forward_to: None,
                })?,
            )
            .await?;
        let p = store
            .create_pool(
                &acc.id,
                &site.id,
                &PoolSpec::parse(
                    &pool.name,
                    Some(i64::from(pool.hold_minutes)),
                    Some(pool.policy.as_str()),
                )?,
            )
            .await?;
        let ru = Region::parse("RU")?;
        let mut created = Vec::with_capacity(pool.numbers as usize);
        for i in 0..pool.numbers {
            let e164 = format!("+7495{:07}", 2_000_000 + i);
            let n = store
                .create_number(
                    &acc.id,
                    &site.id,
                    &NumberSpec::parse(&e164, ru, "pool", Some(&p.id), None)?,
                )
                .await?;
            created.push((n.id, n.number));
        }
        store
            .create_number(
                &acc.id,
                &site.id,
                &NumberSpec::parse(FALLBACK, ru, "fallback", Some(&p.id), None)?,
            )
            .await?;
        created.sort();
        let by_e164 = created
            .iter()
            .enumerate()
            .map(|(i, (_, e))| (e.clone(), i as u32))
            .collect();
        let ctx = store.site_context_of(site).await?;
        Ok(Self {
            store,
            ctx,
            account_id: acc.id,
            e164: created.iter().map(|(_, e)| e.clone()).collect(),
            number_ids: created.into_iter().map(|(id, _)| id).collect(),
            by_e164,
            sessions: HashMap::new(),
            by_store_session: HashMap::new(),
            sources,
            calls: 0,
            _dir: dir,
        })
    }

    fn viewed(&self, shown: &calltrail_store::engine::Shown) -> Viewed {
        let s = match shown.e164() {
            None => Shown::Site,
            Some(e) if e == FALLBACK => Shown::Fallback,
            Some(e) => self.by_e164.get(e).map_or(Shown::Site, |&n| Shown::Pool(n)),
        };
        Viewed {
            shown: s,
            exhausted: shown
                .allocation
                .as_ref()
                .is_some_and(calltrail_core::engine::Allocation::is_exhaustion),
        }
    }

    pub async fn open(
        &mut self,
        s: u32,
        visitor: u32,
        source: u16,
        bot: bool,
        now: Millis,
    ) -> anyhow::Result<Viewed> {
        let req = VisitRequest {
            visitor_id: Some(format!("visitor{visitor:09}")),
            url: format!(
                "https://shop.example/?utm_source={}&utm_medium=cpc",
                self.sources[source as usize]
            ),
            user_agent: Some(if bot { CRAWLER } else { BROWSER }.to_owned()),
            ..VisitRequest::default()
        };
        let shown = self.store.visit(&self.ctx, &req, now).await?;
        self.sessions.insert(s, shown.session_id.clone());
        self.by_store_session.insert(shown.session_id.clone(), s);
        Ok(self.viewed(&shown))
    }

    pub async fn page(&mut self, s: u32, bot: bool, now: Millis) -> anyhow::Result<Viewed> {
        let sid = self.sessions.get(&s).cloned();
        let req = VisitRequest {
            session_id: sid.clone(),
            url: "https://shop.example/catalog".to_owned(),
            user_agent: Some(if bot { CRAWLER } else { BROWSER }.to_owned()),
            ..VisitRequest::default()
        };
        let shown = self.store.visit(&self.ctx, &req, now).await?;
        if sid.as_deref() != Some(shown.session_id.as_str()) {
            anyhow::bail!("the store opened a new session for a page view of a live one");
        }
        Ok(self.viewed(&shown))
    }

    pub async fn beat(&mut self, s: u32, now: Millis) -> anyhow::Result<Option<Viewed>> {
        let Some(sid) = self.sessions.get(&s).cloned() else {
            return Ok(None);
        };
        let shown = self.store.heartbeat(&self.ctx, &sid, now).await?;
        Ok(shown.map(|sh| self.viewed(&sh)))
    }

    pub async fn call(
        &mut self,
        to: Shown,
        caller: Option<u32>,
        at: Millis,
    ) -> anyhow::Result<Attribution> {
        self.calls += 1;
        let to = match to {
            Shown::Pool(n) => self.e164[n as usize].clone(),
            Shown::Fallback => FALLBACK.to_owned(),
            Shown::Site => SITE_NUMBER.to_owned(),
        };
        let (call, _) = self
            .store
            .ingest_call(&CallInput {
                account_id: self.account_id.clone(),
                site_id: self.ctx.site.id.clone(),
                provider: "sim".into(),
                provider_call_id: format!("sim-{}", self.calls),
                to,
                from: caller.map_or_else(|| "hidden".to_owned(), |c| format!("+7916{c:07}")),
                at,
                answered: true,
                talk_seconds: 60,
            })
            .await?;
        Ok(Attribution {
            session: call
                .session_id
                .as_ref()
                .and_then(|s| self.by_store_session.get(s).copied()),
            method: call.method.parse().unwrap_or(MatchMethod::Unmatched),
            confidence: call.confidence,
        })
    }

    pub async fn latest_holder(&self, n: u32, at: Millis) -> anyhow::Result<Option<u32>> {
        let leases = self
            .store
            .leases_before(&self.number_ids[n as usize], at)
            .await?;
        Ok(leases
            .iter()
            .max_by(|a, b| a.leased_at.cmp(&b.leased_at).then_with(|| a.id.cmp(&b.id)))
            .and_then(|l| self.by_store_session.get(&l.session_id).copied()))
    }

    pub async fn close(self) {
        self.store.close().await;
    }
}
