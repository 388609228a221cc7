//! Property tests of the engine's invariants (DESIGN.md §4) over random sequences of
//! visits, heartbeats, idle time and calls, on each backend:
//! - never two live leases on one number;
//! - matching is deterministic given the lease history;
//! - a call is stored exactly once per provider call id.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use calltrail_core::engine::{self, CallFacts, MINUTE};
use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec};
use calltrail_core::{NumberKind, Region};
use calltrail_store::engine::Shown;
use calltrail_store::testing::{self, TestDb};
use calltrail_store::tracking::{CallInput, VisitRequest};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A visit by visitor `v` (0..6) from source `s` (0..3); `new_session` drops the session.
    Visit {
        v: usize,
        s: usize,
        new_session: bool,
    },
    /// A heartbeat of visitor `v`'s session.
    Ping { v: usize },
    /// Time passes.
    Idle { minutes: i64 },
    /// Caller `c` (0..4) calls pool number `n` (0..3); `id` may repeat an earlier call id.
    Call { n: usize, c: usize, id: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..3usize, any::<bool>()).prop_map(|(v, s, new_session)| Op::Visit { v, s, new_session }),
        3 => (0..6usize).prop_map(|v| Op::Ping { v }),
        3 => (1..40i64).prop_map(|minutes| Op::Idle { minutes }),
        2 => (0..3usize, 0..4usize, 0..12u8).prop_map(|(n, c, id)| Op::Call { n, c, id }),
    ]
}

const SOURCES: [&str; 3] = ["google", "yandex", "vk"];
const T0: i64 = 1_800_000_000_000;

async fn run(db: &TestDb, ops: &[Op], policy: &str) {
    let store = &db.store;
    let ru = Region::parse("RU").unwrap();
    let acc = store.create_account("P").await.unwrap();
    let domains = vec!["shop.example".to_owned()];
    let site = store
        .create_site(
            &acc.id,
            &SiteSpec::parse(&SiteInput {
                name: "S",
                domains: &domains,
                timezone: "UTC",
                default_region: "RU",
                site_numbers: &[],
                forward_to: None,
            })
            .unwrap(),
        )
        .await
        .unwrap();
    let pool = store
        .create_pool(
            &acc.id,
            &site.id,
            &PoolSpec::parse("P", Some(10), Some(policy)).unwrap(),
        )
        .await
        .unwrap();
    let mut numbers = Vec::new();
    for i in 1..=3 {
        let n = store
            .create_number(
                &acc.id,
                &site.id,
                &NumberSpec::parse(
                    &format!("+749530000{i:02}"),
                    ru,
                    "pool",
                    Some(&pool.id),
                    None,
                )
                .unwrap(),
            )
            .await
            .unwrap();
        numbers.push(n);
    }
    let ctx = store.site_context(&site.public_key).await.unwrap().unwrap();
    let mut now = T0;
    let mut sessions: Vec<Option<Shown>> = vec![None; 6];
    let mut call_ids = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            Op::Visit { v, s, new_session } => {
                let prev = sessions[*v].as_ref();
                let req = VisitRequest {
                    url: format!(
                        "https://shop.example/?utm_source={}&utm_medium=cpc",
                        SOURCES[*s]
                    ),
                    user_agent: Some("Mozilla/5.0 (Windows NT 10.0) Chrome/120.0".into()),
                    session_id: prev.filter(|_| !new_session).map(|p| p.session_id.clone()),
                    visitor_id: prev.map(|p| p.visitor_id.clone()),
                    ..VisitRequest::default()
                };
                sessions[*v] = Some(store.visit(&ctx, &req, now).await.unwrap());
            }
            Op::Ping { v } => {
                if let Some(s) = &sessions[*v] {
                    store.heartbeat(&ctx, &s.session_id, now).await.unwrap();
                }
            }
            Op::Idle { minutes } => now += minutes * MINUTE,
            Op::Call { n, c, id } => {
                let input = CallInput {
                    account_id: acc.id.clone(),
                    site_id: site.id.clone(),
                    provider: "prop".into(),
                    provider_call_id: format!("call-{id}"),
                    to: numbers[*n].number.clone(),
                    from: format!("+7916000000{c}"),
                    at: now,
                    answered: true,
                    talk_seconds: 10,
                };
                let (first, _) = store.ingest_call(&input).await.unwrap();
                let (second, created) = store.ingest_call(&input).await.unwrap();
                assert!(!created, "a repeated provider call id made a second call");
                assert_eq!(first.id, second.id);
                call_ids.insert(id);
            }
        }
        now += 1000;
    }

    // Never two live leases on one number: each lease ends before the next begins.
    for n in &numbers {
        let leases = store.number_leases(&n.id).await.unwrap();
        for w in leases.windows(2) {
            assert!(
                w[1].leased_at >= w[0].end(),
                "overlapping leases on {}: {:?} and {:?}",
                n.number,
                w[0],
                w[1]
            );
        }
        // Matching is deterministic given the lease history: same answer twice, and the
        // same whatever order the store returns leases in.
        for t in [T0, now / 2 + T0 / 2, now] {
            let ls = store.leases_before(&n.id, t).await.unwrap();
            let facts = CallFacts {
                kind: Some(NumberKind::Pool),
                at: t,
                leases: &ls,
                caller_visitors: &[],
            };
            let m1 = engine::match_call(&facts);
            let mut rev = ls.clone();
            rev.reverse();
            let m2 = engine::match_call(&CallFacts {
                leases: &rev,
                ..facts.clone()
            });
            assert_eq!(m1, m2);
        }
    }
    // Exactly once per provider call id.
    let stored = store
        .list_calls(
            &acc.id,
            &calltrail_store::calls::CallFilter {
                site_id: Some(site.id.clone()),
                ..Default::default()
            },
            None,
            500,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(stored.len(), call_ids.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants_hold(ops in prop::collection::vec(op(), 1..60), reuse in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for db in testing::databases().await {
                run(&db, &ops, if reuse { "reuse" } else { "fallback" }).await;
                db.cleanup().await;
            }
        });
    }
}
