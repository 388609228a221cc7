//! calltrail-sim: a traffic simulator that drives calltrail's engine with a simulated
//! clock, keeps the ground truth of every call, and measures how often each pool strategy
//! gives a call to the right visit and source (`calltrail simulate`, docs/simulation.md).

pub mod engines;
pub mod scenario;
pub mod sqlite;
pub mod traffic;

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;

use calltrail_core::engine::{Millis, HOUR, MINUTE};
use calltrail_core::sizing::{self, Sizing};
use serde::Serialize;

use crate::engines::{Attribution, Baseline, Calltrail, Shown, Viewed};
use crate::scenario::{PoolConfig, Scenario, Strategy};
use crate::sqlite::SqlEngine;
use crate::traffic::{EventKind, Traffic};

/// `calltrail simulate`: replay a scenario's traffic against pool strategies.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML); every key is described in docs/simulation.md
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Find, for each pool of the scenario, the smallest number of numbers that reaches this
    /// accuracy (a fraction, e.g. 0.99); see --size-metric
    #[arg(long, value_name = "ACCURACY")]
    pub size_for: Option<f64>,
    /// The accuracy --size-for aims at
    #[arg(long, value_enum, default_value_t = SizeMetric::InWindowSession)]
    pub size_metric: SizeMetric,
    /// Replace every pool's size: a number, or `recommended` (calltrail's recommendation:
    /// Erlang B per source at 0.1% exhaustion)
    #[arg(long, value_name = "N|recommended")]
    pub numbers: Option<String>,
    /// Where calltrail keeps its leases: `memory` (fast) or `sqlite` (the real store on a
    /// temporary SQLite file; slow, for fidelity checks)
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// Override the scenario's seed
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the scenario's days
    #[arg(long)]
    pub days: Option<u32>,
    /// Only simulate pools with this strategy (repeatable)
    #[arg(long, value_enum)]
    pub strategy: Vec<StrategyArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SizeMetric {
    /// Share of in-window calls matched to the right session
    InWindowSession,
    /// Share of all calls matched to the right source
    Source,
    /// Share of all calls matched to the right session
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Memory,
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    Random,
    RoundRobin,
    Lru,
    Calltrail,
}

impl StrategyArg {
    fn strategy(self) -> Strategy {
        match self {
            Self::Random => Strategy::Random,
            Self::RoundRobin => Strategy::RoundRobin,
            Self::Lru => Strategy::Lru,
            Self::Calltrail => Strategy::Calltrail,
        }
    }
}

/// What one strategy achieved on one scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub pool: String,
    pub strategy: &'static str,
    pub numbers: u32,
    pub hold_minutes: u32,
    pub on_exhaustion: &'static str,
    /// Human visits of the measured days.
    pub visits: usize,
    pub calls: usize,
    pub session_accuracy: f64,
    /// Calls that came while the visitor was active or within the hold after.
    pub in_window_calls: usize,
    pub in_window_session_accuracy: f64,
    pub source_accuracy: f64,
    pub high_confidence_share: f64,
    pub high_confidence_precision: f64,
    pub exhausted_visit_share: f64,
    /// Numbers in use, averaged over the busiest hour.
    pub peak_numbers_in_use: f64,
    /// Calls whose number had passed to another session before they called, from a phone
    /// that had not called before (nothing can tell them apart).
    pub passed_on_share: f64,
    /// The session accuracy those calls leave reachable: `1 - passed_on_share`.
    pub session_ceiling: f64,
    /// The same measures for each part of the scenario's delay mixture, and repeat calls.
    pub by_delay: Vec<DelayReport>,
}

/// Accuracy for the calls of one part of the delay mixture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DelayReport {
    /// `during_visit`, `0-15 min`, ..., or `repeat`.
    pub delay: String,
    pub calls: usize,
    pub session_accuracy: f64,
    pub source_accuracy: f64,
    pub high_confidence_share: f64,
    pub high_confidence_precision: f64,
}

/// One call's outcome, for fidelity checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    pub call: u32,
    pub dialed: Shown,
    pub attribution: Attribution,
}

pub struct RunResult {
    pub report: Report,
    pub outcomes: Vec<CallOutcome>,
}

enum Engine {
    Calltrail(Box<Calltrail>),
    Baseline(Box<Baseline>),
    Sqlite(Box<SqlEngine>),
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub struct Progress {
    on: bool,
    total: u64,
    done: u64,
    last_pct: u64,
    label: String,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        Self {
            on: std::io::stderr().is_terminal() && total > 2_000_000,
            total: total.max(1),
            done: 0,
            last_pct: u64::MAX,
            label: String::new(),
        }
    }

    pub fn label(&mut self, label: &str) {
        label.clone_into(&mut self.label);
        self.last_pct = u64::MAX;
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.on {
            return;
        }
        let pct = (self.done * 100 / self.total).min(100);
        if pct != self.last_pct {
            self.last_pct = pct;
            let filled = (pct / 4) as usize;
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r[{}{}] {pct:3}% {:<30}",
                "#".repeat(filled),
                " ".repeat(25 - filled),
                self.label
            );
            let _ = err.flush();
        }
    }

    pub fn finish(&mut self) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r{:70}\r", "");
        }
    }
}

const SAMPLE: Millis = 5 * MINUTE;

/// Replay `traffic` against one pool.
pub async fn replay(
    sc: &Scenario,
    traffic: &Traffic,
    pool: &PoolConfig,
    store: StoreKind,
    progress: &mut Progress,
) -> anyhow::Result<RunResult> {
    let sources: Vec<String> = sc.sources.iter().map(|s| s.name.clone()).collect();
    let mut engine =
        match (pool.strategy, store) {
            (Strategy::Calltrail, StoreKind::Memory) => Engine::Calltrail(Box::new(
                Calltrail::new(pool.numbers, pool.hold(), pool.policy, sources),
            )),
            (Strategy::Calltrail, StoreKind::Sqlite) => {
                Engine::Sqlite(Box::new(SqlEngine::new(pool, sources).await?))
            }
            (s, _) => Engine::Baseline(Box::new(Baseline::new(
                s,
                pool.numbers,
                pool.hold(),
                pool.policy,
                sc.seed ^ 0x5eed,
            ))),
        };
    let n_sessions = traffic.sessions.len();
    let mut shown: Vec<Shown> = vec![Shown::Site; n_sessions];
    let mut exhausted: Vec<bool> = vec![false; n_sessions];
    let mut dialed: Vec<Shown> = vec![Shown::Site; traffic.calls.len()];
    let mut outcomes: Vec<CallOutcome> = Vec::with_capacity(traffic.calls.len());
    let mut passed_on: Vec<bool> = vec![false; traffic.calls.len()];
    // Numbers in use: sampled every five minutes of the measured days, averaged per hour.
    let first = traffic.events.first().map_or(0, |e| e.at);
    let mut next_sample = first - first.rem_euclid(SAMPLE) + SAMPLE;
    let mut hour_sum: Vec<(u64, u64)> = Vec::new();
    let mut since_tick = 0_u64;
    for ev in &traffic.events {
        since_tick += 1;
        if since_tick == 4096 {
            progress.advance(since_tick);
            since_tick = 0;
        }
        if let Engine::Calltrail(_) | Engine::Baseline(_) = &engine {
            while next_sample <= ev.at && next_sample < traffic.measured_until {
                let used = match &engine {
                    Engine::Calltrail(e) => e.in_use(next_sample),
                    Engine::Baseline(e) => e.in_use(next_sample),
                    Engine::Sqlite(_) => 0,
                };
                let h = ((next_sample - first) / HOUR) as usize;
                if hour_sum.len() <= h {
                    hour_sum.resize(h + 1, (0, 0));
                }
                hour_sum[h].0 += used as u64;
                hour_sum[h].1 += 1;
                next_sample += SAMPLE;
            }
        }
        let i = ev.idx as usize;
        match ev.kind {
            EventKind::Open | EventKind::Page | EventKind::Beat => {
                let s = &traffic.sessions[i];
                let v: Option<Viewed> = match (&mut engine, ev.kind) {
                    (Engine::Calltrail(e), EventKind::Open) => {
                        Some(e.open(ev.idx, s.visitor, s.source, s.bot, ev.at))
                    }
                    (Engine::Calltrail(e), _) => Some(e.touch(ev.idx, s.source, ev.at)),
                    (Engine::Baseline(_), EventKind::Beat) => None,
                    (Engine::Baseline(e), _) => Some(e.view(ev.idx, ev.at)),
                    (Engine::Sqlite(e), EventKind::Open) => {
                        Some(e.open(ev.idx, s.visitor, s.source, s.bot, ev.at).await?)
                    }
                    (Engine::Sqlite(e), EventKind::Page) => {
                        Some(e.page(ev.idx, s.bot, ev.at).await?)
                    }
                    (Engine::Sqlite(e), _) => e.beat(ev.idx, ev.at).await?,
                };
                if let Some(v) = v {
                    shown[i] = v.shown;
                    exhausted[i] |= v.exhausted;
                }
            }
            EventKind::Call => {
                let c = &traffic.calls[i];
                let to = match c.repeat_of {
                    Some(p) => dialed[p as usize],
                    None => shown[c.session as usize],
                };
                dialed[i] = to;
                let holder = match (&engine, to) {
                    (Engine::Calltrail(e), Shown::Pool(n)) => e.latest_holder(n, c.at),
                    (Engine::Baseline(e), Shown::Pool(n)) => e.latest_holder(n, c.at),
                    (Engine::Sqlite(e), Shown::Pool(n)) => e.latest_holder(n, c.at).await?,
                    _ => Some(c.session),
                };
                passed_on[i] = holder != Some(c.session) && !c.caller_called_before;
                let a = match &mut engine {
                    Engine::Calltrail(e) => e.call(to, c.caller, c.at),
                    Engine::Baseline(e) => e.call(to, c.at),
                    Engine::Sqlite(e) => e.call(to, c.caller, c.at).await?,
                };
                outcomes.push(CallOutcome {
                    call: ev.idx,
                    dialed: to,
                    attribution: a,
                });
            }
        }
    }
    progress.advance(since_tick);
    if let Engine::Sqlite(e) = engine {
        e.close().await;
    }
    let peak = hour_sum
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| *s as f64 / *n as f64)
        .fold(0.0, f64::max);
    let report = score(sc, traffic, pool, &outcomes, &exhausted, &passed_on, peak);
    Ok(RunResult { report, outcomes })
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn score(
    sc: &Scenario,
    traffic: &Traffic,
    pool: &PoolConfig,
    outcomes: &[CallOutcome],
    exhausted: &[bool],
    passed_on: &[bool],
    peak: f64,
) -> Report {
    let hold = pool.hold();
    let (mut calls, mut right, mut in_window, mut in_window_right, mut source_right) =
        (0, 0, 0, 0, 0);
    let (mut high, mut high_right, mut passed) = (0, 0, 0);
    // Per delay part (the last slot: repeat calls): calls, right, source right, high, high right.
    let mut parts = vec![[0_usize; 5]; sc.delays.len() + 1];
    for o in outcomes {
        let c = &traffic.calls[o.call as usize];
        let truth = &traffic.sessions[c.session as usize];
        if !truth.measured {
            continue;
        }
        calls += 1;
        let ok = o.attribution.session == Some(c.session);
        let got_source = o
            .attribution
            .session
            .map(|s| traffic.sessions[s as usize].source);
        right += usize::from(ok);
        source_right += usize::from(got_source == Some(truth.source));
        if c.at <= truth.end + hold {
            in_window += 1;
            in_window_right += usize::from(ok);
        }
        if o.attribution.confidence >= 0.9 {
            high += 1;
            high_right += usize::from(ok);
        }
        passed += usize::from(passed_on[o.call as usize]);
        let part = &mut parts[c.delay_part.map_or(sc.delays.len(), usize::from)];
        let high_one = o.attribution.confidence >= 0.9;
        part[0] += 1;
        part[1] += usize::from(ok);
        part[2] += usize::from(got_source == Some(truth.source));
        part[3] += usize::from(high_one);
        part[4] += usize::from(high_one && ok);
    }
    let by_delay = parts
        .iter()
        .enumerate()
        .map(|(i, p)| DelayReport {
            delay: sc.delays.get(i).map_or_else(
                || "repeat".to_owned(),
                |d| {
                    if d.during_visit {
                        "during_visit".to_owned()
                    } else {
                        format!("{}-{} min", d.min_minutes, d.max_minutes)
                    }
                },
            ),
            calls: p[0],
            session_accuracy: ratio(p[1], p[0]),
            source_accuracy: ratio(p[2], p[0]),
            high_confidence_share: ratio(p[3], p[0]),
            high_confidence_precision: ratio(p[4], p[3]),
        })
        .collect();
    let visits = traffic.measured_visits();
    let met_exhaustion = traffic
        .sessions
        .iter()
        .zip(exhausted)
        .filter(|(s, e)| s.measured && !s.bot && **e)
        .count();
    Report {
        pool: pool.name.clone(),
        strategy: pool.strategy.as_str(),
        numbers: pool.numbers,
        hold_minutes: pool.hold_minutes,
        on_exhaustion: pool.policy.as_str(),
        visits,
        calls,
        session_accuracy: ratio(right, calls),
        in_window_calls: in_window,
        in_window_session_accuracy: ratio(in_window_right, in_window),
        source_accuracy: ratio(source_right, calls),
        high_confidence_share: ratio(high, calls),
        high_confidence_precision: ratio(high_right, high),
        exhausted_visit_share: ratio(met_exhaustion, visits),
        peak_numbers_in_use: (peak * 10.0).round() / 10.0,
        passed_on_share: ratio(passed, calls),
        session_ceiling: 1.0 - ratio(passed, calls),
        by_delay,
    }
}

/// The traffic a scenario describes, for the sizing model.
pub fn sizing_traffic(sc: &Scenario, hold_minutes: u32) -> sizing::Traffic {
    let human = sc.visitors_per_day * (1.0 - sc.bot_share);
    let total: f64 = sc.hourly_profile.iter().sum();
    let peak = sc.hourly_profile.iter().copied().fold(0.0, f64::max) / total;
    sizing::Traffic {
        peak_hourly_visitors: human * peak,
        daily_visitors: sc.visitors_per_day,
        mean_session_minutes: sc.mean_session_minutes(),
        hold_minutes: f64::from(hold_minutes),
        daily_by_source: sc.sources.iter().map(|s| human * s.share).collect(),
    }
}

/// The exhaustion target of the sizing model (per source for calltrail's recommendation).
pub const RECOMMENDED_EXHAUSTION: f64 = 0.001;

pub fn recommend(sc: &Scenario, hold_minutes: u32) -> Sizing {
    sizing::recommend(&sizing_traffic(sc, hold_minutes), RECOMMENDED_EXHAUSTION)
}

/// The result of a `--size-for` search for one pool.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub pool: String,
    pub strategy: &'static str,
    pub hold_minutes: u32,
    pub metric: &'static str,
    pub target: f64,
    /// The smallest pool found that reaches the target, `None` when even the largest
    /// tried does not.
    pub numbers: Option<u32>,
    pub largest_tried: u32,
    pub report: Report,
}

fn metric_of(r: &Report, m: SizeMetric) -> f64 {
    match m {
        SizeMetric::InWindowSession => r.in_window_session_accuracy,
        SizeMetric::Source => r.source_accuracy,
        SizeMetric::Session => r.session_accuracy,
    }
}

fn metric_name(m: SizeMetric) -> &'static str {
    match m {
        SizeMetric::InWindowSession => "in_window_session_accuracy",
        SizeMetric::Source => "source_accuracy",
        SizeMetric::Session => "session_accuracy",
    }
}

/// The largest pool `--size-for` tries.
pub const MAX_SEARCH_NUMBERS: u32 = 20_000;

/// The smallest pool reaching `target` on `metric`: doubling, then bisection.
pub async fn size_for(
    sc: &Scenario,
    traffic: &Traffic,
    pool: &PoolConfig,
    target: f64,
    metric: SizeMetric,
    store: StoreKind,
    progress: &mut Progress,
) -> anyhow::Result<SizeResult> {
    let mut run = |n: u32| {
        let p = PoolConfig {
            numbers: n,
            ..pool.clone()
        };
        progress.label(&format!("{} n={n}", pool.name));
        async move { replay(sc, traffic, &p, store, &mut Progress::new(0)).await }
    };
    let (mut lo, mut hi) = (0_u32, pool.numbers.max(1));
    let mut best: Option<Report> = None;
    let mut last;
    loop {
        let r = run(hi).await?.report;
        last = r.clone();
        if metric_of(&r, metric) >= target {
            best = Some(r);
            break;
        }
        lo = hi;
        if hi >= MAX_SEARCH_NUMBERS {
            break;
        }
        hi = (hi * 2).min(MAX_SEARCH_NUMBERS);
    }
    if best.is_some() {
        // The smallest found so far is `hi`; `lo` fails (or is 0).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let r = run(mid).await?.report;
            if metric_of(&r, metric) >= target {
                hi = mid;
                best = Some(r);
            } else {
                lo = mid;
            }
        }
    }
    Ok(SizeResult {
        pool: pool.name.clone(),
        strategy: pool.strategy.as_str(),
        hold_minutes: pool.hold_minutes,
        metric: metric_name(metric),
        target,
        numbers: best.as_ref().map(|r| r.numbers),
        largest_tried: hi,
        report: best.unwrap_or(last),
    })
}

/// Run `calltrail simulate`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut sc = scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    if let Some(days) = args.days {
        if !(1..=366).contains(&days) {
            anyhow::bail!("--days must be between 1 and 366, got {days}");
        }
        sc.days = days;
    }
    if let Some(t) = args.size_for {
        if !(t > 0.0 && t <= 1.0) {
            anyhow::bail!("--size-for takes an accuracy between 0 and 1 (e.g. 0.99), got {t}");
        }
    }
    if !args.strategy.is_empty() {
        let keep: Vec<Strategy> = args.strategy.iter().map(|s| s.strategy()).collect();
        sc.pools.retain(|p| keep.contains(&p.strategy));
        if sc.pools.is_empty() {
            anyhow::bail!("the scenario has no pool with the strategies given by --strategy");
        }
    }
    if let Some(n) = args.numbers.as_deref() {
        let base = sc.clone();
        for p in &mut sc.pools {
            p.numbers = if n == "recommended" {
                recommend(&base, p.hold_minutes).per_source
            } else {
                match n.parse::<u32>() {
                    Ok(v) if (1..=100_000).contains(&v) => v,
                    _ => anyhow::bail!(
                        "--numbers takes a pool size between 1 and 100000 or `recommended`, got `{n}`"
                    ),
                }
            };
        }
    }
    let started = std::time::Instant::now();
    let traffic = traffic::generate(&sc);
    let events = traffic.events.len() as u64;
    let mut holds: Vec<u32> = sc.pools.iter().map(|p| p.hold_minutes).collect();
    holds.sort_unstable();
    holds.dedup();
    let sizing: Vec<Sizing> = holds.iter().map(|&h| recommend(&sc, h)).collect();
    let mut progress = Progress::new(
        events * sc.pools.len() as u64 * if args.size_for.is_some() { 12 } else { 1 },
    );
    let header = Header {
        scenario: sc.name.clone(),
        seed: sc.seed,
        days: sc.days,
        visitors_per_day: sc.visitors_per_day,
        visits: traffic.measured_visits(),
        calls: traffic.measured_calls().count(),
        store: match args.store {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
        },
        sizing,
    };
    if let Some(target) = args.size_for {
        let mut out = Vec::new();
        for p in &sc.pools {
            out.push(
                size_for(
                    &sc,
                    &traffic,
                    p,
                    target,
                    args.size_metric,
                    args.store,
                    &mut progress,
                )
                .await?,
            );
        }
        progress.finish();
        match args.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"scenario": header, "sizes": out})
                )?
            ),
            Format::Table => print!("{}", size_table(&header, &out)),
        }
    } else {
        let mut reports = Vec::new();
        for p in &sc.pools {
            progress.label(&p.name);
            reports.push(
                replay(&sc, &traffic, p, args.store, &mut progress)
                    .await?
                    .report,
            );
        }
        progress.finish();
        match args.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"scenario": header, "results": reports})
                )?
            ),
            Format::Table => print!("{}", table(&header, &reports)),
        }
    }
    if args.format == Format::Table {
        eprintln!("simulated in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct Header {
    scenario: String,
    seed: u64,
    days: u32,
    visitors_per_day: f64,
    visits: usize,
    calls: usize,
    store: &'static str,
    sizing: Vec<Sizing>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn header_text(h: &Header) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scenario {} (seed {}): {} days, {} visitors/day, {} human visits, {} calls, store {}",
        h.scenario, h.seed, h.days, h.visitors_per_day, h.visits, h.calls, h.store
    );
    for z in &h.sizing {
        let _ = writeln!(
            s,
            "pool sizing (hold {} min) at peak load {:.1} E: recommended {} (Erlang B per source at ≤{} exhaustion; pooled Erlang B {}); rules of thumb: daily/100 = {}, peak hourly ÷ (60 ÷ session min) = {}, 1 per 20 daily per source = {}",
            z.hold_minutes,
            z.peak_load,
            z.per_source,
            pct(z.target_exhaustion),
            z.erlang_b,
            z.rules_of_thumb.daily_over_100,
            z.rules_of_thumb.peak_hourly_by_session,
            z.rules_of_thumb.per_source_20
        );
    }
    s
}

fn table(h: &Header, rows: &[Report]) -> String {
    use std::fmt::Write as _;
    let mut s = header_text(h);
    let _ = writeln!(
        s,
        "\n{:<16} {:>7} {:>5} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "pool",
        "numbers",
        "hold",
        "calls",
        "session",
        "in-window",
        "source",
        "conf≥.9",
        "precise",
        "exhausted",
        "peak use",
        "ceiling"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>5} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8.1} {:>8}",
            r.pool,
            r.numbers,
            r.hold_minutes,
            r.calls,
            pct(r.session_accuracy),
            pct(r.in_window_session_accuracy),
            pct(r.source_accuracy),
            pct(r.high_confidence_share),
            pct(r.high_confidence_precision),
            pct(r.exhausted_visit_share),
            r.peak_numbers_in_use,
            pct(r.session_ceiling),
        );
    }
    s
}

fn size_table(h: &Header, rows: &[SizeResult]) -> String {
    use std::fmt::Write as _;
    let mut s = header_text(h);
    let _ = writeln!(
        s,
        "\n{:<16} {:>5} {:>28} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "pool", "hold", "target", "numbers", "reached", "session", "in-window", "source"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>28} {:>8} {:>9} {:>8} {:>9} {:>8}",
            r.pool,
            r.hold_minutes,
            format!("{} ≥ {}", r.metric, pct(r.target)),
            r.numbers
                .map_or_else(|| format!(">{}", r.largest_tried), |n| n.to_string()),
            pct(metric_of(&r.report, metric_from(r.metric))),
            pct(r.report.session_accuracy),
            pct(r.report.in_window_session_accuracy),
            pct(r.report.source_accuracy),
        );
    }
    s
}

fn metric_from(name: &str) -> SizeMetric {
    match name {
        "source_accuracy" => SizeMetric::Source,
        "session_accuracy" => SizeMetric::Session,
        _ => SizeMetric::InWindowSession,
    }
}
