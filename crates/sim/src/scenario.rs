//! The scenario file: what traffic to simulate and which pools to compare.
//!
//! Every key has a default (docs/simulation.md lists them); a bad file gets an error that
//! names the key and the problem.

use std::fmt::Write as _;
use std::path::Path;

use calltrail_core::engine::{Millis, MINUTE};
use calltrail_core::ExhaustionPolicy;
use serde::Deserialize;

/// The strategies the simulator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A random free number, fixed hold from the first view.
    Random,
    /// The next free number in turn, fixed hold from the first view.
    RoundRobin,
    /// The least recently assigned free number, fixed hold from the first view.
    Lru,
    /// calltrail's engine (`calltrail_core::engine`).
    Calltrail,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [Self::Random, Self::RoundRobin, Self::Lru, Self::Calltrail];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::RoundRobin => "round_robin",
            Self::Lru => "lru",
            Self::Calltrail => "calltrail",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One pool to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub strategy: Strategy,
    pub numbers: u32,
    pub hold_minutes: u32,
    pub policy: ExhaustionPolicy,
}

impl PoolConfig {
    pub fn hold(&self) -> Millis {
        Millis::from(self.hold_minutes) * MINUTE
    }
}

/// One part of the call-delay mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct Delay {
    pub share: f64,
    /// The call comes while the visitor is still on the site.
    pub during_visit: bool,
    /// Minutes after the last activity (ignored for `during_visit`).
    pub min_minutes: f64,
    pub max_minutes: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub share: f64,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub days: u32,
    pub visitors_per_day: f64,
    pub hourly_profile: [f64; 24],
    pub session_median_minutes: f64,
    pub session_p90_minutes: f64,
    pub pages_per_session: f64,
    pub heartbeat_seconds: u32,
    pub returning_share: f64,
    pub bot_share: f64,
    pub hidden_caller_share: f64,
    pub sources: Vec<Source>,
    pub call_probability: f64,
    pub repeat_call_share: f64,
    pub repeat_min_hours: f64,
    pub repeat_max_hours: f64,
    pub delays: Vec<Delay>,
    pub pools: Vec<PoolConfig>,
}

/// A typical business day in Russia: quiet nights, busy late mornings and afternoons.
pub const DEFAULT_PROFILE: [f64; 24] = [
    0.4, 0.25, 0.15, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 4.0, 5.2, 5.6, 5.5, 5.6, 5.6, 5.4, 5.0, 4.6,
    4.2, 4.0, 3.8, 3.2, 2.0, 1.0,
];

// ----- the file as written -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    seed: Option<u64>,
    days: Option<u32>,
    visitors_per_day: Option<f64>,
    hourly_profile: Option<Vec<f64>>,
    returning_share: Option<f64>,
    bot_share: Option<f64>,
    hidden_caller_share: Option<f64>,
    #[serde(default)]
    session: RawSession,
    sources: Option<Vec<RawSource>>,
    #[serde(default)]
    calls: RawCalls,
    pools: Option<Vec<RawPool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    median_minutes: Option<f64>,
    p90_minutes: Option<f64>,
    pages: Option<f64>,
    heartbeat_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    share: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalls {
    probability: Option<f64>,
    repeat_share: Option<f64>,
    repeat_min_hours: Option<f64>,
    repeat_max_hours: Option<f64>,
    delay: Option<Vec<RawDelay>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    share: f64,
    #[serde(default)]
    during_visit: bool,
    min_minutes: Option<f64>,
    max_minutes: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Option<String>,
    strategy: Option<String>,
    numbers: Option<u32>,
    hold_minutes: Option<u32>,
    on_exhaustion: Option<String>,
}

/// A scenario error: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "key `{}`: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ScenarioError {}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ScenarioError {
    ScenarioError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Read and check a scenario file.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, &stem).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))
}

/// Parse a scenario from TOML text; `default_name` names it when the file does not.
pub fn parse(text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
    let de = toml::Deserializer::new(text);
    let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut problem = inner.message().trim().replace('\n', ": ");
        if let Some(span) = inner.span() {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let _ = write!(problem, " (line {line})");
        }
        let key = if path == "." { String::new() } else { path };
        err(key, problem)
    })?;
    check(raw, default_name)
}

fn share(key: &str, v: Option<f64>, default: f64) -> Result<f64, ScenarioError> {
    let v = v.unwrap_or(default);
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(err(
            key,
            format!("must be a share between 0 and 1, got {v}"),
        ));
    }
    Ok(v)
}

fn positive(key: &str, v: Option<f64>, default: f64) -> Result<f64, ScenarioError> {
    let v = v.unwrap_or(default);
    if !(v > 0.0 && v.is_finite()) {
        return Err(err(key, format!("must be a positive number, got {v}")));
    }
    Ok(v)
}

fn check(raw: RawScenario, default_name: &str) -> Result<Scenario, ScenarioError> {
    let days = raw.days.unwrap_or(7);
    if !(1..=366).contains(&days) {
        return Err(err(
            "days",
            format!("must be between 1 and 366, got {days}"),
        ));
    }
    let visitors_per_day = positive("visitors_per_day", raw.visitors_per_day, 500.0)?;
    if visitors_per_day > 2_000_000.0 {
        return Err(err("visitors_per_day", "at most 2000000"));
    }
    let hourly_profile = match raw.hourly_profile {
        None => DEFAULT_PROFILE,
        Some(v) => {
            let arr: [f64; 24] = v.as_slice().try_into().map_err(|_| {
                err(
                    "hourly_profile",
                    format!("needs 24 values (hours 0..23), got {}", v.len()),
                )
            })?;
            if let Some(i) = arr.iter().position(|x| !(*x >= 0.0 && x.is_finite())) {
                return Err(err(
                    format!("hourly_profile[{i}]"),
                    "must be a weight of 0 or more",
                ));
            }
            if arr.iter().sum::<f64>() <= 0.0 {
                return Err(err("hourly_profile", "needs at least one hour above 0"));
            }
            arr
        }
    };
    let median = positive("session.median_minutes", raw.session.median_minutes, 3.0)?;
    let p90 = positive("session.p90_minutes", raw.session.p90_minutes, 15.0)?;
    if p90 <= median {
        return Err(err(
            "session.p90_minutes",
            format!("must be above session.median_minutes ({median}), got {p90}"),
        ));
    }
    if p90 > 24.0 * 60.0 {
        return Err(err("session.p90_minutes", "at most 1440 (a day)"));
    }
    let pages = raw.session.pages.unwrap_or(3.0);
    if !(1.0..=200.0).contains(&pages) {
        return Err(err(
            "session.pages",
            format!("must be between 1 and 200, got {pages}"),
        ));
    }
    let heartbeat_seconds = raw.session.heartbeat_seconds.unwrap_or(30);
    if !(5..=600).contains(&heartbeat_seconds) {
        return Err(err(
            "session.heartbeat_seconds",
            format!("must be between 5 and 600, got {heartbeat_seconds}"),
        ));
    }
    let sources = match raw.sources {
        None => vec![
            src("google", 0.35),
            src("yandex", 0.35),
            src("direct", 0.15),
            src("vk", 0.1),
            src("email", 0.05),
        ],
        Some(list) => {
            if list.is_empty() {
                return Err(err("sources", "list at least one source"));
            }
            let mut out: Vec<Source> = Vec::with_capacity(list.len());
            for (i, s) in list.into_iter().enumerate() {
                let ok_name = !s.name.is_empty()
                    && s.name.len() <= 60
                    && s.name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b)
                    });
                if !ok_name {
                    return Err(err(
                        format!("sources[{i}].name"),
                        format!(
                            "`{}` is not a source name (lowercase letters, digits, `_-.`, up to 60)",
                            s.name
                        ),
                    ));
                }
                if out.iter().any(|o| o.name == s.name) {
                    return Err(err(
                        format!("sources[{i}].name"),
                        format!("`{}` is listed twice", s.name),
                    ));
                }
                if !(s.share > 0.0 && s.share.is_finite()) {
                    return Err(err(
                        format!("sources[{i}].share"),
                        format!("must be above 0, got {}", s.share),
                    ));
                }
                out.push(Source {
                    name: s.name,
                    share: s.share,
                });
            }
            let total: f64 = out.iter().map(|s| s.share).sum();
            for s in &mut out {
                s.share /= total;
            }
            out
        }
    };
    let delays = match raw.calls.delay {
        None => default_delays(),
        Some(list) => {
            if list.is_empty() {
                return Err(err("calls.delay", "list at least one part"));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, d) in list.into_iter().enumerate() {
                if !(d.share > 0.0 && d.share.is_finite()) {
                    return Err(err(
                        format!("calls.delay[{i}].share"),
                        format!("must be above 0, got {}", d.share),
                    ));
                }
                let (lo, hi) = if d.during_visit {
                    if d.min_minutes.is_some() || d.max_minutes.is_some() {
                        return Err(err(
                            format!("calls.delay[{i}]"),
                            "a `during_visit` part takes no min_minutes/max_minutes",
                        ));
                    }
                    (0.0, 0.0)
                } else {
                    let lo = d.min_minutes.unwrap_or(0.0);
                    let Some(hi) = d.max_minutes else {
                        return Err(err(
                            format!("calls.delay[{i}].max_minutes"),
                            "missing (or set during_visit = true)",
                        ));
                    };
                    if !(lo >= 0.0 && lo.is_finite()) {
                        return Err(err(
                            format!("calls.delay[{i}].min_minutes"),
                            format!("must be 0 or more, got {lo}"),
                        ));
                    }
                    if !(hi > lo && hi <= 60.0 * 24.0 * 30.0) {
                        return Err(err(
                            format!("calls.delay[{i}].max_minutes"),
                            format!("must be above min_minutes ({lo}) and at most 43200 (30 days), got {hi}"),
                        ));
                    }
                    (lo, hi)
                };
                out.push(Delay {
                    share: d.share,
                    during_visit: d.during_visit,
                    min_minutes: lo,
                    max_minutes: hi,
                });
            }
            let total: f64 = out.iter().map(|d| d.share).sum();
            for d in &mut out {
                d.share /= total;
            }
            out
        }
    };
    let repeat_min_hours = positive("calls.repeat_min_hours", raw.calls.repeat_min_hours, 1.0)?;
    let repeat_max_hours = positive("calls.repeat_max_hours", raw.calls.repeat_max_hours, 72.0)?;
    if repeat_max_hours <= repeat_min_hours || repeat_max_hours > 24.0 * 30.0 {
        return Err(err(
            "calls.repeat_max_hours",
            format!("must be above calls.repeat_min_hours ({repeat_min_hours}) and at most 720, got {repeat_max_hours}"),
        ));
    }
    let pools = match raw.pools {
        None => Strategy::ALL
            .into_iter()
            .map(|s| PoolConfig {
                name: s.as_str().to_owned(),
                strategy: s,
                numbers: 20,
                hold_minutes: 15,
                policy: ExhaustionPolicy::Reuse,
            })
            .collect(),
        Some(list) => {
            if list.is_empty() {
                return Err(err("pools", "list at least one pool"));
            }
            let mut out: Vec<PoolConfig> = Vec::with_capacity(list.len());
            for (i, p) in list.into_iter().enumerate() {
                let strategy = match p.strategy.as_deref() {
                    None => Strategy::Calltrail,
                    Some(s) => Strategy::parse(s).ok_or_else(|| {
                        err(
                            format!("pools[{i}].strategy"),
                            format!("unknown strategy `{s}` (expected random, round_robin, lru or calltrail)"),
                        )
                    })?,
                };
                let numbers = p.numbers.unwrap_or(20);
                if !(1..=100_000).contains(&numbers) {
                    return Err(err(
                        format!("pools[{i}].numbers"),
                        format!("must be between 1 and 100000, got {numbers}"),
                    ));
                }
                let hold_minutes = p.hold_minutes.unwrap_or(15);
                if !(1..=calltrail_core::setup::MAX_HOLD_MINUTES).contains(&hold_minutes) {
                    return Err(err(
                        format!("pools[{i}].hold_minutes"),
                        format!(
                            "must be between 1 and {}, got {hold_minutes}",
                            calltrail_core::setup::MAX_HOLD_MINUTES
                        ),
                    ));
                }
                let policy = match p.on_exhaustion.as_deref() {
                    None => ExhaustionPolicy::Reuse,
                    Some(s) => s.parse().map_err(|_| {
                        err(
                            format!("pools[{i}].on_exhaustion"),
                            format!("unknown policy `{s}` (expected fallback or reuse)"),
                        )
                    })?,
                };
                let name = p.name.unwrap_or_else(|| strategy.as_str().to_owned());
                if out.iter().any(|o| o.name == name) {
                    return Err(err(
                        format!("pools[{i}].name"),
                        format!("`{name}` is listed twice; give each pool its own name"),
                    ));
                }
                out.push(PoolConfig {
                    name,
                    strategy,
                    numbers,
                    hold_minutes,
                    policy,
                });
            }
            out
        }
    };
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| default_name.to_owned()),
        seed: raw.seed.unwrap_or(1),
        days,
        visitors_per_day,
        hourly_profile,
        session_median_minutes: median,
        session_p90_minutes: p90,
        pages_per_session: pages,
        heartbeat_seconds,
        returning_share: share("returning_share", raw.returning_share, 0.25)?,
        bot_share: share("bot_share", raw.bot_share, 0.05)?,
        hidden_caller_share: share("hidden_caller_share", raw.hidden_caller_share, 0.03)?,
        sources,
        call_probability: share("calls.probability", raw.calls.probability, 0.04)?,
        repeat_call_share: share("calls.repeat_share", raw.calls.repeat_share, 0.15)?,
        repeat_min_hours,
        repeat_max_hours,
        delays,
        pools,
    })
}

fn src(name: &str, share: f64) -> Source {
    Source {
        name: name.to_owned(),
        share,
    }
}

/// Calls during the visit, soon after, and later from a saved number.
pub fn default_delays() -> Vec<Delay> {
    let part = |share, lo: f64, hi: f64| Delay {
        share,
        during_visit: false,
        min_minutes: lo,
        max_minutes: hi,
    };
    vec![
        Delay {
            share: 0.45,
            during_visit: true,
            min_minutes: 0.0,
            max_minutes: 0.0,
        },
        part(0.25, 0.0, 15.0),
        part(0.10, 15.0, 30.0),
        part(0.12, 60.0, 12.0 * 60.0),
        part(0.08, 24.0 * 60.0, 3.0 * 24.0 * 60.0),
    ]
}

impl Scenario {
    /// Mean session minutes of the log-normal with the scenario's median and p90.
    pub fn mean_session_minutes(&self) -> f64 {
        let sigma = self.session_sigma();
        self.session_median_minutes * (sigma * sigma / 2.0).exp()
    }

    pub fn session_sigma(&self) -> f64 {
        (self.session_p90_minutes / self.session_median_minutes).ln() / 1.281_551_565_5
    }

    /// The longest call delay after a visit, in minutes (repeat calls included).
    pub fn longest_delay_minutes(&self) -> f64 {
        let d = self
            .delays
            .iter()
            .map(|d| d.max_minutes)
            .fold(0.0, f64::max);
        d + if self.repeat_call_share > 0.0 {
            self.repeat_max_hours * 60.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_scenario() {
        let s = parse("", "x").expect("defaults");
        assert_eq!(s.days, 7);
        assert_eq!(s.pools.len(), 4);
        assert!((s.delays.iter().map(|d| d.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((s.sources.iter().map(|d| d.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(s.name, "x");
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("days = \"seven\"", "x").expect_err("type");
        assert_eq!(e.key, "days");
        let e = parse("[[pools]]\nstrategy = \"magic\"", "x").expect_err("strategy");
        assert_eq!(e.key, "pools[0].strategy");
        assert!(e.problem.contains("magic"));
        let e = parse("[[pools]]\nnumbers = 5\n[[pools]]\nnumbers = -1", "x").expect_err("neg");
        assert_eq!(e.key, "pools[1].numbers", "{e}");
        let e = parse("hourly_profile = [1.0, 2.0]", "x").expect_err("profile");
        assert_eq!(e.key, "hourly_profile");
        let e = parse("bot_share = 1.5", "x").expect_err("share");
        assert_eq!(e.key, "bot_share");
        let e = parse("visitor_per_day = 5", "x").expect_err("unknown");
        assert!(e.problem.contains("visitor_per_day"), "{e}");
        let e = parse("[session]\nmedian_minutes = 10\np90_minutes = 5", "x").expect_err("p90");
        assert_eq!(e.key, "session.p90_minutes");
        let e = parse("[[calls.delay]]\nshare = 1\nmin_minutes = 5", "x").expect_err("max");
        assert_eq!(e.key, "calls.delay[0].max_minutes");
        let e = parse("[[sources]]\nname = \"Google Ads\"\nshare = 1", "x").expect_err("name");
        assert_eq!(e.key, "sources[0].name");
        let e = parse("days = 3\ndays = 4", "x").expect_err("dup");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
