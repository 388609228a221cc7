//! A pool kept in memory between allocations, with indexes, so that a decision costs about
//! the same whatever the pool's size.
//!
//! [`allocate`](super::allocate) scans the whole pool several times per visitor: for a pool
//! of hundreds of numbers that scan (and comparing number ids to break ties) was most of the
//! cost of giving a new visitor a number, and it grew with the pool. [`Picture::allocate`]
//! makes the same decision through indexes: the session's own lease by session, a number
//! held before by id, a never-used number as the first of an ordered set, and a free one
//! as the first of the leases that ended, ordered by when they were last active (overall
//! and per source). A lease joins those once, when the clock first passes its end.
//! Only the `reuse` policy on a pool with no free number still looks at every live lease.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt as _};

use super::{reuse, Allocation, ExhaustionPolicy, Lease, Millis, Requester, Slot};

/// A pool's numbers, each with its latest lease, in number id order (which is how ties are
/// broken), and the indexes [`Picture::allocate`] reads. Changes go through
/// [`Picture::update`], which keeps the indexes in step.
///
/// Lease times are real times (after `Millis::MIN`), so never-used numbers are idle the
/// longest, as `allocate` orders them.
#[derive(Debug, Clone, Default)]
pub struct Picture {
    slots: Vec<Slot>,
    by_number: HashMap<String, usize>,
    /// The positions whose latest lease is the session's.
    by_session: HashMap<String, BTreeSet<usize>>,
    /// The position of each latest lease.
    by_lease: HashMap<String, usize>,
    never_used: BTreeSet<usize>,
    /// Positions with a lease, by when that lease ends ([`Lease::end`]).
    by_end: BTreeSet<(Millis, usize)>,
    /// Every lease in `by_end` before `(settled_before, 0)`, that is whose end is before
    /// that time, has been settled: it is in `settled` and in its source's set, by
    /// `(last_activity, position)`, the order in which `allocate` takes free numbers. The
    /// mark only moves on; an ask with an earlier clock skips the settled leases that had
    /// not ended by then.
    settled_before: Millis,
    settled: BTreeSet<(Millis, usize)>,
    settled_by_source: HashMap<String, BTreeSet<(Millis, usize)>>,
}

impl Picture {
    /// The pool from its numbers (in any order; a number given twice is kept once).
    pub fn new(mut slots: Vec<Slot>) -> Self {
        slots.sort_by(|a, b| a.number_id.cmp(&b.number_id));
        slots.dedup_by(|a, b| a.number_id == b.number_id);
        let mut p = Self {
            // The pool's size bounds every map by number, lease or session: sized once,
            // they never rehash while the pool fills.
            by_number: HashMap::with_capacity(slots.len()),
            by_lease: HashMap::with_capacity(slots.len()),
            by_session: HashMap::with_capacity(slots.len()),
            slots,
            settled_before: Millis::MIN,
            ..Self::default()
        };
        for i in 0..p.slots.len() {
            p.by_number.insert(p.slots[i].number_id.clone(), i);
            p.index(i);
        }
        p
    }

    /// The numbers, in number id order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Where a number is.
    pub fn position(&self, number_id: &str) -> Option<usize> {
        self.by_number.get(number_id).copied()
    }

    /// Where the number whose latest lease is `lease_id` is.
    pub fn lease_position(&self, lease_id: &str) -> Option<usize> {
        self.by_lease.get(lease_id).copied()
    }

    /// Where the numbers whose latest lease is the session's are.
    pub fn session_positions(&self, session_id: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_session
            .get(session_id)
            .into_iter()
            .flatten()
            .copied()
    }

    /// Change the latest lease of the number at `at` (a position from this picture).
    pub fn update<R>(&mut self, at: usize, f: impl FnOnce(&mut Option<Lease>) -> R) -> R {
        self.unindex(at);
        let r = f(&mut self.slots[at].latest);
        self.index(at);
        r
    }

    fn index(&mut self, i: usize) {
        let mut ended = false;
        match &self.slots[i].latest {
            None => {
                self.never_used.insert(i);
            }
            Some(l) => {
                debug_assert!(l.last_activity > Millis::MIN);
                self.by_end.insert((l.end(), i));
                ended = l.end() < self.settled_before;
                self.by_lease.insert(l.id.clone(), i);
                self.by_session
                    .entry(l.session_id.clone())
                    .or_default()
                    .insert(i);
            }
        }
        if ended {
            self.add_settled(i);
        }
    }

    /// Put the lease at `i` in the settled sets.
    fn add_settled(&mut self, i: usize) {
        if let Some(l) = &self.slots[i].latest {
            self.settled.insert((l.last_activity, i));
            self.settled_by_source
                .entry(l.source.clone())
                .or_default()
                .insert((l.last_activity, i));
        }
    }

    fn unindex(&mut self, i: usize) {
        match &self.slots[i].latest {
            None => {
                self.never_used.remove(&i);
            }
            Some(l) => {
                self.by_end.remove(&(l.end(), i));
                if l.end() < self.settled_before {
                    self.settled.remove(&(l.last_activity, i));
                    remove_keyed(
                        &mut self.settled_by_source,
                        &l.source,
                        &(l.last_activity, i),
                    );
                }
                if self.by_lease.get(&l.id) == Some(&i) {
                    self.by_lease.remove(&l.id);
                }
                remove_keyed(&mut self.by_session, &l.session_id, &i);
            }
        }
    }

    /// Settle the leases that ended before `now` (see `settled_before`).
    fn settle(&mut self, now: Millis) {
        if now <= self.settled_before {
            return;
        }
        let ended: Vec<usize> = self
            .by_end
            .range((self.settled_before, 0)..(now, 0))
            .map(|&(_, i)| i)
            .collect();
        self.settled_before = now;
        for i in ended {
            self.add_settled(i);
        }
    }

    /// The first of `set` (settled leases in `allocate`'s order) that is free at `now`.
    fn first_free(&self, set: Option<&BTreeSet<(Millis, usize)>>, now: Millis) -> Option<usize> {
        set?.iter()
            .map(|&(_, i)| i)
            .find(|&i| self.slots[i].latest.as_ref().is_some_and(|l| l.end() < now))
    }

    /// What [`allocate`](super::allocate) decides over [`Picture::slots`], with the position
    /// of the number it names (none when the pool is exhausted), so that the caller need not
    /// look the number up again. It takes `&mut` only to settle the leases that ended since
    /// the last ask; the slots stay as they are.
    pub fn allocate(
        &mut self,
        req: &Requester<'_>,
        policy: ExhaustionPolicy,
        now: Millis,
    ) -> (Allocation, Option<usize>) {
        self.settle(now);
        let number = |i: usize| self.slots[i].number_id.clone();
        // 1. The session's live lease (the first in number order, as a scan finds it).
        if !req.opens {
            for i in self.session_positions(req.session_id) {
                if let Some(l) = self.slots[i].live_at(now) {
                    let keep = Allocation::Keep {
                        number_id: number(i),
                        lease_id: l.id.clone(),
                    };
                    return (keep, Some(i));
                }
            }
        }
        // 2. A number held before, free, and nobody else's since.
        for prev in req.held_before {
            if let Some(i) = self.position(prev) {
                let s = &self.slots[i];
                if s.live_at(now).is_none()
                    && s.latest
                        .as_ref()
                        .is_none_or(|l| l.visitor_id == req.visitor_id)
                {
                    let number_id = number(i);
                    return (Allocation::Regain { number_id }, Some(i));
                }
            }
        }
        // 3. A never-used number (idle the longest of all), else among the leases that
        //    ended: the one idle the longest of the requester's source, else of any.
        if let Some(&i) = self.never_used.first() {
            return (
                Allocation::Fresh {
                    number_id: number(i),
                },
                Some(i),
            );
        }
        if let Some(i) = self.first_free(Some(&self.settled), now) {
            let pick = self
                .first_free(self.settled_by_source.get(req.source), now)
                .unwrap_or(i);
            let number_id = number(pick);
            return (Allocation::Fresh { number_id }, Some(pick));
        }
        // 4. None free.
        match policy {
            ExhaustionPolicy::Fallback => (Allocation::Exhausted, None),
            ExhaustionPolicy::Reuse => {
                let alloc = reuse(
                    self.by_end.range((now, 0)..).filter_map(|&(_, i)| {
                        let s = &self.slots[i];
                        s.latest.as_ref().map(|l| (s, l))
                    }),
                    req,
                    now,
                );
                let at = match &alloc {
                    Allocation::Reuse { number_id, .. } => self.position(number_id),
                    _ => None,
                };
                (alloc, at)
            }
        }
    }
}

/// Take `value` out of the set under `key`, and the key when its set is left empty.
fn remove_keyed<T: Ord>(map: &mut HashMap<String, BTreeSet<T>>, key: &str, value: &T) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{allocate, MINUTE};
    use proptest::prelude::*;

    const SOURCES: [&str; 3] = ["google", "yandex", "direct"];

    #[derive(Debug, Clone)]
    enum Step {
        /// A visit asks for a number; what it gets is written as the store writes it.
        Ask {
            session: u8,
            visitor: u8,
            source: usize,
            held: Vec<u8>,
            opens: bool,
            reuse: bool,
            /// Clock move before the step, minutes (a request may read the clock earlier).
            dt: i64,
        },
        /// A heartbeat moves a session's live lease on.
        Beat { session: u8, dt: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..8_u8, 0..4_u8, 0..3_usize, prop::collection::vec(0..10_u8, 0..3),
                  any::<bool>(), any::<bool>(), -2..12_i64)
                .prop_map(|(session, visitor, source, held, opens, reuse, dt)| Step::Ask {
                    session, visitor, source, held, opens, reuse, dt,
                }),
            1 => (0..8_u8, -1..6_i64).prop_map(|(session, dt)| Step::Beat { session, dt }),
        ]
    }

    /// A pool of up to ten numbers, some with a lease (live, run out or ended early).
    fn pool() -> impl Strategy<Value = Vec<Slot>> {
        prop::collection::vec(
            prop::option::of((0..8_u8, 0..4_u8, 0..3_usize, 0..40_i64, any::<bool>())),
            0..10,
        )
        .prop_map(|leases| {
            leases
                .into_iter()
                .enumerate()
                // Out of order on purpose: the picture sorts them.
                .rev()
                .map(|(n, l)| Slot {
                    number_id: format!("n{n}"),
                    latest: l.map(|(s, v, src, last, ended)| Lease {
                        id: format!("l-init-{n}"),
                        number_id: format!("n{n}"),
                        session_id: format!("s{s}"),
                        visitor_id: format!("v{v}"),
                        source: SOURCES[src].to_owned(),
                        leased_at: 0,
                        last_activity: last * MINUTE,
                        hold_until: (last + 15) * MINUTE,
                        ended_at: ended.then_some((last + 3) * MINUTE),
                    }),
                })
                .collect()
        })
    }

    proptest! {
        /// Through any run of visits and heartbeats, the picture decides as `allocate`
        /// over its numbers: its indexes never fall out of step with the leases.
        #[test]
        fn a_picture_decides_as_allocate_over_its_slots(
            slots in pool(),
            steps in prop::collection::vec(step(), 1..40),
        ) {
            let mut p = Picture::new(slots);
            prop_assert!(p.slots().windows(2).all(|w| w[0].number_id < w[1].number_id));
            let hold = 15 * MINUTE;
            let mut now = 20 * MINUTE;
            for (k, st) in steps.into_iter().enumerate() {
                match st {
                    Step::Ask { session, visitor, source, held, opens, reuse, dt } => {
                        now += dt * MINUTE;
                        let held: Vec<String> = held.iter().map(|n| format!("n{n}")).collect();
                        let (session, visitor) = (format!("s{session}"), format!("v{visitor}"));
                        let req = Requester {
                            session_id: &session,
                            visitor_id: &visitor,
                            source: SOURCES[source],
                            held_before: &held,
                            opens,
                        };
                        let policy = if reuse { ExhaustionPolicy::Reuse } else { ExhaustionPolicy::Fallback };
                        let (got, got_at) = p.allocate(&req, policy, now);
                        prop_assert_eq!(&got, &allocate(p.slots(), &req, policy, now), "step {}", k);
                        // The position it gives is the named number's.
                        prop_assert_eq!(got_at, got.number_id().and_then(|n| p.position(n)), "step {}", k);
                        match &got {
                            Allocation::Keep { number_id, .. } => {
                                let at = p.position(number_id).expect("kept number");
                                p.update(at, |l| l.as_mut().map(|l| l.active_at(now, hold)));
                            }
                            Allocation::Regain { number_id }
                            | Allocation::Fresh { number_id }
                            | Allocation::Reuse { number_id, .. } => {
                                let at = p.position(number_id).expect("given number");
                                let lease = Lease {
                                    id: format!("l{k}"),
                                    number_id: number_id.clone(),
                                    session_id: session.clone(),
                                    visitor_id: visitor.clone(),
                                    source: SOURCES[source].to_owned(),
                                    leased_at: now,
                                    last_activity: now,
                                    hold_until: now + hold,
                                    ended_at: None,
                                };
                                let prev = p.update(at, |l| l.replace(lease));
                                // The displaced or run-out lease is not the latest any more.
                                prop_assert!(prev.is_none_or(|l| p.lease_position(&l.id).is_none()));
                            }
                            Allocation::Exhausted => {}
                        }
                    }
                    Step::Beat { session, dt } => {
                        let at_time = now + dt * MINUTE;
                        let session = format!("s{session}");
                        let at: Vec<usize> = p.session_positions(&session).collect();
                        for i in at {
                            p.update(i, |l| {
                                if let Some(l) = l.as_mut().filter(|l| l.ended_at.is_none() && l.hold_until >= at_time) {
                                    l.active_at(at_time, hold);
                                }
                            });
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_number_given_twice_is_kept_once_and_found_by_id() {
        let slot = |n: &str| Slot {
            number_id: n.into(),
            latest: None,
        };
        let p = Picture::new(vec![slot("b"), slot("a"), slot("b")]);
        assert_eq!(p.slots().len(), 2);
        assert_eq!(p.position("a"), Some(0));
        assert_eq!(p.position("b"), Some(1));
        assert_eq!(p.position("c"), None);
    }
}
