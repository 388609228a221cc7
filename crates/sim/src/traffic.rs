//! Simulated traffic: sessions, their page views and heartbeats, and the calls they make,
//! with the ground truth kept. Generated once per scenario, then replayed against every
//! strategy, so each one sees exactly the same visitors and callers.

use calltrail_core::engine::{Millis, HOUR, MINUTE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::scenario::Scenario;

/// 2024-01-01T00:00:00Z, a Monday: the simulated clock starts here.
pub const EPOCH: Millis = 1_704_067_200_000;
pub const DAY: Millis = 24 * HOUR;

#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub visitor: u32,
    pub source: u16,
    pub bot: bool,
    pub start: Millis,
    /// The last activity (last page view or heartbeat).
    pub end: Millis,
    /// Whether the session belongs to the measured days (not the tail that lets late
    /// calls meet a busy pool).
    pub measured: bool,
}

#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The session that really led to the call.
    pub session: u32,
    pub at: Millis,
    /// The caller's phone, `None` when hidden.
    pub caller: Option<u32>,
    /// The earlier call this one repeats (dialling the same saved number).
    pub repeat_of: Option<u32>,
    /// Whether an earlier call came from the same phone.
    pub caller_called_before: bool,
    /// Which part of the scenario's delay mixture made the call (`None` for repeats).
    pub delay_part: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    Open = 0,
    Page = 1,
    Beat = 2,
    Call = 3,
}

/// One thing that happens at a moment: packed for a cheap sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub at: Millis,
    pub kind: EventKind,
    /// The session (or, for calls, the call).
    pub idx: u32,
}

#[derive(Debug, Clone)]
pub struct Traffic {
    pub sessions: Vec<SessionPlan>,
    pub calls: Vec<CallPlan>,
    /// Every event in time order.
    pub events: Vec<Event>,
    pub visitors: u32,
    /// The first moment after the measured days.
    pub measured_until: Millis,
}

impl Traffic {
    /// Human (non-bot) sessions of the measured days.
    pub fn measured_visits(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.measured && !s.bot)
            .count()
    }

    pub fn measured_calls(&self) -> impl Iterator<Item = (usize, &CallPlan)> {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, c)| self.sessions[c.session as usize].measured)
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.gen_range(0.0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Generate a scenario's traffic. Deterministic for a given scenario (its `seed`).
pub fn generate(sc: &Scenario) -> Traffic {
    let mut rng = StdRng::seed_from_u64(sc.seed);
    // Late callers should meet a pool as busy as the measured days left it: traffic goes on
    // for as long as the longest delay, but only calls of the measured days count.
    let tail_days = (sc.longest_delay_minutes() / (24.0 * 60.0)).ceil() as u32;
    let total_days = sc.days + tail_days;
    let measured_until = EPOCH + Millis::from(sc.days) * DAY;
    let sigma = sc.session_sigma();
    let mu = sc.session_median_minutes.ln();
    let beat = Millis::from(sc.heartbeat_seconds) * 1000;
    let source_weights: Vec<f64> = sc.sources.iter().map(|s| s.share).collect();
    let delay_weights: Vec<f64> = sc.delays.iter().map(|d| d.share).collect();

    let mut sessions = Vec::new();
    let mut events = Vec::new();
    let mut visitors: u32 = 0;
    let mut bot_visitor: Vec<bool> = Vec::new();
    let per_day = sc.visitors_per_day.round().max(1.0) as u32;
    for day in 0..total_days {
        let mut starts: Vec<Millis> = (0..per_day)
            .map(|_| {
                let h = pick(&mut rng, &sc.hourly_profile) as Millis;
                EPOCH + Millis::from(day) * DAY + h * HOUR + rng.gen_range(0..HOUR)
            })
            .collect();
        starts.sort_unstable();
        for start in starts {
            let bot = rng.gen_bool(sc.bot_share);
            let visitor = if !bot && visitors > 0 && rng.gen_bool(sc.returning_share) {
                let v = rng.gen_range(0..visitors);
                if bot_visitor[v as usize] {
                    // Returning visitors are people, never bots.
                    rng.gen_range(0..visitors)
                } else {
                    v
                }
            } else {
                visitors += 1;
                bot_visitor.push(bot);
                visitors - 1
            };
            let source = pick(&mut rng, &source_weights) as u16;
            let idx = sessions.len() as u32;
            events.push(Event {
                at: start,
                kind: EventKind::Open,
                idx,
            });
            let mut end = start;
            if bot {
                // Crawlers fetch a few pages within a minute and run no timers.
                for _ in 0..rng.gen_range(0..3) {
                    let at = start + rng.gen_range(1_000..MINUTE);
                    end = end.max(at);
                    events.push(Event {
                        at,
                        kind: EventKind::Page,
                        idx,
                    });
                }
            } else {
                let minutes = (mu + sigma * normal(&mut rng)).exp().min(24.0 * 60.0);
                let length = (minutes * MINUTE as f64) as Millis;
                // Pages: the landing page, then on average `pages - 1` more.
                let extra = sc.pages_per_session - 1.0;
                let mut pages = 0;
                while pages < 200 && extra > 0.0 && rng.gen_bool(extra / (extra + 1.0)) {
                    pages += 1;
                }
                for _ in 0..pages {
                    let at = start + rng.gen_range(0..=length);
                    end = end.max(at);
                    events.push(Event {
                        at,
                        kind: EventKind::Page,
                        idx,
                    });
                }
                let mut at = start + beat;
                while at <= start + length {
                    end = end.max(at);
                    events.push(Event {
                        at,
                        kind: EventKind::Beat,
                        idx,
                    });
                    at += beat;
                }
            }
            sessions.push(SessionPlan {
                visitor,
                source,
                bot,
                start,
                end,
                measured: start < measured_until,
            });
        }
    }
    // Hidden caller ids, per person.
    let hidden_caller: Vec<bool> = (0..visitors)
        .map(|_| rng.gen_bool(sc.hidden_caller_share))
        .collect();
    let mut calls: Vec<CallPlan> = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        if s.bot || !rng.gen_bool(sc.call_probability) {
            continue;
        }
        let part = pick(&mut rng, &delay_weights);
        let d = &sc.delays[part];
        let at = if d.during_visit {
            rng.gen_range(s.start..=s.end)
        } else {
            let lo = (d.min_minutes * MINUTE as f64) as Millis;
            let hi = (d.max_minutes * MINUTE as f64) as Millis;
            s.end + rng.gen_range(lo.max(1)..=hi.max(lo + 1))
        };
        let caller = (!hidden_caller[s.visitor as usize]).then_some(s.visitor);
        calls.push(CallPlan {
            session: i as u32,
            at,
            caller,
            repeat_of: None,
            caller_called_before: false,
            delay_part: Some(part as u8),
        });
        if rng.gen_bool(sc.repeat_call_share) {
            let lo = (sc.repeat_min_hours * HOUR as f64) as Millis;
            let hi = (sc.repeat_max_hours * HOUR as f64) as Millis;
            let first = calls.len() as u32 - 1;
            calls.push(CallPlan {
                session: i as u32,
                at: at + rng.gen_range(lo..=hi),
                caller,
                repeat_of: Some(first),
                caller_called_before: false,
                delay_part: None,
            });
        }
    }
    // Which calls come from a phone that called before (caller history could know it).
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| (calls[i].at, i));
    let mut seen = std::collections::HashSet::new();
    for &i in &order {
        if let Some(c) = calls[i].caller {
            calls[i].caller_called_before = !seen.insert(c);
        }
    }
    for (i, c) in calls.iter().enumerate() {
        events.push(Event {
            at: c.at,
            kind: EventKind::Call,
            idx: i as u32,
        });
    }
    events.sort_unstable();
    Traffic {
        sessions,
        calls,
        events,
        visitors,
        measured_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse;

    #[test]
    fn traffic_follows_the_scenario_and_the_seed() {
        let sc = parse("days = 2\nvisitors_per_day = 300\nseed = 5", "t").expect("scenario");
        let a = generate(&sc);
        let b = generate(&sc);
        assert_eq!(a.events, b.events);
        let measured = a.sessions.iter().filter(|s| s.measured).count();
        assert_eq!(measured, 600);
        assert!(a.sessions.len() > 600, "a tail for late callers");
        let bots = a.sessions.iter().filter(|s| s.bot).count() as f64 / a.sessions.len() as f64;
        assert!((0.02..0.09).contains(&bots), "{bots}");
        // Session lengths: the median is near the scenario's.
        let mut len: Vec<f64> = a
            .sessions
            .iter()
            .filter(|s| !s.bot)
            .map(|s| (s.end - s.start) as f64 / MINUTE as f64)
            .collect();
        len.sort_by(f64::total_cmp);
        let median = len[len.len() / 2];
        assert!((2.0..4.5).contains(&median), "{median}");
        assert!(a.events.windows(2).all(|w| w[0] <= w[1]));
        let other = generate(&Scenario { seed: 6, ..sc });
        assert_ne!(a.events, other.events);
    }
}
