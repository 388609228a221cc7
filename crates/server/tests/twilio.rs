//! The Twilio-compatible voice adapter over real HTTP, on each backend, with callbacks
//! shaped as Twilio documents them (voice request, <Dial> action, status callback,
//! recording status callback). Signatures are computed here, independently of the server.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use base64::Engine as _;
use common::{each_backend, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

const TOKEN: &str = "9f2c1c0e4b3a2d1e0f9a8b7c6d5e4f3a";
const ACCOUNT: &str = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

/// Twilio's scheme: the full URL, then each POST parameter's name and value sorted by
/// name, HMAC-SHA1 with the Auth Token, base64.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn post_signed(
    srv: &TestServer,
    url: &str,
    token: &str,
    params: &[(&str, &str)],
) -> (u16, String, String) {
    let res = srv
        .http
        .post(url)
        .header("X-Twilio-Signature", twilio_signature(token, url, params))
        .form(params)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

/// The parameters of Twilio's voice request for an incoming call.
fn voice_params<'a>(sid: &'a str, from: &'a str, to: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("CalledCountry", "RU"),
        ("Caller", from),
        ("CallerCountry", "RU"),
        ("Direction", "inbound"),
        ("From", from),
        ("FromCountry", "RU"),
        ("To", to),
        ("ToCountry", "RU"),
    ]
}

/// The value of `name="..."` on the first `<tag`.
fn attr(xml: &str, tag: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}"))?;
    let end = start + xml[start..].find('>')?;
    let el = &xml[start..end];
    let at = el.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = el[at..].find('"')?;
    Some(el[at..at + len].replace("&amp;", "&"))
}

fn text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}"))?;
    let open = start + xml[start..].find('>')? + 1;
    let close = open + xml[open..].find(&format!("</{tag}>"))?;
    Some(xml[open..close].to_owned())
}

struct Setup {
    tok: String,
    sid: String,
    base: String,
    conn: Value,
}

async fn setup(srv: &TestServer, settings: Value) -> Setup {
    let (_, tok) = srv.account("A").await;
    let site = srv.create_site(&tok).await;
    let sid = site["id"].as_str().unwrap().to_owned();
    let (s, v) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/numbers"),
            &tok,
            Some(json!({"number": "+74952000050", "kind": "static", "source": "billboard"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, conn) = srv
        .call(
            "POST",
            &format!("/api/v1/sites/{sid}/telephony"),
            &tok,
            Some(json!({"provider": "twilio", "secret": TOKEN, "settings": settings})),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let voice = conn["urls"]["voice"].as_str().unwrap();
    let base = voice.strip_suffix("/voice").unwrap().to_owned();
    assert!(
        base.starts_with(&format!("{}/hooks/twilio/", srv.base)),
        "{base}"
    );
    assert_eq!(conn["webhook_url"].as_str(), Some(voice));
    assert_eq!(
        conn["urls"]["status_callback"],
        format!("{base}/status").as_str()
    );
    assert_eq!(
        conn["urls"]["recording_callback"],
        format!("{base}/recording").as_str()
    );
    Setup {
        tok,
        sid,
        base,
        conn,
    }
}

async fn calls(srv: &TestServer, tok: &str) -> Vec<Value> {
    let (_, v) = srv
        .call("GET", "/api/v1/calls?sort=oldest", tok, None)
        .await;
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn twilio_call_flow_forwards_records_and_tracks() {
    each_backend(|srv: TestServer| async move {
        let s = setup(
            &srv,
            json!({"whisper": "Call from calltrail: billboard", "whisper_language": "en-US"}),
        )
        .await;
        let base = &s.base;

        // The voice webhook: stored, answered with TwiML forwarding to the site's number.
        let voice = format!("{base}/voice");
        let (st, ct, body) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0001", "+79161112233", "+74952000050"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert!(ct.starts_with("text/xml"), "{ct}");
        assert!(
            body.starts_with("<?xml") && body.contains("<Response>"),
            "{body}"
        );
        assert_eq!(
            text(&body, "Number").as_deref(),
            Some("+79160000000"),
            "{body}"
        );
        assert_eq!(attr(&body, "Dial", "action"), Some(format!("{base}/dial")));
        assert_eq!(attr(&body, "Dial", "method").as_deref(), Some("POST"));
        assert_eq!(
            attr(&body, "Dial", "record").as_deref(),
            Some("record-from-answer-dual")
        );
        assert_eq!(
            attr(&body, "Dial", "recordingStatusCallback").as_deref(),
            s.conn["urls"]["recording_callback"].as_str()
        );
        assert_eq!(
            attr(&body, "Dial", "answerOnBridge").as_deref(),
            Some("true")
        );
        assert_eq!(
            attr(&body, "Number", "url"),
            Some(format!("{base}/whisper"))
        );
        let list = calls(&srv, &s.tok).await;
        assert_eq!(list.len(), 1);
        assert_eq!(
            (
                list[0]["status"].as_str(),
                list[0]["source"].as_str(),
                list[0]["caller"].as_str()
            ),
            (Some("ringing"), Some("billboard"), Some("+79161112233"))
        );
        assert_eq!(list[0]["provider"], "twilio");

        // A retried voice request: the same TwiML, still one call.
        let (st, _, again) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0001", "+79161112233", "+74952000050"),
        )
        .await;
        assert_eq!((st, again == body), (200, true));

        // The whisper the person answering hears.
        let (st, _, w) = post_signed(
            &srv,
            &format!("{base}/whisper"),
            TOKEN,
            &[
                ("AccountSid", ACCOUNT),
                ("CallSid", "CA0002"),
                ("CallStatus", "in-progress"),
                ("From", "+74952000050"),
                ("To", "+79160000000"),
            ],
        )
        .await;
        assert_eq!(st, 200, "{w}");
        assert_eq!(
            text(&w, "Say").as_deref(),
            Some("Call from calltrail: billboard")
        );
        assert_eq!(attr(&w, "Say", "language").as_deref(), Some("en-US"));

        // The <Dial> action: the forwarded leg was answered and lasted 42 s.
        let dial = format!("{base}/dial");
        let mut action = voice_params("CA0001", "+79161112233", "+74952000050");
        action.retain(|(k, _)| *k != "CallStatus");
        action.extend([
            ("CallStatus", "in-progress"),
            ("DialCallSid", "CA0002"),
            ("DialCallStatus", "completed"),
            ("DialCallDuration", "42"),
        ]);
        let (st, ct, twiml) = post_signed(&srv, &dial, TOKEN, &action).await;
        assert_eq!(st, 200, "{twiml}");
        assert!(
            ct.starts_with("text/xml") && twiml.contains("<Hangup/>"),
            "{twiml}"
        );
        // Delivered twice: one call, unchanged.
        let (st, _, _) = post_signed(&srv, &dial, TOKEN, &action).await;
        assert_eq!(st, 200);

        // The status callback after the call; its final status does not undo the Dial's.
        // (A few seconds on: the call ends after the <Dial> action, and the header has whole seconds.)
        let when = jiff::fmt::rfc2822::to_string(
            &jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 5)
                .unwrap()
                .in_tz("UTC")
                .unwrap(),
        )
        .unwrap();
        let mut status = voice_params("CA0001", "+79161112233", "+74952000050");
        status.retain(|(k, _)| *k != "CallStatus");
        status.extend([
            ("CallStatus", "completed"),
            ("CallDuration", "44"),
            ("Timestamp", when.as_str()),
            ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", "0"),
        ]);
        let (st, _, b) = post_signed(&srv, &format!("{base}/status"), TOKEN, &status).await;
        assert_eq!(st, 200, "{b}");

        // The recording status callback.
        let rec_url = format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE0001",
            srv.base
        );
        let rec = [
            ("AccountSid", ACCOUNT),
            ("CallSid", "CA0001"),
            ("RecordingSid", "RE0001"),
            ("RecordingUrl", rec_url.as_str()),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "41"),
            ("RecordingChannels", "2"),
            ("RecordingSource", "DialVerb"),
            ("RecordingStartTime", when.as_str()),
        ];
        let (st, _, b) = post_signed(&srv, &format!("{base}/recording"), TOKEN, &rec).await;
        assert_eq!(st, 200, "{b}");

        let list = calls(&srv, &s.tok).await;
        assert_eq!(list.len(), 1, "{list:?}");
        let c = &list[0];
        assert_eq!(
            (c["status"].as_str(), c["talk_seconds"].as_i64()),
            (Some("answered"), Some(42)),
            "{c}"
        );
        assert_eq!(c["recording_url"].as_str(), Some(rec_url.as_str()));
        let conn_id = s.conn["id"].as_str().unwrap();
        assert_eq!(
            srv.db
                .store
                .webhook_count("twilio", &format!("{conn_id}:CA0001"))
                .await
                .unwrap(),
            6
        );

        // Out of order: the status callback of a call arrives before its voice request and
        // its <Dial> action; the action's `busy` decides, a repeated status does not undo it.
        let mut early = voice_params("CA0003", "+79035550000", "+74952000050");
        early.retain(|(k, _)| *k != "CallStatus");
        early.extend([
            ("CallStatus", "completed"),
            ("CallDuration", "0"),
            ("Timestamp", when.as_str()),
        ]);
        let (st, _, b) = post_signed(&srv, &format!("{base}/status"), TOKEN, &early).await;
        assert_eq!(st, 200, "{b}");
        let (st, _, b) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0003", "+79035550000", "+74952000050"),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        let mut busy = voice_params("CA0003", "+79035550000", "+74952000050");
        busy.extend([
            ("DialCallSid", "CA0004"),
            ("DialCallStatus", "busy"),
            ("DialCallDuration", "0"),
        ]);
        let (st, _, _) = post_signed(&srv, &dial, TOKEN, &busy).await;
        assert_eq!(st, 200);
        let (st, _, _) = post_signed(&srv, &format!("{base}/status"), TOKEN, &early).await;
        assert_eq!(st, 200);

        // A caller who hangs up before the forwarded phone answers.
        let (st, _, _) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0005", "anonymous", "+74952000050"),
        )
        .await;
        assert_eq!(st, 200);
        let mut gone = voice_params("CA0005", "anonymous", "+74952000050");
        gone.extend([("DialCallStatus", "no-answer")]);
        let (st, _, _) = post_signed(&srv, &dial, TOKEN, &gone).await;
        assert_eq!(st, 200);

        let list = calls(&srv, &s.tok).await;
        assert_eq!(list.len(), 3, "{list:?}");
        let by = |sid: &str| {
            list.iter()
                .find(|c| c["provider_call_id"].as_str().unwrap().ends_with(sid))
                .unwrap()
                .clone()
        };
        assert_eq!(by(":CA0003")["status"], "busy");
        assert_eq!(by(":CA0005")["status"], "missed");
        assert_eq!(by(":CA0005")["caller"], "hidden");
        let _ = &s.sid;
        srv
    })
    .await;
}

#[tokio::test]
async fn twilio_rejects_bad_signatures_and_bodies() {
    each_backend(|srv: TestServer| async move {
        let s = setup(&srv, json!({})).await;
        let voice = format!("{}/voice", s.base);
        let params = voice_params("CA0100", "+79161112233", "+74952000050");

        // Wrong token, no signature, a parameter changed after signing, another URL signed.
        let (st, _, _) = post_signed(&srv, &voice, "not-the-token", &params).await;
        assert_eq!(st, 401);
        let r = srv.http.post(&voice).form(&params).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let mut tampered = params.clone();
        tampered.retain(|(k, _)| *k != "To");
        tampered.push(("To", "+74952000051"));
        let r = srv
            .http
            .post(&voice)
            .header(
                "X-Twilio-Signature",
                twilio_signature(TOKEN, &voice, &params),
            )
            .form(&tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = srv
            .http
            .post(&voice)
            .header(
                "X-Twilio-Signature",
                twilio_signature(TOKEN, "https://elsewhere.example/voice", &params),
            )
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // An unknown key.
        let (st, _, _) = post_signed(
            &srv,
            &format!("{}/hooks/twilio/nokey/voice", srv.base),
            TOKEN,
            &params,
        )
        .await;
        assert_eq!(st, 404);

        // Signed but missing or malformed fields: 422 naming the field.
        let without = |name: &str| {
            params
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>()
        };
        for (url, body, field) in [
            (voice.clone(), without("CallSid"), "CallSid"),
            (
                voice.clone(),
                without("To")
                    .into_iter()
                    .filter(|(k, _)| *k != "Called")
                    .collect(),
                "To",
            ),
            (
                voice.clone(),
                without("To")
                    .into_iter()
                    .filter(|(k, _)| *k != "Called")
                    .chain([("To", "12")])
                    .collect(),
                "To",
            ),
            (
                format!("{}/dial", s.base),
                [without("CallStatus"), vec![("DialCallStatus", "exploded")]].concat(),
                "DialCallStatus",
            ),
            (
                format!("{}/dial", s.base),
                without("CallStatus"),
                "DialCallStatus",
            ),
            (
                format!("{}/dial", s.base),
                [
                    without("CallStatus"),
                    vec![
                        ("DialCallStatus", "completed"),
                        ("DialCallDuration", "long"),
                    ],
                ]
                .concat(),
                "DialCallDuration",
            ),
            (
                format!("{}/status", s.base),
                [
                    without("CallStatus"),
                    vec![("CallStatus", "completed"), ("Timestamp", "noon")],
                ]
                .concat(),
                "Timestamp",
            ),
            (
                format!("{}/status", s.base),
                [without("CallStatus"), vec![("CallStatus", "exploded")]].concat(),
                "CallStatus",
            ),
            (
                format!("{}/recording", s.base),
                vec![
                    ("CallSid", "CA0100"),
                    ("RecordingSid", "RE1"),
                    ("RecordingStatus", "completed"),
                ],
                "RecordingUrl",
            ),
            // A recording of a call never seen names the missing number.
            (
                format!("{}/recording", s.base),
                vec![
                    ("CallSid", "CA0100"),
                    ("RecordingSid", "RE1"),
                    ("RecordingStatus", "completed"),
                    (
                        "RecordingUrl",
                        "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
                    ),
                ],
                "to",
            ),
        ] {
            let (st, _, b) = post_signed(&srv, &url, TOKEN, &body).await;
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            assert_eq!(
                (st, v["errors"][0]["field"].as_str()),
                (422, Some(field)),
                "{url} {body:?} -> {b}"
            );
        }
        assert!(calls(&srv, &s.tok).await.is_empty());
        assert!(srv.db.store.outbox_pending(10).await.unwrap().is_empty());

        // SignalWire's header is accepted with the same scheme; with no whisper set the
        // <Number> has no url, and recording can be turned off.
        let r = srv
            .http
            .post(&voice)
            .header(
                "X-SignalWire-Signature",
                twilio_signature(TOKEN, &voice, &params),
            )
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert_eq!(attr(&body, "Number", "url"), None, "{body}");
        assert!(attr(&body, "Dial", "record").is_some());
        assert_eq!(calls(&srv, &s.tok).await.len(), 1);
        srv
    })
    .await;
}

#[tokio::test]
async fn twilio_without_recording_or_forward_number() {
    each_backend(|srv: TestServer| async move {
        let s = setup(&srv, json!({"record": false})).await;
        let voice = format!("{}/voice", s.base);
        let (st, _, body) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0200", "+79161112233", "+74952000050"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(attr(&body, "Dial", "record"), None, "{body}");
        assert_eq!(
            attr(&body, "Dial", "recordingStatusCallback"),
            None,
            "{body}"
        );
        // A site without a number to forward to: the call is kept and rejected as busy.
        let (s2, v) = srv
            .call(
                "PATCH",
                &format!("/api/v1/sites/{}", s.sid),
                &s.tok,
                Some(json!({"forward_to": null})),
            )
            .await;
        assert_eq!((s2, v["forward_to"].is_null()), (200, true), "{v}");
        let (st, _, body) = post_signed(
            &srv,
            &voice,
            TOKEN,
            &voice_params("CA0201", "+79161112233", "+74952000050"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert!(
            body.contains("<Reject") && !body.contains("<Dial"),
            "{body}"
        );
        assert_eq!(calls(&srv, &s.tok).await.len(), 2);
        srv
    })
    .await;
}

/// Telnyx TeXML: Twilio's parameters, signed with Ed25519 over `timestamp|body`.
#[tokio::test]
async fn telnyx_texml_signed_with_ed25519() {
    use ed25519_dalek::{Signer, SigningKey};
    let signing = SigningKey::from_bytes(&[7u8; 32]);
    let public =
        base64::engine::general_purpose::STANDARD.encode(signing.verifying_key().to_bytes());
    each_backend(|srv: TestServer| {
        let (signing, public) = (signing.clone(), public.clone());
        async move {
            let s = setup(&srv, json!({"telnyx_public_key": public})).await;
            let url = format!("{}/voice", s.base);
            let params = voice_params("v3:telnyx-call-1", "+79161112233", "+74952000050");
            let body = serde_urlencoded_body(&params);
            let send = |ts: i64, sig_key: &SigningKey, body: String| {
                let mut msg = ts.to_string().into_bytes();
                msg.push(b'|');
                msg.extend_from_slice(body.as_bytes());
                let sig =
                    base64::engine::general_purpose::STANDARD.encode(sig_key.sign(&msg).to_bytes());
                srv.http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("telnyx-timestamp", ts.to_string())
                    .header("telnyx-signature-ed25519", sig)
                    .body(body)
                    .send()
            };
            let now = jiff::Timestamp::now().as_second();
            // A wrong key, an old timestamp, a tampered body: refused, nothing stored.
            let other = SigningKey::from_bytes(&[9u8; 32]);
            assert_eq!(send(now, &other, body.clone()).await.unwrap().status(), 401);
            assert_eq!(
                send(now - 3600, &signing, body.clone())
                    .await
                    .unwrap()
                    .status(),
                401
            );
            let mut msg = now.to_string().into_bytes();
            msg.push(b'|');
            msg.extend_from_slice(body.as_bytes());
            let sig =
                base64::engine::general_purpose::STANDARD.encode(signing.sign(&msg).to_bytes());
            let tampered = srv
                .http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("telnyx-timestamp", now.to_string())
                .header("telnyx-signature-ed25519", sig)
                .body(body.replace("79161112233", "79160000000"))
                .send()
                .await
                .unwrap();
            assert_eq!(tampered.status(), 401);
            assert!(calls(&srv, &s.tok).await.is_empty());
            // Signed right: TwiML back and the call stored.
            let res = send(now, &signing, body.clone()).await.unwrap();
            assert_eq!(res.status(), 200);
            assert!(res.text().await.unwrap().contains("<Dial"));
            let stored = calls(&srv, &s.tok).await;
            assert_eq!(stored.len(), 1);
            assert_eq!(
                (stored[0]["caller"].as_str(), stored[0]["source"].as_str()),
                (Some("+79161112233"), Some("billboard"))
            );
            srv
        }
    })
    .await;
}

fn serde_urlencoded_body(params: &[(&str, &str)]) -> String {
    let mut ser = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            ser.push('&');
        }
        ser.push_str(&urlencode(k));
        ser.push('=');
        ser.push_str(&urlencode(v));
    }
    ser
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
