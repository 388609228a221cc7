//! The Zadarma / Novofon adapter over real HTTP, on each backend, with PBX notifications
//! shaped as Zadarma documents them. Signatures are computed here, independently of the
//! server: PHP's `base64_encode(hash_hmac('sha1', $fields, $secret))`, which encodes the
//! hex digest.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use base64::Engine as _;
use common::{each_backend, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

const SECRET: &str = "b4e1f0a29c7d83e6a5c1";

fn php_signature(secret: &str, data: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let hex = hex::encode(mac.finalize().into_bytes());
    base64::engine::general_purpose::STANDARD.encode(hex)
}

/// The fields each notification's signature covers (Zadarma's PHP library, Webhook/*.php).
fn signed_string(params: &[(&str, &str)]) -> String {
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).map_or("", |(_, v)| *v);
    let fields: &[&str] = match get("event") {
        "NOTIFY_ANSWER" => &["caller_id", "destination", "call_start"],
        "NOTIFY_RECORD" => &["pbx_call_id", "call_id_with_rec"],
        _ => &["caller_id", "called_did", "call_start"],
    };
    fields.iter().map(|f| get(f)).collect()
}

async fn notify(
    srv: &TestServer,
    url: &str,
    secret: &str,
    params: &[(&str, &str)],
) -> (u16, Value) {
    let res = srv
        .http
        .post(url)
        .header("Signature", php_signature(secret, &signed_string(params)))
        .form(params)
        .send()
        .await
        .unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

/// Now, as the PBX writes it: local time in Moscow, `Y-m-d H:i:s`, less `ago` seconds.
fn pbx_time(ago: i64) -> (String, jiff::Timestamp) {
    let t = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - ago).unwrap();
    let local = t.in_tz("Europe/Moscow").unwrap();
    (local.strftime("%Y-%m-%d %H:%M:%S").to_string(), t)
}

async fn setup(srv: &TestServer, settings: Value) -> (String, String, Value) {
    let (_, tok) = srv.account("A").await;
    let site = srv.create_site(&tok).await;
    let sid = site["id"].as_str().unwrap().to_owned();
    let (s, v) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/numbers"),
            &tok,
            Some(json!({"number": "+74952000050", "kind": "static", "source": "yandex"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, conn) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/telephony"),
            &tok,
            Some(json!({"provider": "zadarma", "secret": SECRET, "settings": settings})),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let url = conn["webhook_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/hooks/zadarma/", srv.base)),
        "{url}"
    );
    (tok, url, conn)
}

async fn calls(srv: &TestServer, tok: &str) -> Vec<Value> {
    let (_, v) = srv
        .call("GET", "/api/v1/calls?sort=oldest", tok, None)
        .await;
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn zadarma_call_flow_redirects_and_tracks() {
    each_backend(|srv: TestServer| async move {
        let (tok, url, conn) = setup(&srv, json!({"redirect": "100", "caller_name": true})).await;

        // The URL check.
        let r = srv.http.get(format!("{url}?zd_echo=f8a2c1e9")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(r.text().await.unwrap(), "f8a2c1e9");
        let r = srv.http.get(format!("{}/hooks/zadarma/nokey?zd_echo=1", srv.base)).send().await.unwrap();
        assert_eq!(r.status(), 404);

        // NOTIFY_START: stored, and the reply routes the call to extension 100 with its
        // forwarding number replaced by the site's.
        let (start, t0) = pbx_time(60);
        let start_params = [("event", "NOTIFY_START"), ("call_start", start.as_str()), ("pbx_call_id", "in_0b8f2a1c"), ("caller_id", "79161112233"), ("called_did", "74952000050")];
        let (s, v) = notify(&srv, &url, SECRET, &start_params).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v, json!({"redirect": "100", "return_timeout": 0, "rewrite_forward_number": "79160000000", "caller_name": "yandex"}));
        let list = calls(&srv, &tok).await;
        assert_eq!(list.len(), 1);
        assert_eq!((list[0]["status"].as_str(), list[0]["source"].as_str(), list[0]["caller"].as_str()), (Some("ringing"), Some("yandex"), Some("+79161112233")));
        assert_eq!(list[0]["started_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), t0, "call_start is Moscow time");
        // Delivered twice: the same reply, one call.
        let (s, v2) = notify(&srv, &url, SECRET, &start_params).await;
        assert_eq!((s, v2 == v), (200, true));

        // NOTIFY_ANSWER by extension 100.
        let (s, v) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_ANSWER"), ("caller_id", "79161112233"), ("destination", "79160000000"), ("call_start", start.as_str()), ("pbx_call_id", "in_0b8f2a1c"), ("internal", "100")]).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("in_progress")), "{v}");

        // NOTIFY_END, twice.
        let end = [("event", "NOTIFY_END"), ("call_start", start.as_str()), ("pbx_call_id", "in_0b8f2a1c"), ("caller_id", "79161112233"), ("called_did", "74952000050"), ("internal", "100"), ("duration", "48"), ("disposition", "answered"), ("status_code", "16"), ("is_recorded", "1"), ("call_id_with_rec", "1593789012.3456789")];
        let (s, v) = notify(&srv, &url, SECRET, &end).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("answered")), "{v}");
        let (s, v) = notify(&srv, &url, SECRET, &end).await;
        assert_eq!((s, v["created"].as_bool()), (200, Some(false)));

        // NOTIFY_RECORD.
        let (s, v) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_RECORD"), ("call_id_with_rec", "1593789012.3456789"), ("pbx_call_id", "in_0b8f2a1c")]).await;
        assert_eq!(s, 200, "{v}");

        let list = calls(&srv, &tok).await;
        assert_eq!(list.len(), 1);
        assert_eq!((list[0]["status"].as_str(), list[0]["agent"].as_str()), (Some("answered"), Some("100")));
        assert!(list[0]["wait_seconds"].as_i64().unwrap() >= 60, "{}", list[0]);
        let conn_id = conn["id"].as_str().unwrap();
        assert_eq!(srv.db.store.webhook_count("zadarma", &format!("{conn_id}:in_0b8f2a1c")).await.unwrap(), 6);

        // Out of order: the end (busy) before the start; one call, still busy.
        let (start2, _) = pbx_time(30);
        let (s, v) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_END"), ("call_start", start2.as_str()), ("pbx_call_id", "in_77aa"), ("caller_id", "89035550000"), ("called_did", "74952000050"), ("duration", "0"), ("disposition", "busy"), ("status_code", "17"), ("is_recorded", "0"), ("call_id_with_rec", "")]).await;
        assert_eq!((s, v["status"].as_str(), v["created"].as_bool()), (200, Some("busy"), Some(true)), "{v}");
        let (s, _) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_START"), ("call_start", start2.as_str()), ("pbx_call_id", "in_77aa"), ("caller_id", "89035550000"), ("called_did", "74952000050")]).await;
        assert_eq!(s, 200);

        // Answered without NOTIFY_ANSWER: the talk time comes from `duration`.
        let (start3, _) = pbx_time(90);
        let (s, _) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_START"), ("call_start", start3.as_str()), ("pbx_call_id", "in_99cc"), ("caller_id", "0"), ("called_did", "74952000050")]).await;
        assert_eq!(s, 200);
        let (s, v) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_END"), ("call_start", start3.as_str()), ("pbx_call_id", "in_99cc"), ("caller_id", "0"), ("called_did", "74952000050"), ("duration", "30"), ("disposition", "answered"), ("status_code", "16"), ("is_recorded", "0")]).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("answered")), "{v}");

        // No answer.
        let (start4, _) = pbx_time(20);
        let (s, v) = notify(&srv, &url, SECRET, &[("event", "NOTIFY_END"), ("call_start", start4.as_str()), ("pbx_call_id", "in_55dd"), ("caller_id", "79161112233"), ("called_did", "74952000050"), ("duration", "0"), ("disposition", "no answer"), ("status_code", "19"), ("is_recorded", "0")]).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("missed")), "{v}");

        let list = calls(&srv, &tok).await;
        assert_eq!(list.len(), 4, "{list:?}");
        let by = |id: &str| list.iter().find(|c| c["provider_call_id"].as_str().unwrap().ends_with(id)).unwrap().clone();
        assert_eq!(by(":in_77aa")["status"], "busy");
        assert_eq!(by(":in_77aa")["caller"], "+79035550000");
        let c = by(":in_99cc");
        assert_eq!((c["talk_seconds"].as_i64(), c["caller"].as_str()), (Some(30), Some("hidden")), "{c}");
        assert_eq!(by(":in_55dd")["first_time"], false);
        srv
    })
    .await;
}

#[tokio::test]
async fn zadarma_rejects_bad_signatures_and_bodies() {
    each_backend(|srv: TestServer| async move {
        let (tok, url, _) = setup(&srv, json!({})).await;
        let (start, _) = pbx_time(10);
        let good = [
            ("event", "NOTIFY_START"),
            ("call_start", start.as_str()),
            ("pbx_call_id", "in_1"),
            ("caller_id", "79161112233"),
            ("called_did", "74952000050"),
        ];

        // Wrong secret, no header, a field changed after signing.
        let (s, _) = notify(&srv, &url, "guess", &good).await;
        assert_eq!(s, 401);
        let r = srv.http.post(&url).form(&good).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let sig = php_signature(SECRET, &signed_string(&good));
        let mut changed = good.to_vec();
        changed[4] = ("called_did", "74952000051");
        let r = srv
            .http
            .post(&url)
            .header("Signature", sig)
            .form(&changed)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // The raw HMAC digest in base64 (not of its hex) is not Zadarma's scheme.
        let mut mac = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signed_string(&good).as_bytes());
        let raw = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let r = srv
            .http
            .post(&url)
            .header("Signature", raw)
            .form(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // Signed but malformed: 422 naming the field.
        let without = |name: &str| {
            good.iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>()
        };
        for (body, field) in [
            (without("called_did"), "called_did"),
            (without("pbx_call_id"), "pbx_call_id"),
            (without("call_start"), "call_start"),
            (
                [without("call_start"), vec![("call_start", "yesterday")]].concat(),
                "call_start",
            ),
            (
                [without("called_did"), vec![("called_did", "12")]].concat(),
                "called_did",
            ),
            (
                vec![
                    ("event", "NOTIFY_OUT_START"),
                    ("call_start", start.as_str()),
                    ("pbx_call_id", "out_1"),
                    ("internal", "100"),
                    ("destination", "79161112233"),
                ],
                "event",
            ),
            (without("event"), "event"),
            (
                vec![
                    ("event", "NOTIFY_END"),
                    ("call_start", start.as_str()),
                    ("pbx_call_id", "in_1"),
                    ("caller_id", "79161112233"),
                    ("called_did", "74952000050"),
                    ("duration", "soon"),
                ],
                "duration",
            ),
            (
                vec![("event", "NOTIFY_RECORD"), ("pbx_call_id", "in_1")],
                "call_id_with_rec",
            ),
            // The answer of a call never started cannot be attributed.
            (
                vec![
                    ("event", "NOTIFY_ANSWER"),
                    ("caller_id", "79161112233"),
                    ("destination", "100"),
                    ("call_start", start.as_str()),
                    ("pbx_call_id", "in_2"),
                ],
                "to",
            ),
        ] {
            let (s, v) = notify(&srv, &url, SECRET, &body).await;
            assert_eq!(
                (s, v["errors"][0]["field"].as_str()),
                (422, Some(field)),
                "{body:?} -> {v}"
            );
        }
        let r = srv.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 422);
        assert!(calls(&srv, &tok).await.is_empty());
        assert!(srv.db.store.outbox_pending(10).await.unwrap().is_empty());

        // Without settings.redirect the PBX keeps its own scenario: an empty reply.
        let (s, v) = notify(&srv, &url, SECRET, &good).await;
        assert_eq!((s, v), (200, json!({})));
        assert_eq!(calls(&srv, &tok).await.len(), 1);
        srv
    })
    .await;
}

/// NOTIFY_RECORD carries no URL: with the API key set, calltrail asks Zadarma's API for the
/// recording's link (signed as Zadarma's `Client.php` signs) and keeps the file.
#[tokio::test]
async fn zadarma_recordings_are_fetched_through_the_api() {
    use md5::Digest as _;
    const KEY: &str = "3f9a1e0c7b2d";
    const REC: &str = "1593789012.3456789";
    let audio: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (api, audio, asked) = (api.clone(), audio.clone(), asked.clone());
        tokio::spawn(async move {
            let app = axum::Router::new()
                .route(
                    "/v1/pbx/record/request/",
                    axum::routing::get(move |headers: axum::http::HeaderMap, q: axum::extract::RawQuery| {
                        let (api, asked) = (api.clone(), asked.clone());
                        async move {
                            // The documented scheme, computed here independently.
                            let query = q.0.unwrap_or_default();
                            let md5 = hex::encode(md5::Md5::digest(query.as_bytes()));
                            let expect = format!("{KEY}:{}", php_signature(SECRET, &format!("/v1/pbx/record/request/{query}{md5}")));
                            let given = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                            if given != expect || query != format!("call_id={REC}&format=json") {
                                return axum::Json(json!({"status": "error", "message": "Not authorized"}));
                            }
                            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            axum::Json(json!({"status": "success", "link": format!("{api}/media/rec.mp3"), "lifetime_till": "2026-11-24 10:00:00"}))
                        }
                    }),
                )
                .route(
                    "/media/rec.mp3",
                    axum::routing::get(move || {
                        let audio = audio.clone();
                        async move { ([("content-type", "audio/mpeg")], audio) }
                    }),
                );
            axum::serve(listener, app).await.unwrap();
        });
    }
    each_backend(|srv: TestServer| {
        let (api, audio) = (api.clone(), audio.clone());
        async move {
            let (tok, url, _) = setup(&srv, json!({"api_key": KEY, "api_url": api})).await;
            let (start, _) = pbx_time(60);
            let (s, _) = notify(
                &srv,
                &url,
                SECRET,
                &[
                    ("event", "NOTIFY_START"),
                    ("call_start", &start),
                    ("pbx_call_id", "in_rec1"),
                    ("caller_id", "79161112233"),
                    ("called_did", "74952000050"),
                ],
            )
            .await;
            assert_eq!(s, 200);
            let (s, _) = notify(
                &srv,
                &url,
                SECRET,
                &[
                    ("event", "NOTIFY_RECORD"),
                    ("call_id_with_rec", REC),
                    ("pbx_call_id", "in_rec1"),
                ],
            )
            .await;
            assert_eq!(s, 200);
            let mut id = None;
            for _ in 0..100 {
                let c = calls(&srv, &tok).await;
                if c.first().is_some_and(|c| c["has_recording"] == true) {
                    id = c[0]["id"].as_str().map(str::to_owned);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let id = id.expect("the recording was not fetched through the API");
            let r = srv
                .http
                .get(srv.url(&format!("/api/v1/calls/{id}/recording")))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().as_ref(), audio.as_slice());
            srv
        }
    })
    .await;
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the API was never asked with a valid signature"
    );
}
