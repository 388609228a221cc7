//! The Zadarma / Novofon adapter: PBX call notifications (docs/telephony.md).
//!
//! `GET /hooks/zadarma/{key}?zd_echo=X` answers `X` (Zadarma's check of the URL).
//! `POST /hooks/zadarma/{key}` takes `NOTIFY_START`, `NOTIFY_ANSWER`, `NOTIFY_END` and
//! `NOTIFY_RECORD` as form posts signed in the `Signature` header:
//! base64(hex(HMAC-SHA1(API secret, fields of the event concatenated))). The reply to
//! `NOTIFY_START` can route the call (`settings.redirect`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use calltrail_core::validate::Errors;
use calltrail_core::Region;
use calltrail_store::calls::{CallEvent, CallEventKind};
use calltrail_store::telephony::Connection;
use calltrail_store::{Call, Site};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::twilio::parse_form;
use super::{connection, ingest, phone};
use crate::error::ApiError;
use crate::AppState;

pub const SIGNATURE_HEADER: &str = "signature";

/// The events handled, and the fields each one's signature covers, in order.
pub const SIGNED_FIELDS: [(&str, &[&str]); 4] = [
    ("NOTIFY_START", &["caller_id", "called_did", "call_start"]),
    ("NOTIFY_ANSWER", &["caller_id", "destination", "call_start"]),
    ("NOTIFY_END", &["caller_id", "called_did", "call_start"]),
    ("NOTIFY_RECORD", &["pbx_call_id", "call_id_with_rec"]),
];

/// `Signature` of a notification: base64 of the lowercase hex HMAC-SHA1 of `data` (PHP's
/// `base64_encode(hash_hmac('sha1', $data, $secret))`).
pub fn signature(secret: &str, data: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    zd_echo: Option<String>,
}

/// `GET /hooks/zadarma/{key}?zd_echo=...`: Zadarma checks the URL by expecting the value
/// back as the body.
pub async fn echo(
    State(st): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Echo>,
) -> Result<Response, ApiError> {
    connection(&st, "zadarma", &key).await?;
    let Some(v) = q.zd_echo else {
        return Err(calltrail_core::Invalid::field(
            "zd_echo",
            "required: Zadarma checks the URL with ?zd_echo=<value>",
        )
        .into());
    };
    if v.len() > 200 {
        return Err(calltrail_core::Invalid::field("zd_echo", "at most 200 characters").into());
    }
    let mut res = v.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}

struct Notify {
    params: Vec<(String, String)>,
}

impl Notify {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value exactly as sent (signatures cover it untrimmed), or empty.
    fn raw(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn required<'a>(&'a self, errs: &mut Errors, name: &str, what: &str) -> Option<&'a str> {
        let v = self.get(name);
        if v.is_none() {
            errs.push(name, format!("required: {what}"));
        } else if v.is_some_and(|v| v.len() > 200) {
            errs.push(name, "at most 200 characters");
            return None;
        }
        v
    }
}

fn setting<'a>(conn: &'a Connection, name: &str) -> Option<&'a str> {
    conn.settings
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `call_start` ("2026-11-20 13:00:00", the PBX's local time) in ms, read in
/// `settings.timezone` or else the site's time zone.
fn call_start(errs: &mut Errors, v: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    let parsed = v
        .parse::<jiff::civil::DateTime>()
        .map_err(|e| e.to_string())
        .and_then(|dt| dt.to_zoned(tz.clone()).map_err(|e| e.to_string()));
    match parsed {
        Ok(z) => Some(z.timestamp().as_millisecond()),
        Err(e) => {
            errs.push(
                "call_start",
                format!("`{v}` is not a time like 2026-11-20 13:00:00: {e}"),
            );
            None
        }
    }
}

/// `NOTIFY_END`'s disposition as a final status; an unknown one is left to the times.
fn disposition(d: &str) -> Option<&'static str> {
    Some(match d.trim().to_lowercase().as_str() {
        "answered" => "answered",
        "busy" => "busy",
        "cancel" | "no answer" | "noanswer" | "no-answer" => "missed",
        "failed" | "no money" | "unallocated number" | "no limit" | "no day limit"
        | "line limit" | "no money, no limit" => "failed",
        _ => return None,
    })
}

/// The reply to `NOTIFY_START`: route the call to `settings.redirect` (an extension or
/// scenario); when that extension forwards to a phone, the number is replaced by the
/// site's `forward_to` (`rewrite_forward_number`). Without `settings.redirect` the PBX
/// follows its own scenario.
fn start_reply(conn: &Connection, site: &Site, call: &Call) -> serde_json::Value {
    let mut reply = serde_json::Map::new();
    if let Some(target) = setting(conn, "redirect") {
        reply.insert("redirect".into(), target.into());
        reply.insert("return_timeout".into(), 0.into());
        let rewrite = conn
            .settings
            .get("rewrite_forward_number")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        if let (true, Some(f)) = (rewrite, site.forward_to.as_deref()) {
            let digits: String = f.chars().filter(char::is_ascii_digit).collect();
            reply.insert("rewrite_forward_number".into(), digits.into());
        }
    }
    if conn
        .settings
        .get("caller_name")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
    {
        let name: String = call.source.chars().take(40).collect();
        reply.insert("caller_name".into(), name.into());
    }
    serde_json::Value::Object(reply)
}

/// `POST /hooks/zadarma/{key}`: one PBX notification.
pub async fn hook(
    State(st): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let conn = connection(&st, "zadarma", &key).await?;
    let n = Notify {
        params: parse_form(&body),
    };
    let event = n.get("event").unwrap_or("");
    let fields = SIGNED_FIELDS
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, f)| *f);
    // The signature first: what it covers depends only on the event's name.
    if let Some(fields) = fields {
        let data: String = fields.iter().map(|f| n.raw(f)).collect();
        let secret = conn.secret.clone().unwrap_or_default();
        let given = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        if secret.is_empty()
            || given.is_empty()
            || !super::same(given.as_bytes(), signature(&secret, &data).as_bytes())
        {
            st.metrics.count(
                "calltrail_webhook_rejected_total{provider=\"zadarma\",reason=\"signature\"}",
            );
            return Err(ApiError::Unauthorized(
                "Signature does not match (base64 of the hex HMAC-SHA1 of the event's fields with the API secret key)",
            ));
        }
    } else {
        let msg = if event.is_empty() {
            "required: NOTIFY_START, NOTIFY_ANSWER, NOTIFY_END or NOTIFY_RECORD".to_owned()
        } else {
            format!("`{event}` is not handled: send only NOTIFY_START, NOTIFY_ANSWER, NOTIFY_END and NOTIFY_RECORD to this URL")
        };
        return Err(calltrail_core::Invalid::field("event", msg).into());
    }

    let site = st.store.get_site(&conn.account_id, &conn.site_id).await?;
    let region = Region::parse(&site.default_region)?;
    let tz_name = setting(&conn, "timezone").unwrap_or(&site.timezone);
    let tz = jiff::tz::TimeZone::get(tz_name).map_err(|e| {
        ApiError::Internal(format!(
            "time zone `{tz_name}` of connection {}: {e}",
            conn.id
        ))
    })?;
    let mut errs = Errors::new();
    let pbx_call_id = n
        .required(&mut errs, "pbx_call_id", "the PBX call id")
        .unwrap_or_default()
        .to_owned();
    let from = n
        .get("caller_id")
        .map(|c| phone(c, region).unwrap_or_else(|| "hidden".into()));
    let to = if let Some(t) = n.get("called_did") {
        match phone(t, region) {
            Some(p) if p != "hidden" => Some(p),
            _ => {
                errs.push("called_did", format!("`{t}` is not a phone number"));
                None
            }
        }
    } else {
        if matches!(event, "NOTIFY_START" | "NOTIFY_END") {
            errs.push("called_did", "required: the number called");
        }
        None
    };
    let started = if let Some(v) = n.get("call_start") {
        call_start(&mut errs, v, &tz)
    } else {
        if matches!(event, "NOTIFY_START" | "NOTIFY_END") {
            errs.push("call_start", "required: when the call started");
        }
        None
    };
    let duration = n.get("duration").and_then(|d| match d.parse::<i64>() {
        Ok(s) if (0..=30 * 86_400).contains(&s) => Some(s),
        _ => {
            errs.push("duration", format!("`{d}` is not a number of seconds"));
            None
        }
    });
    if event == "NOTIFY_RECORD" {
        n.required(&mut errs, "call_id_with_rec", "the id of the recorded call");
    }
    let agent = n.get("internal").and_then(|a| {
        if a.len() > 64 {
            errs.push("internal", "1-64 characters");
            None
        } else {
            Some(a.to_owned())
        }
    });
    errs.finish()?;

    let now = jiff::Timestamp::now().as_millisecond();
    let kind = match event {
        "NOTIFY_START" => CallEventKind::Started,
        "NOTIFY_ANSWER" => CallEventKind::Answered,
        "NOTIFY_END" => CallEventKind::Ended,
        _ => CallEventKind::Recording,
    };
    let mut ev = CallEvent {
        account_id: conn.account_id.clone(),
        site_id: conn.site_id.clone(),
        connection_id: Some(conn.id.clone()),
        provider: "zadarma".into(),
        provider_call_id: format!("{}:{pbx_call_id}", conn.id),
        kind,
        from,
        to,
        started_at: started,
        answered_at: None,
        ended_at: None,
        status: None,
        agent,
        recording_url: None,
        raw: String::from_utf8_lossy(&body).into_owned(),
        received_at: now,
    };
    match kind {
        CallEventKind::Answered => ev.answered_at = Some(now),
        CallEventKind::Ended => {
            ev.ended_at = Some(now);
            let status = n.get("disposition").and_then(disposition);
            ev.status = status.map(str::to_owned);
            // Without NOTIFY_ANSWER, the answer is the end less the talk time.
            if let (Some("answered"), Some(d)) = (status, duration) {
                let known = st
                    .store
                    .call_by_provider_id(&conn.account_id, &ev.provider, &ev.provider_call_id)
                    .await?
                    .and_then(|c| c.answered_at);
                if known.is_none() {
                    ev.answered_at = Some((now - d * 1000).max(started.unwrap_or(i64::MIN)));
                }
            }
        }
        // The recording itself is fetched with the API (`pbx/record/request`, which needs
        // the API key as well); the notification is kept with its `call_id_with_rec`.
        CallEventKind::Recording | CallEventKind::Started => {}
    }
    let (call, created) = ingest(&st, &ev).await?;
    if kind == CallEventKind::Recording && !call.has_recording {
        if let (Some(rec), Some(api_key), Some(secret)) = (
            n.get("call_id_with_rec").map(str::to_owned),
            setting(&conn, "api_key").map(str::to_owned),
            conn.secret.clone(),
        ) {
            let api = setting(&conn, "api_url").unwrap_or(API_URL).to_owned();
            crate::recordings::fetch_resolved_later(&st, call.id.clone(), move |st: AppState| {
                let (api, api_key, secret, rec) =
                    (api.clone(), api_key.clone(), secret.clone(), rec.clone());
                async move { recording_link(&st, &api, &api_key, &secret, &rec).await }
            });
        }
    }
    if kind == CallEventKind::Started {
        return Ok(Json(start_reply(&conn, &site, &call)).into_response());
    }
    Ok(Json(serde_json::json!({"ok": true, "call_id": call.id, "created": created, "status": call.status}))
        .into_response())
}

/// Zadarma's API (the same for Novofon's, set `api_url`).
pub const API_URL: &str = "https://api.zadarma.com";

/// `application/x-www-form-urlencoded` as PHP's `http_build_query(..., PHP_QUERY_RFC1738)`.
fn php_query(params: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Authorization` header of a Zadarma API call: `key:base64(hex(HMAC-SHA1(secret,
/// method + params + md5(params))))`, params sorted by name (Zadarma's `Client.php`).
pub fn api_authorization(
    key: &str,
    secret: &str,
    method: &str,
    sorted_params: &[(&str, &str)],
) -> String {
    use md5::Digest as _;
    let query = php_query(sorted_params);
    let md5 = hex::encode(md5::Md5::digest(query.as_bytes()));
    format!(
        "{key}:{}",
        signature(secret, &format!("{method}{query}{md5}"))
    )
}

/// Ask the API for a recording's short-lived link (`GET /v1/pbx/record/request/`).
async fn recording_link(
    st: &AppState,
    api: &str,
    key: &str,
    secret: &str,
    call_id_with_rec: &str,
) -> anyhow::Result<String> {
    const METHOD: &str = "/v1/pbx/record/request/";
    let params = [("call_id", call_id_with_rec), ("format", "json")];
    let res: serde_json::Value = st
        .http
        .get(format!(
            "{}{METHOD}?{}",
            api.trim_end_matches('/'),
            php_query(&params)
        ))
        .header(
            "Authorization",
            api_authorization(key, secret, METHOD, &params),
        )
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if res["status"] != "success" {
        anyhow::bail!(
            "zadarma record request: {}",
            res["message"].as_str().unwrap_or("failed")
        );
    }
    res["link"]
        .as_str()
        .or_else(|| res["links"][0].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("zadarma record request: no link in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_base64_of_the_hex_digest() {
        // PHP: base64_encode(hash_hmac('sha1', 'The quick brown fox jumps over the lazy dog',
        // 'key')); hash_hmac gives the hex de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        assert_eq!(
            signature("key", "The quick brown fox jumps over the lazy dog"),
            "ZGU3YzliODViOGI3OGFhNmJjOGE3YTM2ZjcwYTkwNzAxYzlkYjRkOQ=="
        );
        assert_eq!(disposition("no answer"), Some("missed"));
        assert_eq!(disposition("no money, no limit"), Some("failed"));
        assert_eq!(disposition("what"), None);
    }
}
