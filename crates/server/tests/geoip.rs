//! The visitor's city from a `.mmdb` city database, built here by a small writer
//! (real databases cannot be downloaded in tests).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;
#[path = "support/mmdb.rs"]
mod mmdb;

use std::net::IpAddr;
use std::sync::Arc;

use calltrail_server::geoip::GeoIp;
use calltrail_store::testing;
use common::TestServer;
use mmdb::{geoip2_city, map, names, s, Value, Writer};
use serde_json::{json, Value as Json};

/// GeoLite2-City-like: Moscow (ru + en), a country-only block, and a private block
/// (which the lookup must never consult).
fn geolite2() -> Vec<u8> {
    let mut w = Writer::new("GeoLite2-City", &["de", "en", "ru"]);
    w.insert(
        "198.51.100.0/24",
        &geoip2_city(
            524_901,
            &[("de", "Moskau"), ("en", "Moscow"), ("ru", "Москва")],
            "RU",
        ),
    )
    .insert(
        "192.0.2.0/25",
        &map(&[("country", map(&[("iso_code", s("KZ"))]))]),
    )
    .insert(
        "10.1.2.0/24",
        &geoip2_city(1, &[("en", "Private"), ("ru", "Частный")], "RU"),
    )
    .insert(
        "100.64.0.0/10",
        &geoip2_city(2, &[("en", "Saint Petersburg")], "RU"),
    );
    w.finish()
}

/// DB-IP City Lite-like: city names in English only, a few more keys.
fn dbip_lite() -> Vec<u8> {
    let mut w = Writer::new(
        "DBIP-City-Lite",
        &[
            "de", "en", "es", "fa", "fr", "ja", "ko", "pt-BR", "ru", "zh-CN",
        ],
    );
    let almaty = map(&[
        ("city", map(&[("names", names(&[("en", "Almaty")]))])),
        (
            "continent",
            map(&[
                ("code", s("AS")),
                ("names", names(&[("en", "Asia"), ("ru", "Азия")])),
            ]),
        ),
        (
            "country",
            map(&[
                ("iso_code", s("KZ")),
                ("is_in_european_union", Value::Bool(false)),
                ("names", names(&[("en", "Kazakhstan"), ("ru", "Казахстан")])),
            ]),
        ),
        (
            "subdivisions",
            Value::Array(vec![map(&[("names", names(&[("en", "Almaty")]))])]),
        ),
    ]);
    w.insert("203.0.113.0/24", &almaty);
    w.finish()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_writer_makes_files_maxminddb_reads() {
    let bytes = geolite2();
    let r = maxminddb::Reader::from_source(bytes).unwrap();
    r.verify().unwrap();
    let m = r.metadata();
    assert_eq!(
        (m.ip_version, m.record_size, m.database_type.as_str()),
        (4, 24, "GeoLite2-City")
    );
    assert_eq!(m.languages, ["de", "en", "ru"]);
    assert_eq!(m.description["en"], "calltrail test database");
    // The crate's own GeoIP2 City model reads the record.
    let found = r.lookup(ip("198.51.100.200")).unwrap();
    assert_eq!(found.network().unwrap().to_string(), "198.51.100.0/24");
    let city: maxminddb::geoip2::City = found.decode().unwrap().unwrap();
    assert_eq!(city.city.geoname_id, Some(524_901));
    assert_eq!(city.city.names.russian, Some("Москва"));
    assert_eq!(city.city.names.english, Some("Moscow"));
    assert_eq!(city.country.iso_code, Some("RU"));
    assert!(!r.lookup(ip("198.51.101.1")).unwrap().has_data());

    let r = maxminddb::Reader::from_source(dbip_lite()).unwrap();
    r.verify().unwrap();
    let city: maxminddb::geoip2::City = r
        .lookup(ip("203.0.113.5"))
        .unwrap()
        .decode()
        .unwrap()
        .unwrap();
    assert_eq!(city.city.names.english, Some("Almaty"));
    assert_eq!(city.country.names.russian, Some("Казахстан"));
}

#[test]
fn lookup_prefers_russian_then_english() {
    let g = GeoIp::from_bytes(geolite2()).unwrap();
    assert!(g.has_cities());
    assert_eq!(g.lookup(ip("198.51.100.7")).as_deref(), Some("Москва"));
    assert_eq!(g.lookup_str(" 198.51.100.255 ").as_deref(), Some("Москва"));
    assert_eq!(
        g.lookup(ip("::ffff:198.51.100.7")).as_deref(),
        Some("Москва"),
        "IPv4-mapped IPv6"
    );
    assert_eq!(
        g.lookup(ip("100.64.1.1")).as_deref(),
        Some("Saint Petersburg"),
        "en when no ru"
    );
    assert_eq!(g.lookup(ip("192.0.2.1")), None, "a record without a city");
    assert_eq!(
        g.lookup(ip("8.8.8.8")),
        None,
        "an address the database does not know"
    );
    assert_eq!(
        g.lookup(ip("10.1.2.3")),
        None,
        "private addresses are not looked up"
    );
    assert_eq!(
        g.lookup(ip("2001:db8::1")),
        None,
        "IPv6 in an IPv4 database"
    );
    assert_eq!(g.lookup_str("not an ip"), None);

    let d = GeoIp::from_bytes(dbip_lite()).unwrap();
    assert_eq!(d.database_type(), "DBIP-City-Lite");
    assert_eq!(d.lookup(ip("203.0.113.9")).as_deref(), Some("Almaty"));
}

#[test]
fn damaged_databases_are_refused_or_answer_nothing() {
    let good = geolite2();
    // Cut anywhere: opening fails cleanly or lookups give nothing; never a panic.
    for cut in (0..good.len()).step_by(7) {
        if let Ok(g) = GeoIp::from_bytes(good[..cut].to_vec()) {
            let _ = g.lookup(ip("198.51.100.7"));
        }
    }
    // Flip bytes anywhere: tree, data section, metadata.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xA5;
        if let Ok(g) = GeoIp::from_bytes(bad) {
            for a in ["198.51.100.7", "192.0.2.1", "100.64.1.1", "8.8.8.8"] {
                let _ = g.lookup(ip(a));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mmdb");
    std::fs::write(&path, b"hello").unwrap();
    let e = GeoIp::open(&path).unwrap_err().to_string();
    assert!(e.contains("is not a MaxMind DB"), "{e}");
    let e = GeoIp::open(&dir.path().join("none.mmdb"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read "), "{e}");
}

async fn visit_from(srv: &TestServer, key: &str, forwarded_for: &str) -> String {
    let body = json!({"site_key": key, "url": "https://shop.example/"}).to_string();
    let res = srv
        .http
        .post(srv.url("/t/v1/visit"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://shop.example")
        .header("x-forwarded-for", forwarded_for)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Json = res.json().await.unwrap();
    v["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_visit_gets_the_city_of_its_address() {
    let geo = Arc::new(GeoIp::from_bytes(geolite2()).unwrap());
    for db in testing::databases().await {
        eprintln!("-- on {:?}", db.backend());
        let g = geo.clone();
        let srv = TestServer::start_with(db, move |c| c.geoip = Some(g)).await;
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let (sid, key) = (
            site["id"].as_str().unwrap(),
            site["public_key"].as_str().unwrap(),
        );
        let store = &srv.db.store;

        // From loopback, the server trusts X-Forwarded-For (a proxy on this host).
        let moscow = visit_from(&srv, key, "198.51.100.7, 10.0.0.1").await;
        assert_eq!(
            store
                .get_session(sid, &moscow)
                .await
                .unwrap()
                .city
                .as_deref(),
            Some("Москва")
        );
        let unknown = visit_from(&srv, key, "8.8.8.8").await;
        assert_eq!(store.get_session(sid, &unknown).await.unwrap().city, None);
        let private = visit_from(&srv, key, "10.1.2.3").await;
        assert_eq!(store.get_session(sid, &private).await.unwrap().city, None);
        srv.stop().await;
    }
}

#[tokio::test]
async fn without_a_database_no_city_is_set() {
    for db in testing::databases().await {
        let srv = TestServer::start(db).await;
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let (sid, key) = (
            site["id"].as_str().unwrap(),
            site["public_key"].as_str().unwrap(),
        );
        let sess = visit_from(&srv, key, "198.51.100.7").await;
        let got = srv.db.store.get_session(sid, &sess).await.unwrap();
        assert_eq!((got.ip.as_deref(), got.city), (Some("198.51.100.7"), None));
        srv.stop().await;
    }
}
