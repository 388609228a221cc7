//! The store conformance suite: every case runs on SQLite, and on PostgreSQL when
//! `CALLTRAIL_TEST_DATABASE_URL` is set (CI sets it).

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::items_after_statements
)]

use calltrail_core::setup::{NumberSpec, PoolSpec, SiteInput, SiteSpec, SourceSpec};
use calltrail_core::Region;
use calltrail_store::testing::{self, TestDb};
use calltrail_store::{Backend, Store, StoreError};

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
