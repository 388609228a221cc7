//! REST API v1: JSON, `Authorization: Bearer <token>`, problem+json errors, OpenAPI.

mod account;
mod calls;
mod children;
mod rules;
mod sites;
pub mod telephony;

use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Items per page (1-500, default 50).
    pub limit: Option<u32>,
}

impl ListQuery {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }
}

/// Accept a field that may be absent (keep), `null` (clear) or a value (set).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "calltrail REST API",
        description = "Sites, tracking numbers, pools, sources and calls of a calltrail account. \
                       Authenticate with `Authorization: Bearer <API token>` \
                       (`calltrail admin create-token`). Errors are RFC 9457 problem+json.",
        license(name = "AGPL-3.0-or-later")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(crate::error::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1` routes and the OpenAPI document describing them.
pub fn router(state: AppState) -> Router<AppState> {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sites::list_sites, sites::create_site))
        .routes(routes!(
            sites::get_site,
            sites::update_site,
            sites::delete_site
        ))
        .routes(routes!(children::list_pools, children::create_pool))
        .routes(routes!(
            children::get_pool,
            children::update_pool,
            children::delete_pool
        ))
        .routes(routes!(children::list_sources, children::create_source))
        .routes(routes!(
            children::get_source,
            children::update_source,
            children::delete_source
        ))
        .routes(routes!(children::list_numbers, children::create_number))
        .routes(routes!(
            children::get_number,
            children::update_number,
            children::delete_number
        ))
        .routes(routes!(rules::list_rules, rules::create_rule))
        .routes(routes!(
            rules::get_rule,
            rules::update_rule,
            rules::delete_rule
        ))
        .routes(routes!(calls::test_call))
        .routes(routes!(calls::list_calls))
        .routes(routes!(calls::get_call, calls::update_call))
        .routes(routes!(calls::attribute_by_code))
        .routes(routes!(account::get_account, account::update_account))
        .routes(routes!(calls::recording))
        .routes(routes!(
            telephony::create_connection,
            telephony::list_connections
        ))
        .routes(routes!(telephony::delete_connection))
        .routes(routes!(telephony::create_agent, telephony::list_agents))
        .routes(routes!(telephony::delete_agent))
        .split_for_parts();
    let doc = std::sync::Arc::new(doc);
    router
        .layer(axum::middleware::from_fn_with_state(
            state,
            forget_cached_sites,
        ))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
}

/// A change through the API may change what the engine shows: drop the cached sites.
async fn forget_cached_sites(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let writes = req.method() != axum::http::Method::GET;
    let res = next.run(req).await;
    if writes && res.status().is_success() {
        st.sites.clear();
        st.beats.clear();
    }
    res
}
