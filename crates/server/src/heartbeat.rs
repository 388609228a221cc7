//! Heartbeats answered from memory. A visible tab pings every `ping_s` seconds; while its
//! session holds a pool number this node knows about, the ping is answered here and its
//! time written back with the others once a second (`Store::flush_heartbeats`), instead of
//! one write transaction per ping. Entries are trusted for [`FRESH`] at most, then the next
//! ping goes through the store again (so a number taken by the `reuse` policy, or a session
//! served by another node, is seen within that time); any API write drops them all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::AppState;

/// How long a remembered session is trusted without asking the store.
pub const FRESH: Duration = Duration::from_secs(20);
/// How often remembered heartbeats are written back.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

struct Beat {
    site_id: String,
    /// The answer to send (the numbers to show), serialised once.
    answer: axum::body::Bytes,
    hold_ms: i64,
    fresh_until: Instant,
    /// The latest heartbeat not written back yet.
    pending: Option<i64>,
}

#[derive(Default)]
pub struct Heartbeats {
    map: Mutex<HashMap<String, Beat>>,
}

impl Heartbeats {
    /// Remember what a session shows after the store answered for it.
    pub fn remember(
        &self,
        session_id: &str,
        site_id: &str,
        hold_ms: Option<i64>,
        answer: axum::body::Bytes,
    ) {
        let Ok(mut m) = self.map.lock() else { return };
        match hold_ms {
            Some(hold_ms) => {
                if m.len() > 200_000 {
                    m.retain(|_, b| b.pending.is_some());
                }
                let pending = m.get(session_id).and_then(|b| b.pending);
                m.insert(
                    session_id.to_owned(),
                    Beat {
                        site_id: site_id.to_owned(),
                        answer,
                        hold_ms,
                        fresh_until: Instant::now() + FRESH,
                        pending,
                    },
                );
            }
            // No lease (static number, no swap, fallback): always ask the store.
            None => {
                m.remove(session_id);
            }
        }
    }

    /// Answer a heartbeat from memory, if the session is known and fresh.
    pub fn beat(&self, session_id: &str, site_id: &str, now_ms: i64) -> Option<axum::body::Bytes> {
        let mut m = self.map.lock().ok()?;
        let b = m.get_mut(session_id)?;
        if b.site_id != site_id || b.fresh_until < Instant::now() {
            return None;
        }
        b.pending = Some(b.pending.map_or(now_ms, |p| p.max(now_ms)));
        Some(b.answer.clone())
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
