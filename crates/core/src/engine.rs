//! The engine's decisions, as pure functions: which number a visitor gets, which visit a
//! call belongs to, and how sure we are. Time is milliseconds since the epoch, passed in.

use serde::Serialize;

use crate::domain::{ExhaustionPolicy, NumberKind};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;

/// A session continues while its visitor was active within this long.
pub const SESSION_TIMEOUT: Millis = 30 * MINUTE;

/// When a pool ran dry and reuses (`allocate`, step 4), a holder of the requester's source
/// is displaced instead of the holder idle the longest while the hold it cuts short is at
/// most this many times as long.
///
/// Calls its holder may still make within the hold are what a displacement breaks: they go
/// to the new holder, on the page. Taking the number from a holder of the requester's source
/// breaks only their session; taking it from another source's holder breaks their source
/// too. Counting a wrong session and a wrong source alike, the same source is worth up to
/// twice the remaining hold (and it keeps numbers with their source for late callers).
/// `calltrail simulate` measured it against the alternatives (docs/BENCHMARKS.md, "What the
/// simulator changed in the engine", 5).
pub const REUSE_SAME_SOURCE_FACTOR: i64 = 2;

mod picture;
pub use picture::Picture;

/// One lease of a pool number to a session, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub id: String,
    pub number_id: String,
    pub session_id: String,
    pub visitor_id: String,
    pub source: String,
    pub leased_at: Millis,
    pub last_activity: Millis,
    /// `last_activity + hold`; moves on with every heartbeat while the lease lives.
    pub hold_until: Millis,
    /// Set when the number passed to someone else before `hold_until`.
    pub ended_at: Option<Millis>,
}

impl Lease {
    /// When the number stopped (or will stop) being this session's.
    pub fn end(&self) -> Millis {
        self.ended_at
            .map_or(self.hold_until, |e| e.min(self.hold_until))
    }

    /// Whether the number was this session's at `t`.
    pub fn covers(&self, t: Millis) -> bool {
        self.leased_at <= t && t <= self.end()
    }
    /// Whether the number is still taken at `now`, for allocation. A lease that began after
    /// `now` counts too: concurrent requests read the clock before they wait for the pool's
    /// lock, so a later-started request may commit first.
    pub fn taken_at(&self, now: Millis) -> bool {
        now <= self.end()
    }

    /// The session was active at `at`: the hold runs from then. A request that read the
    /// clock before the last activity does not move it back.
    pub fn active_at(&mut self, at: Millis, hold: Millis) {
        if self.last_activity <= at {
            self.last_activity = at;
            self.hold_until = at + hold;
        }
    }
}

/// A pool number and its latest lease.
#[derive(Debug, Clone)]
pub struct Slot {
    pub number_id: String,
    pub latest: Option<Lease>,
}

impl Slot {
    fn live_at(&self, now: Millis) -> Option<&Lease> {
        self.latest.as_ref().filter(|l| l.taken_at(now))
    }

    /// When the number was last active; never-used numbers sort first.
    fn idle_since(&self) -> Millis {
        self.latest
            .as_ref()
            .map_or(Millis::MIN, |l| l.last_activity)
    }
}

/// Who asks for a number.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub session_id: &'a str,
    pub visitor_id: &'a str,
    pub source: &'a str,
    /// Numbers this session or visitor held before, most recent first.
    pub held_before: &'a [String],
    /// The session opens with this request, so it holds no lease yet and step 1 has
    /// nothing to look for (with every number of a busy pool leased, that look compares
    /// the session with every holder).
    pub opens: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Allocation {
    /// The session's live lease goes on.
    Keep { number_id: String, lease_id: String },
    /// A number the session or visitor held before is free again: lease it anew.
    Regain { number_id: String },
    /// The free number idle the longest.
    Fresh { number_id: String },
    /// The pool ran dry and its policy reuses: the number of the holder idle the longest,
    /// taken from its holder (`displaced`); a holder of the same source goes first while its
    /// hold left is at most [`REUSE_SAME_SOURCE_FACTOR`] times that holder's.
    Reuse {
        number_id: String,
        displaced: String,
    },
    /// The pool ran dry and its policy shows the fallback number.
    Exhausted,
}

impl Allocation {
    pub fn number_id(&self) -> Option<&str> {
        match self {
            Self::Keep { number_id, .. }
            | Self::Regain { number_id }
            | Self::Fresh { number_id }
            | Self::Reuse { number_id, .. } => Some(number_id),
            Self::Exhausted => None,
        }
    }

    /// Whether the pool had no free number.
    pub fn is_exhaustion(&self) -> bool {
        matches!(self, Self::Reuse { .. } | Self::Exhausted)
    }
}

/// Choose a number for `req` among a pool's `slots` at `now` (DESIGN.md §4).
///
/// Deterministic: ties go to the smaller number id.
pub fn allocate(
    slots: &[Slot],
    req: &Requester<'_>,
    policy: ExhaustionPolicy,
    now: Millis,
) -> Allocation {
    // 1. The session still holds a number: keep it.
    if let Some((slot, lease)) = slots.iter().filter(|_| !req.opens).find_map(|s| {
        s.live_at(now)
            .filter(|l| l.session_id == req.session_id)
            .map(|l| (s, l))
    }) {
        return Allocation::Keep {
            number_id: slot.number_id.clone(),
            lease_id: lease.id.clone(),
        };
    }
    let free = |s: &&Slot| s.live_at(now).is_none();
    // 2. A number this session or visitor had before is free and nobody held it since:
    //    take it back. (Taking back a number someone else held since would take it from
    //    under that holder's late callers.)
    for prev in req.held_before {
        if slots.iter().filter(free).any(|s| {
            &s.number_id == prev
                && s.latest
                    .as_ref()
                    .is_none_or(|l| l.visitor_id == req.visitor_id)
        }) {
            return Allocation::Regain {
                number_id: prev.clone(),
            };
        }
    }
    // 3. A never-used number, else the free number idle the longest among those whose last
    //    holder came from the same source (a late call from a saved number then still
    //    lands on the right source), else the free number idle the longest: the gap
    //    between two holders is as wide as it can be.
    let idle_longest = |a: &&Slot, b: &&Slot| {
        a.idle_since()
            .cmp(&b.idle_since())
            .then_with(|| a.number_id.cmp(&b.number_id))
    };
    if let Some(lra) = slots.iter().filter(free).min_by(idle_longest) {
        let pick = if lra.latest.is_none() {
            lra
        } else {
            slots
                .iter()
                .filter(free)
                .filter(|s| s.latest.as_ref().is_some_and(|l| l.source == req.source))
                .min_by(idle_longest)
                .unwrap_or(lra)
        };
        return Allocation::Fresh {
            number_id: pick.number_id.clone(),
        };
    }
    // 4. None free: the pool's policy decides. Reuse takes the number of the holder idle
    //    the longest (the least of its hold left: the fewest of its calls can still come
    //    while someone else holds the number), or of the holder of the requester's source
    //    idle the longest if its hold left is at most `REUSE_SAME_SOURCE_FACTOR` times as
    //    long. A visitor on the page (nearly all of the hold left) thus keeps its number
    //    unless every holder left less than half a hold ago.
    match policy {
        ExhaustionPolicy::Fallback => Allocation::Exhausted,
        ExhaustionPolicy::Reuse => reuse(
            slots.iter().filter_map(|s| s.live_at(now).map(|l| (s, l))),
            req,
            now,
        ),
    }
}

/// Step 4 of [`allocate`] under the `reuse` policy, over the pool's live leases (in any
/// order: ties go to the smaller number id).
fn reuse<'a>(
    live: impl Iterator<Item = (&'a Slot, &'a Lease)>,
    req: &Requester<'_>,
    now: Millis,
) -> Allocation {
    let live: Vec<(&Slot, &Lease)> = live.collect();
    let idle_longest = |(a, la): &&(&Slot, &Lease), (b, lb): &&(&Slot, &Lease)| {
        la.last_activity
            .cmp(&lb.last_activity)
            .then_with(|| a.number_id.cmp(&b.number_id))
    };
    let Some(oldest) = live.iter().min_by(idle_longest) else {
        return Allocation::Exhausted;
    };
    let limit = REUSE_SAME_SOURCE_FACTOR * (oldest.1.hold_until - now).max(0);
    let (slot, lease) = live
        .iter()
        .filter(|(_, l)| l.source == req.source && l.hold_until - now <= limit)
        .min_by(idle_longest)
        .unwrap_or(oldest);
    Allocation::Reuse {
        number_id: slot.number_id.clone(),
        displaced: lease.id.clone(),
    }
}

/// How a call was attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMethod {
    /// A static number: its source.
    Static,
    /// The session holding the pool number when the call came.
    Dynamic,
    /// The number's last holder, after the hold ran out.
    DynamicLate,
    /// The caller's earlier calls name a visitor who held this number.
    CallerHistory,
    /// An operator typed the visitor's track code.
    TrackCode,
    /// The pool's fallback number: the site, source unknown.
    Fallback,
    /// Nothing to go on.
    Unmatched,
}

impl MatchMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
            Self::DynamicLate => "dynamic_late",
            Self::CallerHistory => "caller_history",
            Self::TrackCode => "track_code",
            Self::Fallback => "fallback",
            Self::Unmatched => "unmatched",
        }
    }
}

impl std::str::FromStr for MatchMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "static" => Self::Static,
            "dynamic" => Self::Dynamic,
            "dynamic_late" => Self::DynamicLate,
            "caller_history" => Self::CallerHistory,
            "track_code" => Self::TrackCode,
            "fallback" => Self::Fallback,
            "unmatched" => Self::Unmatched,
            other => return Err(format!("unknown match method `{other}`")),
        })
    }
}

/// What is known when a call arrives.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// The kind of the number called, `None` when it is not a tracking number.
    pub kind: Option<NumberKind>,
    pub at: Millis,
    /// Leases of the called number that began at or before `at` (any order).
    pub leases: &'a [Lease],
    /// Visitors the caller's earlier calls on this site were attributed to, most recent first.
    pub caller_visitors: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub method: MatchMethod,
    /// The lease (and so the session) the call is given to.
    pub lease_id: Option<String>,
    pub confidence: f64,
}

impl Match {
    fn none(method: MatchMethod, confidence: f64) -> Self {
        Self {
            method,
            lease_id: None,
            confidence,
        }
    }
}

/// Attribute a call (DESIGN.md §4). Never fails: a call always gets an answer.
pub fn match_call(f: &CallFacts<'_>) -> Match {
    match f.kind {
        None => return Match::none(MatchMethod::Unmatched, 0.0),
        Some(NumberKind::Static) => return Match::none(MatchMethod::Static, 1.0),
        Some(NumberKind::Fallback) => return Match::none(MatchMethod::Fallback, 0.0),
        Some(NumberKind::Pool) => {}
    }
    let past: Vec<&Lease> = f.leases.iter().filter(|l| l.leased_at <= f.at).collect();
    // The caller is known: the latest of the caller's visitors that held this number.
    let known = f.caller_visitors.iter().find_map(|v| {
        past.iter()
            .filter(|l| &l.visitor_id == v)
            .max_by(|a, b| by_time(a, b))
            .copied()
    });
    let covering = past
        .iter()
        .filter(|l| l.covers(f.at))
        .max_by(|a, b| by_time(a, b))
        .copied();
    if let Some(l) = covering {
        if known.is_some_and(|k| k.visitor_id == l.visitor_id) {
            return Match {
                method: MatchMethod::Dynamic,
                lease_id: Some(l.id.clone()),
                confidence: 0.99,
            };
        }
    }
    if let Some(k) = known {
        // The phone that calls belongs to a visitor who held this number before: a
        // returning caller, not the visitor who holds it now. As sure as the earlier call
        // that taught us the phone (which the store counts from 0.85 up).
        return Match {
            method: MatchMethod::CallerHistory,
            lease_id: Some(k.id.clone()),
            confidence: CALLER_HISTORY_CONFIDENCE,
        };
    }
    // Weigh every holder by how likely a call from them is now: the visitor on the page
    // far above one who left minutes ago, far above one who left days ago (who may still
    // call from a saved number). The likeliest takes the call; its share of the weight,
    // against everyone else's and a background of strangers, is how sure we are.
    let mut best: Option<(&Lease, f64)> = None;
    let mut total = BACKGROUND_RATE;
    for l in &past {
        let w = call_rate(l, f.at);
        total += w;
        let better = match best {
            None => true,
            Some((b, bw)) => w.total_cmp(&bw).then_with(|| by_time(l, b)).is_gt(),
        };
        if better {
            best = Some((l, w));
        }
    }
    match best {
        Some((l, w)) => Match {
            method: if l.covers(f.at) {
                MatchMethod::Dynamic
            } else {
                MatchMethod::DynamicLate
            },
            lease_id: Some(l.id.clone()),
            confidence: confidence_of(w / total),
        },
        None => Match::none(MatchMethod::Unmatched, 0.0),
    }
}

/// Leases in the order they began (ties by id, for determinism).
fn by_time(a: &Lease, b: &Lease) -> std::cmp::Ordering {
    a.leased_at.cmp(&b.leased_at).then_with(|| a.id.cmp(&b.id))
}

/// How sure an earlier call must be for its visitor to count as the caller's (caller history).
pub const TRUSTED_CALL_CONFIDENCE: f64 = 0.85;

/// A returning caller's match: the earlier calls it rests on were at least 0.85 sure.
pub const CALLER_HISTORY_CONFIDENCE: f64 = 0.88;

/// A holder counts as on the page while active within this long (heartbeats come every
/// 30 s from a visible tab).
pub const ON_PAGE: Millis = 3 * MINUTE;

/// Calls per minute from a visitor on the page, relative to the delay prior below: about
/// half of all calls come during the visit, and visits last minutes.
const ON_PAGE_RATE: f64 = 0.08;

/// Calls per minute from someone who is not among the number's holders (a misdial, a
/// holder older than the leases given, a number copied elsewhere).
const BACKGROUND_RATE: f64 = 2e-4;

/// The prior of when visitors call after they leave (per minute, for idle time up to the
/// bound): a quarter within 15 minutes, a tenth within half an hour, about a quarter over
/// hours and days from a saved number. `calltrail simulate` measures how well calibrated it
/// is (docs/simulation.md).
const DELAY_PRIOR: [(Millis, f64); 7] = [
    (15 * MINUTE, 0.25 / 15.0),
    (30 * MINUTE, 0.10 / 15.0),
    (HOUR, 0.02 / 30.0),
    (12 * HOUR, 0.12 / 660.0),
    (24 * HOUR, 0.03 / 720.0),
    (4 * 24 * HOUR, 0.08 / 4320.0),
    (30 * 24 * HOUR, 0.03 / 37_440.0),
];

/// How likely (per minute, relative) a call at `at` comes from this lease's holder.
fn call_rate(l: &Lease, at: Millis) -> f64 {
    let seen_until = l.last_activity.min(l.end());
    let idle = (at - seen_until).max(0);
    let on_page = if l.covers(at) && idle <= ON_PAGE {
        ON_PAGE_RATE
    } else {
        0.0
    };
    let after = DELAY_PRIOR
        .iter()
        .find(|(upto, _)| idle <= *upto)
        .map_or(0.0, |(_, r)| *r);
    on_page + after
}

/// A probability that the match is right, as the confidence stored with the call: 0.9
/// stands for 99 in 100, 0.85 for 9 in 10 (the store trusts a caller's earlier calls from
/// there), 0.5 for a coin toss.
fn confidence_of(p: f64) -> f64 {
    let c = if p >= 0.99 {
        0.9 + (p - 0.99) * 8.0
    } else if p >= 0.9 {
        0.85 + (p - 0.9) / 0.09 * 0.05
    } else if p >= 0.5 {
        0.5 + (p - 0.5) / 0.4 * 0.35
    } else {
        p
    };
    (c.clamp(0.0, 0.98) * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[allow(clippy::too_many_arguments, clippy::many_single_char_names)]
mod tests {
    use super::*;

    fn lease(
        id: &str,
        number: &str,
        session: &str,
        visitor: &str,
        source: &str,
        at: Millis,
        last: Millis,
        hold: Millis,
    ) -> Lease {
        Lease {
            id: id.into(),
            number_id: number.into(),
            session_id: session.into(),
            visitor_id: visitor.into(),
            source: source.into(),
            leased_at: at,
            last_activity: last,
            hold_until: last + hold,
            ended_at: None,
        }
    }

    fn req<'a>(session: &'a str, held: &'a [String]) -> Requester<'a> {
        Requester {
            session_id: session,
            visitor_id: "v",
            source: "google",
            held_before: held,
            opens: false,
        }
    }

    const H: Millis = 15 * MINUTE;

    #[test]
    fn keeps_then_regains_then_least_recently_active() {
        let slots = vec![
            Slot {
                number_id: "n1".into(),
                latest: Some(lease("l1", "n1", "s1", "v1", "google", 0, 10 * MINUTE, H)),
            },
            Slot {
                number_id: "n2".into(),
                latest: Some(lease("l2", "n2", "s2", "v2", "google", 0, MINUTE, H)),
            },
            Slot {
                number_id: "n3".into(),
                // The requester's visitor `v` held n3 last.
                latest: Some(lease("l3", "n3", "s3", "v", "google", 0, 2 * MINUTE, H)),
            },
        ];
        let now = 12 * MINUTE;
        assert_eq!(
            allocate(&slots, &req("s1", &[]), ExhaustionPolicy::Fallback, now),
            Allocation::Keep {
                number_id: "n1".into(),
                lease_id: "l1".into()
            }
        );
        // At 17 min n2 (idle since 1) and n3 (idle since 2) are free; n2 idle longest.
        let now = 17 * MINUTE + 1;
        assert_eq!(
            allocate(&slots, &req("new", &[]), ExhaustionPolicy::Fallback, now),
            Allocation::Fresh {
                number_id: "n2".into()
            }
        );
        // A returning visitor regains n3 even though n2 is idle longer.
        let held = vec!["n3".to_owned()];
        assert_eq!(
            allocate(&slots, &req("new", &held), ExhaustionPolicy::Fallback, now),
            Allocation::Regain {
                number_id: "n3".into()
            }
        );
        // A number still held by someone else is not regained.
        let held = vec!["n1".to_owned()];
        assert_eq!(
            allocate(&slots, &req("new", &held), ExhaustionPolicy::Fallback, now),
            Allocation::Fresh {
                number_id: "n2".into()
            }
        );
    }

    #[test]
    fn an_opening_session_is_placed_as_any_session_without_a_lease() {
        // Pools of every shape: numbers never used, free, live, ended; sources mixed.
        let sources = ["google", "yandex", "direct"];
        for seed in 0..200_u64 {
            let r = |k: u64| (seed.wrapping_mul(6_364_136_223_846_793_005) >> (k * 5)) % 7;
            let slots: Vec<Slot> = (0..6)
                .map(|i| {
                    let id = format!("n{i}");
                    let latest = (r(i) != 0).then(|| {
                        let last = (r(i) as Millis) * 4 * MINUTE;
                        let mut l = lease(
                            &format!("l{i}"),
                            &id,
                            &format!("s{i}"),
                            &format!("v{}", r(i + 1) % 3),
                            sources[(r(i + 2) % 3) as usize],
                            0,
                            last,
                            H,
                        );
                        if r(i + 3) == 0 {
                            l.ended_at = Some(last);
                        }
                        l
                    });
                    Slot {
                        number_id: id,
                        latest,
                    }
                })
                .collect();
            let held = vec![format!("n{}", r(9) % 6)];
            for policy in [ExhaustionPolicy::Fallback, ExhaustionPolicy::Reuse] {
                for now in [10 * MINUTE, 30 * MINUTE] {
                    let asks = Requester {
                        visitor_id: "v1",
                        source: sources[(seed % 3) as usize],
                        ..req("new", &held)
                    };
                    let opens = Requester {
                        opens: true,
                        ..asks.clone()
                    };
                    assert_eq!(
                        allocate(&slots, &opens, policy, now),
                        allocate(&slots, &asks, policy, now),
                        "seed {seed}, {policy:?}, now {now}"
                    );
                }
            }
        }
        // The flag is the caller's word: a session said to open is not looked for.
        let slots = vec![Slot {
            number_id: "n1".into(),
            latest: Some(lease("l1", "n1", "s1", "v1", "google", 0, 0, H)),
        }];
        let opens = Requester {
            opens: true,
            ..req("s1", &[])
        };
        assert_eq!(
            allocate(&slots, &opens, ExhaustionPolicy::Fallback, MINUTE),
            Allocation::Exhausted
        );
    }

    #[test]
    fn never_used_numbers_go_first() {
        let slots = vec![
            Slot {
                number_id: "a".into(),
                latest: Some(lease("l", "a", "s", "v", "x", 0, 0, H)),
            },
            Slot {
                number_id: "b".into(),
                latest: None,
            },
        ];
        assert_eq!(
            allocate(&slots, &req("s2", &[]), ExhaustionPolicy::Fallback, HOUR),
            Allocation::Fresh {
                number_id: "b".into()
            }
        );
    }

    #[test]
    fn exhaustion_policies() {
        let slots = vec![
            Slot {
                number_id: "n1".into(),
                latest: Some(lease("l1", "n1", "s1", "v1", "yandex", 0, 5 * MINUTE, H)),
            },
            Slot {
                number_id: "n2".into(),
                latest: Some(lease("l2", "n2", "s2", "v2", "google", 0, 6 * MINUTE, H)),
            },
            Slot {
                number_id: "n3".into(),
                latest: Some(lease("l3", "n3", "s3", "v3", "yandex", 0, 4 * MINUTE, H)),
            },
        ];
        let now = 7 * MINUTE;
        assert_eq!(
            allocate(&slots, &req("s9", &[]), ExhaustionPolicy::Fallback, now),
            Allocation::Exhausted
        );
        // Reuse takes the number idle the longest (n3: 12 min of hold left), unless a holder
        // of the requester's source has at most twice as much left (google: n2, 14 min).
        for (source, want, lease) in [
            ("google", "n2", "l2"),
            ("yandex", "n3", "l3"),
            ("vk", "n3", "l3"),
        ] {
            let r = Requester {
                source,
                ..req("s9", &[])
            };
            assert_eq!(
                allocate(&slots, &r, ExhaustionPolicy::Reuse, now),
                Allocation::Reuse {
                    number_id: want.into(),
                    displaced: lease.into()
                },
                "{source}"
            );
        }
        // Ten minutes on, n3 has 2 minutes left and n2 4: still google's. A millisecond more
        // on n2 and the idlest goes.
        let later = 17 * MINUTE;
        assert_eq!(
            allocate(&slots, &req("s9", &[]), ExhaustionPolicy::Reuse, later),
            Allocation::Reuse {
                number_id: "n2".into(),
                displaced: "l2".into()
            }
        );
        let mut busier = slots.clone();
        busier[1].latest = Some(lease(
            "l2",
            "n2",
            "s2",
            "v2",
            "google",
            0,
            6 * MINUTE + 1,
            H,
        ));
        assert_eq!(
            allocate(&busier, &req("s9", &[]), ExhaustionPolicy::Reuse, later),
            Allocation::Reuse {
                number_id: "n3".into(),
                displaced: "l3".into()
            }
        );
        let r = req("s9", &[]);
        assert!(allocate(&[], &r, ExhaustionPolicy::Reuse, now).is_exhaustion());
    }

    #[test]
    fn reuse_leaves_visitors_on_the_page_alone() {
        // Two direct visitors on the page and a google holder who left ten minutes ago (5 of
        // its 15 minutes left): a third direct visitor takes the google holder's number, not
        // one from under a visitor on the page (who would take one back at its next
        // heartbeat, and whose calls the displacement would break for the whole hold).
        let now = HOUR;
        let slots = vec![
            Slot {
                number_id: "n1".into(),
                latest: Some(lease("l1", "n1", "s1", "v1", "direct", 0, now - 20_000, H)),
            },
            Slot {
                number_id: "n2".into(),
                latest: Some(lease("l2", "n2", "s2", "v2", "direct", 0, now - 10_000, H)),
            },
            Slot {
                number_id: "n3".into(),
                latest: Some(lease(
                    "l3",
                    "n3",
                    "s3",
                    "v3",
                    "google",
                    0,
                    now - 10 * MINUTE,
                    H,
                )),
            },
        ];
        let r = Requester {
            source: "direct",
            ..req("s9", &[])
        };
        assert_eq!(
            allocate(&slots, &r, ExhaustionPolicy::Reuse, now),
            Allocation::Reuse {
                number_id: "n3".into(),
                displaced: "l3".into()
            }
        );
    }

    #[test]
    fn matching_by_number_kind() {
        let f = |kind| CallFacts {
            kind,
            at: 0,
            leases: &[],
            caller_visitors: &[],
        };
        assert_eq!(
            match_call(&f(Some(NumberKind::Static))).method,
            MatchMethod::Static
        );
        assert!((match_call(&f(Some(NumberKind::Static))).confidence - 1.0).abs() < f64::EPSILON);
        assert_eq!(
            match_call(&f(Some(NumberKind::Fallback))).method,
            MatchMethod::Fallback
        );
        assert_eq!(match_call(&f(None)).method, MatchMethod::Unmatched);
        assert_eq!(
            match_call(&f(Some(NumberKind::Pool))).method,
            MatchMethod::Unmatched
        );
    }

    #[test]
    fn matching_dynamic_late_and_caller_history() {
        let mut a = lease("la", "n", "sa", "va", "google", 0, 10 * MINUTE, H);
        a.ended_at = None;
        let b = lease("lb", "n", "sb", "vb", "yandex", 40 * MINUTE, 50 * MINUTE, H);
        let leases = vec![a.clone(), b.clone()];
        let at = |t, callers: &'static [String]| CallFacts {
            kind: Some(NumberKind::Pool),
            at: t,
            leases: &leases,
            caller_visitors: callers,
        };

        // During A's visit: A, sure.
        let m = match_call(&at(9 * MINUTE, &[]));
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::Dynamic, Some("la"))
        );
        assert!(m.confidence >= 0.9);
        // Within A's hold but idle: A, less sure.
        let m = match_call(&at(24 * MINUTE, &[]));
        assert_eq!(m.lease_id.as_deref(), Some("la"));
        assert!(
            m.confidence < 0.95 && m.confidence > 0.7,
            "{}",
            m.confidence
        );
        // After A's hold, before B: A, late.
        let m = match_call(&at(30 * MINUTE, &[]));
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::DynamicLate, Some("la"))
        );
        // During B's lease: B.
        let m = match_call(&at(45 * MINUTE, &[]));
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::Dynamic, Some("lb"))
        );
        // Long after B: B, late and unsure.
        let m = match_call(&at(3 * 24 * HOUR, &[]));
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::DynamicLate, Some("lb"))
        );
        assert!(m.confidence < 0.3);
    }

    #[test]
    fn caller_history_overrides_the_current_holder() {
        let a = lease("la", "n", "sa", "va", "google", 0, 10 * MINUTE, H);
        let b = lease("lb", "n", "sb", "vb", "yandex", 40 * MINUTE, 50 * MINUTE, H);
        let leases = vec![a, b];
        let callers = vec!["va".to_owned()];
        let f = CallFacts {
            kind: Some(NumberKind::Pool),
            at: 45 * MINUTE,
            leases: &leases,
            caller_visitors: &callers,
        };
        let m = match_call(&f);
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::CallerHistory, Some("la"))
        );
        // The caller is the current holder: dynamic and very sure.
        let callers = vec!["vb".to_owned()];
        let f = CallFacts {
            caller_visitors: &callers,
            ..f
        };
        let m = match_call(&f);
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::Dynamic, Some("lb"))
        );
        assert!(m.confidence > 0.98);
        // Deterministic regardless of lease order.
        let mut rev = leases.clone();
        rev.reverse();
        let g = CallFacts {
            leases: &rev,
            ..f.clone()
        };
        assert_eq!(match_call(&f), match_call(&g));
    }

    #[test]
    fn a_lease_from_a_request_that_committed_first_is_taken() {
        // Request A read the clock at 100, request B at 101; B committed its lease first.
        let b = lease("lb", "n1", "sb", "vb", "google", 101, 101, H);
        let slots = vec![Slot {
            number_id: "n1".into(),
            latest: Some(b),
        }];
        assert_eq!(
            allocate(&slots, &req("sa", &[]), ExhaustionPolicy::Fallback, 100),
            Allocation::Exhausted
        );
    }

    #[test]
    fn ended_leases_stop_covering() {
        let mut a = lease("la", "n", "sa", "va", "google", 0, 10 * MINUTE, H);
        a.ended_at = Some(12 * MINUTE);
        assert!(a.covers(12 * MINUTE));
        assert!(!a.covers(13 * MINUTE));
        assert_eq!(a.end(), 12 * MINUTE);
    }

    #[test]
    fn fresh_numbers_stay_with_their_source() {
        // n1 (google) idle since 0, n2 (yandex) idle since 5: a yandex visitor gets n2, a
        // google visitor n1, a vk visitor the one idle longest (n1).
        let slots = vec![
            Slot {
                number_id: "n1".into(),
                latest: Some(lease("l1", "n1", "s1", "v1", "google", 0, 0, H)),
            },
            Slot {
                number_id: "n2".into(),
                latest: Some(lease("l2", "n2", "s2", "v2", "yandex", 0, 5 * MINUTE, H)),
            },
        ];
        let now = HOUR;
        let who = |source| Requester {
            source,
            ..req("new", &[])
        };
        for (source, want) in [("yandex", "n2"), ("google", "n1"), ("vk", "n1")] {
            assert_eq!(
                allocate(&slots, &who(source), ExhaustionPolicy::Fallback, now),
                Allocation::Fresh {
                    number_id: want.into()
                },
                "{source}"
            );
        }
        // A never-used number goes first, whatever the source.
        let mut with_new = slots.clone();
        with_new.push(Slot {
            number_id: "n3".into(),
            latest: None,
        });
        assert_eq!(
            allocate(&with_new, &who("yandex"), ExhaustionPolicy::Fallback, now),
            Allocation::Fresh {
                number_id: "n3".into()
            }
        );
    }

    #[test]
    fn a_number_someone_else_held_since_is_not_regained() {
        // v held n1, then w did; n1 is free again. v does not take it from w's late callers.
        let slots = vec![
            Slot {
                number_id: "n1".into(),
                latest: Some(lease("l9", "n1", "sw", "w", "google", 0, MINUTE, H)),
            },
            Slot {
                number_id: "n2".into(),
                latest: Some(lease("l8", "n2", "sx", "x", "google", 0, 2 * MINUTE, H)),
            },
        ];
        let held = vec!["n2".to_owned(), "n1".to_owned()];
        let r = Requester {
            visitor_id: "w",
            ..req("new", &held)
        };
        // w held n1 last: regained, although n2 is listed first (x held n2 since).
        assert_eq!(
            allocate(&slots, &r, ExhaustionPolicy::Fallback, HOUR),
            Allocation::Regain {
                number_id: "n1".into()
            }
        );
        let r = Requester {
            visitor_id: "v",
            ..req("new", &held)
        };
        assert_eq!(
            allocate(&slots, &r, ExhaustionPolicy::Fallback, HOUR),
            Allocation::Fresh {
                number_id: "n1".into()
            }
        );
    }

    #[test]
    fn confidence_weighs_earlier_holders_who_may_call_late() {
        // A quiet number: one holder, on the page. Near certain.
        let now = 10 * HOUR;
        let on_page = lease(
            "lz",
            "n",
            "sz",
            "vz",
            "google",
            now - MINUTE,
            now - MINUTE,
            H,
        );
        let quiet = vec![on_page.clone()];
        let f = CallFacts {
            kind: Some(NumberKind::Pool),
            at: now,
            leases: &quiet,
            caller_visitors: &[],
        };
        let m = match_call(&f);
        assert_eq!(m.lease_id.as_deref(), Some("lz"));
        assert!(m.confidence >= 0.9, "{}", m.confidence);
        // A busy number: forty visitors held it over the last hours and may call from a
        // saved number. The visitor on the page is still the likeliest, but not 99 in 100.
        let mut busy: Vec<Lease> = (0..40)
            .map(|i| {
                let t = now - 8 * HOUR + i * 10 * MINUTE;
                let id = format!("l{i:02}");
                lease(
                    &id,
                    "n",
                    &format!("s{i}"),
                    &format!("v{i}"),
                    "google",
                    t,
                    t + 2 * MINUTE,
                    H,
                )
            })
            .collect();
        busy.push(on_page);
        let f = CallFacts { leases: &busy, ..f };
        let m = match_call(&f);
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::Dynamic, Some("lz"))
        );
        assert!(m.confidence < 0.9 && m.confidence > 0.5, "{}", m.confidence);
        // Between holders, the one who left minutes ago beats the one who left hours ago.
        let a = lease("la", "n", "sa", "va", "google", 0, HOUR, H);
        let b = lease(
            "lb",
            "n",
            "sb",
            "vb",
            "google",
            2 * HOUR,
            2 * HOUR + MINUTE,
            H,
        );
        let two = vec![a, b];
        let f = CallFacts {
            kind: Some(NumberKind::Pool),
            at: 2 * HOUR + 20 * MINUTE,
            leases: &two,
            caller_visitors: &[],
        };
        let m = match_call(&f);
        assert_eq!(
            (m.method, m.lease_id.as_deref()),
            (MatchMethod::DynamicLate, Some("lb"))
        );
    }

    #[test]
    fn confidence_scale_is_monotonic() {
        let mut last = -1.0;
        for i in 0..=1000 {
            let c = confidence_of(f64::from(i) / 1000.0);
            assert!(c >= last, "{i}");
            assert!((0.0..=0.98).contains(&c));
            last = c;
        }
        assert!((confidence_of(0.99) - 0.9).abs() < 1e-9);
        assert!((confidence_of(0.9) - 0.85).abs() < 1e-9);
        assert!(confidence_of(0.989) < 0.9);
    }
}
