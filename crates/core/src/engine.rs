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
    /// The pool ran dry and its policy reuses: the least recently active number, taken
    /// from its holder (`displaced`), preferring one whose holder had the same source.
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
    if let Some((slot, lease)) = slots.iter().find_map(|s| {
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
    // 2. A number this session or visitor had before is free: take it back.
    for prev in req.held_before {
        if slots.iter().filter(free).any(|s| &s.number_id == prev) {
            return Allocation::Regain {
                number_id: prev.clone(),
            };
        }
    }
    // 3. The free number idle the longest, so the gap between two holders is widest.
    if let Some(s) = slots.iter().filter(free).min_by(|a, b| {
        a.idle_since()
            .cmp(&b.idle_since())
            .then_with(|| a.number_id.cmp(&b.number_id))
    }) {
        return Allocation::Fresh {
            number_id: s.number_id.clone(),
        };
    }
    // 4. None free: the pool's policy decides.
    match policy {
        ExhaustionPolicy::Fallback => Allocation::Exhausted,
        ExhaustionPolicy::Reuse => slots
            .iter()
            .filter_map(|s| s.live_at(now).map(|l| (s, l)))
            .min_by(|(a, la), (b, lb)| {
                let same_a = la.source != req.source;
                let same_b = lb.source != req.source;
                same_a
                    .cmp(&same_b)
                    .then_with(|| la.last_activity.cmp(&lb.last_activity))
                    .then_with(|| a.number_id.cmp(&b.number_id))
            })
            .map_or(Allocation::Exhausted, |(s, l)| Allocation::Reuse {
                number_id: s.number_id.clone(),
                displaced: l.id.clone(),
            }),
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
        if let Some(k) = known {
            // The phone that calls belongs to a visitor who held this number before: a
            // returning caller, not the visitor who holds it now.
            return Match {
                method: MatchMethod::CallerHistory,
                lease_id: Some(k.id.clone()),
                confidence: 0.9,
            };
        }
        return Match {
            method: MatchMethod::Dynamic,
            lease_id: Some(l.id.clone()),
            confidence: dynamic_confidence(l, f.at),
        };
    }
    if let Some(k) = known {
        return Match {
            method: MatchMethod::CallerHistory,
            lease_id: Some(k.id.clone()),
            confidence: 0.9,
        };
    }
    match past.into_iter().max_by(|a, b| by_time(a, b)) {
        Some(l) => Match {
            method: MatchMethod::DynamicLate,
            lease_id: Some(l.id.clone()),
            confidence: late_confidence(f.at - l.end()),
        },
        None => Match::none(MatchMethod::Unmatched, 0.0),
    }
}

/// Leases in the order they began (ties by id, for determinism).
fn by_time(a: &Lease, b: &Lease) -> std::cmp::Ordering {
    a.leased_at.cmp(&b.leased_at).then_with(|| a.id.cmp(&b.id))
}

/// A call inside the hold: surest while the visitor is on the page.
fn dynamic_confidence(l: &Lease, at: Millis) -> f64 {
    let idle = at - l.last_activity;
    if idle <= 3 * MINUTE {
        return 0.95;
    }
    let hold = (l.hold_until - l.last_activity).max(1);
    let share = (idle as f64 / hold as f64).clamp(0.0, 1.0);
    0.9 - 0.15 * share
}

/// A call after the hold ran out: the later, the less sure.
fn late_confidence(late: Millis) -> f64 {
    if late <= HOUR {
        0.6
    } else if late <= 24 * HOUR {
        0.4
    } else {
        0.2
    }
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
                latest: Some(lease("l3", "n3", "s3", "v3", "google", 0, 2 * MINUTE, H)),
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
        // Reuse prefers the same source (google: n2) over the least active (n3).
        assert_eq!(
            allocate(&slots, &req("s9", &[]), ExhaustionPolicy::Reuse, now),
            Allocation::Reuse {
                number_id: "n2".into(),
                displaced: "l2".into()
            }
        );
        let r = Requester {
            source: "vk",
            ..req("s9", &[])
        };
        assert_eq!(
            allocate(&slots, &r, ExhaustionPolicy::Reuse, now),
            Allocation::Reuse {
                number_id: "n3".into(),
                displaced: "l3".into()
            }
        );
        assert!(allocate(&[], &r, ExhaustionPolicy::Reuse, now).is_exhaustion());
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
}
