//! The store conformance suite: every case runs on SQLite, and on PostgreSQL when
//! `CALLTRAIL_TEST_DATABASE_URL` is set (CI sets it).

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::items_after_statements,
    clippy::many_single_char_names
)]

use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec, SourceSpec};
use calltrail_core::Region;
use calltrail_store::testing::{self, TestDb};
use calltrail_store::{Backend, PageView, Store, StoreError};

/// Run `case` once per backend, each on a fresh database.
macro_rules! conformance {
    ($($name:ident($store:ident, $db:ident) $body:block)+) => {$(
        #[tokio::test]
        async fn $name() {
            let dbs = testing::databases().await;
            if std::env::var("CI").is_ok() && std::env::var(testing::ENV).is_err() {
                panic!("CI must run the conformance suite on PostgreSQL too: set {}", testing::ENV);
            }
            for db in dbs {
                let backend = db.backend();
                #[allow(unused_variables)]
                async fn case($store: &Store, $db: &TestDb) $body
                eprintln!("{} on {:?}", stringify!($name), backend);
                case(&db.store, &db).await;
                db.cleanup().await;
            }
        }
    )+};
}

fn site_spec(name: &str, numbers: &[&str]) -> SiteSpec {
    let domains = vec!["shop.example".to_owned()];
    let nums: Vec<String> = numbers.iter().map(|s| (*s).to_owned()).collect();
    SiteSpec::parse(&SiteInput {
        name,
        domains: &domains,
        timezone: "Europe/Moscow",
        default_region: "RU",
        site_numbers: &nums,
        forward_to: Some("+74951112233"),
    })
    .unwrap()
}

fn ru() -> Region {
    Region::parse("RU").unwrap()
}

conformance! {
    migrations_are_idempotent(store, db) {
        assert!(store.migrate().await.unwrap().is_empty(), "second migrate applied something");
        store.ping().await.unwrap();
    }

    tokens_authenticate_their_account_only(store, db) {
        let a = store.create_account("A").await.unwrap();
        let b = store.create_account("B").await.unwrap();
        let (tok_a, plain_a) = store.create_token(&a.id, "ci").await.unwrap();
        let (_, plain_b) = store.create_token(&b.id, "ci").await.unwrap();
        assert_ne!(plain_a, plain_b);
        assert!(plain_a.starts_with("ctt_") && plain_a.len() > 40);
        assert_eq!(store.authenticate_token(&plain_a).await.unwrap().as_deref(), Some(a.id.as_str()));
        assert_eq!(store.authenticate_token(&plain_b).await.unwrap().as_deref(), Some(b.id.as_str()));
        assert_eq!(store.authenticate_token("ctt_nope").await.unwrap(), None);
        assert!(store.revoke_token(&b.id, &tok_a.id).await.is_err(), "B revoked A's token");
        store.revoke_token(&a.id, &tok_a.id).await.unwrap();
        assert_eq!(store.authenticate_token(&plain_a).await.unwrap(), None);
        assert!(matches!(store.create_token("missing", "x").await, Err(StoreError::NotFound(_))));
        assert!(store.create_account("  ").await.is_err());
    }

    sites_round_trip_and_stay_in_their_account(store, db) {
        let a = store.create_account("A").await.unwrap();
        let b = store.create_account("B").await.unwrap();
        let site = store.create_site(&a.id, &site_spec("Shop", &["8 495 123-45-67"])).await.unwrap();
        assert!(site.public_key.starts_with("ctk_"));
        let got = store.get_site(&a.id, &site.id).await.unwrap();
        assert_eq!(got.site_numbers, vec!["+74951234567".to_owned()]);
        assert_eq!(got.domains, vec!["shop.example".to_owned()]);
        assert_eq!(got.forward_to.as_deref(), Some("+74951112233"));
        assert_eq!(got.created_at, site.created_at);
        let by_key = store.site_by_public_key(&site.public_key).await.unwrap().unwrap();
        assert_eq!(by_key.id, site.id);
        assert!(store.site_by_public_key("ctk_missing").await.unwrap().is_none());

        // B sees nothing of A's.
        assert!(matches!(store.get_site(&b.id, &site.id).await, Err(StoreError::NotFound("site"))));
        assert!(store.list_sites(&b.id, None, 50).await.unwrap().items.is_empty());
        assert!(store.update_site(&b.id, &site.id, &site_spec("Hijack", &[])).await.is_err());
        assert!(store.delete_site(&b.id, &site.id).await.is_err());
        assert_eq!(store.get_site(&a.id, &site.id).await.unwrap().name, "Shop");

        let up = store.update_site(&a.id, &site.id, &site_spec("Shop 2", &[])).await.unwrap();
        assert_eq!(up.name, "Shop 2");
        assert!(up.site_numbers.is_empty());
        assert_eq!(up.public_key, site.public_key);
        store.delete_site(&a.id, &site.id).await.unwrap();
        assert!(store.get_site(&a.id, &site.id).await.is_err());
    }

    lists_paginate_with_cursors(store, db) {
        let a = store.create_account("A").await.unwrap();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(store.create_site(&a.id, &site_spec(&format!("S{i}"), &[])).await.unwrap().id);
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store.list_sites(&a.id, cursor.as_deref(), 3).await.unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|s| s.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ids, "pages must return every site once, in creation order");
    }

    pools_sources_numbers(store, db) {
        let a = store.create_account("A").await.unwrap();
        let b = store.create_account("B").await.unwrap();
        let site = store.create_site(&a.id, &site_spec("Shop", &[])).await.unwrap();
        let other = store.create_site(&a.id, &site_spec("Other", &[])).await.unwrap();
        let pool = store.create_pool(&a.id, &site.id, &PoolSpec::parse("Ads", Some(20), Some("reuse")).unwrap()).await.unwrap();
        assert_eq!(pool.hold_minutes, 20);
        assert_eq!(pool.on_exhaustion, "reuse");
        let dup = store.create_pool(&a.id, &site.id, &PoolSpec::parse("Ads", None, None).unwrap()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert!(store.create_pool(&b.id, &site.id, &PoolSpec::parse("X", None, None).unwrap()).await.is_err());

        let src = store.create_source(&a.id, &site.id, &SourceSpec::parse("Avito", Some("offline"), None).unwrap()).await.unwrap();
        assert_eq!(src.name, "avito");
        let src = store.update_source(&a.id, &src.id, &SourceSpec::parse("avito", Some("referral"), Some("listing")).unwrap()).await.unwrap();
        assert_eq!(src.channel, "referral");
        assert_eq!(src.description.as_deref(), Some("listing"));

        let n1 = store.create_number(&a.id, &site.id, &NumberSpec::parse("+74950000001", ru(), "pool", Some(&pool.id), None).unwrap()).await.unwrap();
        assert_eq!(n1.pool_id.as_deref(), Some(pool.id.as_str()));
        // The same number twice, even in another account, is refused.
        let again = store.create_number(&b.id, &store.create_site(&b.id, &site_spec("B", &[])).await.unwrap().id,
            &NumberSpec::parse("8 495 000-00-01", ru(), "static", None, Some("x")).unwrap()).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        // A pool from another site is refused.
        let foreign = store.create_number(&a.id, &other.id, &NumberSpec::parse("+74950000002", ru(), "pool", Some(&pool.id), None).unwrap()).await;
        assert!(matches!(foreign, Err(StoreError::Invalid(_))), "{foreign:?}");
        // One fallback per pool.
        store.create_number(&a.id, &site.id, &NumberSpec::parse("+74950000003", ru(), "fallback", Some(&pool.id), None).unwrap()).await.unwrap();
        let second = store.create_number(&a.id, &site.id, &NumberSpec::parse("+74950000004", ru(), "fallback", Some(&pool.id), None).unwrap()).await;
        assert!(matches!(second, Err(StoreError::Conflict(_))), "{second:?}");

        let st = store.create_number(&a.id, &site.id, &NumberSpec::parse("+74950000005", ru(), "static", None, Some("avito")).unwrap()).await.unwrap();
        let st = store.update_number(&a.id, &st.id, &NumberSpec::parse("+74950000006", ru(), "static", None, Some("billboard")).unwrap()).await.unwrap();
        assert_eq!(st.number, "+74950000006");
        assert_eq!(st.display, "+7 495 000-00-06", "the display form follows the number");
        assert_eq!(st.source.as_deref(), Some("billboard"));
        assert_eq!(store.list_numbers(&a.id, &site.id, None, 100).await.unwrap().items.len(), 3);
        assert!(store.list_numbers(&b.id, &site.id, None, 100).await.is_err());
        assert!(store.get_number(&b.id, &st.id).await.is_err());
        assert!(store.delete_number(&b.id, &st.id).await.is_err());

        // A pool with numbers cannot go; without them it can.
        assert!(matches!(store.delete_pool(&a.id, &pool.id).await, Err(StoreError::Conflict(_))));
        for n in store.list_numbers(&a.id, &site.id, None, 100).await.unwrap().items {
            store.delete_number(&a.id, &n.id).await.unwrap();
        }
        store.delete_pool(&a.id, &pool.id).await.unwrap();
        assert!(store.list_pools(&a.id, &site.id, None, 10).await.unwrap().items.is_empty());

        // Deleting the site takes its children along.
        store.create_number(&a.id, &site.id, &NumberSpec::parse("+74950000007", ru(), "static", None, Some("avito")).unwrap()).await.unwrap();
        store.delete_site(&a.id, &site.id).await.unwrap();
        assert!(store.get_source(&a.id, &src.id).await.is_err());
        // ... and frees its numbers for reuse.
        store.create_number(&a.id, &other.id, &NumberSpec::parse("+74950000007", ru(), "static", None, Some("avito")).unwrap()).await.unwrap();
    }

    backend_is_what_the_url_says(store, db) {
        let expect = if db.url.starts_with("sqlite") { Backend::Sqlite } else { Backend::Postgres };
        assert_eq!(store.backend(), expect);
        let second = Store::open(&db.url).await.unwrap();
        assert!(second.migrate().await.unwrap().is_empty());
        second.close().await;
    }
}

// ----- the engine -----

use calltrail_core::engine::{self, Allocation, Requester, Slot, MINUTE};
use calltrail_store::engine::{NewPage, Shown};
use calltrail_store::tracking::{self, CallInput, SiteContext, VisitRequest};
use calltrail_store::Continuing;

const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const T0: i64 = 1_800_000_000_000;

/// A pool of two numbers, A and B shown them at `T0`; both holds ran out at +15 min, and C,
/// at +16 min, took one of them back: `(site, A, B, C)`.
async fn one_number_taken_back(store: &Store) -> (SiteContext, Shown, Shown, Shown) {
    let (_, ctx) = engine_site(store, 2, "fallback").await;
    let paid = "https://shop.example/?utm_source=google&utm_medium=cpc";
    let a = store.visit(&ctx, &visit_req(paid, None), T0).await.unwrap();
    let b = store.visit(&ctx, &visit_req(paid, None), T0).await.unwrap();
    assert_ne!(a.number, b.number);
    let c = store
        .visit(&ctx, &visit_req(paid, None), T0 + 16 * MINUTE)
        .await
        .unwrap();
    assert!(c.number == a.number || c.number == b.number, "{c:?}");
    (ctx, a, b, c)
}

/// Insert a copy of lease `from` as `id`, live (no end), holding until `hold_until`: a
/// second lease the allocation would not have written, for the cases that need one.
async fn copy_lease(db: &TestDb, from: &str, id: &str, hold_until: i64) {
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO leases (id, site_id, pool_id, number_id, session_id, visitor_id, source, \
         leased_at, last_activity, hold_until, ended_at) SELECT $1, site_id, pool_id, number_id, \
         session_id, visitor_id, source, leased_at, last_activity, $2, NULL FROM leases WHERE id = $3",
    )
    .bind(id)
    .bind(hold_until)
    .bind(from)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// A site with a pool of `n` numbers (+7 495 200-00-01 ...), a fallback, and an avito static number.
async fn engine_site(store: &Store, n: usize, policy: &str) -> (String, SiteContext) {
    engine_site_at(store, n, policy, "+7495200").await
}

/// `engine_site` with its numbers under another prefix (`+7495300` → +7 495 300-00-01 ...).
async fn engine_site_at(
    store: &Store,
    n: usize,
    policy: &str,
    prefix: &str,
) -> (String, SiteContext) {
    let a = store.create_account("A").await.unwrap();
    let site = store
        .create_site(&a.id, &site_spec("Shop", &["+74951234567"]))
        .await
        .unwrap();
    let pool = store
        .create_pool(
            &a.id,
            &site.id,
            &PoolSpec::parse("P", Some(15), Some(policy)).unwrap(),
        )
        .await
        .unwrap();
    for i in 1..=n {
        let num = format!("{prefix}00{i:02}");
        store
            .create_number(
                &a.id,
                &site.id,
                &NumberSpec::parse(&num, ru(), "pool", Some(&pool.id), None).unwrap(),
            )
            .await
            .unwrap();
    }
    store
        .create_number(
            &a.id,
            &site.id,
            &NumberSpec::parse(
                &format!("{prefix}0099"),
                ru(),
                "fallback",
                Some(&pool.id),
                None,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    store
        .create_number(
            &a.id,
            &site.id,
            &NumberSpec::parse(
                &format!("{prefix}0098"),
                ru(),
                "static",
                None,
                Some("avito"),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let ctx = store.site_context(&site.public_key).await.unwrap().unwrap();
    (a.id, ctx)
}

fn visit_req(url: &str, session: Option<&Shown>) -> VisitRequest {
    VisitRequest {
        url: url.into(),
        referrer: Some(String::new()),
        user_agent: Some(UA.into()),
        session_id: session.map(|s| s.session_id.clone()),
        visitor_id: session.map(|s| s.visitor_id.clone()),
        ..VisitRequest::default()
    }
}

fn call(account: &str, ctx: &SiteContext, id: &str, to: &str, from: &str, at: i64) -> CallInput {
    CallInput {
        account_id: account.into(),
        site_id: ctx.site.id.clone(),
        provider: "test".into(),
        provider_call_id: id.into(),
        to: to.into(),
        from: from.into(),
        at,
        answered: true,
        talk_seconds: 30,
    }
}

conformance! {
    a_site_context_holds_its_static_numbers_and_fallbacks(store, db) {
        let (_, ctx) = engine_site(store, 3, "fallback").await;
        let statics: Vec<(&str, &str, &str)> = ctx
            .statics
            .iter()
            .map(|(_, n, source)| (n.number.as_str(), n.display.as_str(), source.as_str()))
            .collect();
        assert_eq!(statics, [("+74952000098", "+7 495 200-00-98", "avito")]);
        assert_eq!(ctx.pools.len(), 1);
        let fallback = ctx.pools[0].fallback.as_ref().map(|(_, n)| (n.number.as_str(), n.display.as_str()));
        assert_eq!(fallback, Some(("+74952000099", "+7 495 200-00-99")));
    }

    numbers_written_without_their_display_get_it(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        // Rows as a calltrail before migration 0010 (or an older node) wrote them.
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE tracking_numbers SET display = NULL").execute(&pool).await.unwrap();
        let url = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let a = store.visit(&ctx, &visit_req(url, None), T0).await.unwrap();
        assert_eq!(a.e164(), Some("+74952000001"));
        assert_eq!(a.display(), Some("+7 495 200-00-01"), "formatted when the row has none");
        let listed = store.list_numbers(&ctx.site.account_id, &ctx.site.id, None, 10).await.unwrap().items;
        assert!(listed.iter().all(|n| n.display.starts_with("+7 495 200-00-")), "{listed:?}");
        // The next start fills them in.
        store.migrate().await.unwrap();
        let mut stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT number, display FROM tracking_numbers ORDER BY number")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        stored.retain(|(n, _)| n.starts_with("+7495200"));
        let want: Vec<(String, Option<String>)> = ["01", "02", "98", "99"]
            .iter()
            .map(|d| (format!("+749520000{d}"), Some(format!("+7 495 200-00-{d}"))))
            .collect();
        assert_eq!(stored, want);
    }

    allocation_keeps_regains_and_picks_least_recently_active(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let url = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let a = store.visit(&ctx, &visit_req(url, None), T0).await.unwrap();
        let b = store.visit(&ctx, &visit_req(url, None), T0 + MINUTE).await.unwrap();
        assert!(matches!(a.allocation, Some(Allocation::Fresh { .. })), "{a:?}");
        assert_ne!(a.number, b.number, "two live visitors share a number");
        // Each number comes with how it is printed.
        let printed = |s: &Shown| s.e164().map(|n| format!("+7 495 200-00-{}", &n[10..]));
        assert_eq!(a.display(), printed(&a).as_deref());
        assert_eq!(b.display(), printed(&b).as_deref());
        assert_eq!(a.track_code.len(), 5);
        assert_ne!(a.track_code, b.track_code);
        // A's next page keeps A's number; so does a heartbeat.
        let a2 = store.visit(&ctx, &visit_req(url, Some(&a)), T0 + 5 * MINUTE).await.unwrap();
        assert_eq!((a2.session_id.as_str(), a2.e164()), (a.session_id.as_str(), a.e164()));
        assert!(matches!(a2.allocation, Some(Allocation::Keep { .. })));
        assert_eq!(a2.display(), a.display());
        let hb = store.heartbeat(&ctx, &a.session_id, T0 + 10 * MINUTE).await.unwrap().unwrap();
        assert_eq!(hb.number, a.number);
        assert_eq!(hb.display(), a.display());
        // Both numbers are held: a third visitor meets exhaustion and sees the fallback.
        let c = store.visit(&ctx, &visit_req(url, None), T0 + 11 * MINUTE).await.unwrap();
        assert_eq!(c.allocation, Some(Allocation::Exhausted));
        assert_eq!(c.e164(), Some("+74952000099"));
        assert_eq!(c.display(), Some("+7 495 200-00-99"));
        assert_eq!(store.exhaustion_counts(&ctx.site.id, 0).await.unwrap()[0].1, 1);
        // B went quiet at T0+1m with a 15 min hold; at T0+20m B's number is free, A's is not
        // (A's heartbeat at +10m holds it to +25m).
        let d = store.visit(&ctx, &visit_req(url, None), T0 + 20 * MINUTE).await.unwrap();
        assert_eq!(d.number, b.number);
        // A comes back after an hour with a new session: A regains A's old number.
        let back = VisitRequest { session_id: None, ..visit_req(url, Some(&a)) };
        let a3 = store.visit(&ctx, &back, T0 + 90 * MINUTE).await.unwrap();
        assert_ne!(a3.session_id, a.session_id);
        assert_eq!(a3.visitor_id, a.visitor_id);
        assert_eq!(a3.number, a.number);
        assert!(matches!(a3.allocation, Some(Allocation::Regain { .. })), "{:?}", a3.allocation);
    }

    reuse_policy_takes_an_idle_holders_number_and_ends_its_lease(store, db) {
        let (_, ctx) = engine_site(store, 2, "reuse").await;
        let g = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None), T0).await.unwrap();
        let y = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=yandex&utm_medium=cpc", None), T0 + MINUTE).await.unwrap();
        // A later google visitor displaces the google holder although yandex was active later... and earlier.
        let g2 = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None), T0 + 2 * MINUTE).await.unwrap();
        assert_eq!(g2.number, g.number);
        assert!(matches!(g2.allocation, Some(Allocation::Reuse { .. })));
        // The displaced lease ended when the number passed on.
        let nid = match &g2.allocation { Some(Allocation::Reuse { number_id, .. }) => number_id.clone(), _ => unreachable!() };
        let leases = store.number_leases(&nid).await.unwrap();
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].ended_at, Some(T0 + 2 * MINUTE));
        assert_ne!(y.number, g.number);
    }

    static_numbers_rules_and_bots(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        // utm_source=avito matches the static number of that source.
        let v = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=avito", None), T0).await.unwrap();
        assert_eq!(v.e164(), Some("+74952000098"));
        assert_eq!(v.allocation, None);
        // Its next page keeps it.
        let v2 = store.visit(&ctx, &visit_req("https://shop.example/b", Some(&v)), T0 + MINUTE).await.unwrap();
        assert_eq!(v2.e164(), Some("+74952000098"));
        assert_eq!((v.display(), v2.display()), (Some("+7 495 200-00-98"), Some("+7 495 200-00-98")));
        // A bot gets no pool number and is recorded as a bot.
        let bot = VisitRequest { user_agent: Some("Mozilla/5.0 (compatible; YandexBot/3.0)".into()), ..visit_req("https://shop.example/", None) };
        let b = store.visit(&ctx, &bot, T0).await.unwrap();
        assert_eq!((b.e164(), b.display()), (None, None));
        assert!(b.is_bot);
        assert!(store.get_session(&ctx.site.id, &b.session_id).await.unwrap().is_bot);
    }

    calls_are_matched_and_stored_once(store, db) {
        let (acc, ctx) = engine_site(store, 2, "fallback").await;
        let url = "https://shop.example/landing?utm_source=yandex&utm_medium=cpc&utm_campaign=brand&utm_term=sofa";
        let v = store.visit(&ctx, &visit_req(url, None), T0).await.unwrap();
        let n = v.e164().unwrap().to_owned();
        let (c, created) = store.ingest_call(&call(&acc, &ctx, "c1", &n, "+79160000001", T0 + 2 * MINUTE)).await.unwrap();
        assert!(created);
        assert_eq!(c.method, "dynamic");
        assert!(c.confidence >= 0.9);
        assert_eq!(c.session_id.as_deref(), Some(v.session_id.as_str()));
        assert_eq!((c.channel.as_str(), c.source.as_str()), ("paid_search", "yandex"));
        assert_eq!(c.campaign.as_deref(), Some("brand"));
        assert_eq!(c.keyword.as_deref(), Some("sofa"));
        // The same provider call id again: one call.
        let (again, created) = store.ingest_call(&call(&acc, &ctx, "c1", &n, "+79160000001", T0 + 2 * MINUTE)).await.unwrap();
        assert!(!created);
        assert_eq!(again.id, c.id);
        assert_eq!(store.list_calls(&acc, &calltrail_store::calls::CallFilter::default(), None, 50).await.unwrap().items.len(), 1);
        // Static, fallback and an unknown number.
        let (s, _) = store.ingest_call(&call(&acc, &ctx, "c2", "+74952000098", "hidden", T0)).await.unwrap();
        assert_eq!((s.method.as_str(), s.source.as_str(), s.confidence), ("static", "avito", 1.0));
        let (f, _) = store.ingest_call(&call(&acc, &ctx, "c3", "+74952000099", "+79160000002", T0)).await.unwrap();
        assert_eq!((f.method.as_str(), f.channel.as_str()), ("fallback", "unknown"));
        let (u, _) = store.ingest_call(&call(&acc, &ctx, "c4", "+74959999999", "+79160000003", T0)).await.unwrap();
        assert_eq!(u.method, "unmatched");
        assert_eq!(u.number_kind, None);
        // Long after the hold: the last holder, late and unsure.
        let (late, _) = store.ingest_call(&call(&acc, &ctx, "c5", &n, "+79160000004", T0 + 5 * 60 * MINUTE)).await.unwrap();
        assert_eq!(late.method, "dynamic_late");
        assert!(late.confidence < 0.5);
        // The first caller calls again hours later: caller history finds the visit.
        let (hist, _) = store.ingest_call(&call(&acc, &ctx, "c6", &n, "+79160000001", T0 + 6 * 60 * MINUTE)).await.unwrap();
        assert_eq!(hist.method, "caller_history");
        assert_eq!(hist.session_id.as_deref(), Some(v.session_id.as_str()));
        // Track code: a live session is found by its code.
        let found = store.session_by_track_code(&ctx.site.id, &v.track_code, T0 + MINUTE).await.unwrap().unwrap();
        assert_eq!(found.id, v.session_id);
        assert!(store.session_by_track_code(&ctx.site.id, &v.track_code, T0 + 48 * 60 * MINUTE).await.unwrap().is_none());
        let u2 = store.attribute_call(&acc, &u.id, &found, "track_code", 1.0).await.unwrap();
        assert_eq!((u2.method.as_str(), u2.session_id.as_deref()), ("track_code", Some(v.session_id.as_str())));
    }

    expired_sessions_start_anew(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let v = store.visit(&ctx, &visit_req("https://shop.example/", None), T0).await.unwrap();
        assert!(store.heartbeat(&ctx, &v.session_id, T0 + 31 * MINUTE).await.unwrap().is_none(), "a session must end after 30 idle minutes");
        let again = store.visit(&ctx, &visit_req("https://shop.example/", Some(&v)), T0 + 31 * MINUTE).await.unwrap();
        assert_ne!(again.session_id, v.session_id);
        assert_eq!(again.visitor_id, v.visitor_id);
        assert!(store.heartbeat(&ctx, "unknown-session-id", T0).await.unwrap().is_none());
    }

    a_new_visitor_gets_what_the_engine_picks_over_the_whole_pool(store, db) {
        // Visits a few minutes apart to a pool of five (15 min hold), with quiet spells:
        // numbers run out, come back after their hold and pass between sources. Each new visitor must be given what
        // `engine::allocate` picks over every number with its latest lease as stored, whether
        // the store decided from its picture (SQLite) or from the candidates it read (PostgreSQL).
        for (policy, prefix) in [("fallback", "+7495600"), ("reuse", "+7495700")] {
            let (_, ctx) = engine_site_at(store, 5, policy, prefix).await;
            let pool = &ctx.pools[0];
            let numbers: Vec<String> = store
                .list_numbers(&ctx.site.account_id, &ctx.site.id, None, 100)
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|n| n.kind == "pool")
                .map(|n| n.id)
                .collect();
            assert_eq!(numbers.len(), 5);
            let sources = ["google", "yandex", "direct"];
            let (mut now, mut seed) = (T0, 7_u64);
            let mut kinds = std::collections::BTreeSet::new();
            let mut returned = 0;
            for k in 0..40 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                now += 1 + ((seed >> 33) as i64) % (6 * MINUTE);
                if k % 7 == 6 {
                    // A quiet spell: every number comes back, each last held from some source.
                    now += 30 * MINUTE;
                }
                let source = sources[((seed >> 20) % 3) as usize];
                let mut slots = Vec::new();
                for id in &numbers {
                    let latest = store.number_leases(id).await.unwrap().pop();
                    slots.push(Slot { number_id: id.clone(), latest });
                }
                let req = Requester { session_id: "", visitor_id: "", source, held_before: &[], opens: true };
                let want = engine::allocate(&slots, &req, pool.policy, now);
                if let Allocation::Fresh { number_id } = &want {
                    returned += usize::from(slots.iter().any(|s| &s.number_id == number_id && s.latest.is_some()));
                }
                let url = format!("https://shop.example/?utm_source={source}&utm_medium=cpc");
                let got = store.visit(&ctx, &visit_req(&url, None), now).await.unwrap();
                assert_eq!(got.allocation.as_ref(), Some(&want), "{policy}, visit {k} ({source})");
                kinds.insert(summary(&got).1);
            }
            // The run went through the cases it is for.
            let expect: &[&str] = if policy == "fallback" { &["Exhausted", "Fresh"] } else { &["Fresh", "Reuse"] };
            assert_eq!(kinds.iter().map(String::as_str).collect::<Vec<_>>(), expect, "{policy}");
            assert!(returned >= 3, "{policy}: {returned} numbers came back after their hold");
        }
    }

    a_batch_opens_sessions_as_one_by_one_visits_would(store, db) {
        for policy in ["fallback", "reuse"] {
            let (_, one) = engine_site_at(store, 6, policy, if policy == "reuse" { "+7495400" } else { "+7495200" }).await;
            let (_, many) = engine_site_at(store, 6, policy, if policy == "reuse" { "+7495500" } else { "+7495300" }).await;
            let src = |s: &str| format!("https://shop.example/?utm_source={s}&utm_medium=cpc");
            // (time, visits): sources, some returning visitors of an earlier phase.
            let phases: [(i64, Vec<&str>); 3] = [
                (T0, vec!["google", "yandex", "google", "avito"]),
                (T0 + MINUTE, vec!["yandex", "vk", "google", "google", "yandex"]),
                (T0 + 20 * MINUTE, vec!["yandex", "back", "google", "vk"]),
            ];
            // What each visit was shown: (number's last digits, allocation kind), per site.
            let mut got: [Vec<(String, String)>; 2] = [Vec::new(), Vec::new()];
            let mut firsts: [Option<Shown>; 2] = [None, None];
            for (at, visits) in &phases {
                let mut batch = Vec::new();
                for (k, ctx) in [&one, &many].into_iter().enumerate() {
                    for name in visits {
                        let req = if *name == "back" {
                            // The first visitor returns in a new session.
                            VisitRequest { session_id: None, ..visit_req(&src("google"), firsts[k].as_ref()) }
                        } else {
                            visit_req(&src(name), None)
                        };
                        if k == 0 {
                            let shown = store.visit(ctx, &req, *at).await.unwrap();
                            firsts[0].get_or_insert(shown.clone());
                            got[0].push(summary(&shown));
                        } else {
                            batch.push(tracking::new_session(ctx, &req));
                        }
                    }
                }
                for shown in store.open_sessions(&batch, *at).await.unwrap() {
                    firsts[1].get_or_insert(shown.clone());
                    got[1].push(summary(&shown));
                }
            }
            assert_eq!(got[0], got[1], "{policy}: a batch decided otherwise than one-by-one visits");
            // Under `reuse` the first visitor's number passed on, so it is not regained.
            let regained = got[0].iter().any(|(_, kind)| kind == "Regain");
            assert_eq!(regained, policy == "fallback", "{policy}: {:?}", got[0]);
            let exhausted = got[0].iter().filter(|(_, k)| k == "Exhausted" || k == "Reuse").count();
            assert!(exhausted >= 1, "{policy}: {:?}", got[0]);
            let count = |ctx: &SiteContext| {
                let site = ctx.site.id.clone();
                async move { store.exhaustion_counts(&site, 0).await.unwrap().iter().map(|(_, n)| n).sum::<i64>() }
            };
            assert_eq!(count(&one).await, count(&many).await);
            // Stored as a single visit stores it: the session, its first page, its lease.
            let first = firsts[1].clone().unwrap();
            let s = store.get_session(&many.site.id, &first.session_id).await.unwrap();
            assert_eq!((s.source.as_str(), s.page_count, s.track_code.as_str()), ("google", 1, first.track_code.as_str()));
            assert_eq!(store.session_pages(&s.id).await.unwrap().len(), 1);
            let leases = store.number_leases(s.number_id.as_deref().unwrap()).await.unwrap();
            assert!(leases.iter().any(|l| Some(&l.id) == s.lease_id.as_ref() && l.session_id == s.id));
        }
    }

    a_batch_larger_than_one_statement_is_written_whole(store, db) {
        // 2 000 sessions: several chunks.
        const N: usize = 2_000;
        let (_, ctx) = engine_site(store, 4, "fallback").await;
        let req = visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None);
        let batch: Vec<_> = (0..N).map(|_| tracking::new_session(&ctx, &req)).collect();
        let shown = store.open_sessions(&batch, T0).await.unwrap();
        assert_eq!(shown.len(), N);
        let mut codes: Vec<&str> = shown.iter().map(|s| s.track_code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), N, "track codes repeat within a batch");
        let fresh = shown.iter().filter(|s| matches!(s.allocation, Some(Allocation::Fresh { .. }))).count();
        assert_eq!(fresh, 4);
        assert!(shown[4..].iter().all(|s| s.e164() == Some("+74952000099")));
        assert_eq!(store.exhaustion_counts(&ctx.site.id, 0).await.unwrap()[0].1, N as i64 - 4);
        // Every session is stored under the code it was shown.
        for s in shown.iter().step_by(97) {
            let found = store.session_by_track_code(&ctx.site.id, &s.track_code, T0).await.unwrap().unwrap();
            assert_eq!(found.id, s.session_id);
        }
        assert!(store.open_sessions(&[], T0).await.unwrap().is_empty());
    }
    track_codes_are_handed_out_in_turn_and_mended_when_taken(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let req = visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None);
        // A fresh site: five digits, one after another (the turn may wrap once).
        let batch: Vec<_> = (0..50).map(|_| tracking::new_session(&ctx, &req)).collect();
        let shown = store.open_sessions(&batch, T0).await.unwrap();
        let codes: Vec<u32> = shown.iter().map(|s| s.track_code.parse().unwrap()).collect();
        assert!(codes.iter().all(|c| (10_000..100_000).contains(c)), "{codes:?}");
        let steps = codes.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(steps <= 1, "codes not handed out in turn: {codes:?}");
        // Another process handed out every five-digit code to a session still live.
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO sessions (id, site_id, visitor_id, started_at, last_activity, track_code, \
             channel, source, medium, landing_url, landing_path, is_bot, page_count) \
             WITH RECURSIVE n(x) AS (SELECT 10000 UNION ALL SELECT x + 1 FROM n WHERE x < 99999) \
             SELECT 'other-' || CAST(x AS TEXT), $1, 'v', $2, $2, CAST(x AS TEXT), 'direct', \
             '(direct)', '(none)', 'https://shop.example/', '/', 0, 1 FROM n",
        )
        .bind(&ctx.site.id)
        .bind(T0)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        // A lone visitor's code clashes, and clashes again in the repair's first rounds;
        // then the site goes to six digits and the visitor gets a free one.
        let one = store.open_sessions(&[tracking::new_session(&ctx, &req)], T0 + 1).await.unwrap();
        assert_eq!(one[0].track_code.len(), 6, "{:?}", one[0].track_code);
        let found = store.session_by_track_code(&ctx.site.id, &one[0].track_code, T0 + 1).await.unwrap().unwrap();
        assert_eq!(found.id, one[0].session_id, "stored under the code it was shown");
        // Everyone after it gets six digits at once, distinct.
        let batch: Vec<_> = (0..300).map(|_| tracking::new_session(&ctx, &req)).collect();
        let more = store.open_sessions(&batch, T0 + 2).await.unwrap();
        let mut codes: Vec<&str> = more.iter().map(|s| s.track_code.as_str()).collect();
        assert!(codes.iter().all(|c| c.len() == 6), "{codes:?}");
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 300);
    }
    a_failed_batch_leaves_nothing_behind(store, db) {
        let (_, ctx) = engine_site(store, 3, "fallback").await;
        let req = visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None);
        let batch = || vec![tracking::new_session(&ctx, &req), tracking::new_session(&ctx, &req)];
        // A first batch: on SQLite the pool's picture is in memory from now on, so the
        // failing batch below reads nothing and fails only when its script runs.
        let first = store.open_sessions(&[tracking::new_session(&ctx, &req)], T0).await.unwrap();
        assert!(matches!(first[0].allocation, Some(Allocation::Fresh { .. })));
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let rename = |from: &'static str, to: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}")).execute(&pool).await.unwrap();
            }
        };
        // The batch's leases cannot be written: the whole batch fails.
        rename("leases", "leases_away").await;
        let failed = batch();
        assert!(store.open_sessions(&failed, T0).await.is_err());
        rename("leases_away", "leases").await;
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE site_id = $1")
            .bind(&ctx.site.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "sessions of the failed batch were kept");
        pool.close().await;
        // Nothing of it was kept: its sessions are not there, and the next batch finds the
        // two other numbers free (the pool's picture of the failed batch was dropped; on SQLite the
        // writer's connection was let go and a new one opened).
        let ok = store.open_sessions(&batch(), T0 + 1).await.unwrap();
        assert!(
            ok.iter().all(|s| matches!(s.allocation, Some(Allocation::Fresh { .. }))),
            "{ok:?}"
        );
        let mut numbers: Vec<_> = ok.iter().map(|s| s.e164().unwrap()).collect();
        numbers.push(first[0].e164().unwrap());
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 3);
        assert_eq!(store.session_by_track_code(&ctx.site.id, &ok[0].track_code, T0 + 1).await.unwrap().unwrap().id, ok[0].session_id);
    }
    the_landing_page_is_the_first_page_view(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let landing = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let req = VisitRequest { title: Some("Shop".into()), ..visit_req(landing, None) };
        let a = store.visit(&ctx, &req, T0).await.unwrap();
        let next = Continuing {
            site_id: ctx.site.id.clone(),
            session_id: a.session_id.clone(),
            page: Some(NewPage { kind: "pageview".into(), url: "https://shop.example/2".into(), title: None }),
            pools: ctx.pools.clone(),
        };
        store.continue_sessions(&[next], T0 + 1_000).await.unwrap();
        let seen = |pages: Vec<PageView>| -> Vec<(i64, String, Option<String>)> {
            pages.into_iter().map(|p| (p.at.as_millisecond(), p.url, p.title)).collect()
        };
        let want = vec![
            (T0, landing.to_owned(), Some("Shop".to_owned())),
            (T0 + 1_000, "https://shop.example/2".to_owned(), None),
        ];
        assert_eq!(seen(store.session_pages(&a.session_id).await.unwrap()), want);
        // A session written before the landing page moved into the row keeps it in
        // page_views: the same list, the landing page once.
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE sessions SET landing_in_row = 0, landing_title = NULL WHERE id = $1")
            .bind(&a.session_id)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO page_views (id, session_id, at, kind, url, title) VALUES ('old-landing', $1, $2, 'pageview', $3, 'Shop')")
            .bind(&a.session_id)
            .bind(T0)
            .bind(landing)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        assert_eq!(seen(store.session_pages(&a.session_id).await.unwrap()), want);
    }
    heartbeats_written_back_keep_their_numbers_from_new_visitors(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let paid = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let a = store.visit(&ctx, &visit_req(paid, None), T0).await.unwrap();
        let b = store.visit(&ctx, &visit_req(paid, None), T0).await.unwrap();
        assert_ne!(a.number, b.number);
        // A's tab stays visible: its heartbeat at +10 min holds A's number to +25 min.
        // B's ran out at +15 min.
        store.flush_heartbeats(&[(a.session_id.clone(), T0 + 10 * MINUTE, 15 * MINUTE)]).await.unwrap();
        let c = store.visit(&ctx, &visit_req(paid, None), T0 + 20 * MINUTE).await.unwrap();
        let d = store.visit(&ctx, &visit_req(paid, None), T0 + 20 * MINUTE).await.unwrap();
        assert_eq!(c.number, b.number, "the number nobody holds");
        assert_eq!(d.e164(), Some("+74952000099"), "A's number is still held: the fallback");
        // A moved on in the store as the pool saw it.
        let owner = store.number_owner(a.e164().unwrap()).await.unwrap().unwrap();
        let latest = store.number_leases(&owner.number_id).await.unwrap().pop().unwrap();
        assert_eq!((latest.session_id.as_str(), latest.hold_until), (a.session_id.as_str(), T0 + 25 * MINUTE));
        // The lease moved is the one A's session row names, found through the row: another
        // live lease with A's session id (say of a pool A's session left) stays as it was.
        copy_lease(db, &latest.id, "other-lease", latest.hold_until).await;
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        store.flush_heartbeats(&[(a.session_id.clone(), T0 + 12 * MINUTE, 15 * MINUTE)]).await.unwrap();
        let holds: Vec<(String, i64)> = sqlx::query_as("SELECT id, hold_until FROM leases WHERE session_id = $1 ORDER BY id")
            .bind(&a.session_id)
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut want = vec![(latest.id.clone(), T0 + 27 * MINUTE), ("other-lease".to_owned(), T0 + 25 * MINUTE)];
        want.sort();
        assert_eq!(holds, want);
        sqlx::query("DELETE FROM leases WHERE id = 'other-lease'").execute(&pool).await.unwrap();
        pool.close().await;
        // A heartbeat after its lease ran out moves nothing.
        store.flush_heartbeats(&[(c.session_id.clone(), T0 + 40 * MINUTE, 15 * MINUTE)]).await.unwrap();
        let e = store.visit(&ctx, &visit_req(paid, None), T0 + 40 * MINUTE).await.unwrap();
        assert!(e.number.is_some() && e.e164() != Some("+74952000099"), "{e:?}");
    }
    a_late_heartbeat_does_not_revive_a_lease_whose_number_moved_on(store, db) {
        let (ctx, a, b, c) = one_number_taken_back(store).await;
        let paid = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let before = if c.number == a.number { &a } else { &b };
        // A heartbeat of the number's holder before, from +14 min (inside its hold), is
        // written back only now: its lease must stay over, or the number has two holders.
        store.flush_heartbeats(&[(before.session_id.clone(), T0 + 14 * MINUTE, 15 * MINUTE)]).await.unwrap();
        let owner = store.number_owner(c.e164().unwrap()).await.unwrap().unwrap();
        let leases = store.number_leases(&owner.number_id).await.unwrap();
        assert_eq!(leases.len(), 2, "{leases:?}");
        assert_eq!(leases[0].session_id, before.session_id);
        assert_eq!(leases[0].hold_until, T0 + 15 * MINUTE, "{leases:?}");
        assert!(leases[1].leased_at >= leases[0].end(), "{leases:?}");
        // The pool as allocation sees it agrees: the other number is free, this one C's.
        let d = store.visit(&ctx, &visit_req(paid, None), T0 + 17 * MINUTE).await.unwrap();
        let e = store.visit(&ctx, &visit_req(paid, None), T0 + 17 * MINUTE).await.unwrap();
        assert!(d.number.is_some() && d.number != c.number, "{d:?}");
        assert_eq!(e.e164(), Some("+74952000099"));
    }
    a_store_opened_later_sees_each_numbers_latest_lease(store, db) {
        // C's number's latest lease is C's, its earlier one (A's or B's) long over.
        let (ctx, _, _, c) = one_number_taken_back(store).await;
        let paid = "https://shop.example/?utm_source=google&utm_medium=cpc";
        // Another node (or this one after a restart) reads the pool from the database: C's
        // number is held, the other one free, so D gets that and E the fallback.
        let other = Store::open(&db.url).await.unwrap();
        let d = other.visit(&ctx, &visit_req(paid, None), T0 + 17 * MINUTE).await.unwrap();
        let e = other.visit(&ctx, &visit_req(paid, None), T0 + 17 * MINUTE).await.unwrap();
        assert!(d.number.is_some() && d.number != c.number, "{d:?} {c:?}");
        assert_eq!(e.e164(), Some("+74952000099"), "C's number is C's until +31 min");
        // A number leased twice at one time (here by hand, as two askers of one batch can):
        // the lease written last is the latest.
        let owner = other.number_owner(c.e164().unwrap()).await.unwrap().unwrap();
        let leases = other.number_leases(&owner.number_id).await.unwrap();
        let cs = leases.iter().find(|l| l.session_id == c.session_id).unwrap();
        copy_lease(db, &cs.id, "zz-later", T0 + 16 * MINUTE + 1).await;
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        if db.backend() == Backend::Postgres {
            sqlx::query("UPDATE number_state SET lease_id = 'zz-later' WHERE number_id = $1")
                .bind(&owner.number_id)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        // The later lease ended at once, so a third store finds C's number free.
        let third = Store::open(&db.url).await.unwrap();
        let f = third.visit(&ctx, &visit_req(paid, None), T0 + 18 * MINUTE).await.unwrap();
        assert_eq!(f.number, c.number, "{f:?}");
    }
    exhaustions_are_counted_from_new_and_continuing_sessions(store, db) {
        let (_, ctx) = engine_site(store, 1, "fallback").await;
        let paid = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let a = store.visit(&ctx, &visit_req(paid, None), T0).await.unwrap();
        // B opens on a dry pool: its exhaustion is kept in its session row.
        let b = store.visit(&ctx, &visit_req(paid, None), T0 + 1_000).await.unwrap();
        assert_eq!(b.e164(), Some("+74952000099"));
        // A's hold runs out, C takes the number; A's next page finds the pool dry: an
        // exhaustion of a session already open, kept in `exhaustions`.
        let c = store.visit(&ctx, &visit_req(paid, None), T0 + 16 * MINUTE).await.unwrap();
        assert_eq!(c.number, a.number);
        let page = Continuing {
            site_id: ctx.site.id.clone(),
            session_id: a.session_id.clone(),
            page: Some(NewPage { kind: "pageview".into(), url: "https://shop.example/2".into(), title: None }),
            pools: ctx.pools.clone(),
        };
        let again = store.continue_sessions(&[page], T0 + 17 * MINUTE).await.unwrap();
        assert_eq!(again[0].as_ref().unwrap().e164(), Some("+74952000099"));
        let site = ctx.site.id.clone();
        let count = |since: i64| {
            let site = site.clone();
            async move { store.exhaustion_counts(&site, since).await.unwrap().iter().map(|(_, n)| n).sum::<i64>() }
        };
        assert_eq!(count(0).await, 2, "B's at opening and A's later one");
        assert_eq!(count(T0 + 1_000).await, 2);
        assert_eq!(count(T0 + 1_001).await, 1, "only A's, at +17 min");
        assert_eq!(count(T0 + 17 * MINUTE + 1).await, 0);
        // Another site's sessions are not counted.
        let (_, other) = engine_site_at(store, 1, "fallback", "+7495300").await;
        store.visit(&other, &visit_req(paid, None), T0).await.unwrap();
        store.visit(&other, &visit_req(paid, None), T0).await.unwrap();
        assert_eq!(count(0).await, 2);
    }
    page_views_are_added_without_moving_the_session(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let a = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=google&utm_medium=cpc", None), T0).await.unwrap();
        let page = |sid: &str, url: &str, kind: &str| {
            (sid.to_owned(), NewPage { kind: kind.into(), url: url.into(), title: Some("T".into()) })
        };
        let added = store
            .add_pages(
                &[
                    page(&a.session_id, "https://shop.example/1", "pageview"),
                    page("0000000000000000", "https://shop.example/ghost", "pageview"),
                    page(&a.session_id, "https://shop.example/1", "form_open"),
                ],
                T0 + 1_000,
            )
            .await
            .unwrap();
        assert_eq!(added, [true, false, true], "a session that does not exist gets no page");
        let pages = store.session_pages(&a.session_id).await.unwrap();
        let got: Vec<(i64, &str, &str)> = pages.iter().map(|p| (p.at.as_millisecond(), p.kind.as_str(), p.url.as_str())).collect();
        assert_eq!(got[1..], [(T0 + 1_000, "pageview", "https://shop.example/1"), (T0 + 1_000, "form_open", "https://shop.example/1")]);
        // The page count is the session's pages, counted; the row itself did not move.
        let sa = store.get_session(&ctx.site.id, &a.session_id).await.unwrap();
        assert_eq!((sa.page_count, sa.last_activity.as_millisecond()), (3, T0));
        let by_code = store.session_by_track_code(&ctx.site.id, &a.track_code, T0 + 2_000).await.unwrap().unwrap();
        assert_eq!(by_code.page_count, 3);
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let ghost: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM page_views WHERE session_id = '0000000000000000'")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        assert_eq!(ghost, 0);
        // More than one statement's worth: every page lands, in order of the answers.
        let many: Vec<_> = (0..300).map(|i| page(&a.session_id, &format!("https://shop.example/p{i}"), "pageview")).collect();
        let added = store.add_pages(&many, T0 + 3_000).await.unwrap();
        assert_eq!(added.len(), 300);
        assert!(added.iter().all(|a| *a));
        assert_eq!(store.get_session(&ctx.site.id, &a.session_id).await.unwrap().page_count, 303);
    }
    continuing_sessions_are_written_together(store, db) {
        let (_, ctx) = engine_site(store, 2, "fallback").await;
        let google = "https://shop.example/?utm_source=google&utm_medium=cpc";
        let a = store.visit(&ctx, &visit_req(google, None), T0).await.unwrap();
        let b = store.visit(&ctx, &visit_req("https://shop.example/?utm_source=avito", None), T0).await.unwrap();
        let c = store.visit(&ctx, &visit_req(google, None), T0).await.unwrap();
        let page = |sid: &str, url: &str| Continuing {
            site_id: ctx.site.id.clone(),
            session_id: sid.to_owned(),
            page: Some(NewPage { kind: "pageview".into(), url: url.into(), title: None }),
            pools: ctx.pools.clone(),
        };
        let beat = Continuing { page: None, ..page(&c.session_id, "") };
        let foreign = Continuing { site_id: "another-site".into(), ..page(&a.session_id, "https://shop.example/x") };
        let got = store
            .continue_sessions(
                &[
                    page(&a.session_id, "https://shop.example/1"),
                    page(&a.session_id, "https://shop.example/2"),
                    page(&b.session_id, "https://shop.example/b"),
                    page("0000000000000000", "https://shop.example/"),
                    beat,
                    foreign,
                ],
                T0 + 5 * MINUTE,
            )
            .await
            .unwrap();
        let numbers: Vec<Option<&str>> = got.iter().map(|s| s.as_ref().and_then(|s| s.e164())).collect();
        assert_eq!(
            numbers,
            [a.e164(), a.e164(), Some("+74952000098"), None, c.e164(), None]
        );
        assert!(matches!(got[0].as_ref().unwrap().allocation, Some(Allocation::Keep { .. })));
        let sa = store.get_session(&ctx.site.id, &a.session_id).await.unwrap();
        assert_eq!(sa.page_count, 3, "both page loads of A count");
        assert_eq!(store.session_pages(&a.session_id).await.unwrap().len(), 3);
        let sc = store.get_session(&ctx.site.id, &c.session_id).await.unwrap();
        assert_eq!((sc.page_count, sc.last_activity.as_millisecond()), (1, T0 + 5 * MINUTE), "a heartbeat moves activity, adds no page");
        // The leases moved on: A's number is held to +20 min, so nobody else gets it at +19.
        let leases = store.number_leases(sa.number_id.as_deref().unwrap()).await.unwrap();
        assert_eq!(leases.last().unwrap().hold_until, T0 + 20 * MINUTE);
        // At +21 min A's lease has run out but the session lives (30 min): a page load
        // finds A a number again, the one A had (nobody held it since).
        let again = store.continue_sessions(&[page(&a.session_id, "https://shop.example/3")], T0 + 21 * MINUTE).await.unwrap();
        let again = again[0].as_ref().unwrap();
        assert!(matches!(again.allocation, Some(Allocation::Regain { .. })), "{again:?}");
        assert_eq!(again.number, a.number);
        let sa = store.get_session(&ctx.site.id, &a.session_id).await.unwrap();
        let latest = store.number_leases(sa.number_id.as_deref().unwrap()).await.unwrap().pop().unwrap();
        assert_eq!((Some(&latest.id), latest.session_id.as_str()), (sa.lease_id.as_ref(), a.session_id.as_str()));
        // An expired session is not continued.
        let late = store.continue_sessions(&[page(&b.session_id, "https://shop.example/late")], T0 + 40 * MINUTE).await.unwrap();
        assert!(late[0].is_none());
    }
}

/// A visit's outcome, comparable across two sites: the number's last four digits and
/// the kind of allocation.
fn summary(s: &Shown) -> (String, String) {
    let digits = s
        .e164()
        .map_or(String::new(), |n| n[n.len() - 4..].to_owned());
    let kind = s.allocation.as_ref().map_or("none".to_owned(), |a| {
        format!("{a:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    (digits, kind)
}

/// SQLite: the writer never checkpoints (its thread only appends to the WAL); the
/// checkpointer copies what it wrote into the database file on its own.
#[tokio::test]
async fn the_checkpointer_copies_the_writers_pages_into_the_database_file() {
    let db = testing::sqlite().await;
    let store = &db.store;
    let (_, ctx) = engine_site(store, 2, "fallback").await;
    let file = db.url.trim_start_matches("sqlite://").to_owned();
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    let req = visit_req(
        "https://shop.example/?utm_source=google&utm_medium=cpc",
        None,
    );
    let batch: Vec<_> = (0..2_000)
        .map(|_| tracking::new_session(&ctx, &req))
        .collect();
    store.open_sessions(&batch, T0).await.unwrap();
    // 2 000 sessions are over a megabyte of pages; nothing else writes or checkpoints.
    let mut after = size();
    for _ in 0..50 {
        if after > before + 1_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = size();
    }
    assert!(
        after > before + 1_000_000,
        "the database file stayed at {after} bytes (was {before})"
    );
    db.cleanup().await;
}
