//! `/api/v1/sites/{site_id}/rules`: combined tracking rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use calltrail_core::rules::RuleMatch;
use calltrail_core::validate::Errors;
use calltrail_store::setup::RuleSpec;
use calltrail_store::{Page, RuleRecord};
use serde::Deserialize;
use utoipa::ToSchema;

use super::ListQuery;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::AppState;

/// A rule: sessions that match are shown a pool's number, a static number, or nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Lower runs first (default 100).
    pub priority: Option<i64>,
    /// Conditions: utm_source, utm_medium, utm_campaign, referrer_domain, landing_path,
    /// landing_param, channel. All given must hold; a trailing `*` matches any rest.
    #[schema(value_type = Object)]
    pub r#match: Option<RuleMatch>,
    pub pool_id: Option<String>,
    pub number_id: Option<String>,
    /// `false`: matching sessions keep the site's own number.
    pub swap: Option<bool>,
}

fn spec(b: RuleBody, cur: Option<&RuleRecord>) -> ApiResult<RuleSpec> {
    let matcher = match (b.r#match, cur) {
        (Some(m), _) => m,
        (None, Some(c)) => serde_json::from_value(c.r#match.clone()).unwrap_or_default(),
        (None, None) => {
            return Err(
                calltrail_core::Invalid::field("match", "give the conditions of the rule").into(),
            )
        }
    };
    matcher.validate()?;
    let swap = b.swap.or(cur.map(|c| c.swap)).unwrap_or(true);
    // On update, naming a pool replaces a number and vice versa.
    let (pool_id, number_id) = match (b.pool_id, b.number_id, cur) {
        (None, None, Some(c)) => (c.pool_id.clone(), c.number_id.clone()),
        (p, n, _) => (p, n),
    };
    let mut errs = Errors::new();
    match (swap, &pool_id, &number_id) {
        (true, None, None) => errs.push(
            "pool_id",
            "a swapping rule names a pool_id or a number_id (or set swap: false)",
        ),
        (true, Some(_), Some(_)) => {
            errs.push("number_id", "give a pool_id or a number_id, not both");
        }
        (false, Some(_), _) | (false, _, Some(_)) => errs.push(
            "swap",
            "a rule with swap: false shows no number; drop pool_id/number_id",
        ),
        _ => {}
    }
    errs.finish()?;
    Ok(RuleSpec {
        priority: b.priority.or(cur.map(|c| c.priority)).unwrap_or(100),
        matcher,
        pool_id,
        number_id,
        swap,
    })
}

async fn rule_in(st: &AppState, auth: &Auth, site_id: &str, id: &str) -> ApiResult<RuleRecord> {
    let r = st.store.get_rule(&auth.account_id, id).await?;
    if r.site_id == site_id {
        Ok(r)
    } else {
        Err(ApiError::NotFound("rule".into()))
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/rules", tag = "rules", params(ListQuery),
    responses((status = 200, body = Page<RuleRecord>), (status = 404, body = Problem)))]
pub async fn list_rules(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<RuleRecord>>> {
    Ok(Json(
        st.store
            .list_rules(&auth.account_id, &site_id, q.cursor.as_deref(), q.limit())
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/rules", tag = "rules", request_body = RuleBody,
    responses((status = 201, body = RuleRecord), (status = 422, body = Problem)))]
pub async fn create_rule(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<RuleBody>,
) -> ApiResult<(StatusCode, Json<RuleRecord>)> {
    let spec = spec(b, None)?;
    Ok((
        StatusCode::CREATED,
        Json(
            st.store
                .create_rule(&auth.account_id, &site_id, &spec)
                .await?,
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/rules/{rule_id}", tag = "rules",
    responses((status = 200, body = RuleRecord), (status = 404, body = Problem)))]
pub async fn get_rule(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<Json<RuleRecord>> {
    Ok(Json(rule_in(&st, &auth, &site_id, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/sites/{site_id}/rules/{rule_id}", tag = "rules", request_body = RuleBody,
    responses((status = 200, body = RuleRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_rule(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
    ApiJson(b): ApiJson<RuleBody>,
) -> ApiResult<Json<RuleRecord>> {
    let cur = rule_in(&st, &auth, &site_id, &id).await?;
    let spec = spec(b, Some(&cur))?;
    Ok(Json(
        st.store.update_rule(&auth.account_id, &id, &spec).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/rules/{rule_id}", tag = "rules",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_rule(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    rule_in(&st, &auth, &site_id, &id).await?;
    st.store.delete_rule(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
