//! The public tracking endpoints the snippet calls: `/t/ct.js`, `/t/v1/visit`,
//! `/t/v1/ping`, `/t/v1/event`. CORS-enabled for each site's own domains, no auth, small
//! bodies, and quick to say 503 when the database is away, so the page keeps its number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use calltrail_store::engine::{NewPage, Shown};
use calltrail_store::tracking::{
    clean_id, continuing_visit, new_session, SiteContext, VisitRequest,
};
use calltrail_store::{Continuing, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::heartbeat::Answers;
use crate::AppState;

/// The number-swap script, built into the binary.
pub const CT_JS: &str = include_str!("../../../snippet/ct.js");

/// Largest body a tracking call may send.
pub const MAX_TRACKING_BODY: usize = 16 * 1024;
/// How long a tracking call may wait on the database before answering 503.
const STORE_DEADLINE: Duration = Duration::from_millis(1500);
/// How long a site's engine context is cached.
const SITE_TTL: Duration = Duration::from_secs(5);

/// A site as loaded: when, the site (`None`: no site has that key), and whether a caller is
/// loading it again.
struct Cached {
    at: Instant,
    ctx: Option<Arc<SiteContext>>,
    reloading: bool,
}

/// Sites by public key, cached for a few seconds so the hot path reads no setup rows.
#[derive(Default)]
pub struct SiteCache {
    map: Mutex<HashMap<String, Cached>>,
}

impl SiteCache {
    /// The site with this key as cached, while fresh. Once its entry is [`SITE_TTL`] old,
    /// one caller loads it again (`None` here tells it to, through `load`) while the others
    /// go on with what was loaded (every tracking call that arrived then reloaded the site,
    /// and its hundreds of numbers, at once); an entry three times that old (the reload
    /// failed, or its caller gave up) is not used.
    fn cached(&self, key: &str) -> Option<Option<Arc<SiteContext>>> {
        let mut m = self.map.lock().ok()?;
        let c = m.get_mut(key)?;
        let age = c.at.elapsed();
        if age < SITE_TTL || (c.reloading && age < 3 * SITE_TTL) {
            return Some(c.ctx.clone());
        }
        c.reloading = true;
        None
    }

    /// The site read from the store, and cached.
    async fn load(&self, st: &AppState, key: &str) -> Result<Option<Arc<SiteContext>>, StoreError> {
        let loaded = st.store.site_context(key).await.map(|c| c.map(Arc::new));
        if let Ok(mut m) = self.map.lock() {
            match &loaded {
                Ok(ctx) => {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    let cached = Cached {
                        at: Instant::now(),
                        ctx: ctx.clone(),
                        reloading: false,
                    };
                    m.insert(key.to_owned(), cached);
                }
                Err(_) => {
                    if let Some(c) = m.get_mut(key) {
                        c.reloading = false;
                    }
                }
            }
        }
        loaded
    }

    /// Forget everything (after a setup change through the API).
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
    }
}

#[derive(Debug, Deserialize)]
struct VisitBody {
    site_key: String,
    visitor_id: Option<String>,
    session_id: Option<String>,
    url: String,
    referrer: Option<String>,
    title: Option<String>,
    ga_client_id: Option<String>,
    ym_client_id: Option<String>,
    screen: Option<String>,
    lang: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PingBody {
    site_key: String,
    // `visitor_id` is sent too; the session names the visitor, so it is not read here.
    session_id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
    title: Option<String>,
}

/// A number to show in place of one of the site's own, in the answers to the script.
#[derive(Debug, Serialize)]
struct NumberOut<'a> {
    replaces: &'a str,
    number: &'a str,
    display: &'a str,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/ct.js", get(script))
        .route("/t/v1/visit", post(visit).options(preflight))
        .route("/t/v1/ping", post(ping).options(preflight))
        .route("/t/v1/event", post(event).options(preflight))
        .layer(DefaultBodyLimit::max(MAX_TRACKING_BODY))
}

async fn script(headers: HeaderMap) -> Response {
    let etag = format!("\"{:x}\"", fnv1a(CT_JS.as_bytes()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        CT_JS.into_response()
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    res
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Preflight answers generously; the request itself is checked against the site.
async fn preflight(headers: HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

/// A tracking answer, with CORS headers when the origin is the site's.
struct Tracked {
    origin: Option<HeaderValue>,
    res: Response,
}

impl IntoResponse for Tracked {
    fn into_response(mut self) -> Response {
        let h = self.res.headers_mut();
        if let Some(o) = self.origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.res
    }
}

/// The host of an absolute URL, as written (`None`: not absolute).
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    if host.starts_with('[') {
        // An IPv6 address, with its closing bracket.
        return Some(host.find(']').map_or(host, |end| &host[..=end]));
    }
    host.split(':').next()
}

/// The site a tracking call names, and whether its origin may call for it.
async fn site_for(
    st: &AppState,
    key: &str,
    headers: &HeaderMap,
    page_url: Option<&str>,
) -> Result<(Arc<SiteContext>, Option<HeaderValue>), ApiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > 64 {
        return Err(ApiError::BadRequest(
            "site_key is missing or malformed".into(),
        ));
    }
    // Nearly always cached: the store is asked (and its future boxed) only on a miss.
    let ctx = match st.sites.cached(key) {
        Some(ctx) => ctx,
        None => with_deadline(st.sites.load(st, key)).await?,
    };
    let ctx = ctx.ok_or_else(|| {
        ApiError::NotFound(format!(
            "site with key `{key}` (check the data-site attribute of the script tag)"
        ))
    })?;
    let origin = headers.get(header::ORIGIN);
    let host = match origin {
        Some(o) => o.to_str().ok().and_then(host_of),
        None => page_url.and_then(host_of),
    }
    .map(str::to_ascii_lowercase);
    let allowed = host
        .as_deref()
        .is_some_and(|h| ctx.domains.iter().any(|d| d.covers(h)));
    if !allowed {
        st.metrics.count("calltrail_tracking_rejected_origin_total");
        return Err(ApiError::Forbidden(format!(
            "origin `{}` is not one of this site's domains",
            host.unwrap_or_default()
        )));
    }
    Ok((ctx, origin.cloned()))
}

/// The store's answer within `STORE_DEADLINE`, or 503. The store's future is boxed: it
/// holds the request's data while it waits, and kept inline it would make every tracking
/// handler's future kilobytes long, copied by each layer that moves it (seen as `memmove`
/// beside tower's `Oneshot` in profiles of the visit benchmark).
fn with_deadline<'a, T: 'a>(
    f: impl std::future::Future<Output = Result<T, StoreError>> + 'a,
) -> impl std::future::Future<Output = Result<T, ApiError>> + 'a {
    let f = Box::pin(f);
    async move {
        match tokio::time::timeout(STORE_DEADLINE, f).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => Err(ApiError::Unavailable),
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_TRACKING_BODY {
        return Err(ApiError::BadRequest("body too large".into()));
    }
    parse_json(body)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn check_len(field: &str, v: Option<&str>, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.len() > max => {
            Err(calltrail_core::Invalid::field(field, format!("at most {max} characters")).into())
        }
        _ => Ok(()),
    }
}

fn numbers_out<'a>(site_numbers: &'a [String], shown: &'a Shown) -> Vec<NumberOut<'a>> {
    // The store reads each number's display form with it (migration 0010).
    let Some(printed) = &shown.number else {
        return Vec::new();
    };
    site_numbers
        .iter()
        .map(|replaces| NumberOut {
            replaces,
            number: &printed.number,
            display: &printed.display,
        })
        .collect()
}

fn client_ip(headers: &HeaderMap, peer: SocketAddr) -> String {
    // Behind a reverse proxy on this host, the proxy names the client.
    if peer.ip().is_loopback() {
        if let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        {
            return ip.to_owned();
        }
    }
    peer.ip().to_string()
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn visit(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Tracked, ApiError> {
    let mut b: VisitBody = parse_body(&body)?;
    if host_of(&b.url).is_none() {
        return Err(calltrail_core::Invalid::field(
            "url",
            "must be the page's absolute http(s) URL",
        )
        .into());
    }
    // Long page data is cut, not refused: the visitor must still get a number.
    b.url = cut(b.url, 4096);
    b.referrer = b.referrer.map(|r| cut(r, 4096));
    b.title = b.title.map(|t| cut(t, 1000));
    for (f, v) in [
        ("ga_client_id", &b.ga_client_id),
        ("ym_client_id", &b.ym_client_id),
        ("screen", &b.screen),
        ("lang", &b.lang),
    ] {
        check_len(f, v.as_deref(), 100)?;
    }
    let (ctx, origin) = site_for(&st, &b.site_key, &headers, Some(&b.url)).await?;
    let ip = client_ip(&headers, peer);
    let req = VisitRequest {
        session_id: b.session_id,
        visitor_id: b.visitor_id,
        url: b.url,
        referrer: b.referrer,
        title: b.title,
        ga_client_id: b.ga_client_id,
        ym_client_id: b.ym_client_id,
        screen: b.screen,
        lang: b.lang,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        city: st.config.geoip.as_ref().and_then(|g| g.lookup_str(&ip)),
        ip: Some(ip),
    };
    let continuing = continuing_visit(&ctx, &req);
    if let Some(c) = &continuing {
        if let Some(answers) = remembered_page(&st, c).await? {
            st.metrics.count("calltrail_visits_total{outcome=\"keep\"}");
            return Ok(Tracked {
                origin,
                res: json_bytes(answers.visit),
            });
        }
    }
    let shown = with_deadline(async {
        if let Some(c) = continuing {
            if let Some(shown) = st.visits.continue_session(c).await? {
                return Ok(shown);
            }
        }
        let (session, target) = new_session(&ctx, &req);
        st.visits.open(session, target).await
    })
    .await?;
    st.metrics.count_visit(&shown);
    let answers = remember(&st, &ctx, &shown);
    Ok(Tracked {
        origin,
        res: json_bytes(answers.visit),
    })
}

/// A page load or event of a session this node answered for lately (see `heartbeat`): its
/// page view is written, and what the session shows comes from memory. `None`: the session
/// is not remembered, or no longer exists; ask the store. The activity is noted before the
/// write: a page that loaded is activity even when the store could not take its page view
/// (the caller then answers 503).
async fn remembered_page(st: &AppState, c: &Continuing) -> Result<Option<Answers>, ApiError> {
    let Some(page) = &c.page else {
        return Ok(None);
    };
    let answers = match st.beats.beat(&c.session_id, &c.site_id, now_ms()) {
        Some(answers) => {
            let session = c.session_id.clone();
            let added = with_deadline(st.visits.add_page(session, page.clone())).await?;
            if !added {
                st.beats.forget(&c.session_id);
            }
            added.then_some(answers)
        }
        None => None,
    };
    st.metrics.count(if answers.is_some() {
        "calltrail_pages_total{path=\"memory\"}"
    } else {
        "calltrail_pages_total{path=\"store\"}"
    });
    Ok(answers)
}

/// An answer serialised before.
fn json_bytes(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn continue_call(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    page: bool,
) -> Result<Tracked, ApiError> {
    let b: PingBody = parse_body(body)?;
    let Some(session_id) = clean_id(Some(&b.session_id)) else {
        return Err(calltrail_core::Invalid::field("session_id", "malformed session id").into());
    };
    let url = b.url.map(|u| cut(u, 4096));
    let title = b.title.map(|t| cut(t, 1000));
    let (ctx, origin) = site_for(st, &b.site_key, headers, url.as_deref()).await?;
    let now = now_ms();
    let page = if page {
        let kind = b.kind.as_deref().unwrap_or("pageview");
        if kind.is_empty() || kind.len() > 40 {
            return Err(
                calltrail_core::Invalid::field("type", "1-40 characters, e.g. pageview").into(),
            );
        }
        let Some(url) = url.filter(|u| host_of(u).is_some()) else {
            return Err(calltrail_core::Invalid::field(
                "url",
                "an event needs the page's absolute URL",
            )
            .into());
        };
        Some(NewPage {
            kind: kind.to_owned(),
            url,
            title,
        })
    } else {
        // A session this node answered for lately: from memory, written back within a second.
        if let Some(answers) = st.beats.beat(&session_id, &ctx.site.id, now) {
            st.metrics.count("calltrail_pings_total{path=\"memory\"}");
            return Ok(Tracked {
                origin,
                res: json_bytes(answers.ping),
            });
        }
        st.metrics.count("calltrail_pings_total{path=\"store\"}");
        None
    };
    let c = Continuing {
        site_id: ctx.site.id.clone(),
        session_id,
        page,
        pools: ctx.pools.clone(),
    };
    if let Some(answers) = remembered_page(st, &c).await? {
        return Ok(Tracked {
            origin,
            res: json_bytes(answers.ping),
        });
    }
    let shown = with_deadline(st.visits.continue_session(c)).await?;
    let res = match shown {
        Some(shown) => json_bytes(remember(st, &ctx, &shown).ping),
        // The session ran out: the script starts a new visit.
        None => (
            StatusCode::GONE,
            Json(serde_json::json!({"error": "session expired; send a new visit"})),
        )
            .into_response(),
    };
    Ok(Tracked { origin, res })
}

/// What the store says a session shows, as the answers to its next calls, remembered so
/// that they can be answered from memory (see `heartbeat`).
fn remember(st: &AppState, ctx: &SiteContext, shown: &Shown) -> Answers {
    let answers = answers(&ctx.site.site_numbers, shown, st.config.ping_s);
    st.beats.remember(
        &shown.session_id,
        &ctx.site.id,
        shown.hold_ms.filter(|_| shown.number.is_some()),
        answers.clone(),
    );
    answers
}

/// The answers to a session's page loads (`{visitor_id, session_id, numbers, track_code,
/// ping_s}`) and to its heartbeats and events (`{numbers, ping_s}`). Both carry the same
/// numbers: serialised once, the rest of each answer written around them.
fn answers(site_numbers: &[String], shown: &Shown, ping_s: u32) -> Answers {
    use std::io::Write as _;
    // Writing JSON into a Vec fails only for values serde cannot represent; these are
    // strings, and a failure would leave a shorter, still well-formed answer.
    let mut numbers = Vec::with_capacity(128);
    let _ = serde_json::to_writer(&mut numbers, &numbers_out(site_numbers, shown));
    let mut ping = Vec::with_capacity(numbers.len() + 24);
    ping.extend_from_slice(b"{\"numbers\":");
    ping.extend_from_slice(&numbers);
    let _ = write!(ping, ",\"ping_s\":{ping_s}}}");
    let mut visit = Vec::with_capacity(numbers.len() + 160);
    visit.extend_from_slice(b"{\"visitor_id\":");
    let _ = serde_json::to_writer(&mut visit, &shown.visitor_id);
    visit.extend_from_slice(b",\"session_id\":");
    let _ = serde_json::to_writer(&mut visit, &shown.session_id);
    visit.extend_from_slice(b",\"numbers\":");
    visit.extend_from_slice(&numbers);
    visit.extend_from_slice(b",\"track_code\":");
    let _ = serde_json::to_writer(&mut visit, &shown.track_code);
    let _ = write!(visit, ",\"ping_s\":{ping_s}}}");
    Answers {
        ping: Bytes::from(ping),
        visit: Bytes::from(visit),
    }
}

async fn ping(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Tracked, ApiError> {
    continue_call(&st, &headers, &body, false).await
}

async fn event(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Tracked, ApiError> {
    continue_call(&st, &headers, &body, true).await
}

#[cfg(test)]
mod future_sizes {
    use super::*;

    fn size4<A, B, C, D, F>(_handler: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn size3<A, B, C, F>(_handler: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every layer between hyper and the handler moves the handler's future; with the
    /// store's futures inline, the visit's was 7.5 KB and the ping's 6.8 KB.
    #[test]
    fn tracking_handlers_futures_stay_small() {
        for (name, size) in [
            ("visit", size4(visit)),
            ("ping", size3(ping)),
            ("event", size3(event)),
        ] {
            assert!(size <= 2048, "the {name} handler's future is {size} bytes");
        }
    }
}

#[cfg(test)]
mod answer_bodies {
    use super::*;
    use calltrail_store::engine::Printed;

    fn shown(number: Option<Printed>) -> Shown {
        Shown {
            session_id: "s-1".into(),
            visitor_id: "v\"1".into(),
            track_code: "12345".into(),
            number,
            allocation: None,
            hold_ms: None,
            is_bot: false,
        }
    }

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn answers_carry_the_numbers_for_every_site_number() {
        let site = ["+74951234567".to_owned(), "+78001234567".to_owned()];
        let printed = Printed {
            number: "+74953000000".into(),
            display: "+7 495 300-00-00".into(),
        };
        let a = answers(&site, &shown(Some(printed)), 30);
        let numbers = serde_json::json!([
            {"replaces": "+74951234567", "number": "+74953000000", "display": "+7 495 300-00-00"},
            {"replaces": "+78001234567", "number": "+74953000000", "display": "+7 495 300-00-00"},
        ]);
        assert_eq!(
            json(&a.visit),
            serde_json::json!({
                "visitor_id": "v\"1", "session_id": "s-1", "numbers": numbers,
                "track_code": "12345", "ping_s": 30,
            })
        );
        assert_eq!(
            json(&a.ping),
            serde_json::json!({"numbers": numbers, "ping_s": 30})
        );
    }

    #[test]
    fn a_session_shown_no_number_keeps_the_sites_own() {
        let a = answers(&["+74951234567".to_owned()], &shown(None), 15);
        assert_eq!(
            json(&a.ping),
            serde_json::json!({"numbers": [], "ping_s": 15})
        );
        assert_eq!(json(&a.visit)["numbers"], serde_json::json!([]));
        assert_eq!(json(&a.visit)["visitor_id"], "v\"1");
    }

    #[test]
    fn hosts_of_urls_and_origins() {
        assert_eq!(
            host_of("https://Shop.example:8080/a?b#c"),
            Some("Shop.example")
        );
        assert_eq!(host_of("https://user@shop.example/"), Some("shop.example"));
        assert_eq!(host_of("http://[::1]:8790/"), Some("[::1]"));
        assert_eq!(host_of("shop.example/page"), None);
    }
}

#[cfg(test)]
mod site_cache {
    use super::*;

    fn cache_with(key: &str, age: Duration, reloading: bool) -> SiteCache {
        let cache = SiteCache::default();
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let entry = Cached {
            at,
            ctx: None,
            reloading,
        };
        if let Ok(mut m) = cache.map.lock() {
            m.insert(key.to_owned(), entry);
        }
        cache
    }

    #[test]
    fn a_stale_entry_is_reloaded_by_one_caller_while_the_others_use_it() {
        // Fresh: served (`Some(None)` is "no site with this key", cached too).
        let fresh = cache_with("k", Duration::from_secs(1), false);
        assert!(matches!(fresh.cached("k"), Some(None)));
        assert!(fresh.cached("other").is_none(), "not cached: load it");
        // Stale: the first caller is told to load; the next ones get the old entry.
        let stale = cache_with("k", SITE_TTL + Duration::from_secs(1), false);
        assert!(stale.cached("k").is_none());
        assert!(matches!(stale.cached("k"), Some(None)));
        // Three times stale (the reload failed or was given up): loaded again.
        let old = cache_with("k", 3 * SITE_TTL + Duration::from_secs(1), true);
        assert!(old.cached("k").is_none());
    }
}
