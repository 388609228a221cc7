//! A site's pools, sources and tracking numbers:
//! `/api/v1/sites/{site_id}/{pools|sources|numbers}[/{id}]`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use calltrail_core::setup::{NumberSpec, PoolSpec, SourceSpec};
use calltrail_core::Region;
use calltrail_store::{Page, Pool, Source, TrackingNumber};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{double_option, ListQuery};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::AppState;

/// A child must belong to the site named in the path.
fn in_site<T>(item: T, item_site: &str, site_id: &str, what: &str) -> ApiResult<T> {
    if item_site == site_id {
        Ok(item)
    } else {
        Err(ApiError::NotFound(what.to_owned()))
    }
}

async fn pool_in(st: &AppState, auth: &Auth, site_id: &str, id: &str) -> ApiResult<Pool> {
    let p = st.store.get_pool(&auth.account_id, id).await?;
    let site = p.site_id.clone();
    in_site(p, &site, site_id, "pool")
}

async fn source_in(st: &AppState, auth: &Auth, site_id: &str, id: &str) -> ApiResult<Source> {
    let s = st.store.get_source(&auth.account_id, id).await?;
    let site = s.site_id.clone();
    in_site(s, &site, site_id, "source")
}

async fn number_in(
    st: &AppState,
    auth: &Auth,
    site_id: &str,
    id: &str,
) -> ApiResult<TrackingNumber> {
    let n = st.store.get_number(&auth.account_id, id).await?;
    let site = n.site_id.clone();
    in_site(n, &site, site_id, "tracking number")
}

// ----- pools -----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    pub name: String,
    /// Minutes a number stays with a visitor after the last activity (1-1440, default 15).
    pub hold_minutes: Option<i64>,
    /// `fallback` (default) or `reuse`.
    pub on_exhaustion: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    pub name: Option<String>,
    pub hold_minutes: Option<i64>,
    pub on_exhaustion: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/pools", tag = "pools", params(ListQuery),
    responses((status = 200, body = Page<Pool>), (status = 404, body = Problem)))]
pub async fn list_pools(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Pool>>> {
    Ok(Json(
        st.store
            .list_pools(&auth.account_id, &site_id, q.cursor.as_deref(), q.limit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/pools", tag = "pools", request_body = PoolCreate,
    responses((status = 201, body = Pool), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_pool(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<PoolCreate>,
) -> ApiResult<(StatusCode, Json<Pool>)> {
    let spec = PoolSpec::parse(&b.name, b.hold_minutes, b.on_exhaustion.as_deref())?;
    let pool = st
        .store
        .create_pool(&auth.account_id, &site_id, &spec)
        .await?;
    Ok((StatusCode::CREATED, Json(pool)))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/pools/{pool_id}", tag = "pools",
    responses((status = 200, body = Pool), (status = 404, body = Problem)))]
pub async fn get_pool(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(pool_in(&st, &auth, &site_id, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/sites/{site_id}/pools/{pool_id}", tag = "pools", request_body = PoolPatch,
    responses((status = 200, body = Pool), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_pool(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
    ApiJson(b): ApiJson<PoolPatch>,
) -> ApiResult<Json<Pool>> {
    let cur = pool_in(&st, &auth, &site_id, &id).await?;
    let spec = PoolSpec::parse(
        b.name.as_deref().unwrap_or(&cur.name),
        Some(b.hold_minutes.unwrap_or(cur.hold_minutes)),
        Some(b.on_exhaustion.as_deref().unwrap_or(&cur.on_exhaustion)),
    )?;
    Ok(Json(
        st.store.update_pool(&auth.account_id, &id, &spec).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/pools/{pool_id}", tag = "pools",
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_pool(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    pool_in(&st, &auth, &site_id, &id).await?;
    st.store.delete_pool(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- sources -----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceCreate {
    /// Name as in `utm_source` and reports (stored lowercase), e.g. `avito`.
    pub name: String,
    /// Channel the source reports under (default `offline`).
    pub channel: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePatch {
    pub name: Option<String>,
    pub channel: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/sources", tag = "sources", params(ListQuery),
    responses((status = 200, body = Page<Source>), (status = 404, body = Problem)))]
pub async fn list_sources(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Source>>> {
    Ok(Json(
        st.store
            .list_sources(&auth.account_id, &site_id, q.cursor.as_deref(), q.limit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/sources", tag = "sources", request_body = SourceCreate,
    responses((status = 201, body = Source), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_source(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<SourceCreate>,
) -> ApiResult<(StatusCode, Json<Source>)> {
    let spec = SourceSpec::parse(&b.name, b.channel.as_deref(), b.description.as_deref())?;
    Ok((
        StatusCode::CREATED,
        Json(
            st.store
                .create_source(&auth.account_id, &site_id, &spec)
                .await?,
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/sources/{source_id}", tag = "sources",
    responses((status = 200, body = Source), (status = 404, body = Problem)))]
pub async fn get_source(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<Json<Source>> {
    Ok(Json(source_in(&st, &auth, &site_id, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/sites/{site_id}/sources/{source_id}", tag = "sources", request_body = SourcePatch,
    responses((status = 200, body = Source), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_source(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
    ApiJson(b): ApiJson<SourcePatch>,
) -> ApiResult<Json<Source>> {
    let cur = source_in(&st, &auth, &site_id, &id).await?;
    let description = match b.description {
        Some(d) => d,
        None => cur.description.clone(),
    };
    let spec = SourceSpec::parse(
        b.name.as_deref().unwrap_or(&cur.name),
        Some(b.channel.as_deref().unwrap_or(&cur.channel)),
        description.as_deref(),
    )?;
    Ok(Json(
        st.store.update_source(&auth.account_id, &id, &spec).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/sources/{source_id}", tag = "sources",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_source(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    source_in(&st, &auth, &site_id, &id).await?;
    st.store.delete_source(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- tracking numbers -----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberCreate {
    /// The tracking number, in any written form (read in the site's region).
    pub number: String,
    /// `static`, `pool` or `fallback`.
    pub kind: String,
    /// The pool a `pool` or `fallback` number belongs to.
    pub pool_id: Option<String>,
    /// The source a `static` number stands for.
    pub source: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberPatch {
    pub number: Option<String>,
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub pool_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub source: Option<Option<String>>,
}

async fn site_region(st: &AppState, account_id: &str, site_id: &str) -> ApiResult<Region> {
    let site = st.store.get_site(account_id, site_id).await?;
    Ok(Region::parse(&site.default_region)?)
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/numbers", tag = "numbers", params(ListQuery),
    responses((status = 200, body = Page<TrackingNumber>), (status = 404, body = Problem)))]
pub async fn list_numbers(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<TrackingNumber>>> {
    Ok(Json(
        st.store
            .list_numbers(&auth.account_id, &site_id, q.cursor.as_deref(), q.limit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/numbers", tag = "numbers", request_body = NumberCreate,
    responses((status = 201, body = TrackingNumber), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_number(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<NumberCreate>,
) -> ApiResult<(StatusCode, Json<TrackingNumber>)> {
    let region = site_region(&st, &auth.account_id, &site_id).await?;
    let spec = NumberSpec::parse(
        &b.number,
        region,
        &b.kind,
        b.pool_id.as_deref(),
        b.source.as_deref(),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(
            st.store
                .create_number(&auth.account_id, &site_id, &spec)
                .await?,
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/numbers/{number_id}", tag = "numbers",
    responses((status = 200, body = TrackingNumber), (status = 404, body = Problem)))]
pub async fn get_number(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<Json<TrackingNumber>> {
    Ok(Json(number_in(&st, &auth, &site_id, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/sites/{site_id}/numbers/{number_id}", tag = "numbers", request_body = NumberPatch,
    responses((status = 200, body = TrackingNumber), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_number(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
    ApiJson(b): ApiJson<NumberPatch>,
) -> ApiResult<Json<TrackingNumber>> {
    let cur = number_in(&st, &auth, &site_id, &id).await?;
    let region = site_region(&st, &auth.account_id, &site_id).await?;
    let pool_id = b.pool_id.unwrap_or(cur.pool_id);
    let source = b.source.unwrap_or(cur.source);
    let spec = NumberSpec::parse(
        b.number.as_deref().unwrap_or(&cur.number),
        region,
        b.kind.as_deref().unwrap_or(&cur.kind),
        pool_id.as_deref(),
        source.as_deref(),
    )?;
    Ok(Json(
        st.store.update_number(&auth.account_id, &id, &spec).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/numbers/{number_id}", tag = "numbers",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_number(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    number_in(&st, &auth, &site_id, &id).await?;
    st.store.delete_number(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
