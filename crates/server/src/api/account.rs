//! `/api/v1/account`: the account a token acts for, and its settings.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Auth};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    pub id: String,
    pub name: String,
    /// Days call recordings are kept; `null` keeps them.
    pub recording_retention_days: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<i64>)]
    pub recording_retention_days: Option<Option<i64>>,
}

async fn out(st: &AppState, account_id: &str) -> ApiResult<AccountOut> {
    let acc = st.store.get_account(account_id).await?;
    Ok(AccountOut {
        recording_retention_days: st.store.recording_retention(account_id).await?,
        id: acc.id,
        name: acc.name,
    })
}

#[utoipa::path(get, path = "/api/v1/account", tag = "account", responses((status = 200, body = AccountOut), (status = 401, body = Problem)))]
pub async fn get_account(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<AccountOut>> {
    Ok(Json(out(&st, &auth.account_id).await?))
}

#[utoipa::path(patch, path = "/api/v1/account", tag = "account", request_body = AccountPatch,
    responses((status = 200, body = AccountOut), (status = 422, body = Problem)))]
pub async fn update_account(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<AccountPatch>,
) -> ApiResult<Json<AccountOut>> {
    if let Some(days) = b.recording_retention_days {
        if days.is_some_and(|d| !(1..=3650).contains(&d)) {
            return Err(calltrail_core::Invalid::field(
                "recording_retention_days",
                "1-3650 days, or null to keep recordings",
            )
            .into());
        }
        st.store
            .set_recording_retention(&auth.account_id, days)
            .await?;
    }
    Ok(Json(out(&st, &auth.account_id).await?))
}
