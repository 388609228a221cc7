//! calltrail-visit-cost: the work one new visitor costs, in instructions, phase by phase.
//!
//! A benchmark, not a test. The throughput rows of `calltrail-loadgen` move by ±15 % and
//! more from one run to the next on a shared 2-core machine; instruction counts do not.
//! This program runs one phase of a new visitor's work many times, each in a function of
//! its own that `valgrind --tool=callgrind --toggle-collect=<function>` counts alone
//! (`crates/loadgen/visit_cost.sh` runs it so and divides by the visits):
//!
//! - `phase_new_session`: what the server decides before the store is asked (classification,
//!   user agent, rules: `tracking::new_session`);
//! - `phase_writer`: the page-load writer's batches (`Store::open_sessions`, batches of
//!   `--batch` new visitors, each leasing a number from a pool of `--pool` numbers);
//! - `phase_server`: whole requests through the real router (`calltrail_server::app`), no
//!   sockets: parsing, the site, classification, the store's answer, the JSON. The writer
//!   runs on a thread of its own, so with callgrind's collection per thread this counts
//!   the server's side alone.
//!
//! Without valgrind it runs the same phases and prints wall-clock times, which on this
//! machine are only a rough guide.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context as _};
use axum::body::Body;
use axum::extract::ConnectInfo;
use calltrail_loadgen::{lease_long_ago, setup_site, shows_fallback, FALLBACK, FRESH_FALLBACK, UA};
use calltrail_server::{AppState, ServerConfig};
use calltrail_store::engine::{NewSession, Target};
use calltrail_store::testing::{self, TestDb};
use calltrail_store::tracking::{self, SiteContext, VisitRequest};
use clap::{Parser, ValueEnum};
use http_body_util::BodyExt as _;
use hyper::header::{CONTENT_TYPE, HOST, ORIGIN, USER_AGENT};
use hyper::Request;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

const URL: &str = "https://bench.example/sofas?utm_source=google&utm_medium=cpc&utm_campaign=bench";
const REFERRER: &str = "https://www.google.com/";
/// Numbers of the second site, for the server phase after the writer phase used the first.
const SERVER_FIRST: usize = 5_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    NewSession,
    Writer,
    Server,
}

/// Instructions a new visitor costs, phase by phase (run under callgrind: visit_cost.sh).
#[derive(Debug, Parser)]
#[command(name = "calltrail-visit-cost")]
struct Args {
    /// Phases to run (all when none is named).
    #[arg(long, value_enum)]
    phase: Vec<Phase>,
    /// New visitors each phase runs.
    #[arg(long, default_value_t = 2200)]
    visits: usize,
    /// New visitors in one writer batch (the closed loop of calltrail-loadgen makes 7-11).
    #[arg(long, default_value_t = 11)]
    batch: usize,
    /// Numbers in each site's pool: every visitor leases one, so at least `--visits`.
    #[arg(long, default_value_t = 5_000)]
    pool: usize,
    /// Each number was shown to a visitor two hours before (the "number back after hold"
    /// row of calltrail-loadgen) instead of never used.
    #[arg(long)]
    returning: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.visits == 0 || args.pool < args.visits {
        bail!("--batch and --visits must be positive, --pool at least --visits");
    }
    let phases = if args.phase.is_empty() {
        vec![Phase::NewSession, Phase::Writer, Phase::Server]
    } else {
        args.phase.clone()
    };
    // One thread for this program's own work; the server's visit writer adds its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let db = rt.block_on(testing::sqlite());
    let result = run(&rt, &db, &args, &phases);
    rt.block_on(db.cleanup());
    result
}

fn run(rt: &Runtime, db: &TestDb, args: &Args, phases: &[Phase]) -> anyhow::Result<()> {
    let key = rt.block_on(setup_site(&db.store, args.pool, 3_000_000, FALLBACK))?;
    if args.returning {
        rt.block_on(lease_long_ago(&db.store, &key, args.pool))?;
    }
    let ctx = rt
        .block_on(db.store.site_context(&key))?
        .context("the site just made")?;
    let req = visit_request();
    // Whether a phase leased the first site's numbers already.
    let mut used = false;
    for phase in phases {
        let start = Instant::now();
        match phase {
            Phase::NewSession => {
                // The first classification builds the user-agent parser's tables once.
                std::hint::black_box(tracking::new_session(&ctx, &req));
                let made = phase_new_session(&ctx, &req, args.visits);
                std::hint::black_box(made);
            }
            Phase::Writer => {
                let items: Vec<(NewSession, Target)> = (0..args.visits)
                    .map(|_| tracking::new_session(&ctx, &req))
                    .collect();
                // The pool's first batch reads the pool (not a new visitor's cost).
                let now = jiff::Timestamp::now().as_millisecond();
                rt.block_on(db.store.open_sessions(&items[..1], now))?;
                let leased = 1 + phase_writer(rt, db, &items[1..], args.batch)?;
                used = true;
                if leased != args.visits {
                    bail!(
                        "the writer leased {leased} numbers for {} visitors",
                        args.visits
                    );
                }
            }
            Phase::Server => {
                let key = if used {
                    let (store, n) = (&db.store, args.pool);
                    let key = rt.block_on(setup_site(store, n, SERVER_FIRST, FRESH_FALLBACK))?;
                    if args.returning {
                        rt.block_on(lease_long_ago(store, &key, n))?;
                    }
                    key
                } else {
                    key.clone()
                };
                used = true;
                let app =
                    calltrail_server::app(AppState::new(db.store.clone(), ServerConfig::default()));
                // The site's first visit reads it and its pool (not a new visitor's cost).
                let warm = rt.block_on(one_visit(app.clone(), &key))?;
                std::hint::black_box(warm);
                phase_server(rt, &app, &key, args.visits - 1)?;
            }
        }
        println!(
            "{:?}: {} visits in {:.3} s",
            phase,
            args.visits,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// What a new visitor's page load tells the server.
fn visit_request() -> VisitRequest {
    VisitRequest {
        url: URL.to_owned(),
        referrer: Some(REFERRER.to_owned()),
        title: Some("Sofas".to_owned()),
        screen: Some("1920x1080".to_owned()),
        lang: Some("en-US".to_owned()),
        user_agent: Some(UA.to_owned()),
        ip: Some("127.0.0.1".to_owned()),
        ..VisitRequest::default()
    }
}

#[inline(never)]
fn phase_new_session(ctx: &SiteContext, req: &VisitRequest, n: usize) -> usize {
    let mut made = 0;
    for _ in 0..n {
        let (s, _) = tracking::new_session(ctx, req);
        made += s.source.len();
    }
    made
}

/// The writer's batches; the number of visitors who got a pool number.
#[inline(never)]
fn phase_writer(
    rt: &Runtime,
    db: &TestDb,
    items: &[(NewSession, Target)],
    batch: usize,
) -> anyhow::Result<usize> {
    let mut leased = 0;
    for chunk in items.chunks(batch) {
        let now = jiff::Timestamp::now().as_millisecond();
        let shown = rt.block_on(db.store.open_sessions(chunk, now))?;
        leased += shown.iter().filter(|s| s.hold_ms.is_some()).count();
    }
    Ok(leased)
}

#[inline(never)]
fn phase_server(rt: &Runtime, app: &axum::Router, key: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let body = rt.block_on(one_visit(app.clone(), key))?;
        std::hint::black_box(body);
    }
    Ok(())
}

/// One new visitor's `/t/v1/visit` through the router, as the snippet sends it.
async fn one_visit(app: axum::Router, key: &str) -> anyhow::Result<axum::body::Bytes> {
    let body = format!(
        r#"{{"site_key":"{key}","url":"{URL}","referrer":"{REFERRER}","title":"Sofas","screen":"1920x1080","lang":"en-US"}}"#
    );
    let peer: SocketAddr = "127.0.0.1:40000".parse()?;
    let mut req = Request::post("/t/v1/visit")
        .header(HOST, "127.0.0.1")
        .header(ORIGIN, "https://bench.example")
        .header(USER_AGENT, UA)
        .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(body))?;
    req.extensions_mut().insert(ConnectInfo(peer));
    let res = app.oneshot(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() || !bytes.starts_with(b"{\"visitor_id\"") {
        bail!(
            "visit answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    if shows_fallback(&bytes) {
        bail!(
            "a visitor was not shown a pool number: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(bytes)
}
