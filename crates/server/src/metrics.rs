//! Prometheus metrics in the text exposition format, kept in-process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// One route's requests: counts by method and status, and a latency histogram.
#[derive(Default)]
struct Route {
    counts: Vec<(String, u16, u64)>,
    latency: Histogram,
}

/// Request counters and latency histograms by route. The hot path allocates nothing once a
/// route, method and status have been seen.
pub struct Metrics {
    started: Instant,
    /// Plain counters by full series name (`name{labels}`).
    counters: Mutex<BTreeMap<String, u64>>,
    routes: Mutex<BTreeMap<String, Route>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counters: Mutex::default(),
            routes: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let Ok(mut m) = self.routes.lock() else {
            return;
        };
        if !m.contains_key(route) {
            m.insert(route.to_owned(), Route::default());
        }
        let Some(r) = m.get_mut(route) else { return };
        match r
            .counts
            .iter_mut()
            .find(|(mth, st, _)| *st == status && mth == method)
        {
            Some((_, _, n)) => *n += 1,
            None => r.counts.push((method.to_owned(), status, 1)),
        }
        let h = &mut r.latency;
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Add one to a counter series, e.g. `calltrail_visits_total{outcome="fresh"}`.
    pub fn count(&self, series: &str) {
        if let Ok(mut m) = self.counters.lock() {
            match m.get_mut(series) {
                Some(n) => *n += 1,
                None => {
                    m.insert(series.to_owned(), 1);
                }
            }
        }
    }

    /// Count a visit by how its number was chosen, and bots apart.
    pub fn count_visit(&self, shown: &calltrail_store::engine::Shown) {
        use calltrail_core::engine::Allocation;
        let series = match &shown.allocation {
            Some(Allocation::Keep { .. }) => "calltrail_visits_total{outcome=\"keep\"}",
            Some(Allocation::Regain { .. }) => "calltrail_visits_total{outcome=\"regain\"}",
            Some(Allocation::Fresh { .. }) => "calltrail_visits_total{outcome=\"fresh\"}",
            Some(Allocation::Reuse { .. }) => "calltrail_visits_total{outcome=\"reuse\"}",
            Some(Allocation::Exhausted) => "calltrail_visits_total{outcome=\"exhausted\"}",
            None if shown.is_bot => "calltrail_visits_total{outcome=\"bot\"}",
            None if shown.number.is_some() => "calltrail_visits_total{outcome=\"static\"}",
            None => "calltrail_visits_total{outcome=\"no_swap\"}",
        };
        self.count(series);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP calltrail_visits_total Tracking visits by how the number was chosen.\n",
        );
        out.push_str("# TYPE calltrail_visits_total counter\n");
        if let Ok(m) = self.counters.lock() {
            for (series, n) in m.iter() {
                let _ = writeln!(out, "{series} {n}");
            }
        }
        out.push_str("# HELP calltrail_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE calltrail_http_requests_total counter\n");
        let routes = self.routes.lock();
        if let Ok(m) = &routes {
            for (route, r) in m.iter() {
                let mut counts: Vec<&(String, u16, u64)> = r.counts.iter().collect();
                counts.sort_unstable();
                for (method, status, n) in counts {
                    let _ = writeln!(
                        out,
                        "calltrail_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP calltrail_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE calltrail_http_request_duration_seconds histogram\n");
        if let Ok(m) = &routes {
            for (route, h) in m.iter().map(|(route, r)| (route, &r.latency)) {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "calltrail_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "calltrail_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "calltrail_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "calltrail_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP calltrail_uptime_seconds Seconds since the process started.\n");
        out.push_str("# TYPE calltrail_uptime_seconds gauge\n");
        let _ = writeln!(
            out,
            "calltrail_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        out
    }
}

/// Middleware: count every request by its route template (not its raw path).
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Both clones are cheap: a standard method is a tag, a matched path an `Arc<str>`.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let res = next.run(req).await;
    st.metrics.observe(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        res.status().as_u16(),
        start.elapsed(),
    );
    res
}

pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
