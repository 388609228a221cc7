//! What the store returns: rows as the API shows them.

use serde::Serialize;
use utoipa::ToSchema;

/// A page of a list, with the cursor for the next page (absent on the last one).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    pub id: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub account_id: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Site {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// Domains the site runs on; each covers its subdomains, on any port.
    pub domains: Vec<String>,
    /// IANA time zone the site's reports use.
    pub timezone: String,
    /// Region for numbers written without a country code (ISO 3166-1 alpha-2).
    pub default_region: String,
    /// The numbers printed on the site (E.164) that the script replaces.
    pub site_numbers: Vec<String>,
    /// Where calls to tracking numbers are forwarded (E.164).
    pub forward_to: Option<String>,
    /// A caller counts as a repeat caller within this many days of an earlier call.
    pub repeat_window_days: i64,
    /// The key the snippet carries to identify the site; public.
    pub public_key: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pool {
    pub id: String,
    pub site_id: String,
    pub name: String,
    /// Minutes a number stays with a visitor after their last activity.
    pub hold_minutes: i64,
    /// `fallback` or `reuse`.
    pub on_exhaustion: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Source {
    pub id: String,
    pub site_id: String,
    /// Lowercase name, as in `utm_source` and reports (e.g. `avito`).
    pub name: String,
    /// The channel this source reports under.
    pub channel: String,
    pub description: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrackingNumber {
    pub id: String,
    pub site_id: String,
    /// E.164.
    pub number: String,
    /// How visitors are shown it (`+7 495 123-45-67`).
    pub display: String,
    /// `static`, `pool` or `fallback`.
    pub kind: String,
    pub pool_id: Option<String>,
    /// The source a static number stands for.
    pub source: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

/// A combined-tracking rule of a site.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleRecord {
    pub id: String,
    pub site_id: String,
    /// Lower runs first.
    pub priority: i64,
    /// The conditions (see `RuleMatch`).
    #[schema(value_type = Object)]
    pub r#match: serde_json::Value,
    pub pool_id: Option<String>,
    pub number_id: Option<String>,
    /// `false`: leave the site's own number.
    pub swap: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

/// A visit (session) as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub site_id: String,
    pub visitor_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_activity: jiff::Timestamp,
    pub track_code: String,
    pub channel: String,
    pub source: String,
    pub medium: String,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub keyword: Option<String>,
    pub referrer: Option<String>,
    pub referrer_domain: Option<String>,
    pub landing_url: String,
    pub landing_path: String,
    pub gclid: Option<String>,
    pub yclid: Option<String>,
    pub fbclid: Option<String>,
    pub ga_client_id: Option<String>,
    pub ym_client_id: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
    pub browser: Option<String>,
    pub os: Option<String>,
    pub ip: Option<String>,
    pub city: Option<String>,
    pub screen: Option<String>,
    pub lang: Option<String>,
    pub is_bot: bool,
    pub rule_id: Option<String>,
    pub pool_id: Option<String>,
    /// The tracking number shown (its id).
    pub number_id: Option<String>,
    pub lease_id: Option<String>,
    pub page_count: i64,
}

/// One page view or in-page event of a session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageView {
    #[schema(value_type = String, format = DateTime)]
    pub at: jiff::Timestamp,
    pub kind: String,
    pub url: String,
    pub title: Option<String>,
}

/// A call with its attribution and what was done with it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Call {
    pub id: String,
    pub site_id: String,
    pub provider: String,
    pub provider_call_id: String,
    pub connection_id: Option<String>,
    /// The tracking number called (E.164).
    pub tracking_number: String,
    pub number_id: Option<String>,
    /// `static`, `pool`, `fallback`, or absent for a number that is not a tracking number.
    pub number_kind: Option<String>,
    /// E.164, or `hidden`.
    pub caller: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: jiff::Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<jiff::Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<jiff::Timestamp>,
    /// ringing | in_progress | answered | missed | busy | failed | voicemail
    pub status: String,
    /// Seconds from the first ring to the answer (or to the end of a missed call).
    pub wait_seconds: i64,
    pub talk_seconds: i64,
    /// Who answered: an extension or phone.
    pub agent: Option<String>,
    /// The agent's name, when the site maps that extension.
    pub agent_name: Option<String>,
    /// The recording at the provider.
    pub recording_url: Option<String>,
    /// Whether calltrail keeps a copy (`GET /api/v1/calls/{id}/recording`).
    pub has_recording: bool,
    /// No call from this caller to the site within its repeat window before.
    pub first_time: bool,
    /// static | dynamic | dynamic_late | caller_history | track_code | fallback | unmatched
    pub method: String,
    /// 0..1: how sure the attribution is.
    pub confidence: f64,
    pub session_id: Option<String>,
    pub visitor_id: Option<String>,
    pub channel: String,
    pub source: String,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub keyword: Option<String>,
    pub landing_url: Option<String>,
    /// target | service | non_target | spam | unset
    pub category: String,
    pub tags: Vec<String>,
    /// Deal value in the account's currency (kept in minor units, shown with 2 decimals).
    #[serde(serialize_with = "minor_as_major")]
    #[schema(value_type = Option<f64>)]
    pub deal_value: Option<i64>,
    pub comment: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: jiff::Timestamp,
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn minor_as_major<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(m) => s.serialize_f64(*m as f64 / 100.0),
        None => s.serialize_none(),
    }
}
