//! Telephony webhooks: `/hooks/{provider}/{connection key}/...`, each provider in its own
//! wire format and signature scheme. Every adapter turns what it receives into
//! [`CallEvent`]s and hands them to [`ingest`], which attributes a new call and stores the
//! event durably before the provider gets its 2xx.

pub mod generic;
pub mod twilio;
pub mod zadarma;

use axum::routing::post;
use axum::Router;
use calltrail_core::{Phone, Region};
use calltrail_store::calls::CallEvent;
use calltrail_store::telephony::Connection;
use calltrail_store::Call;

use crate::error::ApiError;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks/generic/{key}", post(generic::hook))
        .route(
            "/hooks/generic/{key}/recording",
            post(generic::upload_recording),
        )
        .route("/hooks/twilio/{key}/voice", post(twilio::voice))
        .route("/hooks/twilio/{key}/dial", post(twilio::dial_action))
        .route("/hooks/twilio/{key}/status", post(twilio::status))
        .route("/hooks/twilio/{key}/recording", post(twilio::recording))
        .route("/hooks/twilio/{key}/whisper", post(twilio::whisper))
        .route(
            "/hooks/zadarma/{key}",
            post(zadarma::hook).get(zadarma::echo),
        )
}

/// The connection a webhook URL names, if it is of `provider`.
pub async fn connection(st: &AppState, provider: &str, key: &str) -> Result<Connection, ApiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > 100 {
        return Err(ApiError::NotFound("webhook".into()));
    }
    match st.store.connection_by_key(key).await? {
        Some(c) if c.provider == provider => Ok(c),
        _ => Err(ApiError::NotFound(
            "webhook (check the URL you pasted into the provider)".into(),
        )),
    }
}

/// A number as a provider sends it, in E.164 (read in the site's region), or `hidden`.
pub fn phone(raw: &str, region: Region) -> Option<String> {
    let t = raw.trim();
    if t.is_empty()
        || [
            "anonymous",
            "hidden",
            "unknown",
            "restricted",
            "private",
            "unavailable",
        ]
        .iter()
        .any(|h| t.eq_ignore_ascii_case(h))
    {
        return Some("hidden".into());
    }
    // Providers often send E.164 without the plus ("74951234567").
    Phone::parse(t, Some(region))
        .or_else(|_| Phone::parse(&format!("+{}", t.trim_start_matches('+')), None))
        .ok()
        .map(|p| p.as_str().to_owned())
}

/// Store an event: a call's first event is attributed by the engine first.
pub async fn ingest(st: &AppState, ev: &CallEvent) -> Result<(Call, bool), ApiError> {
    let attribution = if st
        .store
        .call_exists(&ev.provider, &ev.provider_call_id)
        .await?
    {
        None
    } else {
        let Some(to) = ev.to.as_deref() else {
            return Err(calltrail_core::Invalid::field(
                "to",
                "the first event of a call must name the number called",
            )
            .into());
        };
        let from = ev.from.as_deref().unwrap_or("hidden");
        let at = ev
            .started_at
            .or(ev.answered_at)
            .or(ev.ended_at)
            .unwrap_or(ev.received_at);
        Some(st.store.attribute(&ev.site_id, to, from, at).await?)
    };
    let (call, created) = st.store.apply_call_event(ev, attribution.as_ref()).await?;
    if let (Some(url), false) = (&call.recording_url, call.has_recording) {
        crate::recordings::fetch_later(st, call.id.clone(), url.clone());
    }
    st.metrics.count(&format!(
        "calltrail_call_events_total{{provider=\"{}\",kind=\"{}\"}}",
        ev.provider,
        ev.kind.as_str()
    ));
    Ok((call, created))
}

/// The site's region, for reading numbers without a country code.
pub async fn site_region(st: &AppState, conn: &Connection) -> Result<Region, ApiError> {
    let site = st.store.get_site(&conn.account_id, &conn.site_id).await?;
    Ok(Region::parse(&site.default_region)?)
}

/// Constant-time comparison of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_from_providers() {
        let ru = Region::parse("RU").unwrap();
        assert_eq!(phone("74951234567", ru).as_deref(), Some("+74951234567"));
        assert_eq!(phone("84951234567", ru).as_deref(), Some("+74951234567"));
        assert_eq!(phone("+74951234567", ru).as_deref(), Some("+74951234567"));
        assert_eq!(phone("anonymous", ru).as_deref(), Some("hidden"));
        assert_eq!(phone("", ru).as_deref(), Some("hidden"));
        assert_eq!(phone("12", ru), None);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
