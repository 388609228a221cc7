//! The engine's flows, shared by the server and the simulator: a visit, a heartbeat, a
//! page event, a call. Pure decisions come from `calltrail_core`; this module gathers what
//! they need from the store and writes what they decide.

use calltrail_core::engine::{self, CallFacts, MatchMethod, Millis};
use calltrail_core::rules::{self, Rule, RuleAction, RuleMatch, Subject};
use calltrail_core::traffic::{self, Touch};
use calltrail_core::{Domain, ExhaustionPolicy, NumberKind};

use crate::calls::{Attribution, CallEvent, CallEventKind};
use crate::engine::{NewPage, NewSession, PoolTarget, Printed, Shown, Target};
use crate::{Call, Continuing, Result, Site, Store, StoreError};

/// Everything the engine needs to know about a site, loaded once and cached by the server.
#[derive(Debug, Clone)]
pub struct SiteContext {
    pub site: Site,
    pub domains: Vec<Domain>,
    pub rules: Vec<Rule>,
    pub pools: Vec<PoolTarget>,
    /// Static numbers: `(id, number, source)`.
    pub statics: Vec<(String, Printed, String)>,
}

/// What the snippet sends with a page load.
#[derive(Debug, Clone, Default)]
pub struct VisitRequest {
    pub session_id: Option<String>,
    pub visitor_id: Option<String>,
    pub url: String,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub ga_client_id: Option<String>,
    pub ym_client_id: Option<String>,
    pub screen: Option<String>,
    pub lang: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub city: Option<String>,
}

/// A call as a telephony adapter (or a test call) reports it.
#[derive(Debug, Clone)]
pub struct CallInput {
    pub account_id: String,
    pub site_id: String,
    pub provider: String,
    pub provider_call_id: String,
    /// The number called (E.164).
    pub to: String,
    /// The caller (E.164) or `hidden`.
    pub from: String,
    pub at: Millis,
    pub answered: bool,
    pub talk_seconds: i64,
}

/// An id the browser keeps for us: short, URL-safe, or not at all.
pub fn clean_id(id: Option<&str>) -> Option<String> {
    id.map(str::trim)
        .filter(|s| {
            (8..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

impl SiteContext {
    /// What a new session is shown: the first matching rule, else a static number of its
    /// source, else the site's first pool, else nothing.
    pub fn target_for(
        &self,
        a: &traffic::Attribution,
        landing_url: &str,
    ) -> (Target, Option<String>) {
        let subject = Subject {
            source: &a.source,
            medium: &a.medium,
            campaign: a.campaign.as_deref(),
            referrer_domain: a.referrer_domain.as_deref(),
            landing_path: &a.landing_path,
            landing_url,
            channel: a.channel,
        };
        if let Some(rule) = rules::first_match(&self.rules, &subject) {
            let target = match &rule.action {
                RuleAction::NoSwap => Target::None,
                RuleAction::Pool(pid) => self.pool_target(pid),
                RuleAction::Number(nid) => self.static_target(|(id, _, _)| id == nid),
            };
            return (target, Some(rule.id.clone()));
        }
        let by_source = self.static_target(|(_, _, src)| *src == a.source);
        if !matches!(by_source, Target::None) {
            return (by_source, None);
        }
        match self.pools.first() {
            Some(p) => (Target::Pool(p.clone()), None),
            None => (Target::None, None),
        }
    }

    fn pool_target(&self, pool_id: &str) -> Target {
        self.pools
            .iter()
            .find(|p| p.pool_id == pool_id)
            .map_or(Target::None, |p| Target::Pool(p.clone()))
    }

    fn static_target(&self, pick: impl Fn(&(String, Printed, String)) -> bool) -> Target {
        self.statics
            .iter()
            .find(|s| pick(s))
            .map_or(Target::None, |(id, number, _)| Target::Static {
                number_id: id.clone(),
                number: number.clone(),
            })
    }
}

impl Store {
    /// Load a site's engine context by the public key its snippet carries.
    pub async fn site_context(&self, public_key: &str) -> Result<Option<SiteContext>> {
        let Some(site) = self.site_by_public_key(public_key).await? else {
            return Ok(None);
        };
        self.site_context_of(site).await.map(Some)
    }

    pub async fn site_context_of(&self, site: Site) -> Result<SiteContext> {
        let numbers = self.site_numbers_not_pooled(&site.id).await?;
        let pools = self
            .site_pools(&site.id)
            .await?
            .into_iter()
            .map(|p| PoolTarget {
                fallback: numbers
                    .iter()
                    .find(|n| n.kind == "fallback" && n.pool_id.as_deref() == Some(p.id.as_str()))
                    .map(|n| (n.id.clone(), n.printed())),
                policy: p
                    .on_exhaustion
                    .parse()
                    .unwrap_or(ExhaustionPolicy::Fallback),
                hold_minutes: p.hold_minutes,
                pool_id: p.id,
            })
            .collect();
        let statics = numbers
            .iter()
            .filter(|n| n.kind == "static")
            .map(|n| {
                (
                    n.id.clone(),
                    n.printed(),
                    n.source.clone().unwrap_or_default(),
                )
            })
            .collect();
        let rules = self
            .site_rules(&site.id)
            .await?
            .into_iter()
            .map(|r| Rule {
                matcher: serde_json::from_value::<RuleMatch>(r.r#match).unwrap_or_default(),
                action: match (r.swap, r.pool_id, r.number_id) {
                    (true, Some(p), _) => RuleAction::Pool(p),
                    (true, None, Some(n)) => RuleAction::Number(n),
                    _ => RuleAction::NoSwap,
                },
                priority: r.priority,
                id: r.id,
            })
            .collect();
        Ok(SiteContext {
            domains: site
                .domains
                .iter()
                .filter_map(|d| Domain::parse(d).ok())
                .collect(),
            site,
            rules,
            pools,
            statics,
        })
    }

    /// A page load: continue the session if it is live, else open one; either way the
    /// answer names the number to show.
    pub async fn visit(&self, ctx: &SiteContext, req: &VisitRequest, now: Millis) -> Result<Shown> {
        if let Some(shown) = self.continue_visit(ctx, req, now).await? {
            return Ok(shown);
        }
        let (s, target) = new_session(ctx, req);
        self.open_session(&s, &target, now).await
    }

    /// A page load of a session that is still live: record the page, keep or find its
    /// number. `None` when the request names no such session (a new one is then opened).
    pub async fn continue_visit(
        &self,
        ctx: &SiteContext,
        req: &VisitRequest,
        now: Millis,
    ) -> Result<Option<Shown>> {
        let Some(c) = continuing_visit(ctx, req) else {
            return Ok(None);
        };
        self.continue_session(&c.site_id, &c.session_id, c.page.as_ref(), &c.pools, now)
            .await
    }

    /// A heartbeat from a visible tab: extend the lease (or find a number again).
    pub async fn heartbeat(
        &self,
        ctx: &SiteContext,
        session_id: &str,
        now: Millis,
    ) -> Result<Option<Shown>> {
        self.continue_session(&ctx.site.id, session_id, None, &ctx.pools, now)
            .await
    }

    /// Attribute and store a complete call (test calls, the demo, the simulator). Never
    /// rejects one: a call to an unknown number is stored as unmatched. A repeat of a
    /// provider call id returns the stored call.
    pub async fn ingest_call(&self, c: &CallInput) -> Result<(Call, bool)> {
        let a = self.attribute(&c.site_id, &c.to, &c.from, c.at).await?;
        let answered_at = c.answered.then_some(c.at + 5_000);
        let ended_at = answered_at.map_or(c.at + 30_000, |t| t + c.talk_seconds.max(0) * 1000);
        let e = CallEvent {
            account_id: c.account_id.clone(),
            site_id: c.site_id.clone(),
            connection_id: None,
            provider: c.provider.clone(),
            provider_call_id: c.provider_call_id.clone(),
            kind: CallEventKind::Ended,
            from: Some(c.from.clone()),
            to: Some(c.to.clone()),
            started_at: Some(c.at),
            answered_at,
            ended_at: Some(ended_at),
            status: Some(if c.answered { "answered" } else { "missed" }.to_owned()),
            agent: None,
            recording_url: None,
            raw: String::new(),
            received_at: ended_at,
        };
        self.apply_call_event(&e, Some(&a)).await
    }

    /// Attribute a call to number `to` from `from` at `at` (DESIGN.md §4).
    pub async fn attribute(
        &self,
        site_id: &str,
        to: &str,
        from: &str,
        at: Millis,
    ) -> Result<Attribution> {
        let owner = self
            .number_owner(to)
            .await?
            .filter(|o| o.site_id == site_id);
        let kind: Option<NumberKind> = owner.as_ref().and_then(|o| o.kind.parse().ok());
        let (leases, callers) = match (&owner, kind) {
            (Some(o), Some(NumberKind::Pool)) => (
                self.leases_before(&o.number_id, at).await?,
                if from == "hidden" {
                    Vec::new()
                } else {
                    self.caller_visitors(site_id, from, at).await?
                },
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let m = engine::match_call(&CallFacts {
            kind,
            at,
            leases: &leases,
            caller_visitors: &callers,
        });
        let session = match m
            .lease_id
            .as_ref()
            .and_then(|lid| leases.iter().find(|l| &l.id == lid))
        {
            Some(l) => match self.get_session(site_id, &l.session_id).await {
                Ok(s) => Some(s),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let static_source = owner.as_ref().and_then(|o| o.source.clone());
        let (channel, source) = match (&session, m.method) {
            (Some(s), _) => (s.channel.clone(), s.source.clone()),
            (None, MatchMethod::Static) => {
                let src = static_source.unwrap_or_else(|| "offline".into());
                let channel = self
                    .source_channel(site_id, &src)
                    .await?
                    .unwrap_or_else(|| "offline".into());
                (channel, src)
            }
            _ => ("unknown".to_owned(), "(unknown)".to_owned()),
        };
        Ok(Attribution {
            number_id: owner.as_ref().map(|o| o.number_id.clone()),
            number_kind: owner.as_ref().map(|o| o.kind.clone()),
            method: m.method.as_str().to_owned(),
            confidence: m.confidence,
            lease_id: m.lease_id.clone(),
            session_id: session.as_ref().map(|s| s.id.clone()),
            visitor_id: session.as_ref().map(|s| s.visitor_id.clone()),
            channel,
            source,
            medium: session.as_ref().map(|s| s.medium.clone()),
            campaign: session.as_ref().and_then(|s| s.campaign.clone()),
            keyword: session.as_ref().and_then(|s| s.keyword.clone()),
            landing_url: session.as_ref().map(|s| s.landing_url.clone()),
        })
    }

    /// The channel a named source of a site reports under, if the site defines it.
    async fn source_channel(&self, site_id: &str, name: &str) -> Result<Option<String>> {
        use sqlx::Row;
        let r = sqlx::query("SELECT channel FROM sources WHERE site_id = $1 AND name = $2")
            .bind(site_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("channel")).transpose()?)
    }
}

/// A page load that names a session: the page to add to it, if it is still live.
pub fn continuing_visit(ctx: &SiteContext, req: &VisitRequest) -> Option<Continuing> {
    let session_id = clean_id(req.session_id.as_deref())?;
    Some(Continuing {
        site_id: ctx.site.id.clone(),
        session_id,
        page: Some(NewPage {
            kind: "pageview".into(),
            url: truncate(&req.url, traffic::MAX_URL_CHARS),
            title: req.title.as_deref().map(|t| truncate(t, 300)),
        }),
        pools: ctx.pools.clone(),
    })
}

/// A new session for a page load: what the visit tells (source, device, ...) and what the
/// site's rules say it is shown. Pure: nothing is read or written.
pub fn new_session(ctx: &SiteContext, req: &VisitRequest) -> (NewSession, Target) {
    let a = traffic::classify(&Touch {
        url: &req.url,
        referrer: req.referrer.as_deref(),
        site_domains: &ctx.domains,
    });
    let device = traffic::parse_user_agent(req.user_agent.as_deref().unwrap_or(""));
    let (target, rule_id) = if device.is_bot {
        (Target::None, None)
    } else {
        ctx.target_for(&a, &req.url)
    };
    let visitor = clean_id(req.visitor_id.as_deref());
    let s = NewSession {
        known_visitor: visitor.is_some(),
        site_id: ctx.site.id.clone(),
        visitor_id: visitor.unwrap_or_else(crate::new_id),
        channel: a.channel.as_str().to_owned(),
        source: a.source,
        medium: a.medium,
        campaign: a.campaign,
        content: a.content,
        keyword: a.keyword,
        referrer: req
            .referrer
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| truncate(r, traffic::MAX_URL_CHARS)),
        referrer_domain: a.referrer_domain,
        landing_url: a.landing_url,
        landing_path: a.landing_path,
        title: req.title.as_deref().map(|t| truncate(t, 300)),
        gclid: a.gclid,
        yclid: a.yclid,
        fbclid: a.fbclid,
        ga_client_id: req.ga_client_id.as_deref().map(|v| truncate(v, 100)),
        ym_client_id: req.ym_client_id.as_deref().map(|v| truncate(v, 100)),
        user_agent: req.user_agent.as_deref().map(|v| truncate(v, 500)),
        device: Some(device.kind.as_str().to_owned()),
        browser: Some(device.browser).filter(|b| !b.is_empty()),
        os: Some(device.os).filter(|o| !o.is_empty()),
        ip: req.ip.clone(),
        city: req.city.clone(),
        screen: req.screen.as_deref().map(|v| truncate(v, 20)),
        lang: req.lang.as_deref().map(|v| truncate(v, 20)),
        is_bot: device.is_bot,
        rule_id,
    };
    (s, target)
}

/// At most `max` characters of `s`, trimmed.
fn truncate(s: &str, max: usize) -> String {
    traffic::truncate(s.trim(), max).to_owned()
}
