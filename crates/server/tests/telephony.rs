//! Telephony webhooks over real HTTP, on each backend: the generic adapter, connections,
//! agents, out-of-order and repeated events, signatures.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use calltrail_server::hooks::generic::{sign, SIGNATURE_HEADER};
use common::{each_backend, TestServer};
use serde_json::{json, Value};

async fn hook(srv: &TestServer, url: &str, secret: &str, body: &Value) -> (u16, Value) {
    let raw = body.to_string();
    let res = srv
        .http
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sign(secret, raw.as_bytes()))
        .body(raw)
        .send()
        .await
        .unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn generic_adapter_builds_one_call_from_events_in_any_order() {
    each_backend(|srv: TestServer| async move {
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let sid = site["id"].as_str().unwrap();
        let (s, st) = srv.call("POST", &format!("/api/v1/sites/{sid}/numbers"), &tok, Some(json!({"number": "+74952000050", "kind": "static", "source": "billboard"}))).await;
        assert_eq!(s, 201, "{st}");
        let (s, conn) = srv.call("POST", &format!("/api/v1/sites/{sid}/telephony"), &tok, Some(json!({"provider": "generic"}))).await;
        assert_eq!(s, 201, "{conn}");
        let url = conn["webhook_url"].as_str().unwrap().to_owned();
        let secret = conn["secret"].as_str().unwrap().to_owned();
        assert!(url.starts_with(&srv.base) && url.contains("/hooks/generic/"), "{url}");
        let (_, list) = srv.call("GET", &format!("/api/v1/sites/{sid}/telephony"), &tok, None).await;
        assert_eq!(list[0]["secret"], Value::Null, "a secret is shown once");
        let (s, _) = srv.call("POST", &format!("/api/v1/sites/{sid}/agents"), &tok, Some(json!({"ext": "101", "name": "Ольга"}))).await;
        assert_eq!(s, 201);

        let t0 = "2026-11-20T10:00:00Z";
        let (s, v) = hook(&srv, &url, &secret, &json!({"event": "call.started", "call_id": "c1", "from": "8 916 111-22-33", "to": "+74952000050", "at": t0})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["created"].as_bool(), v["status"].as_str()), (Some(true), Some("ringing")));
        let id = v["call_id"].as_str().unwrap().to_owned();
        let (_, v) = hook(&srv, &url, &secret, &json!({"event": "call.answered", "call_id": "c1", "at": "2026-11-20T10:00:12Z", "agent": "101"})).await;
        assert_eq!(v["status"], "in_progress");
        let ended = json!({"event": "call.ended", "call_id": "c1", "at": "2026-11-20T10:03:12Z"});
        let (_, v) = hook(&srv, &url, &secret, &ended).await;
        assert_eq!(v["status"], "answered");
        // The same webhook delivered twice makes one call and changes nothing.
        let (s, v) = hook(&srv, &url, &secret, &ended).await;
        assert_eq!((s, v["created"].as_bool()), (200, Some(false)));
        let (_, c) = srv.call("GET", &format!("/api/v1/calls/{id}"), &tok, None).await;
        assert_eq!((c["status"].as_str(), c["wait_seconds"].as_i64(), c["talk_seconds"].as_i64()), (Some("answered"), Some(12), Some(180)), "{c}");
        assert_eq!((c["agent"].as_str(), c["agent_name"].as_str()), (Some("101"), Some("Ольга")));
        assert_eq!((c["method"].as_str(), c["source"].as_str(), c["caller"].as_str()), (Some("static"), Some("billboard"), Some("+79161112233")));
        assert_eq!(c["first_time"], true);
        assert_eq!(srv.db.store.webhook_count("generic", &format!("{}:c1", conn["id"].as_str().unwrap())).await.unwrap(), 4);

        // Out of order: the end arrives first, then the start; a repeat caller.
        let (s, v) = hook(&srv, &url, &secret, &json!({"event": "call.ended", "call_id": "c2", "from": "+79161112233", "to": "+74952000050", "started_at": "2026-11-21T09:00:00Z", "at": "2026-11-21T09:00:40Z", "status": "busy"})).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("busy")), "{v}");
        let (_, v) = hook(&srv, &url, &secret, &json!({"event": "call.started", "call_id": "c2", "at": "2026-11-21T09:00:00Z"})).await;
        assert_eq!(v["status"], "busy", "a late start must not reopen an ended call");
        let (_, calls) = srv.call("GET", &format!("/api/v1/calls?site_id={sid}&sort=oldest"), &tok, None).await;
        let items = calls["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[1]["first_time"].as_bool(), items[1]["wait_seconds"].as_i64()), (Some(false), Some(40)));

        // Work with calls: filters and the PATCH.
        let (_, f) = srv.call("GET", &format!("/api/v1/calls?site_id={sid}&first_time=true"), &tok, None).await;
        assert_eq!(f["items"].as_array().unwrap().len(), 1);
        let (_, f) = srv.call("GET", &format!("/api/v1/calls?site_id={sid}&status=busy&from=2026-11-21&to=2026-11-21"), &tok, None).await;
        assert_eq!(f["items"].as_array().unwrap().len(), 1);
        let (_, f) = srv.call("GET", &format!("/api/v1/calls?site_id={sid}&min_duration=60&agent=101"), &tok, None).await;
        assert_eq!(f["items"][0]["id"], id.as_str());
        let (s, v) = srv.call("PATCH", &format!("/api/v1/calls/{id}"), &tok, Some(json!({"category": "target", "tags": ["Sofa", "sofa", "delivery"], "deal_value": 45990.5, "comment": "ordered"}))).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["category"].as_str(), v["deal_value"].as_f64()), (Some("target"), Some(45990.5)));
        assert_eq!(v["tags"], json!(["sofa", "delivery"]));
        let (_, f) = srv.call("GET", "/api/v1/calls?tag=sofa&category=target", &tok, None).await;
        assert_eq!(f["items"].as_array().unwrap().len(), 1);
        let (s, v) = srv.call("PATCH", &format!("/api/v1/calls/{id}"), &tok, Some(json!({"category": "gold", "deal_value": -1}))).await;
        assert_eq!(s, 422);
        assert_eq!(v["errors"].as_array().unwrap().len(), 2);
        let (s, v) = srv.call("GET", "/api/v1/calls?from=yesterday", &tok, None).await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("from")));

        // Every change went to the outbox.
        let events = srv.db.store.outbox_pending(100).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["call.created", "call.answered", "call.ended", "call.ended", "call.created", "call.started", "call.updated"]);
        srv
    })
    .await;
}

#[tokio::test]
async fn bad_webhooks_store_nothing() {
    each_backend(|srv: TestServer| async move {
        let (_, tok) = srv.account("A").await;
        let site = srv.create_site(&tok).await;
        let sid = site["id"].as_str().unwrap();
        let (_, conn) = srv.call("POST", &format!("/api/v1/sites/{sid}/telephony"), &tok, Some(json!({"provider": "generic", "secret": "s3cret"}))).await;
        let url = conn["webhook_url"].as_str().unwrap().to_owned();
        let good = json!({"event": "call.started", "call_id": "x", "from": "+79160000000", "to": "+74951234567"});
        // Wrong secret, no signature, wrong key, wrong provider path.
        let (s, _) = hook(&srv, &url, "guess", &good).await;
        assert_eq!(s, 401);
        let r = srv.http.post(&url).header("content-type", "application/json").body(good.to_string()).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let (s, _) = hook(&srv, &format!("{}/hooks/generic/nokey", srv.base), "s3cret", &good).await;
        assert_eq!(s, 404);
        // Signed but malformed: 400 or 422 naming the field.
        let r = srv.http.post(&url).header(SIGNATURE_HEADER, sign("s3cret", b"{oops")).body("{oops").send().await.unwrap();
        assert_eq!(r.status(), 400);
        for (body, field) in [
            (json!({"event": "call.exploded", "call_id": "x"}), "event"),
            (json!({"event": "call.started", "call_id": "x", "to": "12"}), "to"),
            (json!({"event": "call.started", "call_id": "x", "to": "+74951234567", "at": "noon"}), "at"),
            (json!({"event": "call.ended", "call_id": "x", "to": "+74951234567", "status": "exploded"}), "status"),
            (json!({"event": "call.started", "call_id": "x", "to": "+74951234567", "colour": 1}), "colour"),
            (json!({"event": "call.answered", "call_id": "never-started"}), "to"),
        ] {
            let (s, v) = hook(&srv, &url, "s3cret", &body).await;
            assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some(field)), "{body} -> {v}");
        }
        let (_, calls) = srv.call("GET", "/api/v1/calls", &tok, None).await;
        assert_eq!(calls["items"], json!([]));
        assert!(srv.db.store.outbox_pending(10).await.unwrap().is_empty());
        // Connection validation.
        for (body, field) in [
            (json!({"provider": "skype"}), "provider"),
            (json!({"provider": "twilio"}), "secret"),
            (json!({"provider": "asterisk_ami", "secret": "x", "settings": {"port": 99999}}), "settings.host"),
        ] {
            let (s, v) = srv.call("POST", &format!("/api/v1/sites/{sid}/telephony"), &tok, Some(body.clone())).await;
            assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some(field)), "{body} -> {v}");
        }
        srv
    })
    .await;
}

#[tokio::test]
async fn recordings_are_fetched_kept_and_served_with_ranges() {
    // A provider's media server: serves one recording.
    let audio: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let served = audio.clone();
    let media = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let media_addr = media.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/rec/{name}",
            axum::routing::get(move || {
                let body = served.clone();
                async move { ([("content-type", "audio/mpeg")], body) }
            }),
        );
        axum::serve(media, app).await.unwrap();
    });
    each_backend(|srv: TestServer| {
        let audio = audio.clone();
        async move {
            let (_, tok) = srv.account("A").await;
            let (_, other) = srv.account("B").await;
            let site = srv.create_site(&tok).await;
            let sid = site["id"].as_str().unwrap();
            let (_, conn) = srv.call("POST", &format!("/api/v1/sites/{sid}/telephony"), &tok, Some(json!({"provider": "generic", "secret": "k"}))).await;
            let url = conn["webhook_url"].as_str().unwrap().to_owned();
            let (_, v) = hook(&srv, &url, "k", &json!({"event": "call.ended", "call_id": "r1", "from": "+79160000000", "to": "+74951234567"})).await;
            let id = v["call_id"].as_str().unwrap().to_owned();
            let (s, _) = hook(&srv, &url, "k", &json!({"event": "call.recording", "call_id": "r1", "recording_url": format!("http://{media_addr}/rec/r1")})).await;
            assert_eq!(s, 200);
            // The fetch runs in the background: wait for it.
            let mut kept = false;
            for _ in 0..100 {
                let (_, c) = srv.call("GET", &format!("/api/v1/calls/{id}"), &tok, None).await;
                if c["has_recording"] == true {
                    kept = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            assert!(kept, "the recording was not fetched");
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id}/recording"))).bearer_auth(&tok).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "audio/mpeg");
            assert_eq!(r.bytes().await.unwrap().as_ref(), audio.as_slice());
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id}/recording"))).bearer_auth(&tok).header("range", "bytes=100-199").send().await.unwrap();
            assert_eq!(r.status(), 206);
            assert_eq!(r.headers()["content-range"], "bytes 100-199/4000");
            assert_eq!(r.bytes().await.unwrap().as_ref(), &audio[100..200]);
            // Only the account's users.
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id}/recording"))).send().await.unwrap();
            assert_eq!(r.status(), 401);
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id}/recording"))).bearer_auth(&other).send().await.unwrap();
            assert_eq!(r.status(), 404);

            // The generic adapter can upload a recording instead.
            let (_, v) = hook(&srv, &url, "k", &json!({"event": "call.ended", "call_id": "r2", "from": "+79160000000", "to": "+74951234567"})).await;
            let id2 = v["call_id"].as_str().unwrap().to_owned();
            let bytes = b"RIFF....WAVEfmt fake".to_vec();
            let up = srv.http.post(format!("{url}/recording?call_id=r2")).header("content-type", "audio/wav").header(SIGNATURE_HEADER, sign("k", &bytes)).body(bytes.clone()).send().await.unwrap();
            assert_eq!(up.status(), 200);
            let bad = srv.http.post(format!("{url}/recording?call_id=r2")).header("content-type", "audio/wav").header(SIGNATURE_HEADER, sign("wrong", &bytes)).body(bytes.clone()).send().await.unwrap();
            assert_eq!(bad.status(), 401);
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id2}/recording"))).bearer_auth(&tok).send().await.unwrap();
            assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());

            // Retention: a 1-day retention removes recordings of calls older than a day.
            let (s, a) = srv.call("PATCH", "/api/v1/account", &tok, Some(json!({"recording_retention_days": 1}))).await;
            assert_eq!((s, a["recording_retention_days"].as_i64()), (200, Some(1)));
            let (s, _) = srv.call("PATCH", "/api/v1/account", &tok, Some(json!({"recording_retention_days": 0}))).await;
            assert_eq!(s, 422);
            let (_, v) = hook(&srv, &url, "k", &json!({"event": "call.ended", "call_id": "old", "from": "+79160000000", "to": "+74951234567", "started_at": "2020-01-01T10:00:00Z"})).await;
            let old = v["call_id"].as_str().unwrap().to_owned();
            let up = srv.http.post(format!("{url}/recording?call_id=old")).header("content-type", "audio/mpeg").header(SIGNATURE_HEADER, sign("k", &bytes)).body(bytes.clone()).send().await.unwrap();
            assert_eq!(up.status(), 200);
            let st = calltrail_server::AppState::new(srv.db.store.clone(), calltrail_server::ServerConfig { data_dir: srv.data_dir.path().to_owned(), ..Default::default() });
            calltrail_server::recordings::sweep(&st).await.unwrap();
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{old}/recording"))).bearer_auth(&tok).send().await.unwrap();
            assert_eq!(r.status(), 404, "an expired recording must be gone");
            let r = srv.http.get(srv.url(&format!("/api/v1/calls/{id2}/recording"))).bearer_auth(&tok).send().await.unwrap();
            assert_eq!(r.status(), 200, "a recent one stays");
            srv
        }
    })
    .await;
}

#[tokio::test]
async fn agents_and_connections_refuse_bad_input_and_other_accounts() {
    each_backend(|srv: TestServer| async move {
        let (_, tok) = srv.account("A").await;
        let (_, other) = srv.account("B").await;
        let site = srv.create_site(&tok).await;
        let sid = site["id"].as_str().unwrap();
        let (s, agent) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/agents"),
                &tok,
                Some(json!({"ext": "101", "name": "Ольга"})),
            )
            .await;
        assert_eq!(s, 201, "{agent}");
        let (s, v) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/agents"),
                &tok,
                Some(json!({"ext": "101", "name": "Ivan"})),
            )
            .await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/agents"),
                &tok,
                Some(json!({"ext": " ", "name": "Ivan"})),
            )
            .await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("ext")));
        let (s, _) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/agents"),
                &other,
                Some(json!({"ext": "102", "name": "X"})),
            )
            .await;
        assert_eq!(s, 404, "another account cannot add agents to this site");
        let aid = agent["id"].as_str().unwrap();
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/agents/{aid}"),
                &other,
                None,
            )
            .await;
        assert_eq!(s, 404);
        let (_, list) = srv
            .call("GET", &format!("/api/v1/sites/{sid}/agents"), &tok, None)
            .await;
        assert_eq!(
            list.as_array().unwrap().len(),
            1,
            "refused requests changed nothing"
        );
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/agents/{aid}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);

        let (_, conn) = srv
            .call(
                "POST",
                &format!("/api/v1/sites/{sid}/telephony"),
                &tok,
                Some(json!({"provider": "generic"})),
            )
            .await;
        let cid = conn["id"].as_str().unwrap();
        let (s, _) = srv
            .call(
                "GET",
                &format!("/api/v1/sites/{sid}/telephony"),
                &other,
                None,
            )
            .await;
        assert_eq!(s, 404);
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/telephony/{cid}"),
                &other,
                None,
            )
            .await;
        assert_eq!(s, 404);
        let (s, v) = srv
            .call(
                "PATCH",
                "/api/v1/account",
                &tok,
                Some(json!({"colour": "red"})),
            )
            .await;
        assert_eq!((s, v["errors"][0]["field"].as_str()), (422, Some("colour")));
        // A deleted connection's webhook URL stops working.
        let (s, _) = srv
            .call(
                "DELETE",
                &format!("/api/v1/sites/{sid}/telephony/{cid}"),
                &tok,
                None,
            )
            .await;
        assert_eq!(s, 204);
        let (s, _) = hook(
            &srv,
            conn["webhook_url"].as_str().unwrap(),
            conn["secret"].as_str().unwrap(),
            &json!({"event": "call.started", "call_id": "z", "to": "+74951234567"}),
        )
        .await;
        assert_eq!(s, 404);
        srv
    })
    .await;
}
