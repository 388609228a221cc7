//! The Twilio-compatible voice adapter (Twilio, SignalWire's compatibility API; docs/telephony.md).
//!
//! `POST /hooks/twilio/{key}/voice` answers TwiML that forwards the call to the site's
//! `forward_to` with recording and an optional whisper; `/dial` takes the `<Dial>` action,
//! `/status` the call status callback, `/recording` the recording status callback and
//! `/whisper` serves the whisper played to the person answering. Every request must carry
//! `X-Twilio-Signature` (or SignalWire's `X-SignalWire-Signature`): base64 of
//! HMAC-SHA1(Auth Token, public URL + each POST parameter's name and value, sorted by name).

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use calltrail_core::validate::Errors;
use calltrail_core::Region;
use calltrail_store::calls::{CallEvent, CallEventKind, FINAL_STATUSES};
use calltrail_store::telephony::Connection;
use calltrail_store::Site;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{connection, ingest, phone};
use crate::error::ApiError;
use crate::AppState;

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// SignalWire signs the same way with its project's signing key.
pub const SIGNALWIRE_SIGNATURE_HEADER: &str = "x-signalwire-signature";

/// Caller ids Twilio sends for withheld numbers (they spell ANONYMOUS, RESTRICTED, BLOCKED,
/// UNKNOWN and UNAVAILABLE on a keypad).
const HIDDEN_CALLERS: [&str; 5] = [
    "+266696687",
    "+7378742833",
    "+2562533",
    "+8656696",
    "+86282452253",
];

/// `application/x-www-form-urlencoded` pairs in order (`+` is a space, `%XX` a byte; a
/// stray `%` is kept as is, bytes that are not UTF-8 are replaced).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (
                    s.get(i + 1).copied().and_then(hex),
                    s.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h * 16 + l);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `X-Twilio-Signature` of a POST: base64(HMAC-SHA1(token, url + name1 + value1 + ...))
/// with the parameters sorted by name (then value), byte-wise.
pub fn signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Text for XML content and attribute values.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

fn twiml(inner: &str) -> Response {
    let body =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>{inner}</Response>\n");
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    res
}

/// A verified request: its connection, site and parameters.
struct Hook {
    conn: Connection,
    site: Site,
    region: Region,
    params: Vec<(String, String)>,
    raw: String,
    /// `{public_url}/hooks/twilio/{key}`, for the URLs in the TwiML.
    base: String,
}

impl Hook {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn call_sid(&self, errs: &mut Errors) -> String {
        match self.get("CallSid") {
            Some(s) if s.len() <= 100 => s.to_owned(),
            Some(_) => {
                errs.push("CallSid", "at most 100 characters");
                String::new()
            }
            None => {
                errs.push("CallSid", "required: the call's unique id");
                String::new()
            }
        }
    }

    /// The caller; a withheld or unreadable caller id is `hidden` (a call is never
    /// refused for its caller id).
    fn from(&self) -> Option<String> {
        let f = self.get("From").or_else(|| self.get("Caller"))?;
        if HIDDEN_CALLERS.contains(&f) {
            return Some("hidden".into());
        }
        Some(phone(f, self.region).unwrap_or_else(|| "hidden".into()))
    }

    /// The number called, when sent; `required` names it when absent.
    fn to(&self, errs: &mut Errors, required: bool) -> Option<String> {
        let Some(t) = self.get("To").or_else(|| self.get("Called")) else {
            if required {
                errs.push("To", "required: the number called");
            }
            return None;
        };
        match phone(t, self.region) {
            Some(p) if p != "hidden" => Some(p),
            _ => {
                errs.push("To", format!("`{t}` is not a phone number"));
                None
            }
        }
    }

    fn seconds(&self, errs: &mut Errors, name: &str) -> Option<i64> {
        let v = self.get(name)?;
        match v.parse::<i64>() {
            Ok(n) if (0..=30 * 86_400).contains(&n) => Some(n),
            _ => {
                errs.push(name, format!("`{v}` is not a number of seconds"));
                None
            }
        }
    }

    fn event(&self, kind: CallEventKind, call_sid: &str, now: i64) -> CallEvent {
        CallEvent {
            account_id: self.conn.account_id.clone(),
            site_id: self.conn.site_id.clone(),
            connection_id: Some(self.conn.id.clone()),
            provider: "twilio".into(),
            provider_call_id: format!("{}:{call_sid}", self.conn.id),
            kind,
            from: None,
            to: None,
            started_at: None,
            answered_at: None,
            ended_at: None,
            status: None,
            agent: None,
            recording_url: None,
            raw: self.raw.clone(),
            received_at: now,
        }
    }

    fn setting(&self, name: &str) -> Option<&str> {
        self.conn
            .settings
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// Find the connection, check the signature over the URL Twilio requested and the
/// parameters, and load the site. Nothing is read from the body before the signature holds.
async fn accept(
    st: &AppState,
    key: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<Hook, ApiError> {
    let conn = connection(st, "twilio", key).await?;
    let public = st.config.public_url.trim_end_matches('/');
    let url = format!(
        "{public}{}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let params = parse_form(body);
    if let Some(key) = conn
        .settings
        .get("telnyx_public_key")
        .and_then(|v| v.as_str())
    {
        // Telnyx TeXML speaks Twilio's parameters but signs with Ed25519.
        if let Err(why) =
            telnyx_signature_ok(key, headers, body, jiff::Timestamp::now().as_second())
        {
            st.metrics.count(
                "calltrail_webhook_rejected_total{provider=\"twilio\",reason=\"signature\"}",
            );
            return Err(ApiError::Unauthorized(why));
        }
        return load(st, conn, params, body).await;
    }
    let token = conn.secret.clone().unwrap_or_default();
    let given = headers
        .get(SIGNATURE_HEADER)
        .or_else(|| headers.get(SIGNALWIRE_SIGNATURE_HEADER))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    if token.is_empty()
        || given.is_empty()
        || !super::same(
            given.as_bytes(),
            signature(&token, &url, &params).as_bytes(),
        )
    {
        st.metrics
            .count("calltrail_webhook_rejected_total{provider=\"twilio\",reason=\"signature\"}");
        return Err(ApiError::Unauthorized(
            "X-Twilio-Signature does not match (HMAC-SHA1 with the Auth Token over the public URL and the sorted parameters)",
        ));
    }
    load(st, conn, params, body).await
}

async fn load(
    st: &AppState,
    conn: Connection,
    params: Vec<(String, String)>,
    body: &Bytes,
) -> Result<Hook, ApiError> {
    let public = st.config.public_url.trim_end_matches('/');
    let site = st.store.get_site(&conn.account_id, &conn.site_id).await?;
    let region = Region::parse(&site.default_region)?;
    let base = format!("{public}/hooks/twilio/{}", conn.hook_key);
    Ok(Hook {
        conn,
        site,
        region,
        params,
        raw: String::from_utf8_lossy(body).into_owned(),
        base,
    })
}

/// Telnyx's webhook signature: Ed25519 over `{telnyx-timestamp}|{raw body}` with the
/// account's public key (base64), the timestamp within five minutes of `now_s`.
pub fn telnyx_signature_ok(
    public_key_b64: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), &'static str> {
    use base64::Engine as _;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    const BAD: &str = "telnyx-signature-ed25519 does not verify (Ed25519 over `timestamp|body` with the account's public key)";
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64
        .decode(public_key_b64.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("the connection's telnyx_public_key is not a base64 Ed25519 public key")?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| "the connection's telnyx_public_key is not a valid Ed25519 key")?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let ts = header("telnyx-timestamp").ok_or(BAD)?;
    let when: i64 = ts.parse().map_err(|_| BAD)?;
    if (now_s - when).abs() > 300 {
        return Err("telnyx-timestamp is more than five minutes away (a replay?)");
    }
    let sig: [u8; 64] = header("telnyx-signature-ed25519")
        .and_then(|s| b64.decode(s).ok())
        .and_then(|s| s.try_into().ok())
        .ok_or(BAD)?;
    let mut msg = Vec::with_capacity(ts.len() + 1 + body.len());
    msg.extend_from_slice(ts.as_bytes());
    msg.push(b'|');
    msg.extend_from_slice(body);
    key.verify(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| BAD)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// `POST /hooks/twilio/{key}/voice`: a call comes in. Stores its start, then answers TwiML
/// that dials the site's `forward_to`.
pub async fn voice(
    State(st): State<AppState>,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h = accept(&st, &key, &headers, &uri, &body).await?;
    let mut errs = Errors::new();
    let sid = h.call_sid(&mut errs);
    let to = h.to(&mut errs, true);
    errs.finish()?;
    let now = now_ms();
    let mut ev = h.event(CallEventKind::Started, &sid, now);
    ev.from = h.from();
    ev.to = to;
    ev.started_at = Some(now);
    // Twilio may ask again (a retry, or a redirect back to this URL): same answer, one call.
    ingest(&st, &ev).await?;
    Ok(twiml(&dial(&h)))
}

/// The `<Dial>` that forwards to the site's number, or a `<Reject>` when it has none.
fn dial(h: &Hook) -> String {
    let Some(forward_to) = h.site.forward_to.as_deref() else {
        return "<Reject reason=\"busy\"/>".into();
    };
    let record = h
        .conn
        .settings
        .get("record")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    let timeout = h
        .conn
        .settings
        .get("timeout")
        .and_then(serde_json::Value::as_u64)
        .filter(|t| (5..=600).contains(t))
        .unwrap_or(30);
    let base = &h.base;
    let mut attrs = format!(
        " action=\"{}\" method=\"POST\" timeout=\"{timeout}\" answerOnBridge=\"true\"",
        xml(&format!("{base}/dial"))
    );
    if record {
        let _ = write!(
            attrs,
            " record=\"record-from-answer-dual\" recordingStatusCallback=\"{}\" recordingStatusCallbackMethod=\"POST\" recordingStatusCallbackEvent=\"completed\"",
            xml(&format!("{base}/recording"))
        );
    }
    let number_attrs = if h.setting("whisper").is_some() {
        format!(
            " url=\"{}\" method=\"POST\"",
            xml(&format!("{base}/whisper"))
        )
    } else {
        String::new()
    };
    format!(
        "<Dial{attrs}><Number{number_attrs}>{}</Number></Dial>",
        xml(forward_to)
    )
}

/// `POST /hooks/twilio/{key}/whisper`: what the person answering hears before the call is
/// connected (`settings.whisper`, in `settings.whisper_language`).
pub async fn whisper(
    State(st): State<AppState>,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h = accept(&st, &key, &headers, &uri, &body).await?;
    let Some(text) = h.setting("whisper") else {
        return Ok(twiml(""));
    };
    let lang = h
        .setting("whisper_language")
        .map(|l| format!(" language=\"{}\"", xml(l)))
        .unwrap_or_default();
    Ok(twiml(&format!("<Say{lang}>{}</Say>", xml(text))))
}

/// What a `<Dial>` ended with, as a final status.
fn dial_status(s: &str) -> Option<&'static str> {
    Some(match s {
        "completed" | "answered" => "answered",
        "busy" => "busy",
        "no-answer" | "canceled" => "missed",
        "failed" => "failed",
        _ => return None,
    })
}

/// `POST /hooks/twilio/{key}/dial`: the `<Dial>` is over; `DialCallStatus` says how.
pub async fn dial_action(
    State(st): State<AppState>,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h = accept(&st, &key, &headers, &uri, &body).await?;
    let mut errs = Errors::new();
    let sid = h.call_sid(&mut errs);
    let to = h.to(&mut errs, false);
    let status = if let Some(s) = h.get("DialCallStatus") {
        let m = dial_status(s);
        if m.is_none() {
            errs.push(
                "DialCallStatus",
                format!(
                    "`{s}` is not one of completed, answered, busy, no-answer, failed, canceled"
                ),
            );
        }
        m
    } else {
        errs.push("DialCallStatus", "required: how the <Dial> ended");
        None
    };
    let talk = h.seconds(&mut errs, "DialCallDuration");
    errs.finish()?;
    let now = now_ms();
    let mut ev = h.event(CallEventKind::Ended, &sid, now);
    ev.from = h.from();
    ev.to = to;
    ev.ended_at = Some(now);
    ev.status = status.map(str::to_owned);
    if status == Some("answered") {
        ev.answered_at = Some(now - talk.unwrap_or(0) * 1000);
    }
    ingest(&st, &ev).await?;
    Ok(twiml("<Hangup/>"))
}

/// The final status of a stored call, if it has one.
async fn stored_final(st: &AppState, h: &Hook, ev: &CallEvent) -> Result<Option<String>, ApiError> {
    let call = st
        .store
        .call_by_provider_id(&h.conn.account_id, &ev.provider, &ev.provider_call_id)
        .await?;
    Ok(call
        .map(|c| c.status)
        .filter(|s| FINAL_STATUSES.contains(&s.as_str())))
}

fn timestamp(errs: &mut Errors, h: &Hook) -> Option<i64> {
    let v = h.get("Timestamp")?;
    match jiff::fmt::rfc2822::parse(v) {
        Ok(z) => Some(z.timestamp().as_millisecond()),
        Err(e) => {
            errs.push("Timestamp", format!("not an RFC 2822 time: {e}"));
            None
        }
    }
}

/// `POST /hooks/twilio/{key}/status`: the call's status callback.
pub async fn status(
    State(st): State<AppState>,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h = accept(&st, &key, &headers, &uri, &body).await?;
    let mut errs = Errors::new();
    let sid = h.call_sid(&mut errs);
    let to = h.to(&mut errs, false);
    let at = timestamp(&mut errs, &h);
    let duration = h.seconds(&mut errs, "CallDuration");
    let call_status = h.get("CallStatus").unwrap_or("");
    let kind = match call_status {
        "queued" | "initiated" | "ringing" => Some(CallEventKind::Started),
        "in-progress" | "answered" => Some(CallEventKind::Answered),
        "completed" | "busy" | "no-answer" | "canceled" | "failed" => Some(CallEventKind::Ended),
        "" => {
            errs.push("CallStatus", "required: the call's status");
            None
        }
        other => {
            errs.push("CallStatus", format!("`{other}` is not one of queued, initiated, ringing, in-progress, completed, busy, no-answer, canceled, failed"));
            None
        }
    };
    errs.finish()?;
    let Some(kind) = kind else {
        return Err(ApiError::BadRequest("invalid CallStatus".into()));
    };
    let now = now_ms();
    let at = at.unwrap_or(now);
    let mut ev = h.event(kind, &sid, now);
    ev.from = h.from();
    ev.to = to;
    match kind {
        CallEventKind::Started => ev.started_at = Some(at),
        CallEventKind::Answered => ev.answered_at = Some(at),
        _ => {
            ev.ended_at = Some(at);
            // The <Dial> action knows best how the forwarded leg went: a final status it
            // stored stays. Otherwise the parent call's status decides; with
            // answerOnBridge a completed call with a duration was answered.
            ev.status = match stored_final(&st, &h, &ev).await? {
                Some(s) => Some(s),
                None => match call_status {
                    "busy" => Some("busy".into()),
                    "failed" => Some("failed".into()),
                    "no-answer" | "canceled" => Some("missed".into()),
                    _ => match duration {
                        Some(d) if d > 0 => {
                            ev.answered_at = Some(at - d * 1000);
                            Some("answered".into())
                        }
                        _ => None,
                    },
                },
            };
        }
    }
    ingest(&st, &ev).await?;
    Ok(twiml(""))
}

/// `POST /hooks/twilio/{key}/recording`: the recording status callback.
pub async fn recording(
    State(st): State<AppState>,
    Path(key): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let h = accept(&st, &key, &headers, &uri, &body).await?;
    let mut errs = Errors::new();
    let sid = h.call_sid(&mut errs);
    let to = h.to(&mut errs, false);
    let rec_status = h.get("RecordingStatus").unwrap_or("completed");
    let url = h.get("RecordingUrl");
    if rec_status == "completed" {
        match url {
            Some(u)
                if (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2000 => {}
            Some(u) => errs.push("RecordingUrl", format!("`{u}` is not an http(s) URL")),
            None => errs.push("RecordingUrl", "required when RecordingStatus is completed"),
        }
    }
    h.seconds(&mut errs, "RecordingDuration");
    errs.finish()?;
    let mut ev = h.event(CallEventKind::Recording, &sid, now_ms());
    ev.to = to;
    ev.from = h.from();
    // An `absent` or `failed` recording is kept in the webhook log without a URL.
    if rec_status == "completed" {
        ev.recording_url = url.map(str::to_owned);
    }
    ingest(&st, &ev).await?;
    Ok(twiml(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_documentation_example() {
        // The example on twilio.com/docs/usage/webhooks/webhooks-security.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .rev()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_form(b"To=%2B74951234567&From=+7+916&x&a=b%zz&&e=%D0%B0"),
            vec![
                ("To".to_owned(), "+74951234567".to_owned()),
                ("From".to_owned(), " 7 916".to_owned()),
                ("x".to_owned(), String::new()),
                ("a".to_owned(), "b%zz".to_owned()),
                ("e".to_owned(), "а".to_owned()),
            ]
        );
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
