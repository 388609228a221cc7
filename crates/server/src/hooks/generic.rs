//! The generic adapter: JSON call events signed with HMAC-SHA256 of the body, for any PBX
//! or script (docs/telephony.md).
//!
//! `POST /hooks/generic/{key}` with `X-Calltrail-Signature: sha256=<hex>` and a body
//! `{"event": "call.started" | "call.answered" | "call.ended" | "call.recording",
//!   "call_id", "from", "to", "at", "started_at", "answered_at", "ended_at", "status",
//!   "agent", "recording_url"}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use calltrail_core::validate::Errors;
use calltrail_store::calls::{CallEvent, CallEventKind, FINAL_STATUSES};
use calltrail_store::telephony::Connection;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{connection, ingest, phone, site_region};
use crate::error::ApiError;
use crate::extract::parse_json;
use crate::AppState;

pub const SIGNATURE_HEADER: &str = "x-calltrail-signature";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    event: String,
    call_id: String,
    from: Option<String>,
    to: Option<String>,
    at: Option<String>,
    started_at: Option<String>,
    answered_at: Option<String>,
    ended_at: Option<String>,
    status: Option<String>,
    agent: Option<String>,
    recording_url: Option<String>,
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn time(errs: &mut Errors, field: &str, v: Option<&str>) -> Option<i64> {
    let v = v?;
    errs.check(
        field,
        v.parse::<jiff::Timestamp>()
            .map(jiff::Timestamp::as_millisecond)
            .map_err(|e| calltrail_core::Invalid::field("", format!("not an RFC 3339 time: {e}"))),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    call_id: String,
}

/// `POST /hooks/generic/{key}/recording?call_id=...`: the recording's bytes as the body
/// (`Content-Type: audio/mpeg`, `audio/wav` or `audio/ogg`), signed like events.
pub async fn upload_recording(
    State(st): State<AppState>,
    Path(key): Path<String>,
    axum::extract::Query(q): axum::extract::Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let conn = verified(&st, &key, &headers, &body).await?;
    if body.is_empty() {
        return Err(calltrail_core::Invalid::field("body", "the recording's bytes").into());
    }
    let provider_call_id = format!("{}:{}", conn.id, q.call_id.trim());
    let Some(call) = st
        .store
        .call_by_provider_id(&conn.account_id, "generic", &provider_call_id)
        .await?
    else {
        return Err(ApiError::NotFound(format!(
            "call `{}` (send its events first)",
            q.call_id
        )));
    };
    let ext = match headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
    {
        ct if ct.contains("mpeg") || ct.contains("mp3") => "mp3",
        ct if ct.contains("wav") => "wav",
        ct if ct.contains("ogg") => "ogg",
        other => {
            return Err(calltrail_core::Invalid::field(
                "content-type",
                format!("`{other}`: send audio/mpeg, audio/wav or audio/ogg"),
            )
            .into());
        }
    };
    crate::recordings::keep(&st, &call.id, &body, ext)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        serde_json::json!({"ok": true, "call_id": call.id, "bytes": body.len()}),
    ))
}

/// The generic connection a URL names, once the body's signature checks out.
async fn verified(
    st: &AppState,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Connection, ApiError> {
    let conn = connection(st, "generic", key).await?;
    let secret = conn.secret.clone().unwrap_or_default();
    let given = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() || !super::same(given.as_bytes(), sign(&secret, body).as_bytes()) {
        st.metrics
            .count("calltrail_webhook_rejected_total{provider=\"generic\",reason=\"signature\"}");
        return Err(ApiError::Unauthorized(
            "X-Calltrail-Signature does not match the body (HMAC-SHA256 with the connection's secret)",
        ));
    }
    Ok(conn)
}

pub async fn hook(
    State(st): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let conn = verified(&st, &key, &headers, &body).await?;
    let b: Body = parse_json(&body)?;
    let region = site_region(&st, &conn).await?;
    let mut errs = Errors::new();
    let kind = match b.event.as_str() {
        "call.started" => Some(CallEventKind::Started),
        "call.answered" => Some(CallEventKind::Answered),
        "call.ended" => Some(CallEventKind::Ended),
        "call.recording" => Some(CallEventKind::Recording),
        other => {
            errs.push("event", format!("`{other}` is not one of call.started, call.answered, call.ended, call.recording"));
            None
        }
    };
    if b.call_id.trim().is_empty() || b.call_id.len() > 200 {
        errs.push("call_id", "1-200 characters");
    }
    let from = b.from.as_deref().and_then(|f| {
        let p = phone(f, region);
        if p.is_none() {
            errs.push("from", format!("`{f}` is not a phone number"));
        }
        p
    });
    let to = b.to.as_deref().and_then(|t| match phone(t, region) {
        Some(p) if p != "hidden" => Some(p),
        _ => {
            errs.push("to", format!("`{t}` is not a phone number"));
            None
        }
    });
    let at = time(&mut errs, "at", b.at.as_deref());
    let started_at = time(&mut errs, "started_at", b.started_at.as_deref());
    let answered_at = time(&mut errs, "answered_at", b.answered_at.as_deref());
    let ended_at = time(&mut errs, "ended_at", b.ended_at.as_deref());
    if let Some(s) = &b.status {
        if !FINAL_STATUSES.contains(&s.as_str()) {
            errs.push(
                "status",
                format!("`{s}` is not one of {}", FINAL_STATUSES.join(", ")),
            );
        }
    }
    if let Some(u) = &b.recording_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2000 {
            errs.push("recording_url", "an http(s) URL");
        }
    }
    if b.agent
        .as_ref()
        .is_some_and(|a| a.trim().is_empty() || a.len() > 64)
    {
        errs.push("agent", "1-64 characters");
    }
    errs.finish()?;
    let Some(kind) = kind else {
        return Err(ApiError::BadRequest("invalid event".into()));
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let at = at.unwrap_or(now);
    let ev = CallEvent {
        account_id: conn.account_id.clone(),
        site_id: conn.site_id.clone(),
        connection_id: Some(conn.id.clone()),
        provider: "generic".into(),
        provider_call_id: format!("{}:{}", conn.id, b.call_id.trim()),
        kind,
        from,
        to,
        started_at: started_at.or((kind == CallEventKind::Started).then_some(at)),
        answered_at: answered_at.or((kind == CallEventKind::Answered).then_some(at)),
        ended_at: ended_at.or((kind == CallEventKind::Ended).then_some(at)),
        status: b.status,
        agent: b.agent.map(|a| a.trim().to_owned()),
        recording_url: b.recording_url,
        raw: String::from_utf8_lossy(&body).into_owned(),
        received_at: now,
    };
    let (call, created) = ingest(&st, &ev).await?;
    Ok(Json(
        serde_json::json!({"ok": true, "call_id": call.id, "created": created, "status": call.status}),
    ))
}
