//! The strategies under test, each behind the same small interface: a session opens, views
//! a page, sends a heartbeat; a call comes to a number.
//!
//! [`Calltrail`] is the store's flow (`Store::visit`, `heartbeat`, `ingest_call` in
//! crates/store) on an in-memory lease table: the same `allocate` and `match_call` from
//! `calltrail_core::engine`, fed the same facts the store gathers. The baselines are what
//! simpler trackers do.

use std::collections::{BTreeSet, HashMap};

use calltrail_core::engine::{
    self, Allocation, CallFacts, Lease, MatchMethod, Millis, Requester, Slot,
};
use calltrail_core::{ExhaustionPolicy, NumberKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::scenario::Strategy;

/// What a session is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The site's own number (bots under calltrail).
    Site,
    /// A pool number, by index.
    Pool(u32),
    /// The pool's fallback number.
    Fallback,
}

/// How a strategy attributed a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub session: Option<u32>,
    pub method: MatchMethod,
    pub confidence: f64,
}

/// The outcome of a page view or heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewed {
    pub shown: Shown,
    /// The pool had no free number for this request.
    pub exhausted: bool,
}

/// What the store keeps for caller history: calls and whom they went to.
#[derive(Debug, Default)]
struct CallerLog {
    /// Per caller phone: `(at, visitor, confidence)` in the order they came.
    calls: HashMap<u32, Vec<(Millis, Option<u32>, f64)>>,
}

/// The store's `caller_visitors` keeps calls at or above this confidence
/// (crates/store/src/engine.rs).
const CALLER_HISTORY_MIN_CONFIDENCE: f64 = 0.85;

impl CallerLog {
    /// Mirrors `Store::caller_visitors`: the latest five confident calls before `at`,
    /// their visitors, most recent first, without repeats.
    fn visitors(&self, caller: u32, at: Millis) -> Vec<u32> {
        let Some(list) = self.calls.get(&caller) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = Vec::new();
        for (t, v, c) in list
            .iter()
            .rev()
            .filter(|(t, v, c)| *t < at && v.is_some() && *c >= CALLER_HISTORY_MIN_CONFIDENCE)
            .take(5)
        {
            let _ = (t, c);
            if let Some(v) = v {
                if !out.contains(v) {
                    out.push(*v);
                }
            }
        }
        out
    }

    fn record(&mut self, caller: u32, at: Millis, visitor: Option<u32>, confidence: f64) {
        self.calls
            .entry(caller)
            .or_default()
            .push((at, visitor, confidence));
    }
}

pub fn number_id(i: u32) -> String {
    format!("n{i:06}")
}

fn session_key(i: u32) -> String {
    format!("s{i:09}")
}

fn visitor_key(i: u32) -> String {
    format!("v{i:09}")
}

fn parse_key(s: &str) -> Option<u32> {
    s.get(1..).and_then(|d| d.parse().ok())
}

// ---------------------------------------------------------------------------------------
// calltrail

#[derive(Debug, Clone, Default)]
struct CtSession {
    visitor: u32,
    /// The pool: `None` for bots (the store's `Target::None`).
    pooled: bool,
    lease: Option<u32>,
    shown: Option<Shown>,
}

/// calltrail's engine on an in-memory lease table.
pub struct Calltrail {
    policy: ExhaustionPolicy,
    hold: Millis,
    slots: Vec<Slot>,
    leases: Vec<Lease>,
    /// Lease indexes per number, in the order they began.
    by_number: Vec<Vec<u32>>,
    /// Lease indexes per visitor, in the order they began.
    by_visitor: HashMap<u32, Vec<u32>>,
    sessions: HashMap<u32, CtSession>,
    sources: Vec<String>,
    callers: CallerLog,
}

impl Calltrail {
    pub fn new(numbers: u32, hold: Millis, policy: ExhaustionPolicy, sources: Vec<String>) -> Self {
        Self {
            policy,
            hold,
            slots: (0..numbers)
                .map(|i| Slot {
                    number_id: number_id(i),
                    latest: None,
                })
                .collect(),
            leases: Vec::new(),
            by_number: vec![Vec::new(); numbers as usize],
            by_visitor: HashMap::new(),
            sessions: HashMap::new(),
            sources,
            callers: CallerLog::default(),
        }
    }

    /// `Store::visit` for a new session (`open_session`).
    pub fn open(&mut self, s: u32, visitor: u32, source: u16, bot: bool, now: Millis) -> Viewed {
        let st = CtSession {
            visitor,
            pooled: !bot,
            lease: None,
            shown: None,
        };
        self.sessions.insert(s, st);
        if bot {
            return Viewed {
                shown: Shown::Site,
                exhausted: false,
            };
        }
        self.allocate_in(s, source, now)
    }

    /// `Store::visit` with a live session id, or `Store::heartbeat` (`continue_session`).
    pub fn touch(&mut self, s: u32, source: u16, now: Millis) -> Viewed {
        let Some(st) = self.sessions.get(&s) else {
            return Viewed {
                shown: Shown::Site,
                exhausted: false,
            };
        };
        if !st.pooled {
            return Viewed {
                shown: Shown::Site,
                exhausted: false,
            };
        }
        // The common case: the session's lease is alive, move it on.
        if let Some(l) = st.lease {
            let hold = self.hold;
            let lease = &mut self.leases[l as usize];
            if lease.ended_at.is_none() && lease.hold_until >= now && lease.last_activity <= now {
                lease.last_activity = now;
                lease.hold_until = now + hold;
                let n = parse_key(&lease.number_id).unwrap_or(0);
                if let Some(latest) = self.slots[n as usize].latest.as_mut() {
                    if latest.id == lease.id {
                        latest.last_activity = now;
                        latest.hold_until = now + hold;
                    }
                }
                return Viewed {
                    shown: Shown::Pool(n),
                    exhausted: false,
                };
            }
        }
        self.allocate_in(s, source, now)
    }

    /// `Store::allocate_in`: gather the slots and the visitor's numbers, let
    /// `engine::allocate` choose, write what it chose.
    fn allocate_in(&mut self, s: u32, source: u16, now: Millis) -> Viewed {
        let Some(st) = self.sessions.get(&s).cloned() else {
            return Viewed {
                shown: Shown::Site,
                exhausted: false,
            };
        };
        let held_before: Vec<String> = self
            .by_visitor
            .get(&st.visitor)
            .map(|v| {
                v.iter()
                    .rev()
                    .take(5)
                    .map(|&l| self.leases[l as usize].number_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let sid = session_key(s);
        let vid = visitor_key(st.visitor);
        let source_name = self.sources[source as usize].clone();
        let req = Requester {
            session_id: &sid,
            visitor_id: &vid,
            source: &source_name,
            held_before: &held_before,
            // Every page load asks; a continuing session may hold its number.
            opens: false,
        };
        let alloc = engine::allocate(&self.slots, &req, self.policy, now);
        let exhausted = alloc.is_exhaustion();
        let shown = match &alloc {
            Allocation::Keep {
                number_id,
                lease_id,
            } => {
                let n = parse_key(number_id).unwrap_or(0);
                if let Some(l) = parse_key(lease_id) {
                    let hold = self.hold;
                    self.leases[l as usize].active_at(now, hold);
                    if let Some(latest) = self.slots[n as usize].latest.as_mut() {
                        if latest.id == *lease_id {
                            latest.active_at(now, hold);
                        }
                    }
                }
                Shown::Pool(n)
            }
            Allocation::Regain { number_id }
            | Allocation::Fresh { number_id }
            | Allocation::Reuse { number_id, .. } => {
                let n = parse_key(number_id).unwrap_or(0);
                if let Some(&prev) = self.by_number[n as usize].last() {
                    let p = &mut self.leases[prev as usize];
                    if p.ended_at.is_none() {
                        p.ended_at = Some(if p.hold_until < now {
                            p.hold_until
                        } else {
                            now
                        });
                    }
                }
                let l = self.leases.len() as u32;
                let lease = Lease {
                    id: format!("l{l:09}"),
                    number_id: number_id.clone(),
                    session_id: sid,
                    visitor_id: vid,
                    source: source_name,
                    leased_at: now,
                    last_activity: now,
                    hold_until: now + self.hold,
                    ended_at: None,
                };
                self.slots[n as usize].latest = Some(lease.clone());
                self.leases.push(lease);
                self.by_number[n as usize].push(l);
                self.by_visitor.entry(st.visitor).or_default().push(l);
                if let Some(st) = self.sessions.get_mut(&s) {
                    st.lease = Some(l);
                }
                Shown::Pool(n)
            }
            Allocation::Exhausted => {
                if let Some(st) = self.sessions.get_mut(&s) {
                    st.lease = None;
                }
                Shown::Fallback
            }
        };
        if let Some(st) = self.sessions.get_mut(&s) {
            st.shown = Some(shown);
        }
        Viewed { shown, exhausted }
    }

    /// `Store::ingest_call`.
    pub fn call(&mut self, to: Shown, caller: Option<u32>, at: Millis) -> Attribution {
        let (kind, leases) = match to {
            Shown::Pool(n) => {
                let all = &self.by_number[n as usize];
                // `leases_before`: the latest 50 that began at or before the call.
                let mut v: Vec<Lease> = all
                    .iter()
                    .rev()
                    .map(|&l| &self.leases[l as usize])
                    .filter(|l| l.leased_at <= at)
                    .take(50)
                    .cloned()
                    .collect();
                v.reverse();
                (Some(NumberKind::Pool), v)
            }
            Shown::Fallback => (Some(NumberKind::Fallback), Vec::new()),
            Shown::Site => (None, Vec::new()),
        };
        let callers: Vec<String> = match (caller, kind) {
            (Some(c), Some(NumberKind::Pool)) => self
                .callers
                .visitors(c, at)
                .into_iter()
                .map(visitor_key)
                .collect(),
            _ => Vec::new(),
        };
        let m = engine::match_call(&CallFacts {
            kind,
            at,
            leases: &leases,
            caller_visitors: &callers,
        });
        let lease = m
            .lease_id
            .as_ref()
            .and_then(|id| leases.iter().find(|l| &l.id == id));
        let session = lease.and_then(|l| parse_key(&l.session_id));
        let visitor = lease.and_then(|l| parse_key(&l.visitor_id));
        if let Some(c) = caller {
            self.callers.record(c, at, visitor, m.confidence);
        }
        Attribution {
            session,
            method: m.method,
            confidence: m.confidence,
        }
    }

    /// The session holding number `n` at `at` by its latest lease.
    pub fn latest_holder(&self, n: u32, at: Millis) -> Option<u32> {
        self.by_number[n as usize]
            .iter()
            .rev()
            .map(|&l| &self.leases[l as usize])
            .find(|l| l.leased_at <= at)
            .and_then(|l| parse_key(&l.session_id))
    }

    pub fn in_use(&self, now: Millis) -> usize {
        self.slots
            .iter()
            .filter(|s| s.latest.as_ref().is_some_and(|l| l.taken_at(now)))
            .count()
    }
}

// ---------------------------------------------------------------------------------------
// Baselines: a fixed hold from the first view, no heartbeats, no caller history.

#[derive(Debug, Clone, Copy)]
struct BaseLease {
    session: u32,
    number: u32,
    leased_at: Millis,
}

pub struct Baseline {
    strategy: Strategy,
    policy: ExhaustionPolicy,
    hold: Millis,
    rng: StdRng,
    /// Latest lease per number.
    latest: Vec<Option<u32>>,
    last_assigned: Vec<Millis>,
    cursor: usize,
    leases: Vec<BaseLease>,
    by_number: Vec<Vec<u32>>,
    /// Per session: its current lease.
    sessions: HashMap<u32, Option<u32>>,
    free: Vec<u32>,
    /// `(last_assigned, number)`: least recently assigned first.
    order: BTreeSet<(Millis, u32)>,
}

impl Baseline {
    pub fn new(
        strategy: Strategy,
        numbers: u32,
        hold: Millis,
        policy: ExhaustionPolicy,
        seed: u64,
    ) -> Self {
        Self {
            strategy,
            policy,
            hold,
            rng: StdRng::seed_from_u64(seed),
            latest: vec![None; numbers as usize],
            last_assigned: vec![Millis::MIN; numbers as usize],
            cursor: 0,
            leases: Vec::new(),
            by_number: vec![Vec::new(); numbers as usize],
            sessions: HashMap::new(),
            free: Vec::with_capacity(numbers as usize),
            order: (0..numbers).map(|n| (Millis::MIN, n)).collect(),
        }
    }

    fn live(&self, l: u32, now: Millis) -> bool {
        now <= self.leases[l as usize].leased_at + self.hold
    }

    fn number_free(&self, n: usize, now: Millis) -> bool {
        self.latest[n].is_none_or(|l| !self.live(l, now))
    }

    /// A page view (baselines ignore heartbeats): keep the number while its fixed hold
    /// lasts and no one took it, else pick one.
    pub fn view(&mut self, s: u32, now: Millis) -> Viewed {
        if let Some(Some(l)) = self.sessions.get(&s).copied() {
            let n = self.leases[l as usize].number as usize;
            if self.live(l, now) && self.latest[n] == Some(l) {
                return Viewed {
                    shown: Shown::Pool(n as u32),
                    exhausted: false,
                };
            }
        }
        let size = self.latest.len();
        let free_pick = match self.strategy {
            Strategy::Random => {
                // A random free number: probe a few times before listing them all.
                let mut pick = None;
                for _ in 0..8 {
                    let n = self.rng.gen_range(0..size);
                    if self.number_free(n, now) {
                        pick = Some(n);
                        break;
                    }
                }
                pick.or_else(|| {
                    self.free.clear();
                    for n in 0..size {
                        if self.number_free(n, now) {
                            self.free.push(n as u32);
                        }
                    }
                    (!self.free.is_empty())
                        .then(|| self.free[self.rng.gen_range(0..self.free.len())] as usize)
                })
            }
            Strategy::RoundRobin => {
                let start = self.cursor % size;
                (0..size)
                    .map(|k| (start + k) % size)
                    .find(|&n| self.number_free(n, now))
            }
            // Least recently assigned first: the first free one in that order.
            _ => self
                .order
                .iter()
                .map(|&(_, n)| n as usize)
                .find(|&n| self.number_free(n, now)),
        };
        let (pick, exhausted) = match free_pick {
            Some(n) => (Some(n), false),
            None => (
                match self.policy {
                    ExhaustionPolicy::Fallback => None,
                    ExhaustionPolicy::Reuse => Some(match self.strategy {
                        Strategy::Random => self.rng.gen_range(0..size),
                        Strategy::RoundRobin => self.cursor % size,
                        _ => self.order.first().map_or(0, |&(_, n)| n as usize),
                    }),
                },
                true,
            ),
        };
        let Some(n) = pick else {
            self.sessions.insert(s, None);
            return Viewed {
                shown: Shown::Fallback,
                exhausted,
            };
        };
        if self.strategy == Strategy::RoundRobin {
            self.cursor = n + 1;
        }
        self.lease(s, n, now, exhausted)
    }

    fn lease(&mut self, s: u32, n: usize, now: Millis, exhausted: bool) -> Viewed {
        let l = self.leases.len() as u32;
        self.leases.push(BaseLease {
            session: s,
            number: n as u32,
            leased_at: now,
        });
        self.by_number[n].push(l);
        self.latest[n] = Some(l);
        self.order.remove(&(self.last_assigned[n], n as u32));
        self.last_assigned[n] = now;
        self.order.insert((now, n as u32));
        self.sessions.insert(s, Some(l));
        Viewed {
            shown: Shown::Pool(n as u32),
            exhausted,
        }
    }

    /// The lease of the number at the call: inside its hold, surely that session; after, the
    /// last holder.
    pub fn call(&self, to: Shown, at: Millis) -> Attribution {
        let Shown::Pool(n) = to else {
            return Attribution {
                session: None,
                method: if to == Shown::Fallback {
                    MatchMethod::Fallback
                } else {
                    MatchMethod::Unmatched
                },
                confidence: 0.0,
            };
        };
        let latest = self.by_number[n as usize]
            .iter()
            .rev()
            .map(|&l| self.leases[l as usize])
            .find(|l| l.leased_at <= at);
        match latest {
            Some(l) if at <= l.leased_at + self.hold => Attribution {
                session: Some(l.session),
                method: MatchMethod::Dynamic,
                confidence: 1.0,
            },
            Some(l) => Attribution {
                session: Some(l.session),
                method: MatchMethod::DynamicLate,
                confidence: 0.5,
            },
            None => Attribution {
                session: None,
                method: MatchMethod::Unmatched,
                confidence: 0.0,
            },
        }
    }

    pub fn latest_holder(&self, n: u32, at: Millis) -> Option<u32> {
        self.by_number[n as usize]
            .iter()
            .rev()
            .map(|&l| self.leases[l as usize])
            .find(|l| l.leased_at <= at)
            .map(|l| l.session)
    }

    pub fn in_use(&self, now: Millis) -> usize {
        (0..self.latest.len())
            .filter(|&n| !self.number_free(n, now))
            .count()
    }
}
