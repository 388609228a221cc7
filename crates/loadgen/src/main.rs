//! calltrail-loadgen: throughput and latency of the public tracking endpoints
//! (`/t/v1/visit` with a new visitor every request, `/t/v1/ping`) on SQLite and
//! PostgreSQL, beside a bare axum handler measured the same way in the same run.
//!
//! A benchmark, not a test. Everything runs in this one process, on loopback only: the
//! server (the real `calltrail_server::serve`, the same router and layers the binary runs)
//! on a tokio runtime of its own, the load on another. The load is a closed loop: a fixed
//! number of HTTP/1.1 keep-alive connections, each sending its next request as soon as
//! the previous answer is read. The first second (`--warmup`) is not measured.

/// The allocator the calltrail binary runs with, so the server is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use calltrail_loadgen::{
    lease_long_ago, setup_site, shows_fallback, FALLBACK, FRESH_FALLBACK, RETURNING_FALLBACK, UA,
};
use calltrail_server::{AppState, ServerConfig};
use calltrail_store::testing::{self, TestDb};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::header::{CONTENT_TYPE, HOST, ORIGIN, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const SITE_ORIGIN: &str = "https://bench.example";
const SECTION: &str = "## Tracking endpoint throughput";
/// Why the endpoints trail the bare handler, from profiling (perf) on the 2-core machine.
const WHY: &str = "Where the time goes (perf, SQLite, visit rows): page loads are written in \
batches by one writer task on a thread of its own (crates/server/src/visits.rs). It takes the \
page loads that arrived while it wrote the last batch and writes them in one transaction through \
an SQLite connection of its own (rusqlite, on the SQLite library sqlx uses) on that same thread \
(crates/store/src/batch.rs, script.rs). A new visitor's batch is decided in memory from a picture \
of the pool that the last commit left (`engine::Picture`: indexes, so a decision costs the same \
for a pool of 500 or 20 000 numbers), and writes the session row (an exhaustion included) and \
its index entries: for a batch of 8 about 8 WAL pages, whose two pwrite calls each are about a \
quarter of the writer thread; binding the arguments (SQLite copies each string) about a tenth, planning \
the batch about a seventh. A visitor who gets a number also writes its lease (a row, its key and \
two index entries, by number and by visitor; on PostgreSQL also the number's latest lease): about \
17 WAL pages for a batch of 8 (python3 crates/loadgen/wal_frames.py), so the writer's batch takes \
longer, and the answer remembers the lease for the pings (the number's \
display form is read with it, written when the number was). A next page of a session the \
node answered for lately is only its page view (one multi-row insert, no read): the session's \
activity and its lease's hold move on with the heartbeats, written back once a second \
(crates/server/src/heartbeat.rs), which is also how the ping row is answered (from memory). Under the closed loop of 32 connections batches are \
7-10 page loads and the CPU is not saturated (a fifth to a third idle): a new visitor's round \
trip of ~1.1 ms is ~0.2 ms waiting for the writer, ~0.2 ms its batch, ~0.3 ms until its handler \
runs again on a busy server thread, and the HTTP side (parsing, classification, JSON, the \
sockets). On PostgreSQL each batch of new sessions holds its pool's row lock (`SELECT ... FOR \
UPDATE`) until it commits, every statement is a network round trip, and a page load that is not \
answered from memory is a transaction of its own.\n";
/// Hard bounds, whatever the flags say.
const MAX_DURATION_S: f64 = 300.0;
const MAX_CONCURRENCY: usize = 1024;
const MAX_POOL: usize = 100_000;
const MAX_ROUNDS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Both,
}

/// Throughput and p50/p99 latency of /t/v1/visit and /t/v1/ping against a bare axum handler.
#[derive(Debug, Parser)]
#[command(name = "calltrail-loadgen")]
struct Args {
    /// Measured seconds per endpoint (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = BackendArg::Both)]
    backend: BackendArg,
    /// Numbers in the site's pool. Each new visitor leases one (15 min hold), so the
    /// first visits get a fresh number and the rest, once the pool is dry, the fallback.
    #[arg(long, default_value_t = 500)]
    pool_numbers: usize,
    /// Numbers in the pool of a second site, where every new visitor of the fresh-number
    /// row leases a never-used one (0: no such row).
    #[arg(long, default_value_t = 20_000)]
    fresh_numbers: usize,
    /// Numbers in the pool of a third site, each shown to a visitor two hours before the
    /// run, so that every new visitor of its row gets a number back after its hold, as
    /// pools do once they have run a day (0: no such row).
    #[arg(long, default_value_t = 20_000)]
    returning_numbers: usize,
    /// Sessions the ping phase cycles through (opened first, each holding a pool number).
    #[arg(long, default_value_t = 128)]
    ping_sessions: usize,
    /// Worker threads of the server's runtime (default: all cores).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Whole runs (the bare handler, every row, the bare handler again) one after another.
    /// Each row's "vs bare" is taken against its own round's bare handler, and the table
    /// shows the round with the median figure: one run on a shared machine moves by a sixth
    /// or more, so a target near a row's figure is judged on several.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Write the results into this Markdown file's throughput section.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// What one phase measured.
#[derive(Debug, Clone)]
struct Outcome {
    backend: &'static str,
    endpoint: String,
    /// Measured wall time, seconds.
    secs: f64,
    ok: u64,
    errors: u64,
    /// Latencies of the measured successful requests, microseconds, sorted.
    lat_us: Vec<u32>,
    /// Visits that got the pool's fallback number.
    fallback: u64,
    /// CPU time of the whole process (load generator and server) per measured request,
    /// microseconds; `None` for a phase too short to tell.
    cpu_us: Option<f64>,
    /// Share of the machine's CPU time the hypervisor gave to others in the measured
    /// window (`steal` in /proc/stat), percent.
    steal_pct: Option<f64>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }

    fn cpu(&self) -> String {
        self.cpu_us
            .map_or_else(|| "–".to_owned(), |c| format!("{c:.0}"))
    }

    fn steal(&self) -> String {
        self.steal_pct
            .map_or_else(|| "–".to_owned(), |c| format!("{c:.0}"))
    }

    fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 * p).ceil() as usize).clamp(1, self.lat_us.len()) - 1;
        f64::from(self.lat_us[i]) / 1000.0
    }
}

/// What the connections send.
#[derive(Clone)]
enum Load {
    Bare,
    Visit {
        key: Arc<str>,
    },
    Ping {
        key: Arc<str>,
        sessions: Arc<Vec<String>>,
    },
    /// The next page of a live session.
    Page {
        key: Arc<str>,
        sessions: Arc<Vec<String>>,
    },
}

impl Load {
    fn request(&self, worker: usize, n: usize) -> (&'static str, String) {
        match self {
            Self::Bare => (
                "/bare",
                String::from(r#"{"site_key":"bare","session_id":"0123456789abcdef"}"#),
            ),
            Self::Visit { key } => (
                "/t/v1/visit",
                format!(
                    r#"{{"site_key":"{key}","url":"https://bench.example/sofas?utm_source=google&utm_medium=cpc&utm_campaign=bench","referrer":"https://www.google.com/","title":"Sofas","screen":"1920x1080","lang":"en-US"}}"#
                ),
            ),
            Self::Ping { key, sessions } => {
                let i = (worker + n * 7919) % sessions.len().max(1);
                let sid = sessions.get(i).map_or("", String::as_str);
                (
                    "/t/v1/ping",
                    format!(r#"{{"site_key":"{key}","session_id":"{sid}"}}"#),
                )
            }
            Self::Page { key, sessions } => {
                let i = (worker + n * 7919) % sessions.len().max(1);
                let sid = sessions.get(i).map_or("", String::as_str);
                (
                    "/t/v1/visit",
                    format!(
                        r#"{{"site_key":"{key}","session_id":"{sid}","url":"https://bench.example/sofas/{n}","referrer":"https://bench.example/sofas","title":"Sofa {n}"}}"#
                    ),
                )
            }
        }
    }
}

/// Phase limits: measure in `[measure_from, end)`; stop early once `tickets` run out.
#[derive(Clone)]
struct Window {
    measure_from: Instant,
    end: Instant,
    tickets: Option<Arc<AtomicI64>>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    fallback: u64,
    lat_us: Vec<u32>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// What the first failed request got back, to say why.
    first_error: Option<String>,
    /// CPU seconds the process used in the measured window.
    cpu_s: Option<f64>,
    /// Stolen share of the machine's CPU in the measured window, percent.
    steal_pct: Option<f64>,
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn process_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the third.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux whatever the kernel's own tick.
    Some(ticks as f64 / 100.0)
}

/// The machine's CPU time so far, `(stolen, all)`, in ticks, from `/proc/stat`.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    Some((*f.get(7)?, f.iter().sum()))
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(addr: SocketAddr, load: Load, id: usize, w: Window) -> anyhow::Result<Tally> {
    let mut t = Tally::default();
    let mut sender = connect(addr).await?;
    let mut n = 0usize;
    // The bare handler's and a new visitor's request are the same every time: made once.
    let (fixed_path, fixed) = match &load {
        Load::Bare | Load::Visit { .. } => {
            let (path, body) = load.request(id, 0);
            (path, Some(Bytes::from(body)))
        }
        Load::Ping { .. } | Load::Page { .. } => ("", None),
    };
    loop {
        let start = Instant::now();
        if start >= w.end {
            break;
        }
        if let Some(tk) = &w.tickets {
            if tk.fetch_sub(1, Ordering::Relaxed) <= 0 {
                break;
            }
        }
        let (path, body) = if let Some(b) = &fixed {
            (fixed_path, b.clone())
        } else {
            let (path, body) = load.request(id, n);
            (path, Bytes::from(body))
        };
        n += 1;
        let req = Request::post(path)
            .header(HOST, "127.0.0.1")
            .header(ORIGIN, SITE_ORIGIN)
            .header(USER_AGENT, UA)
            .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(body))?;
        let answer = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        let done = Instant::now();
        let measured = start >= w.measure_from;
        match answer {
            Ok((status, body)) if status.is_success() => {
                if measured {
                    t.ok += 1;
                    t.lat_us.push(
                        u32::try_from(done.duration_since(start).as_micros()).unwrap_or(u32::MAX),
                    );
                    if matches!(load, Load::Visit { .. }) && shows_fallback(&body) {
                        t.fallback += 1;
                    }
                    t.first.get_or_insert(start);
                    t.last = Some(done);
                }
            }
            Ok((status, body)) => {
                if measured {
                    t.errors += 1;
                    t.first_error.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    });
                }
            }
            Err(e) => {
                if measured {
                    t.errors += 1;
                    t.first_error.get_or_insert_with(|| e.to_string());
                }
                // The connection is gone; open another and go on.
                sender = connect(addr).await?;
            }
        }
    }
    Ok(t)
}

/// One closed-loop phase against `addr`.
async fn measure(
    addr: SocketAddr,
    load: Load,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    tickets: Option<i64>,
) -> anyhow::Result<(f64, Tally)> {
    let begin = Instant::now();
    let w = Window {
        measure_from: begin + warmup,
        end: begin + warmup + duration,
        tickets: tickets.map(|n| Arc::new(AtomicI64::new(n))),
    };
    let mut tasks = Vec::with_capacity(concurrency);
    for id in 0..concurrency {
        tasks.push(tokio::spawn(worker(addr, load.clone(), id, w.clone())));
    }
    // CPU over the measured window: until its end, or for a phase bounded by requests,
    // until its last answer (the workers below end it).
    let window = (w.measure_from, w.end);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(window.0.into()).await;
        let a = (process_cpu()?, machine_cpu());
        if tickets.is_some() {
            let _ = done_rx.await;
        } else {
            tokio::time::sleep_until(window.1.into()).await;
        }
        let b = (process_cpu()?, machine_cpu());
        let steal = match (a.1, b.1) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
                Some((s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => None,
        };
        Some((b.0 - a.0, steal))
    });
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await??;
        all.ok += t.ok;
        all.errors += t.errors;
        all.fallback += t.fallback;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
        all.lat_us.extend(t.lat_us);
        all.first = match (all.first, t.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.last = all.last.max(t.last);
    }
    all.lat_us.sort_unstable();
    let _ = done_tx.send(());
    let used = cpu.await?;
    all.cpu_s = used.map(|u| u.0);
    all.steal_pct = used.and_then(|u| u.1);
    // Time-bounded phases divide by the window; a phase that ran out of tickets, by the
    // time from its first measured request to its last answer.
    let secs = match (tickets, all.first, all.last) {
        (Some(_), Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => duration.as_secs_f64(),
    };
    Ok((secs, all))
}

fn outcome(backend: &'static str, endpoint: &str, secs: f64, t: Tally) -> Outcome {
    if let Some(e) = &t.first_error {
        eprintln!(
            "[{backend}] {endpoint}: {} errors, the first: {e}",
            t.errors
        );
    }
    Outcome {
        backend,
        endpoint: endpoint.to_owned(),
        secs,
        ok: t.ok,
        errors: t.errors,
        cpu_us: t.cpu_s.filter(|_| t.ok > 0).map(|c| c * 1e6 / t.ok as f64),
        steal_pct: t.steal_pct,
        lat_us: t.lat_us,
        fallback: t.fallback,
    }
}

fn server_runtime(threads: usize) -> anyhow::Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("server")
        .enable_all()
        .build()?)
}

/// The bare handler: reads the body, answers a small JSON, same framing and server.
async fn bare(body: Bytes) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "ok": true, "len": body.len(), "ping_s": 30 }))
}

/// A running server: its address, and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_bare() -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = oneshot::channel::<()>();
    let app = axum::Router::new().route("/bare", axum::routing::post(bare));
    let done = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        })
        .await
    });
    Ok(Running { addr, stop, done })
}

async fn start_calltrail(db: &TestDb) -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = oneshot::channel::<()>();
    let state = AppState::new(db.store.clone(), ServerConfig::default());
    let done = tokio::spawn(calltrail_server::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok(Running { addr, stop, done })
}

/// Open `n` sessions (each a new visitor holding a pool number) for the ping phase.
async fn open_sessions(addr: SocketAddr, key: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut sender = connect(addr).await?;
    let load = Load::Visit { key: key.into() };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (path, body) = load.request(0, i);
        let req = Request::post(path)
            .header(HOST, "127.0.0.1")
            .header(ORIGIN, SITE_ORIGIN)
            .header(USER_AGENT, UA)
            .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from(body)))?;
        sender.ready().await?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "setting up the ping sessions: visit answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let sid = v["session_id"]
            .as_str()
            .context("visit answer without session_id")?;
        out.push(sid.to_owned());
    }
    Ok(out)
}

struct Plan {
    warmup: Duration,
    duration: Duration,
    concurrency: usize,
    pool: usize,
    /// Numbers of the fresh-number site's pool.
    fresh: usize,
    /// Numbers of the returning-number site's pool.
    returning: usize,
    ping_sessions: usize,
}

/// Warm-up of the fresh-number row (its first visits read the new site and its pool).
const FRESH_WARMUP: Duration = Duration::from_millis(300);

/// Run the backend's phases: ping, next page, fresh numbers (on the second site), pool dry.
fn run_backend(
    name: &'static str,
    db: &TestDb,
    server_rt: &Runtime,
    client_rt: &Runtime,
    plan: &Plan,
) -> anyhow::Result<Vec<Outcome>> {
    eprintln!("[{name}] setting up a site with {} pool numbers", plan.pool);
    let key = server_rt.block_on(setup_site(&db.store, plan.pool, 3_000_000, FALLBACK))?;
    let fresh_key: Option<Arc<str>> = if plan.fresh > 0 {
        eprintln!(
            "[{name}] setting up a second site with {} pool numbers",
            plan.fresh
        );
        Some(
            server_rt
                .block_on(setup_site(&db.store, plan.fresh, 5_000_000, FRESH_FALLBACK))?
                .into(),
        )
    } else {
        None
    };
    let returning_key: Option<Arc<str>> = if plan.returning > 0 {
        eprintln!(
            "[{name}] setting up a third site with {} pool numbers, each shown two hours ago",
            plan.returning
        );
        let key = server_rt.block_on(setup_site(
            &db.store,
            plan.returning,
            7_000_000,
            RETURNING_FALLBACK,
        ))?;
        server_rt.block_on(lease_long_ago(&db.store, &key, plan.returning))?;
        Some(key.into())
    } else {
        None
    };
    let srv = server_rt.block_on(start_calltrail(db))?;
    let key: Arc<str> = key.into();
    let mut out = Vec::new();
    client_rt.block_on(async {
        eprintln!("[{name}] opening {} sessions for ping", plan.ping_sessions);
        let sessions = Arc::new(open_sessions(srv.addr, &key, plan.ping_sessions).await?);
        // One closed-loop phase: `tickets` bounds it by requests instead of time.
        let phase = |load: Load, warmup: Duration, tickets: Option<i64>| {
            measure(
                srv.addr,
                load,
                plan.concurrency,
                warmup,
                plan.duration,
                tickets,
            )
        };
        eprintln!("[{name}] ping");
        let ping = Load::Ping {
            key: key.clone(),
            sessions: sessions.clone(),
        };
        let (secs, t) = phase(ping, plan.warmup, None).await?;
        out.push(outcome(name, "ping", secs, t));

        eprintln!("[{name}] visit, next page of a live session");
        let page = Load::Page {
            key: key.clone(),
            sessions: sessions.clone(),
        };
        let (secs, t) = phase(page, plan.warmup, None).await?;
        out.push(outcome(name, "visit (next page)", secs, t));

        // The second and third sites' rows are bounded by their pools: each visit leases one
        // of the numbers, so the phase ends when they run out.
        for (site_key, n, row) in [
            (&fresh_key, plan.fresh, "visit (fresh number)"),
            (
                &returning_key,
                plan.returning,
                "visit (number back after hold)",
            ),
        ] {
            let Some(site_key) = site_key else { continue };
            eprintln!("[{name}] {row}: {n} numbers");
            let visit = Load::Visit {
                key: site_key.clone(),
            };
            let (secs, t) = phase(visit, FRESH_WARMUP, Some(n as i64)).await?;
            out.push(outcome(name, row, secs, t));
        }
        // The first site's pool runs dry in the warm-up.
        eprintln!("[{name}] visit, pool dry");
        let visit = Load::Visit { key: key.clone() };
        let (secs, t) = phase(visit, plan.warmup, None).await?;
        out.push(outcome(name, "visit (pool dry: fallback)", secs, t));
        anyhow::Ok(())
    })?;
    let _ = srv.stop.send(());
    server_rt.block_on(srv.done)??;
    Ok(out)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One round: the bare handler first, each backend's rows, the bare handler again.
struct Round {
    rows: Vec<Outcome>,
    /// The bare handler's mean of its first and last measurement, req/s.
    bare_rps: f64,
}

impl Round {
    fn new(rows: Vec<Outcome>) -> Self {
        let bares: Vec<f64> = rows
            .iter()
            .filter(|r| r.backend == "-")
            .map(Outcome::rps)
            .collect();
        let bare_rps = if bares.is_empty() {
            0.0
        } else {
            bares.iter().sum::<f64>() / bares.len() as f64
        };
        Self { rows, bare_rps }
    }

    /// A row's throughput as a percentage of this round's bare handler.
    fn ratio(&self, r: &Outcome) -> f64 {
        if self.bare_rps > 0.0 {
            r.rps() / self.bare_rps * 100.0
        } else {
            0.0
        }
    }
}

/// A row over all rounds: the round with the median figure stands for it.
struct Row<'a> {
    median: &'a Outcome,
    /// Percent of its round's bare handler, the median round's.
    ratio: f64,
    /// Percent of bare in every round, in the order they ran.
    by_round: Vec<f64>,
    /// Errors over all rounds (the median round alone could hide one).
    errors: u64,
    /// A round measured nothing (the row's pool ran out in its warm-up).
    empty: bool,
}

/// The rows of the first round, each with its figures from every round (matched by
/// backend and endpoint). The median of an even count is the lower middle one.
fn summarize(rounds: &[Round]) -> Vec<Row<'_>> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .rows
        .iter()
        .map(|r0| {
            let mut seen: Vec<(f64, &Outcome)> = rounds
                .iter()
                .filter_map(|round| {
                    round
                        .rows
                        .iter()
                        .find(|r| r.backend == r0.backend && r.endpoint == r0.endpoint)
                        .map(|r| (round.ratio(r), r))
                })
                .collect();
            let by_round = seen.iter().map(|(p, _)| *p).collect();
            let errors = seen.iter().map(|(_, r)| r.errors).sum();
            let empty = seen.iter().any(|(_, r)| r.ok == 0);
            seen.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (ratio, median) = seen[(seen.len() - 1) / 2];
            Row {
                median,
                ratio,
                by_round,
                errors,
                empty,
            }
        })
        .collect()
}

fn percents(v: &[f64]) -> String {
    v.iter()
        .map(|p| format!("{p:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(rows: &[Row<'_>], rounds: usize) -> String {
    let mut s = String::from(
        "| backend | endpoint | requests | req/s | p50 ms | p99 ms | errors | vs bare | CPU µs/req | steal % |",
    );
    let mut rule = String::from("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    if rounds > 1 {
        s.push_str(" vs bare by round |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "\n{rule}");
    for row in rows {
        let r = row.median;
        let mut endpoint = r.endpoint.clone();
        if r.endpoint.starts_with("visit") {
            let _ = write!(endpoint, " ({} of {} fallback)", r.fallback, r.ok);
        }
        let _ = write!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0}% | {} | {} |",
            r.backend,
            endpoint,
            r.ok,
            r.rps(),
            r.pct_ms(0.50),
            r.pct_ms(0.99),
            row.errors,
            row.ratio,
            r.cpu(),
            r.steal()
        );
        if rounds > 1 {
            let _ = write!(s, " {} |", percents(&row.by_round));
        }
        s.push('\n');
    }
    s
}

fn target_lines(rows: &[Row<'_>], rounds: usize) -> String {
    let mut s = String::new();
    for row in rows.iter().filter(|r| r.median.backend == "sqlite") {
        let endpoint = &row.median.endpoint;
        let need = if endpoint == "ping" {
            60.0
        } else if endpoint.starts_with("visit") {
            30.0
        } else {
            continue;
        };
        if row.empty {
            let _ = writeln!(
                s,
                "- SQLite {endpoint}: nothing measured in a round (its pool ran out in the warm-up: give it more numbers)"
            );
            continue;
        }
        let got = row.ratio;
        let spread = if rounds > 1 {
            let lo = row.by_round.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = row.by_round.iter().copied().fold(0.0, f64::max);
            format!(", the median of {rounds} rounds ({lo:.0}–{hi:.0}%)")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "- SQLite {endpoint}: {got:.0}% of bare{spread} (target ≥ {need:.0}%): {}",
            if got >= need { "met" } else { "MISSED" }
        );
    }
    s
}

fn write_section(path: &PathBuf, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let new = match old.find(SECTION) {
        Some(start) => {
            let after = start + SECTION.len();
            let end = old[after..]
                .find("\n## ")
                .map_or(old.len(), |i| after + i + 1);
            format!("{}{}{}", &old[..start], section, &old[end..])
        }
        None => format!(
            "{}\n{}",
            old.trim_end_matches('\n').to_owned() + "\n",
            section
        ),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// The flags' bounds, whatever clap let through.
fn check(args: &Args) -> anyhow::Result<()> {
    if args.duration <= 0.0
        || !(0.0..=MAX_DURATION_S).contains(&args.duration)
        || !(0.0..=MAX_DURATION_S).contains(&args.warmup)
    {
        bail!(
            "--duration must be in (0, {MAX_DURATION_S}] s and --warmup in [0, {MAX_DURATION_S}] s"
        );
    }
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        bail!("--concurrency must be 1..={MAX_CONCURRENCY}");
    }
    if args.rounds == 0 || args.rounds > MAX_ROUNDS {
        bail!("--rounds must be 1..={MAX_ROUNDS}");
    }
    if args.pool_numbers == 0 || args.pool_numbers > MAX_POOL {
        bail!("--pool-numbers must be 1..={MAX_POOL}");
    }
    if args.fresh_numbers > MAX_POOL || args.returning_numbers > MAX_POOL {
        bail!("--fresh-numbers and --returning-numbers must be 0..={MAX_POOL}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check(&args)?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load_avg = std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let server_threads = args.server_threads.unwrap_or(cores).clamp(1, 64);
    let client_threads = args.client_threads.clamp(1, 64);
    let plan = Plan {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        concurrency: args.concurrency,
        pool: args.pool_numbers,
        fresh: args.fresh_numbers,
        returning: args.returning_numbers,
        ping_sessions: args.ping_sessions.clamp(1, args.pool_numbers),
    };
    let pg_url = std::env::var("CALLTRAIL_BENCH_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var(testing::ENV).ok().filter(|s| !s.is_empty()));
    if let Some(url) = &pg_url {
        // `testing::postgres` makes its fresh schema on the server this names.
        std::env::set_var(testing::ENV, url);
    }
    let client_rt = if client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(client_threads)
            .thread_name("load")
            .enable_all()
            .build()?
    };

    // One round: the bare handler, each backend on a fresh database with the real server,
    // the bare handler again. Its yardstick is the mean of the two, as this machine's speed
    // drifts during a run.
    let bare_phase = |when: &str| -> anyhow::Result<Outcome> {
        eprintln!("[bare] measuring ({when})");
        let bare_rt = server_runtime(server_threads)?;
        let srv = bare_rt.block_on(start_bare())?;
        let (secs, t) = client_rt.block_on(measure(
            srv.addr,
            Load::Bare,
            plan.concurrency,
            plan.warmup,
            plan.duration,
            None,
        ))?;
        let _ = srv.stop.send(());
        bare_rt.block_on(srv.done)??;
        Ok(outcome(
            "-",
            &format!("bare axum handler ({when})"),
            secs,
            t,
        ))
    };
    let want_sqlite = matches!(args.backend, BackendArg::Sqlite | BackendArg::Both);
    let want_pg = matches!(args.backend, BackendArg::Postgres | BackendArg::Both);
    let mut notes = Vec::new();
    if want_pg && pg_url.is_none() {
        let note = "PostgreSQL skipped: set CALLTRAIL_BENCH_DATABASE_URL (or CALLTRAIL_TEST_DATABASE_URL) to run it.";
        eprintln!("{note}");
        notes.push(note.to_owned());
    }
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("round {round} of {}", args.rounds);
        }
        let mut results = vec![bare_phase("first")?];
        if want_sqlite {
            let rt = server_runtime(server_threads)?;
            let db = rt.block_on(testing::sqlite());
            let r = run_backend("sqlite", &db, &rt, &client_rt, &plan);
            rt.block_on(db.cleanup());
            results.extend(r?);
        }
        if want_pg && pg_url.is_some() {
            let rt = server_runtime(server_threads)?;
            let db = rt
                .block_on(testing::postgres())
                .context("no PostgreSQL URL")?;
            let r = run_backend("postgres", &db, &rt, &client_rt, &plan);
            rt.block_on(db.cleanup());
            results.extend(r?);
        }
        results.push(bare_phase("last")?);
        rounds.push(Round::new(results));
    }
    let rows = summarize(&rounds);
    let bares = rounds
        .iter()
        .map(|r| format!("{:.0}", r.bare_rps))
        .collect::<Vec<_>>()
        .join(", ");
    let tbl = table(&rows, args.rounds);
    let targets = target_lines(&rows, args.rounds);
    println!("{tbl}\n{targets}");
    for n in &notes {
        println!("{n}");
    }

    if let Some(path) = &args.write {
        let cmd = std::env::args()
            .skip(1)
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        // The PostgreSQL rows need a server; say which (password masked).
        let env = pg_url.as_deref().map_or_else(String::new, |u| {
            format!(
                "CALLTRAIL_BENCH_DATABASE_URL={} ",
                calltrail_store::mask_url(u)
            )
        });
        let mut s = String::new();
        let _ = writeln!(s, "{SECTION}\n");
        let _ = writeln!(
            s,
            "Written by `calltrail-loadgen` (crates/loadgen). Command:\n\n```sh\n{env}cargo run --release -p calltrail-loadgen -- {cmd}\n```\n"
        );
        let _ = writeln!(
            s,
            "- Date: {}\n- Machine: {cores} cores (nproc), {}; build profile: {profile}\n\
             - Server: the real router (`calltrail_server::serve`, all layers) in the load generator's \
             process, on its own tokio runtime ({server_threads} worker threads); the load on another \
             ({client_threads} thread). Both share the same {cores} cores, so the figures are a floor \
             for a machine where the load comes from elsewhere.\n\
             - Load: closed loop, {} HTTP/1.1 keep-alive connections on loopback, one request in \
             flight each; {:.0} s warm-up not measured, then {:.0} s measured per row. Every visit but \
             \"next page\" is a new visitor (no visitor or session id) with a browser User-Agent and \
             the site's Origin.\n\
             - Site: one pool of {} numbers (15 min hold, fallback policy) and a fallback number. \
             The ping row cycles through {} sessions opened first, each holding a pool number; \
             \"visit (next page)\" loads another page in those sessions (a page view, the session \
             and its lease moved on). \
             \"visit (pool dry)\" comes after, when the pool's free numbers went in its warm-up \
             and every new visitor is shown the fallback number, the steady state of a busy site. \
             \"visit (fresh number)\" runs on a second site whose pool has {} numbers, before the \
             pool-dry row: every visit leases a never-used number, the first {:.1} s not measured, \
             then measured until the numbers run out (from the first measured request to the last \
             answer). \"visit (number back after hold)\" runs the same way on a third site whose {} \
             numbers were each shown to a visitor two hours before (their holds long over): every \
             visit takes back the number idle the longest and ends its last lease, as a pool does \
             once it has run a day.\n\
             - Load average when the run began: {load_avg} (other jobs share this machine; \
             rerun for comparisons).\n\
             - The bare handler is a POST route on the same axum server stack without calltrail's \
             layers: it reads the body and returns a small JSON. It is measured first and again \
             last; \"vs bare\" divides by the mean of the two ({bares} req/s), since this \
             machine's speed drifts during a run. \"steal %\": the share of the machine's CPU \
             time the hypervisor gave to other guests in the measured window.\n\
             - Rounds: {}. {}\n",
            jiff::Zoned::now().strftime("%Y-%m-%d %H:%M %Z"),
            cpu_model(),
            plan.concurrency,
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64(),
            plan.pool,
            plan.ping_sessions,
            plan.fresh,
            FRESH_WARMUP.as_secs_f64(),
            plan.returning,
            args.rounds,
            if args.rounds > 1 {
                "Each round is a whole run (the bare handler, every row, the bare handler \
                 again; the bare figures above are each round's mean), one after another. A \
                 row's \"vs bare\" is taken against its own round's bare handler; the table \
                 shows the round with the median figure (the lower middle one of an even \
                 count), \"vs bare by round\" every round's in the order they ran, and \
                 \"errors\" the sum over all rounds."
            } else {
                "One run: on this shared machine a row moves by a sixth or more between runs \
                 of the same build (`--rounds N` gives the median of N)."
            },
        );
        let _ = writeln!(s, "{tbl}\n{targets}\n{WHY}");
        for n in &notes {
            let _ = writeln!(s, "{n}\n");
        }
        write_section(path, &s)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_out_of_bounds_are_refused() {
        let check_of = |flags: &[&str]| {
            let args = Args::try_parse_from(
                std::iter::once("calltrail-loadgen").chain(flags.iter().copied()),
            )
            .map_err(|e| e.to_string())?;
            check(&args).map_err(|e| e.to_string())
        };
        assert_eq!(check_of(&["--rounds", "3"]), Ok(()));
        for (flags, says) in [
            (&["--rounds", "0"][..], "--rounds must be 1..=50"),
            (&["--rounds", "51"], "--rounds must be 1..=50"),
            (&["--duration", "0"], "--duration must be in"),
            (&["--concurrency", "0"], "--concurrency must be"),
            (&["--pool-numbers", "0"], "--pool-numbers must be"),
            (
                &["--fresh-numbers", "100001"],
                "--fresh-numbers and --returning-numbers",
            ),
        ] {
            let got = check_of(flags);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(says)),
                "{flags:?}: {got:?}"
            );
        }
        assert!(check_of(&["--rounds", "x"]).is_err());
    }

    /// Percentages to whole numbers, to compare.
    fn whole(v: &[f64]) -> Vec<i64> {
        v.iter().map(|p| p.round() as i64).collect()
    }

    /// A row that answered `ok` requests in one second.
    fn row(backend: &'static str, endpoint: &str, ok: u64, errors: u64) -> Outcome {
        Outcome {
            backend,
            endpoint: endpoint.to_owned(),
            secs: 1.0,
            ok,
            errors,
            lat_us: vec![500, 900],
            fallback: 0,
            cpu_us: None,
            steal_pct: None,
        }
    }

    /// A round whose bare handler answered `bare` requests a second, first and last.
    fn round(bare: u64, fresh: u64, ping: u64, errors: u64) -> Round {
        Round::new(vec![
            row("-", "bare axum handler (first)", bare, 0),
            row("sqlite", "ping", ping, 0),
            row("sqlite", "visit (fresh number)", fresh, errors),
            row("-", "bare axum handler (last)", bare, 0),
        ])
    }

    #[test]
    fn each_row_is_judged_against_its_own_rounds_bare_and_by_the_median_round() {
        // Fresh number: 25 %, 40 %, 32 % of each round's bare; ping 70 %, 50 %, 61 %.
        let rounds = [
            round(80_000, 20_000, 56_000, 0),
            round(50_000, 20_000, 25_000, 2),
            round(100_000, 32_000, 61_000, 1),
        ];
        let rows = summarize(&rounds);
        let fresh = &rows[2];
        assert_eq!(fresh.median.endpoint, "visit (fresh number)");
        assert_eq!(whole(&fresh.by_round), vec![25, 40, 32]);
        assert_eq!(whole(&[fresh.ratio]), vec![32]);
        assert_eq!(
            fresh.median.ok, 32_000,
            "the median round's own row is shown"
        );
        assert_eq!(fresh.errors, 3, "errors of every round count");
        assert_eq!(whole(&[rows[1].ratio]), vec![61]);

        let targets = target_lines(&rows, 3);
        assert!(
            targets.contains(
                "- SQLite ping: 61% of bare, the median of 3 rounds (50–70%) (target ≥ 60%): met"
            ),
            "{targets}"
        );
        assert!(
            targets.contains("- SQLite visit (fresh number): 32% of bare, the median of 3 rounds (25–40%) (target ≥ 30%): met"),
            "{targets}"
        );
        let tbl = table(&rows, 3);
        assert!(tbl.contains("| 32% | – | – | 25, 40, 32 |"), "{tbl}");
        assert!(tbl.contains("| 3 | 32% |"), "{tbl}");
    }

    #[test]
    fn an_even_count_of_rounds_takes_the_lower_middle_and_one_round_is_a_plain_table() {
        let rounds = [
            round(100_000, 29_000, 70_000, 0),
            round(100_000, 35_000, 70_000, 0),
        ];
        let rows = summarize(&rounds);
        assert_eq!(whole(&[rows[2].ratio]), vec![29]);
        assert!(target_lines(&rows, 2)
            .contains("29% of bare, the median of 2 rounds (29–35%) (target ≥ 30%): MISSED"));

        let one = [round(100_000, 31_000, 70_000, 0)];
        let rows = summarize(&one);
        let tbl = table(&rows, 1);
        assert!(!tbl.contains("by round"), "{tbl}");
        assert!(target_lines(&rows, 1)
            .contains("- SQLite visit (fresh number): 31% of bare (target ≥ 30%): met"));
    }

    #[test]
    fn a_round_that_measured_nothing_is_said_not_averaged_away() {
        let rounds = [
            round(100_000, 40_000, 70_000, 0),
            round(100_000, 0, 70_000, 0),
            round(100_000, 41_000, 70_000, 0),
        ];
        let rows = summarize(&rounds);
        assert!(target_lines(&rows, 3)
            .contains("- SQLite visit (fresh number): nothing measured in a round"));
    }
}
