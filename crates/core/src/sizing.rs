//! Pool sizing: how many numbers a pool needs so that a visitor rarely finds it empty.
//!
//! A pool is a loss system: visitors arrive at a rate λ per hour, each keeps a number for
//! its session plus the hold, and a visitor who finds every number taken meets an exhausted
//! pool. Erlang's B formula gives the chance of that for `n` numbers and an offered load
//! `A = λ × holding time`; [`recommend`] finds the smallest `n` that keeps it under a target.
//! [`rules_of_thumb`] gives the formulas vendors publish, for comparison.

use serde::Serialize;

/// Erlang B: the share of arrivals that find all `numbers` taken, for an offered load of
/// `load` erlangs (arrivals per unit time × mean holding time in the same unit).
pub fn erlang_b(numbers: u32, load: f64) -> f64 {
    if load <= 0.0 {
        return 0.0;
    }
    // The stable recurrence B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)).
    let mut b = 1.0;
    for n in 1..=numbers {
        let ab = load * b;
        b = ab / (f64::from(n) + ab);
    }
    b
}

/// The smallest pool whose exhaustion probability is at most `target` (0 < target < 1),
/// capped at `max`.
pub fn numbers_for(load: f64, target: f64, max: u32) -> u32 {
    if load <= 0.0 {
        return 1;
    }
    let target = target.clamp(1e-12, 1.0);
    let mut b = 1.0;
    for n in 1..=max {
        let ab = load * b;
        b = ab / (f64::from(n) + ab);
        if b <= target {
            return n;
        }
    }
    max
}

/// What a site's traffic looks like, for sizing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Traffic {
    /// Visitors (sessions that get a number) in the busiest hour.
    pub peak_hourly_visitors: f64,
    pub daily_visitors: f64,
    /// Mean minutes from a session's first to last activity.
    pub mean_session_minutes: f64,
    /// The pool's hold after the last activity.
    pub hold_minutes: f64,
    /// Daily visitors of each source, for the per-source rule of thumb.
    pub daily_by_source: Vec<f64>,
}

impl Traffic {
    /// Offered load at the peak hour, in erlangs: every visitor keeps a number for the
    /// session and then the hold.
    pub fn peak_load(&self) -> f64 {
        self.peak_hourly_visitors * (self.mean_session_minutes + self.hold_minutes) / 60.0
    }
}

/// A pool size and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub hold_minutes: f64,
    /// Offered load at the peak hour (erlangs).
    pub peak_load: f64,
    /// The target share of visits that may meet an exhausted pool at the peak hour.
    pub target_exhaustion: f64,
    /// Erlang B: the smallest pool that meets the target.
    pub erlang_b: u32,
    /// Erlang B's exhaustion probability at that size.
    pub erlang_b_exhaustion: f64,
    /// calltrail's recommendation: Erlang B for each source's share of the load, summed.
    /// The engine hands a number on within its last holder's source, so a late call from a
    /// saved number still lands on the right source; a source whose numbers are all taken
    /// borrows another's, which is what this keeps rare.
    pub per_source: u32,
    pub rules_of_thumb: RulesOfThumb,
}

/// The formulas call-tracking vendors publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesOfThumb {
    /// Daily visitors ÷ 100.
    pub daily_over_100: u32,
    /// Peak hourly visitors ÷ (60 ÷ session minutes).
    pub peak_hourly_by_session: u32,
    /// One number per 20 daily visitors of each source.
    pub per_source_20: u32,
}

pub fn rules_of_thumb(t: &Traffic) -> RulesOfThumb {
    let up = |x: f64| x.ceil().max(1.0) as u32;
    RulesOfThumb {
        daily_over_100: up(t.daily_visitors / 100.0),
        peak_hourly_by_session: up(
            t.peak_hourly_visitors / (60.0 / t.mean_session_minutes.max(1.0 / 60.0))
        ),
        per_source_20: t
            .daily_by_source
            .iter()
            .map(|d| up(d / 20.0))
            .sum::<u32>()
            .max(1),
    }
}

/// Recommend a pool for `t` so that at most `target_exhaustion` of peak-hour visits find it
/// empty (`erlang_b`), and so that each source rarely borrows another's numbers
/// (`per_source`, at the same target per source).
pub fn recommend(t: &Traffic, target_exhaustion: f64) -> Sizing {
    let load = t.peak_load();
    let n = numbers_for(load, target_exhaustion, 1_000_000);
    let total: f64 = t.daily_by_source.iter().sum();
    let per_source = if total > 0.0 {
        t.daily_by_source
            .iter()
            .map(|d| numbers_for(load * d / total, target_exhaustion, 1_000_000))
            .sum()
    } else {
        n
    };
    Sizing {
        hold_minutes: t.hold_minutes,
        peak_load: load,
        target_exhaustion,
        erlang_b: n,
        erlang_b_exhaustion: erlang_b(n, load),
        per_source: per_source.max(n),
        rules_of_thumb: rules_of_thumb(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn erlang_b_matches_published_tables() {
        // Classic table values: A = 1 E, N = 1 → 0.5; A = 2 E, N = 2 → 0.4;
        // A = 10 E, N = 10 → 0.2146; A = 5 E, N = 11 → 0.0083.
        assert!(close(erlang_b(1, 1.0), 0.5, 1e-12));
        assert!(close(erlang_b(2, 2.0), 0.4, 1e-12));
        assert!(close(erlang_b(10, 10.0), 0.2146, 1e-4));
        assert!(close(erlang_b(11, 5.0), 0.0083, 1e-4));
        assert!(close(erlang_b(0, 3.0), 1.0, 1e-12));
        assert!(close(erlang_b(5, 0.0), 0.0, 1e-12));
    }

    #[test]
    fn erlang_b_falls_as_the_pool_grows() {
        let mut last = 1.0;
        for n in 1..60 {
            let b = erlang_b(n, 20.0);
            assert!(b < last, "n = {n}");
            last = b;
        }
    }

    #[test]
    fn numbers_for_is_the_smallest_meeting_the_target() {
        for &(load, target) in &[(5.0, 0.01), (20.0, 0.001), (0.3, 0.05), (120.0, 0.01)] {
            let n = numbers_for(load, target, 100_000);
            assert!(erlang_b(n, load) <= target);
            assert!(erlang_b(n - 1, load) > target, "load {load}");
        }
        // 5 E at 1 %: the textbook answer is 11.
        assert_eq!(numbers_for(5.0, 0.01, 1000), 11);
        assert_eq!(numbers_for(0.0, 0.01, 1000), 1);
        assert_eq!(numbers_for(1e6, 0.01, 10), 10);
    }

    #[test]
    fn recommendation_and_rules_of_thumb() {
        let t = Traffic {
            peak_hourly_visitors: 60.0,
            daily_visitors: 500.0,
            mean_session_minutes: 5.0,
            hold_minutes: 15.0,
            daily_by_source: vec![300.0, 150.0, 50.0],
        };
        // 60/h × 20 min = 20 E.
        assert!(close(t.peak_load(), 20.0, 1e-9));
        let s = recommend(&t, 0.01);
        assert_eq!(s.erlang_b, numbers_for(20.0, 0.01, 1000));
        assert!(s.erlang_b_exhaustion <= 0.01);
        // Per source: 12 E, 6 E and 2 E, each at 1 %.
        assert_eq!(
            s.per_source,
            numbers_for(12.0, 0.01, 1000)
                + numbers_for(6.0, 0.01, 1000)
                + numbers_for(2.0, 0.01, 1000)
        );
        assert!(s.per_source > s.erlang_b);
        assert_eq!(s.rules_of_thumb.daily_over_100, 5);
        assert_eq!(s.rules_of_thumb.peak_hourly_by_session, 5);
        assert_eq!(s.rules_of_thumb.per_source_20, 15 + 8 + 3);
    }
}
