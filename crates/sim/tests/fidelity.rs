//! The in-memory engine is the store's flow: on a seeded scenario, the in-memory run and
//! the run on the real `Store` (SQLite) give every call the same attribution.

use std::path::Path;

use calltrail_sim::scenario::{self, Strategy};
use calltrail_sim::{replay, traffic, Progress, StoreKind};

fn scenario(name: &str) -> scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(name);
    scenario::load(&path).expect("scenario loads")
}

async fn compare(pool_name: &str) {
    let sc = scenario("tiny.toml");
    let t = traffic::generate(&sc);
    assert!(
        t.calls.len() > 30,
        "enough calls to compare: {}",
        t.calls.len()
    );
    let pool = sc
        .pools
        .iter()
        .find(|p| p.name == pool_name)
        .expect("pool in tiny.toml");
    assert_eq!(pool.strategy, Strategy::Calltrail);
    let mem = replay(&sc, &t, pool, StoreKind::Memory, &mut Progress::new(0))
        .await
        .expect("memory run");
    let sql = replay(&sc, &t, pool, StoreKind::Sqlite, &mut Progress::new(0))
        .await
        .expect("sqlite run");
    assert_eq!(mem.outcomes.len(), sql.outcomes.len());
    for (m, s) in mem.outcomes.iter().zip(&sql.outcomes) {
        assert_eq!(m.call, s.call);
        assert_eq!(
            m.dialed, s.dialed,
            "pool {pool_name}: call {} dialled",
            m.call
        );
        assert_eq!(
            (m.attribution.session, m.attribution.method),
            (s.attribution.session, s.attribution.method),
            "pool {pool_name}: call {}",
            m.call
        );
        assert!(
            (m.attribution.confidence - s.attribution.confidence).abs() < 1e-9,
            "pool {pool_name}: call {}: {} vs {}",
            m.call,
            m.attribution.confidence,
            s.attribution.confidence
        );
    }
    // The whole report agrees too, except what only the memory run samples.
    let (mut a, mut b) = (mem.report, sql.report);
    a.peak_numbers_in_use = 0.0;
    b.peak_numbers_in_use = 0.0;
    assert_eq!(a, b, "pool {pool_name}");
    assert!(
        a.exhausted_visit_share > 0.0,
        "the small pool runs dry in this scenario"
    );
}

#[tokio::test]
async fn memory_and_sqlite_attribute_every_call_alike() {
    compare("calltrail").await;
}

/// The store narrows what a fallback pool's allocation reads (crates/store/src/engine.rs,
/// `allocate_in`): the session's numbers, the free number idle the longest, and the free
/// number of the requester's source idle the longest. The engine must decide the same.
#[tokio::test]
async fn memory_and_sqlite_agree_on_a_fallback_pool() {
    compare("calltrail-fallback").await;
}

#[tokio::test]
async fn calltrail_beats_random_on_the_small_site() {
    let sc = scenario("small.toml");
    let t = traffic::generate(&sc);
    let run = |s: Strategy| {
        let pool = sc
            .pools
            .iter()
            .find(|p| p.strategy == s)
            .expect("pool")
            .clone();
        let (sc, t) = (&sc, &t);
        async move {
            replay(sc, t, &pool, StoreKind::Memory, &mut Progress::new(0))
                .await
                .expect("run")
                .report
        }
    };
    let random = run(Strategy::Random).await;
    let calltrail = run(Strategy::Calltrail).await;
    assert_eq!(random.calls, calltrail.calls);
    assert!(random.calls > 300, "{}", random.calls);
    assert!(
        calltrail.in_window_session_accuracy > random.in_window_session_accuracy,
        "calltrail {} vs random {}",
        calltrail.in_window_session_accuracy,
        random.in_window_session_accuracy
    );
    assert!(calltrail.source_accuracy > random.source_accuracy + 0.05);
    assert!(calltrail.high_confidence_precision > random.high_confidence_precision);
}

#[tokio::test]
async fn runs_are_reproducible() {
    let sc = scenario("tiny.toml");
    let t = traffic::generate(&sc);
    for pool in &sc.pools {
        let a = replay(&sc, &t, pool, StoreKind::Memory, &mut Progress::new(0))
            .await
            .expect("a");
        let b = replay(&sc, &t, pool, StoreKind::Memory, &mut Progress::new(0))
            .await
            .expect("b");
        assert_eq!(a.outcomes, b.outcomes);
    }
}
