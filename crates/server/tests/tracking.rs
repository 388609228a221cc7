//! The public tracking endpoints and the call API over real HTTP, on each backend.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use common::{each_backend, TestServer};
use serde_json::{json, Value};

const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const ORIGIN: &str = "https://www.shop.example";

/// A site with a two-number pool and its public key.
async fn setup(srv: &TestServer) -> (String, Value, String) {
    let (_, tok) = srv.account("A").await;
    let site = srv.create_site(&tok).await;
    let sid = site["id"].as_str().unwrap().to_owned();
    let (_, pool) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/pools"),
            &tok,
            Some(json!({"name": "Web", "hold_minutes": 15})),
        )
        .await;
    let pid = pool["id"].as_str().unwrap();
    for n in ["+74952000001", "+74952000002"] {
        let (s, v) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/numbers"),
                &tok,
                Some(json!({"number": n, "kind": "pool", "pool_id": pid})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/numbers"),
            &tok,
            Some(json!({"number": "+74952000099", "kind": "fallback", "pool_id": pid})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    (tok, site, pid.to_owned())
}

async fn post(
    srv: &TestServer,
    path: &str,
    origin: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = srv
        .http
        .post(srv.url(path))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", UA)
        .body(body.to_owned());
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn visit_body(key: &str, extra: &Value) -> String {
    let mut v = json!({"site_key": key, "url": "https://www.shop.example/sofas?utm_source=google&utm_medium=cpc&utm_campaign=sofas&gclid=abc", "referrer": "https://www.google.com/"});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v.to_string()
}

#[tokio::test]
async fn visit_ping_event_and_a_matched_test_call() {
    each_backend(|srv: TestServer| async move {
        let (tok, site, _) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap();
        let sid = site["id"].as_str().unwrap();

        let (s, h, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"ga_client_id": "123.456", "ym_client_id": "1700000000123"}))).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        let number = v["numbers"][0]["number"].as_str().unwrap().to_owned();
        assert_eq!(v["numbers"][0]["replaces"], "+74951234567");
        assert!(number == "+74952000001" || number == "+74952000002", "{v}");
        assert_eq!(v["numbers"][0]["display"], format!("+7 495 200-00-0{}", &number[11..]));
        assert_eq!(v["ping_s"], 30);
        let code = v["track_code"].as_str().unwrap();
        assert!(code.len() == 5 && code.bytes().all(|b| b.is_ascii_digit()));
        let session = v["session_id"].as_str().unwrap().to_owned();
        let visitor = v["visitor_id"].as_str().unwrap().to_owned();

        // A second tab of the same visitor (same session) gets the same number.
        let (_, _, v2) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"session_id": session, "visitor_id": visitor, "url": "https://shop.example/cart"}))).await;
        assert_eq!(v2["numbers"][0]["number"], number.as_str());
        assert_eq!(v2["session_id"], session.as_str());

        let ping = json!({"site_key": key, "visitor_id": visitor, "session_id": session}).to_string();
        let (s, h, p) = post(&srv, "/t/v1/ping", Some(ORIGIN), &ping).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(p["numbers"][0]["number"], number.as_str());
        let ev = json!({"site_key": key, "visitor_id": visitor, "session_id": session, "type": "pageview", "url": "https://shop.example/checkout", "title": "Checkout"}).to_string();
        let (s, _, _) = post(&srv, "/t/v1/event", Some(ORIGIN), &ev).await;
        assert_eq!(s, 200);
        let gone = json!({"site_key": key, "session_id": "0000000000000000"}).to_string();
        let (s, _, _) = post(&srv, "/t/v1/ping", Some(ORIGIN), &gone).await;
        assert_eq!(s, 410, "an unknown session must ask for a new visit");

        // A call to that number is matched to this visit.
        let (s, c) = srv.call("POST", &format!("/api/v1/sites/{sid}/test-calls"), &tok, Some(json!({"to": number, "from": "8 916 123-45-67", "call_id": "t-1"}))).await;
        assert_eq!(s, 201, "{c}");
        assert_eq!((c["method"].as_str(), c["channel"].as_str(), c["source"].as_str()), (Some("dynamic"), Some("paid_search"), Some("google")));
        assert_eq!(c["caller"], "+79161234567");
        assert_eq!(c["campaign"], "sofas");
        assert!(c["confidence"].as_f64().unwrap() >= 0.9);
        assert_eq!(c["session_id"], session.as_str());
        let (s, again) = srv.call("POST", &format!("/api/v1/sites/{sid}/test-calls"), &tok, Some(json!({"to": number, "from": "8 916 123-45-67", "call_id": "t-1"}))).await;
        assert_eq!((s, &again["id"]), (200, &c["id"]), "the same call id must make one call");

        let cid = c["id"].as_str().unwrap();
        let (_, detail) = srv.call("GET", &format!("/api/v1/calls/{cid}"), &tok, None).await;
        assert_eq!(detail["session"]["gclid"], "abc");
        assert_eq!(detail["session"]["ga_client_id"], "123.456");
        assert_eq!(detail["session"]["device"], "desktop");
        assert_eq!(detail["session"]["ip"], "127.0.0.1");
        let pages: Vec<&str> = detail["pages"].as_array().unwrap().iter().map(|p| p["url"].as_str().unwrap()).collect();
        assert_eq!(pages, ["https://www.shop.example/sofas?utm_source=google&utm_medium=cpc&utm_campaign=sofas&gclid=abc", "https://shop.example/cart", "https://shop.example/checkout"]);
        let (_, list) = srv.call("GET", &format!("/api/v1/calls?site_id={sid}"), &tok, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // An operator types the track code into an unmatched call.
        let (_, u) = srv.call("POST", &format!("/api/v1/sites/{sid}/test-calls"), &tok, Some(json!({"to": "+74951234567", "from": "hidden"}))).await;
        assert_eq!(u["method"], "unmatched");
        let uid = u["id"].as_str().unwrap();
        let (s, bad) = srv.call("POST", &format!("/api/v1/calls/{uid}/track-code"), &tok, Some(json!({"code": "12ab"}))).await;
        assert_eq!((s, bad["errors"][0]["field"].as_str()), (422, Some("code")));
        let (s, t) = srv.call("POST", &format!("/api/v1/calls/{uid}/track-code"), &tok, Some(json!({"code": code}))).await;
        assert_eq!(s, 200, "{t}");
        assert_eq!((t["method"].as_str(), t["session_id"].as_str()), (Some("track_code"), Some(session.as_str())));

        let m = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(m.contains("calltrail_visits_total{outcome=\"fresh\"} 1"), "{m}");
        assert!(m.contains("calltrail_visits_total{outcome=\"keep\"} 1"), "{m}");
        srv
    })
    .await;
}

#[tokio::test]
async fn bad_tracking_input_is_refused_and_allocates_nothing() {
    each_backend(|srv: TestServer| async move {
        let (tok, site, _) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap();
        let sid = site["id"].as_str().unwrap();
        let (s, _, v) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body("ctk_nosuchsite", &json!({})),
        )
        .await;
        assert_eq!(s, 404);
        assert!(
            v["detail"].as_str().unwrap().contains("ctk_nosuchsite"),
            "{v}"
        );
        let (s, h, _) = post(
            &srv,
            "/t/v1/visit",
            Some("https://evil.example"),
            &visit_body(key, &json!({})),
        )
        .await;
        assert_eq!(s, 403);
        assert!(h.get("access-control-allow-origin").is_none());
        // A lookalike domain is foreign too.
        let (s, _, _) = post(
            &srv,
            "/t/v1/visit",
            Some("https://shop.example.evil.com"),
            &visit_body(key, &json!({})),
        )
        .await;
        assert_eq!(s, 403);
        let (s, _, _) = post(&srv, "/t/v1/visit", Some(ORIGIN), "{not json").await;
        assert_eq!(s, 400);
        let (s, _, v) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({"url": 42})),
        )
        .await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("url")));
        let (s, _, _) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({"url": "/relative"})),
        )
        .await;
        assert_eq!(s, 422);
        let (s, _, _) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({"referrer": "x".repeat(20_000)})),
        )
        .await;
        assert_eq!(s, 413, "a body over 16 KB");
        let (s, _, _) = post(
            &srv,
            "/t/v1/ping",
            Some(ORIGIN),
            &json!({"site_key": key, "session_id": "../../etc"}).to_string(),
        )
        .await;
        assert_eq!(s, 422);
        // A bot sees the site's own number and takes nothing from the pool.
        let res = srv
            .http
            .post(srv.url("/t/v1/visit"))
            .header("origin", ORIGIN)
            .header(
                "user-agent",
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            )
            .body(visit_body(key, &json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["numbers"], json!([]));
        // None of that leased a number: the next two people get the two pool numbers.
        let (_, _, a) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({})),
        )
        .await;
        let (_, _, b) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({})),
        )
        .await;
        let mut got = vec![
            a["numbers"][0]["number"].as_str().unwrap().to_owned(),
            b["numbers"][0]["number"].as_str().unwrap().to_owned(),
        ];
        got.sort();
        assert_eq!(got, ["+74952000001", "+74952000002"]);
        // The third meets an exhausted pool: the fallback number.
        let (_, _, c) = post(
            &srv,
            "/t/v1/visit",
            Some(ORIGIN),
            &visit_body(key, &json!({})),
        )
        .await;
        assert_eq!(c["numbers"][0]["number"], "+74952000099");
        let m = srv
            .http
            .get(srv.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            m.contains("calltrail_visits_total{outcome=\"bot\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("calltrail_visits_total{outcome=\"exhausted\"} 1"),
            "{m}"
        );
        // Test calls with bad input change nothing.
        let (s, v) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/test-calls"),
                &tok,
                Some(json!({"to": "nope", "from": "+7916", "at": "yesterday"})),
            )
            .await;
        assert_eq!(s, 422);
        let fields: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["to", "from", "at"]);
        let (_, list) = srv.call("GET", "/api/v1/calls", &tok, None).await;
        assert_eq!(list["items"], json!([]));
        srv
    })
    .await;
}

#[tokio::test]
async fn rules_choose_what_a_session_sees_and_the_script_is_served() {
    each_backend(|srv: TestServer| async move {
        let (tok, site, pid) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap();
        let sid = site["id"].as_str().unwrap();
        let (_, st) = srv.call("POST", &format!("/api/v1/sites/{sid}/numbers"), &tok, Some(json!({"number": "+74952000050", "kind": "static", "source": "avito"}))).await;
        let (s, r) = srv.call("POST", &format!("/api/v1/sites/{sid}/rules"), &tok, Some(json!({"priority": 1, "match": {"referrer_domain": "avito.ru"}, "number_id": st["id"]}))).await;
        assert_eq!(s, 201, "{r}");
        let (s, _) = srv.call("POST", &format!("/api/v1/sites/{sid}/rules"), &tok, Some(json!({"priority": 2, "match": {"landing_path": "/jobs"}, "swap": false}))).await;
        assert_eq!(s, 201);
        let (s, _) = srv.call("POST", &format!("/api/v1/sites/{sid}/rules"), &tok, Some(json!({"priority": 3, "match": {"channel": "paid_search"}, "pool_id": pid}))).await;
        assert_eq!(s, 201);
        let (s, _) = srv.call("POST", &format!("/api/v1/sites/{sid}/rules"), &tok, Some(json!({"priority": 4, "match": {"landing_param": "q=диван red"}, "number_id": st["id"]}))).await;
        assert_eq!(s, 201);
        for (body, field) in [
            (json!({"match": {}}), "match"),
            (json!({"match": {"utm_source": "x"}}), "pool_id"),
            (json!({"match": {"utm_source": "x"}, "pool_id": pid, "swap": false}), "swap"),
            (json!({"match": {"colour": "red"}, "pool_id": pid}), "match.colour"),
            (json!({"match": {"landing_path": "jobs"}, "pool_id": pid}), "match.landing_path"),
            (json!({"match": {"utm_source": "x"}, "pool_id": "nope"}), "pool_id"),
        ] {
            let (s, v) = srv.call("POST", &format!("/api/v1/sites/{sid}/rules"), &tok, Some(body.clone())).await;
            assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some(field)), "{body} -> {v}");
        }
        let (_, rules) = srv.call("GET", &format!("/api/v1/sites/{sid}/rules"), &tok, None).await;
        assert_eq!(rules["items"].as_array().unwrap().len(), 4);

        let (_, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"url": "https://shop.example/", "referrer": "https://www.avito.ru/moskva/mebel"}))).await;
        assert_eq!(v["numbers"][0]["number"], "+74952000050");
        let (_, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"url": "https://shop.example/jobs/driver"}))).await;
        assert_eq!(v["numbers"], json!([]));
        // A landing parameter is read from the visit's URL, decoded as a form; what follows
        // the fragment is not the query.
        let (_, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"url": "https://shop.example/catalog?q=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD+red"}))).await;
        assert_eq!(v["numbers"][0]["number"], "+74952000050", "{v}");
        let (_, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({"url": "https://shop.example/catalog?from=tv#q=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD+red"}))).await;
        assert!(v["numbers"][0]["number"].as_str().is_some_and(|n| n != "+74952000050"), "{v}");
        let (_, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &json!({}))).await;
        assert!(v["numbers"][0]["number"].as_str().unwrap().starts_with("+7495200000"));

        // Long page data is cut, not refused: the visitor still gets a number.
        let long = json!({"title": "Диваны ".repeat(400), "referrer": format!("https://ya.ru/?q={}", "x".repeat(5000))});
        let (s, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &long)).await;
        assert_eq!(s, 200, "{v}");
        assert!(v["numbers"][0]["number"].is_string());

        let res = srv.http.get(srv.url("/t/ct.js")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/javascript"));
        assert!(res.headers()["cache-control"].to_str().unwrap().contains("max-age"));
        let etag = res.headers()["etag"].clone();
        let js = res.text().await.unwrap();
        assert!(js.contains("t/v1/") && js.contains("visit"), "not the snippet");
        let res = srv.http.get(srv.url("/t/ct.js")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(res.status(), 304);
        srv
    })
    .await;
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_quickly() {
    // Only meaningful on a real server: use the PostgreSQL test database when there is one,
    // else SQLite (closing the pool makes every query fail at once).
    let mut dbs = calltrail_store::testing::databases().await;
    let db = dbs.pop().unwrap();
    let srv = TestServer::start(db).await;
    let (_, site, _) = setup(&srv).await;
    let key = site["public_key"].as_str().unwrap().to_owned();
    srv.db.store.close().await;
    let started = std::time::Instant::now();
    let (s, _, v) = post(
        &srv,
        "/t/v1/visit",
        Some(ORIGIN),
        &visit_body(&key, &json!({})),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let r = srv.http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = srv.http.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

/// A new visitor's visit on `setup`'s site: its answer, session, pool number's id, and the
/// lease's activity as written.
async fn leased_visit(srv: &TestServer, key: &str) -> (Value, String, String, i64) {
    let (_, _, v) = post(
        srv,
        "/t/v1/visit",
        Some(ORIGIN),
        &visit_body(key, &json!({})),
    )
    .await;
    let session = v["session_id"].as_str().unwrap().to_owned();
    let number = v["numbers"][0]["number"].as_str().unwrap();
    let owner = srv.db.store.number_owner(number).await.unwrap().unwrap();
    let leased = srv.db.store.number_leases(&owner.number_id).await.unwrap()[0].last_activity;
    (v, session, owner.number_id, leased)
}

/// Whether the session's lease (and the session row) move past their first activity within
/// the heartbeats' write-back, with the pool's 15-minute hold.
async fn written_back(
    srv: &TestServer,
    site_id: &str,
    session: &str,
    number_id: &str,
    leased: i64,
) -> bool {
    for _ in 0..40 {
        let l = srv.db.store.number_leases(number_id).await.unwrap();
        let s = srv.db.store.get_session(site_id, session).await.unwrap();
        if l[0].last_activity > leased && s.last_activity.as_millisecond() > leased {
            assert_eq!(l[0].hold_until - l[0].last_activity, 15 * 60_000);
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn heartbeats_are_answered_from_memory_and_written_back() {
    each_backend(|srv: TestServer| async move {
        let (tok, site, _) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap();
        let sid = site["id"].as_str().unwrap();
        let (v, session, number_id, leased) = leased_visit(&srv, key).await;
        let number = v["numbers"][0]["number"].as_str().unwrap();

        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let ping = json!({"site_key": key, "session_id": session}).to_string();
        let (s, h, p) = post(&srv, "/t/v1/ping", Some(ORIGIN), &ping).await;
        assert_eq!(s, 200);
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(p["numbers"][0]["number"], number);
        assert_eq!(p["ping_s"], 30);
        // Written back within the flush interval.
        let moved = written_back(&srv, sid, &session, &number_id, leased).await;
        assert!(moved, "a heartbeat answered from memory never reached the store");
        let m = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(m.contains("calltrail_pings_total{path=\"memory\"} 1"), "{m}");

        // Another site's key cannot ride on this session.
        let (_, other) = srv.call("POST", "/api/v1/sites", &tok, Some(json!({"name": "Other", "domains": ["shop.example"], "timezone": "UTC", "default_region": "RU"}))).await;
        let other_ping = json!({"site_key": other["public_key"], "session_id": session}).to_string();
        let (s, _, _) = post(&srv, "/t/v1/ping", Some(ORIGIN), &other_ping).await;
        assert_eq!(s, 410);
        // An API write (that call) made the memory stale: the next ping asks the store.
        let (s, _, _) = post(&srv, "/t/v1/ping", Some(ORIGIN), &ping).await;
        assert_eq!(s, 200);
        let m = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(m.contains("calltrail_pings_total{path=\"store\"} 2"), "{m}");
        let _ = sid;
        srv
    })
    .await;
}

#[tokio::test]
async fn page_loads_of_a_remembered_session_write_their_page_and_answer_from_memory() {
    each_backend(|srv: TestServer| async move {
        let (_, site, _) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap();
        let sid = site["id"].as_str().unwrap();
        let (first, session, number_id, leased) = leased_visit(&srv, key).await;

        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let next = json!({"session_id": session, "visitor_id": first["visitor_id"], "url": "https://www.shop.example/sofas/red", "title": "Red sofa"});
        let (s, h, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &next)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(v, first, "the same session, visitor, number and track code");
        let event = json!({"site_key": key, "session_id": session, "type": "form_open", "url": "https://www.shop.example/sofas/red"}).to_string();
        let (s, _, e) = post(&srv, "/t/v1/event", Some(ORIGIN), &event).await;
        assert_eq!(s, 200, "{e}");
        assert_eq!((&e["numbers"], &e["ping_s"]), (&first["numbers"], &json!(30)));
        let m = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(m.contains("calltrail_pages_total{path=\"memory\"} 2"), "{m}");

        // Both pages were written before the answers went out.
        let pages: Vec<(String, String)> = srv.db.store.session_pages(&session).await.unwrap().into_iter().map(|p| (p.kind, p.url)).collect();
        assert_eq!(pages[1..], [("pageview".to_owned(), "https://www.shop.example/sofas/red".to_owned()), ("form_open".to_owned(), "https://www.shop.example/sofas/red".to_owned())]);
        assert_eq!(srv.db.store.get_session(sid, &session).await.unwrap().page_count, 3);
        // The session's activity and its lease's hold move on with the heartbeats.
        let moved = written_back(&srv, sid, &session, &number_id, leased).await;
        assert!(moved, "a page load answered from memory never moved the session on");

        // A session the store no longer has is not answered from memory: the page load
        // opens a new session, and the page is not written to the old one.
        let pool = sqlx::AnyPool::connect(&srv.db.url).await.unwrap();
        sqlx::query("DELETE FROM sessions WHERE id = $1").bind(&session).execute(&pool).await.unwrap();
        let (s, _, v) = post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(key, &next)).await;
        assert_eq!(s, 200, "{v}");
        assert_ne!(v["session_id"], first["session_id"]);
        let orphans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM page_views WHERE session_id = $1").bind(&session).fetch_one(&pool).await.unwrap();
        assert_eq!(orphans, 2, "only the two pages written while the session existed");
        pool.close().await;
        let m = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(m.contains("calltrail_pages_total{path=\"store\"} 1"), "{m}");
        srv
    })
    .await;
}

#[tokio::test]
async fn concurrent_new_visitors_are_opened_together_and_never_share_a_number() {
    each_backend(|srv: TestServer| async move {
        let (tok, site, _) = setup(&srv).await;
        let key = site["public_key"].as_str().unwrap().to_owned();
        let sid = site["id"].as_str().unwrap().to_owned();
        let srv = std::sync::Arc::new(srv);
        // 40 new visitors at once against a pool of two: they arrive while earlier ones
        // are being written, so most are opened in shared transactions.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (srv, key) = (srv.clone(), key.clone());
            set.spawn(async move { post(&srv, "/t/v1/visit", Some(ORIGIN), &visit_body(&key, &json!({}))).await });
        }
        let mut shown = Vec::new();
        while let Some(r) = set.join_next().await {
            let (s, _, v) = r.unwrap();
            assert_eq!(s, 200, "{v}");
            shown.push(v);
        }
        let mut numbers: Vec<&str> = shown.iter().map(|v| v["numbers"][0]["number"].as_str().unwrap()).collect();
        numbers.sort_unstable();
        assert_eq!(&numbers[..2], ["+74952000001", "+74952000002"], "each pool number goes to one visitor");
        assert!(numbers[2..].iter().all(|n| *n == "+74952000099"), "the rest see the fallback: {numbers:?}");
        let mut ids: Vec<&str> = shown.iter().map(|v| v["session_id"].as_str().unwrap()).collect();
        let mut codes: Vec<&str> = shown.iter().map(|v| v["track_code"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!((ids.len(), codes.len()), (40, 40));
        // What was answered was written: each holder's heartbeat keeps its number, and a
        // call to it finds that holder's session.
        for v in shown.iter().filter(|v| v["numbers"][0]["number"] != "+74952000099") {
            let ping = json!({"site_key": key, "session_id": v["session_id"]}).to_string();
            let (s, _, p) = post(&srv, "/t/v1/ping", Some(ORIGIN), &ping).await;
            assert_eq!((s, &p["numbers"][0]["number"]), (200, &v["numbers"][0]["number"]), "{p}");
            let body = json!({"to": v["numbers"][0]["number"], "from": "+79160000001", "call_id": format!("c-{}", v["session_id"].as_str().unwrap())});
            let (s, c) = srv.call("POST", &format!("/api/v1/sites/{sid}/test-calls"), &tok, Some(body)).await;
            assert_eq!(s, 201, "{c}");
            assert_eq!(c["session_id"], v["session_id"]);
        }
        std::sync::Arc::try_unwrap(srv).ok().unwrap()
    })
    .await;
}
