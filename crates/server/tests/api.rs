//! The REST API over real HTTP, on each backend.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use common::{each_backend, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn health_ready_metrics_openapi() {
    each_backend(|srv: TestServer| async move {
        let r = srv.http.get(srv.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = srv.http.get(srv.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let doc: Value = srv
            .http
            .get(srv.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for path in [
            "/api/v1/sites",
            "/api/v1/sites/{site_id}",
            "/api/v1/sites/{site_id}/pools",
            "/api/v1/sites/{site_id}/numbers/{number_id}",
            "/api/v1/sites/{site_id}/sources/{source_id}",
        ] {
            assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(
            doc["components"]["schemas"]["SiteCreate"]["properties"]["site_numbers"].is_object()
        );
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
            m.contains(
                "calltrail_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
            ),
            "{m}"
        );
        assert!(
            m.contains("calltrail_http_request_duration_seconds_bucket{route=\"/readyz\""),
            "{m}"
        );
        srv
    })
    .await;
}

#[tokio::test]
async fn crud_of_every_setup_resource() {
    each_backend(|srv: TestServer| async move {
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let sid = site["id"].as_str().unwrap();
        assert_eq!(site["site_numbers"], json!(["+74951234567"]));
        assert_eq!(site["forward_to"], "+79160000000");
        let key = site["public_key"].as_str().unwrap();
        let snippet = site["install_snippet"].as_str().unwrap();
        assert!(
            snippet.starts_with("<script async src=\"http://127.0.0.1:"),
            "{snippet}"
        );
        assert!(
            snippet.contains(&format!("data-site=\"{key}\"")),
            "{snippet}"
        );

        let (s, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{sid}"),
                &tok,
                Some(json!({"name": "Shop RU", "forward_to": null})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["name"], "Shop RU");
        assert_eq!(v["forward_to"], Value::Null);
        assert_eq!(
            v["site_numbers"],
            json!(["+74951234567"]),
            "untouched fields stay"
        );
        assert_eq!(v["repeat_window_days"], 90);
        let (s, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{sid}"),
                &tok,
                Some(json!({"repeat_window_days": 30})),
            )
            .await;
        assert_eq!((s, v["repeat_window_days"].as_i64()), (200, Some(30)));
        let (s, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{sid}"),
                &tok,
                Some(json!({"repeat_window_days": 0, "name": "Changed"})),
            )
            .await;
        assert_eq!(
            (s, v["errors"][0]["field"].as_str()),
            (422, Some("repeat_window_days"))
        );
        let (_, v) = srv
            .call("GET", &format!("/api/v1/sites/{sid}"), &tok, None)
            .await;
        assert_eq!(
            (v["name"].as_str(), v["repeat_window_days"].as_i64()),
            (Some("Shop RU"), Some(30)),
            "a refused patch changes nothing"
        );

        let (s, pool) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/pools"),
                &tok,
                Some(json!({"name": "Paid", "hold_minutes": 20, "on_exhaustion": "reuse"})),
            )
            .await;
        assert_eq!(s, 201, "{pool}");
        let pid = pool["id"].as_str().unwrap();
        let (s, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{sid}/pools/{pid}"),
                &tok,
                Some(json!({"hold_minutes": 30})),
            )
            .await;
        assert_eq!(
            (s, v["hold_minutes"].as_i64(), v["on_exhaustion"].as_str()),
            (200, Some(30), Some("reuse")),
            "{v}"
        );

        let (s, src) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/sources"),
                &tok,
                Some(json!({"name": "Avito", "channel": "referral"})),
            )
            .await;
        assert_eq!(s, 201, "{src}");
        assert_eq!(src["name"], "avito");
        let src_id = src["id"].as_str().unwrap();

        let mut ids = vec![];
        for (i, n) in ["8 495 100-00-01", "+7 495 100 00 02", "84951000003"]
            .iter()
            .enumerate()
        {
            let (s, v) = srv
                .call(
                    "POST",
                    &format!("/api/v1/sites/{sid}/numbers"),
                    &tok,
                    Some(json!({"number": n, "kind": "pool", "pool_id": pid})),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            assert_eq!(v["number"], format!("+749510000{:02}", i + 1));
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
        let (s, st) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/numbers"),
                &tok,
                Some(json!({"number": "8 800 555-35-35", "kind": "static", "source": "avito"})),
            )
            .await;
        assert_eq!(s, 201, "{st}");
        assert_eq!(st["number"], "+78005553535");

        // Pagination: 4 numbers, pages of 3.
        let (_, p1) = srv
            .call(
                "GET",
                &format!("/api/v1/sites/{sid}/numbers?limit=3"),
                &tok,
                None,
            )
            .await;
        assert_eq!(p1["items"].as_array().unwrap().len(), 3);
        let cur = p1["next_cursor"].as_str().unwrap();
        let (_, p2) = srv
            .call(
                "GET",
                &format!("/api/v1/sites/{sid}/numbers?limit=3&cursor={cur}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(p2["items"].as_array().unwrap().len(), 1);
        assert_eq!(p2["next_cursor"], Value::Null);
        assert_eq!(p2["items"][0]["number"], "+78005553535");

        let nid = st["id"].as_str().unwrap();
        let (s, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{sid}/numbers/{nid}"),
                &tok,
                Some(json!({"source": "billboard"})),
            )
            .await;
        assert_eq!((s, v["source"].as_str()), (200, Some("billboard")), "{v}");

        // A pool with numbers cannot be deleted; its numbers can.
        let (s, v) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/pools/{pid}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 409, "{v}");
        assert_eq!(v["status"], 409);
        for id in &ids {
            let (s, _) = srv
                .call(
                    "DELETE",
                    &format!("/api/v1/sites/{sid}/numbers/{id}"),
                    &tok,
                    None,
                )
                .await;
            assert_eq!(s, 204);
        }
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/pools/{pid}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);
        let (s, _) = srv
            .call(
                "GET",
                &format!("/api/v1/sites/{sid}/pools/{pid}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 404);
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/sources/{src_id}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);
        let (s, _) = srv
            .call("DELETE", &format!("/api/v1/sites/{sid}"), &tok, None)
            .await;
        assert_eq!(s, 204);
        let (_, list) = srv.call("GET", "/api/v1/sites", &tok, None).await;
        assert_eq!(list["items"], json!([]));
        srv
    })
    .await;
}

#[tokio::test]
async fn an_account_never_sees_or_changes_another_accounts_rows() {
    each_backend(|srv: TestServer| async move {
        let (_, a) = srv.account("A").await;
        let (_, b) = srv.account("B").await;
        let site = srv.create_site(&a).await;
        let sid = site["id"].as_str().unwrap();
        let (_, pool) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/pools"),
                &a,
                Some(json!({"name": "P"})),
            )
            .await;
        let pid = pool["id"].as_str().unwrap();
        let (_, num) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/numbers"),
                &a,
                Some(json!({"number": "+74951000001", "kind": "pool", "pool_id": pid})),
            )
            .await;
        let nid = num["id"].as_str().unwrap();
        let (_, src) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/sources"),
                &a,
                Some(json!({"name": "x"})),
            )
            .await;
        let srcid = src["id"].as_str().unwrap();

        let (_, list) = srv.call("GET", "/api/v1/sites", &b, None).await;
        assert_eq!(list["items"], json!([]));
        let attempts: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", format!("/api/v1/sites/{sid}"), None),
            (
                "PATCH",
                format!("/api/v1/sites/{sid}"),
                Some(json!({"name": "mine"})),
            ),
            ("DELETE", format!("/api/v1/sites/{sid}"), None),
            ("GET", format!("/api/v1/sites/{sid}/pools"), None),
            (
                "POST",
                format!("/api/v1/sites/{sid}/pools"),
                Some(json!({"name": "Q"})),
            ),
            ("GET", format!("/api/v1/sites/{sid}/pools/{pid}"), None),
            (
                "PATCH",
                format!("/api/v1/sites/{sid}/pools/{pid}"),
                Some(json!({"hold_minutes": 1})),
            ),
            ("DELETE", format!("/api/v1/sites/{sid}/pools/{pid}"), None),
            ("GET", format!("/api/v1/sites/{sid}/numbers"), None),
            (
                "POST",
                format!("/api/v1/sites/{sid}/numbers"),
                Some(json!({"number": "+74951000009", "kind": "static", "source": "x"})),
            ),
            ("GET", format!("/api/v1/sites/{sid}/numbers/{nid}"), None),
            (
                "PATCH",
                format!("/api/v1/sites/{sid}/numbers/{nid}"),
                Some(json!({"number": "+74951000008"})),
            ),
            ("DELETE", format!("/api/v1/sites/{sid}/numbers/{nid}"), None),
            ("GET", format!("/api/v1/sites/{sid}/sources/{srcid}"), None),
            (
                "PATCH",
                format!("/api/v1/sites/{sid}/sources/{srcid}"),
                Some(json!({"name": "y"})),
            ),
            (
                "DELETE",
                format!("/api/v1/sites/{sid}/sources/{srcid}"),
                None,
            ),
        ];
        for (m, path, body) in attempts {
            let (s, v) = srv.call(m, &path, &b, body).await;
            assert_eq!(s, 404, "B could {m} {path}: {v}");
            assert_eq!(v["type"], "urn:calltrail:problem:not-found");
        }
        // Also B's own site cannot borrow A's pool.
        let bsite = srv.create_site(&b).await;
        let bsid = bsite["id"].as_str().unwrap();
        let (s, v) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{bsid}/numbers"),
                &b,
                Some(json!({"number": "+74951000007", "kind": "pool", "pool_id": pid})),
            )
            .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["errors"][0]["field"], "pool_id");
        // A's rows are intact.
        let (_, got) = srv
            .call("GET", &format!("/api/v1/sites/{sid}"), &a, None)
            .await;
        assert_eq!(got["name"], "Shop");
        let (_, nums) = srv
            .call("GET", &format!("/api/v1/sites/{sid}/numbers"), &a, None)
            .await;
        assert_eq!(nums["items"].as_array().unwrap().len(), 1);
        assert_eq!(nums["items"][0]["number"], "+74951000001");
        srv
    })
    .await;
}

async fn site_count(srv: &TestServer, tok: &str) -> usize {
    srv.call("GET", "/api/v1/sites", tok, None).await.1["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    each_backend(|srv: TestServer| async move {
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let sid = site["id"].as_str().unwrap().to_owned();
        let before = site_count(&srv, &tok).await;

        // No token, a wrong token, a malformed header.
        let r = srv.http.get(srv.url("/api/v1/sites")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let (s, _) = srv.call("GET", "/api/v1/sites", "ctt_wrong", None).await;
        assert_eq!(s, 401);
        let r = srv.http.get(srv.url("/api/v1/sites")).header("authorization", "Basic abc").send().await.unwrap();
        assert_eq!(r.status(), 401);

        // Malformed JSON, wrong content type.
        let r = srv.http.post(srv.url("/api/v1/sites")).bearer_auth(&tok).header("content-type", "application/json").body("{\"name\": ").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains("malformed JSON"), "{v}");
        let r = srv.http.post(srv.url("/api/v1/sites")).bearer_auth(&tok).body("name=x").send().await.unwrap();
        assert_eq!(r.status(), 400);

        let cases: Vec<(Value, &str)> = vec![
            (json!({"name": "S", "domains": ["a.ru"], "timezone": "Europe/Moscow", "default_region": "RU", "colour": "red"}), "colour"),
            (json!({"name": "S", "domains": ["a.ru"], "timezone": "Europe/Moscow"}), "default_region"),
            (json!({"name": "S", "domains": "a.ru", "timezone": "Europe/Moscow", "default_region": "RU"}), "domains"),
            (json!({"name": "S", "domains": ["a.ru"], "timezone": "Europe/Moscow", "default_region": "RU", "site_numbers": ["not a phone"]}), "site_numbers[0]"),
            (json!({"name": "S", "domains": [], "timezone": "Europe/Moscow", "default_region": "RU"}), "domains"),
            (json!({"name": "S", "domains": ["a.ru"], "timezone": "Europe/Moscow", "default_region": "ZZ"}), "default_region"),
        ];
        for (body, field) in cases {
            let (s, v) = srv.call("POST", "/api/v1/sites", &tok, Some(body.clone())).await;
            assert_eq!(s, 422, "{body} -> {v}");
            assert_eq!(v["errors"][0]["field"], field, "{body} -> {v}");
            assert_eq!(v["status"], 422);
        }
        assert_eq!(site_count(&srv, &tok).await, before, "a rejected site was stored");

        // Numbers: not a phone, duplicate, wrong kind, a static without source.
        let np = format!("/api/v1/sites/{sid}/numbers");
        let (s, _) = srv.call("POST", &np, &tok, Some(json!({"number": "+74951000001", "kind": "static", "source": "avito"}))).await;
        assert_eq!(s, 201);
        for (body, status, field) in [
            (json!({"number": "12", "kind": "static", "source": "a"}), 422, Some("number")),
            (json!({"number": "8 495 100-00-01", "kind": "static", "source": "a"}), 409, None),
            (json!({"number": "+74951000002", "kind": "vanity"}), 422, Some("kind")),
            (json!({"number": "+74951000002", "kind": "static"}), 422, Some("source")),
            (json!({"number": "+74951000002", "kind": "pool", "pool_id": "nope"}), 422, Some("pool_id")),
        ] {
            let (s, v) = srv.call("POST", &np, &tok, Some(body.clone())).await;
            assert_eq!(s, status, "{body} -> {v}");
            if let Some(f) = field {
                assert_eq!(v["errors"][0]["field"], f, "{body} -> {v}");
            } else {
                assert!(v["detail"].as_str().unwrap().contains("+74951000001"), "{v}");
            }
        }
        let (_, nums) = srv.call("GET", &np, &tok, None).await;
        assert_eq!(nums["items"].as_array().unwrap().len(), 1, "a rejected number was stored");

        // Bad patches leave the site as it was.
        let (s, _) = srv.call("PATCH", &format!("/api/v1/sites/{sid}"), &tok, Some(json!({"name": "X", "timezone": "Nowhere/City"}))).await;
        assert_eq!(s, 422);
        let (_, got) = srv.call("GET", &format!("/api/v1/sites/{sid}"), &tok, None).await;
        assert_eq!(got["name"], "Shop");

        // Pools: duplicate name, bad hold.
        let pp = format!("/api/v1/sites/{sid}/pools");
        let (s, _) = srv.call("POST", &pp, &tok, Some(json!({"name": "P"}))).await;
        assert_eq!(s, 201);
        let (s, _) = srv.call("POST", &pp, &tok, Some(json!({"name": "P"}))).await;
        assert_eq!(s, 409);
        let (s, v) = srv.call("POST", &pp, &tok, Some(json!({"name": "Q", "hold_minutes": 0}))).await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("hold_minutes")));
        let (s, v) = srv.call("POST", &pp, &tok, Some(json!({"name": "Q", "hold_minutes": "ten"}))).await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("hold_minutes")), "{v}");

        // Query strings, unknown routes, a body over the limit.
        let (s, _) = srv.call("GET", "/api/v1/sites?limit=lots", &tok, None).await;
        assert_eq!(s, 400);
        let (s, _) = srv.call("GET", "/api/v1/nothing", &tok, None).await;
        assert_eq!(s, 404);
        let big = json!({"name": "x".repeat(100_000), "domains": ["a.ru"], "timezone": "UTC", "default_region": "RU"});
        let (s, _) = srv.call("POST", "/api/v1/sites", &tok, Some(big)).await;
        assert_eq!(s, 413);
        assert_eq!(site_count(&srv, &tok).await, before);
        srv
    })
    .await;
}

/// A request whose body stops arriving is answered 408 once the request timeout passes
/// (the timeout stands outside the body limits and the handler), and the server goes on
/// answering. A body over the limit is still 413 from the same stack.
#[tokio::test]
async fn a_request_that_stalls_is_answered_408_after_the_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let db = calltrail_store::testing::sqlite().await;
    let srv = TestServer::start_with(db, |c| {
        c.request_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /t/v1/visit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"site_key\":",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut head = vec![0_u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut head))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let r = srv.http.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = srv
        .http
        .post(srv.url("/t/v1/visit"))
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    srv.stop().await;
}
