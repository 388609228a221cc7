//! Heartbeats answered from memory. A visible tab pings every `ping_s` seconds; while its
//! session holds a pool number this node knows about, the ping is answered here and its
//! time written back with the others once a second (`Store::flush_heartbeats`), instead of
//! one write transaction per ping. Entries are trusted for [`FRESH`] at most, then the next
//! ping goes through the store again (so a number taken by the `reuse` policy, or a session
//! served by another node, is seen within that time); any API write drops them all.
//!
//! Page loads and events of such a session are answered from here too, but their page view
//! is written (and committed) before the answer goes out (`Store::add_pages`, through the
//! visit writer); only the move of the session's activity and its lease's hold waits for
//! the write-back, as a heartbeat's does. A page load no longer rewrites the session row
//! and the lease row, and reads neither.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::AppState;

/// How long a remembered session is trusted without asking the store.
pub const FRESH: Duration = Duration::from_secs(20);
/// How often remembered heartbeats are written back.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

struct Beat {
    site_id: String,
    answers: Answers,
    hold_ms: i64,
    fresh_until: Instant,
    /// The latest heartbeat not written back yet.
    pending: Option<i64>,
}

/// What a remembered session is answered, serialised once.
#[derive(Clone)]
pub struct Answers {
    /// To a heartbeat or an event: the numbers to show.
    pub ping: axum::body::Bytes,
    /// To a page load: the numbers, the visitor, the session and its track code.
    pub visit: axum::body::Bytes,
}

#[derive(Default)]
pub struct Heartbeats {
    /// By session id (ids the store made, hashed with a seeded fast hash).
    map: Mutex<foldhash::HashMap<String, Beat>>,
}

impl Heartbeats {
    /// Remember what a session shows after the store answered for it.
    pub fn remember(
        &self,
        session_id: &str,
        site_id: &str,
        hold_ms: Option<i64>,
        answers: Answers,
    ) {
        let Ok(mut m) = self.map.lock() else { return };
        match hold_ms {
            Some(hold_ms) => {
                let fresh_until = Instant::now() + FRESH;
                if let Some(b) = m.get_mut(session_id) {
                    // Known already: its pending heartbeat stays.
                    if b.site_id != site_id {
                        site_id.clone_into(&mut b.site_id);
                    }
                    b.answers = answers;
                    b.hold_ms = hold_ms;
                    b.fresh_until = fresh_until;
                    return;
                }
                if m.len() > 200_000 {
                    m.retain(|_, b| b.pending.is_some());
                }
                m.insert(
                    session_id.to_owned(),
                    Beat {
                        site_id: site_id.to_owned(),
                        answers,
                        hold_ms,
                        fresh_until,
                        pending: None,
                    },
                );
            }
            // No lease (static number, no swap, fallback): always ask the store.
            None => {
                m.remove(session_id);
            }
        }
    }

    /// A heartbeat, page load or event of a session this node knows and trusts still: its
    /// activity moves on at the next write-back, and here is what to answer. `None`: ask
    /// the store.
    pub fn beat(&self, session_id: &str, site_id: &str, now_ms: i64) -> Option<Answers> {
        let mut m = self.map.lock().ok()?;
        let b = m.get_mut(session_id)?;
        if b.site_id != site_id || b.fresh_until < Instant::now() {
            return None;
        }
        b.pending = Some(b.pending.map_or(now_ms, |p| p.max(now_ms)));
        Some(b.answers.clone())
    }

    /// Forget a session (the store no longer has it).
    pub fn forget(&self, session_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(session_id);
        }
    }

    /// Forget everything (after a setup change through the API).
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            for b in m.values_mut() {
                b.fresh_until = Instant::now();
            }
        }
    }

    fn take_pending(&self) -> Vec<(String, i64, i64)> {
        let Ok(mut m) = self.map.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let out = m
            .iter_mut()
            .filter_map(|(sid, b)| b.pending.take().map(|at| (sid.clone(), at, b.hold_ms)))
            .collect();
        // Drop long-stale entries with nothing to write.
        m.retain(|_, b| b.pending.is_some() || b.fresh_until + FRESH > now);
        out
    }
}

/// Write remembered heartbeats back, once a second, until the process ends.
pub fn spawn_flusher(st: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            flush(&st).await;
        }
    })
}

/// Write what is pending now.
pub async fn flush(st: &AppState) {
    let beats = st.beats.take_pending();
    if beats.is_empty() {
        return;
    }
    let n = beats.len();
    if let Err(e) = st.store.flush_heartbeats(&beats).await {
        tracing::warn!(error = %e, heartbeats = n, "writing heartbeats back failed");
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::{Answers, Heartbeats};

    const HOLD: i64 = 900_000;

    fn answers(tag: &'static str) -> Answers {
        Answers {
            ping: Bytes::from_static(tag.as_bytes()),
            visit: Bytes::from_static(tag.as_bytes()),
        }
    }

    fn ping(h: &Heartbeats, session: &str, site: &str, at: i64) -> Option<Bytes> {
        h.beat(session, site, at).map(|a| a.ping)
    }

    #[test]
    fn a_session_remembered_again_keeps_its_pending_heartbeat_and_answers_anew() {
        let h = Heartbeats::default();
        h.remember("s1", "site-a", Some(HOLD), answers("first"));
        assert_eq!(
            ping(&h, "s1", "site-a", 1_000).as_deref(),
            Some(&b"first"[..])
        );
        // The store answered for it again (a page load) before the write-back.
        h.remember("s1", "site-a", Some(HOLD / 2), answers("second"));
        assert_eq!(h.take_pending(), vec![("s1".to_owned(), 1_000, HOLD / 2)]);
        assert!(h.take_pending().is_empty(), "written back once");
        assert_eq!(
            ping(&h, "s1", "site-a", 2_000).as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(h.take_pending(), vec![("s1".to_owned(), 2_000, HOLD / 2)]);
    }

    #[test]
    fn no_answer_for_another_site_an_unknown_session_or_one_shown_no_lease() {
        let h = Heartbeats::default();
        h.remember("s1", "site-a", Some(HOLD), answers("a"));
        assert_eq!(ping(&h, "s1", "site-b", 1_000), None);
        assert_eq!(ping(&h, "s2", "site-a", 1_000), None);
        assert!(
            h.take_pending().is_empty(),
            "a refused heartbeat is not written"
        );
        // Remembered again under another site: only that site's heartbeats are answered.
        h.remember("s1", "site-b", Some(HOLD), answers("b"));
        assert_eq!(ping(&h, "s1", "site-a", 1_000), None);
        assert_eq!(ping(&h, "s1", "site-b", 1_000).as_deref(), Some(&b"b"[..]));
        // Shown no lease any more (a static number, the fallback): always the store.
        h.remember("s1", "site-b", None, answers("none"));
        assert_eq!(ping(&h, "s1", "site-b", 2_000), None);
    }
}
