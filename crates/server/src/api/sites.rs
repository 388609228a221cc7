//! `/api/v1/sites`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use calltrail_core::setup::{SiteInput, SiteSpec};
use calltrail_store::{Page, Site};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{double_option, ListQuery};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteCreate {
    pub name: String,
    /// Domains the site runs on (each covers its subdomains, on any port).
    pub domains: Vec<String>,
    /// IANA time zone, e.g. `Europe/Moscow`.
    pub timezone: String,
    /// Region for numbers written without a country code, e.g. `RU`.
    pub default_region: String,
    /// The numbers printed on the site that the script replaces, in any written form.
    #[serde(default)]
    pub site_numbers: Vec<String>,
    /// Where calls to tracking numbers are forwarded.
    pub forward_to: Option<String>,
    /// A caller counts as a repeat caller within this many days (default 90).
    pub repeat_window_days: Option<i64>,
}

/// Fields to change; absent fields stay as they are, `forward_to: null` clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    pub name: Option<String>,
    pub domains: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub default_region: Option<String>,
    pub site_numbers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub forward_to: Option<Option<String>>,
    pub repeat_window_days: Option<i64>,
}

/// A site, with the line to paste into its pages.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteOut {
    #[serde(flatten)]
    pub site: Site,
    /// The `<script>` line to paste into every page of the site.
    pub install_snippet: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SitePage {
    pub items: Vec<SiteOut>,
    pub next_cursor: Option<String>,
}

impl AppState {
    pub fn site_out(&self, site: Site) -> SiteOut {
        SiteOut {
            install_snippet: self.install_snippet(&site.public_key),
            site,
        }
    }

    pub fn install_snippet(&self, public_key: &str) -> String {
        format!(
            "<script async src=\"{}/t/ct.js\" data-site=\"{public_key}\"></script>",
            self.config.public_url.trim_end_matches('/')
        )
    }
}

#[utoipa::path(get, path = "/api/v1/sites", tag = "sites", params(ListQuery),
    responses((status = 200, body = SitePage), (status = 401, body = Problem)))]
pub async fn list_sites(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<SitePage>> {
    let Page { items, next_cursor } = st
        .store
        .list_sites(&auth.account_id, q.cursor.as_deref(), q.limit())
        .await?;
    Ok(Json(SitePage {
        items: items.into_iter().map(|s| st.site_out(s)).collect(),
        next_cursor,
    }))
}

fn check_window(days: Option<i64>) -> Result<(), calltrail_core::Invalid> {
    match days {
        Some(d) if !(1..=3650).contains(&d) => Err(calltrail_core::Invalid::field(
            "repeat_window_days",
            "1-3650 days",
        )),
        _ => Ok(()),
    }
}

#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", request_body = SiteCreate,
    responses((status = 201, body = SiteOut), (status = 422, body = Problem), (status = 400, body = Problem)))]
pub async fn create_site(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<SiteCreate>,
) -> ApiResult<(StatusCode, Json<SiteOut>)> {
    let spec = SiteSpec::parse(&SiteInput {
        name: &body.name,
        domains: &body.domains,
        timezone: &body.timezone,
        default_region: &body.default_region,
        site_numbers: &body.site_numbers,
        forward_to: body.forward_to.as_deref(),
    })?;
    check_window(body.repeat_window_days)?;
    let mut site = st.store.create_site(&auth.account_id, &spec).await?;
    if let Some(days) = body.repeat_window_days {
        site = st
            .store
            .set_repeat_window(&auth.account_id, &site.id, days)
            .await?;
    }
    Ok((StatusCode::CREATED, Json(st.site_out(site))))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}", tag = "sites",
    responses((status = 200, body = SiteOut), (status = 404, body = Problem)))]
pub async fn get_site(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
) -> ApiResult<Json<SiteOut>> {
    let site = st.store.get_site(&auth.account_id, &site_id).await?;
    Ok(Json(st.site_out(site)))
}

#[utoipa::path(patch, path = "/api/v1/sites/{site_id}", tag = "sites", request_body = SitePatch,
    responses((status = 200, body = SiteOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_site(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(patch): ApiJson<SitePatch>,
) -> ApiResult<Json<SiteOut>> {
    let cur = st.store.get_site(&auth.account_id, &site_id).await?;
    let forward_to = match &patch.forward_to {
        Some(v) => v.clone(),
        None => cur.forward_to.clone(),
    };
    let spec = SiteSpec::parse(&SiteInput {
        name: patch.name.as_deref().unwrap_or(&cur.name),
        domains: patch.domains.as_deref().unwrap_or(&cur.domains),
        timezone: patch.timezone.as_deref().unwrap_or(&cur.timezone),
        default_region: patch
            .default_region
            .as_deref()
            .unwrap_or(&cur.default_region),
        site_numbers: patch.site_numbers.as_deref().unwrap_or(&cur.site_numbers),
        forward_to: forward_to.as_deref(),
    })?;
    check_window(patch.repeat_window_days)?;
    let mut site = st
        .store
        .update_site(&auth.account_id, &site_id, &spec)
        .await?;
    if let Some(days) = patch.repeat_window_days {
        site = st
            .store
            .set_repeat_window(&auth.account_id, &site_id, days)
            .await?;
    }
    Ok(Json(st.site_out(site)))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}", tag = "sites",
    responses((status = 204, description = "Deleted with its pools, sources and numbers"), (status = 404, body = Problem)))]
pub async fn delete_site(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
) -> ApiResult<StatusCode> {
    st.store.delete_site(&auth.account_id, &site_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
