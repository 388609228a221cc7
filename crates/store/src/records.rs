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
