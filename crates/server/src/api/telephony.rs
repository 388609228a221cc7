//! `/api/v1/sites/{site_id}/telephony` (provider connections) and `/agents`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use calltrail_core::validate::Errors;
use calltrail_store::telephony::{Agent, Connection};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Auth};
use crate::AppState;

pub const PROVIDERS: [&str; 4] = ["generic", "twilio", "zadarma", "asterisk_ami"];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionCreate {
    /// generic | twilio | zadarma | asterisk_ami
    pub provider: String,
    /// generic: the HMAC secret (generated when absent); twilio: the Auth Token;
    /// zadarma: the API secret key; asterisk_ami: the AMI password.
    pub secret: Option<String>,
    /// asterisk_ami: `{"host", "port" (5038), "username"}`; twilio: `{"whisper": "text"}`.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
}

/// A connection and the URL(s) to paste into the provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionOut {
    #[serde(flatten)]
    pub connection: Connection,
    /// The webhook URL for the provider (absent for AMI, which calltrail dials itself).
    pub webhook_url: Option<String>,
    /// Further URLs some providers take (Twilio: status and recording callbacks).
    #[schema(value_type = Object)]
    pub urls: serde_json::Value,
    /// A generated secret, shown once.
    pub secret: Option<String>,
}

impl AppState {
    pub fn connection_out(&self, c: Connection, secret: Option<String>) -> ConnectionOut {
        let base = format!(
            "{}/hooks/{}/{}",
            self.config.public_url.trim_end_matches('/'),
            c.provider,
            c.hook_key
        );
        let (webhook_url, urls) = match c.provider.as_str() {
            "twilio" => (
                Some(format!("{base}/voice")),
                serde_json::json!({
                    "voice": format!("{base}/voice"),
                    "status_callback": format!("{base}/status"),
                    "recording_callback": format!("{base}/recording"),
                }),
            ),
            "asterisk_ami" => (None, serde_json::json!({})),
            _ => (Some(base), serde_json::json!({})),
        };
        ConnectionOut {
            connection: c,
            webhook_url,
            urls,
            secret,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/telephony", tag = "telephony", request_body = ConnectionCreate,
    responses((status = 201, body = ConnectionOut), (status = 422, body = Problem)))]
pub async fn create_connection(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<ConnectionCreate>,
) -> ApiResult<(StatusCode, Json<ConnectionOut>)> {
    let mut errs = Errors::new();
    let provider = b.provider.trim().to_lowercase();
    if !PROVIDERS.contains(&provider.as_str()) {
        errs.push(
            "provider",
            format!("`{}` is not one of {}", b.provider, PROVIDERS.join(", ")),
        );
    }
    let secret = b
        .secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if secret.as_ref().is_some_and(|s| s.len() > 200) {
        errs.push("secret", "at most 200 characters");
    }
    let settings = b.settings.unwrap_or_else(|| serde_json::json!({}));
    if !settings.is_object() {
        errs.push("settings", "an object");
    }
    let mut generated = None;
    match provider.as_str() {
        "twilio" if secret.is_none() && settings.get("telnyx_public_key").is_some() => {}
        "twilio" | "zadarma" | "asterisk_ami" if secret.is_none() => errs.push(
            "secret",
            match provider.as_str() {
                "twilio" => "the account's Auth Token (it signs X-Twilio-Signature)",
                "zadarma" => "the API secret key (it signs the Signature header)",
                _ => "the AMI user's password",
            },
        ),
        "generic" if secret.is_none() => generated = Some(calltrail_store::setup::random_token(24)),
        _ => {}
    }
    if provider == "asterisk_ami" {
        if settings
            .get("host")
            .and_then(|h| h.as_str())
            .is_none_or(|h| h.trim().is_empty())
        {
            errs.push("settings.host", "the Asterisk host to connect to");
        }
        if settings
            .get("username")
            .and_then(|h| h.as_str())
            .is_none_or(|h| h.trim().is_empty())
        {
            errs.push("settings.username", "the AMI user (manager.conf)");
        }
        if settings
            .get("port")
            .is_some_and(|p| p.as_u64().is_none_or(|p| p == 0 || p > 65535))
        {
            errs.push("settings.port", "a TCP port (default 5038)");
        }
    }
    errs.finish()?;
    let secret = secret.or_else(|| generated.clone());
    let c = st
        .store
        .create_connection(
            &auth.account_id,
            &site_id,
            &provider,
            secret.as_deref(),
            &settings,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(st.connection_out(c, generated))))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/telephony", tag = "telephony",
    responses((status = 200, body = Vec<ConnectionOut>), (status = 404, body = Problem)))]
pub async fn list_connections(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
) -> ApiResult<Json<Vec<ConnectionOut>>> {
    let list = st
        .store
        .list_connections(&auth.account_id, &site_id)
        .await?;
    Ok(Json(
        list.into_iter()
            .map(|c| st.connection_out(c, None))
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/telephony/{connection_id}", tag = "telephony",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_connection(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let c = st.store.get_connection(&auth.account_id, &id).await?;
    if c.site_id != site_id {
        return Err(crate::error::ApiError::NotFound(
            "telephony connection".into(),
        ));
    }
    st.store.delete_connection(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCreate {
    /// The extension or phone the telephony reports as answering.
    pub ext: String,
    pub name: String,
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/agents", tag = "telephony", request_body = AgentCreate,
    responses((status = 201, body = Agent), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_agent(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<AgentCreate>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            st.store
                .create_agent(&auth.account_id, &site_id, &b.ext, &b.name)
                .await?,
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/agents", tag = "telephony",
    responses((status = 200, body = Vec<Agent>), (status = 404, body = Problem)))]
pub async fn list_agents(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(
        st.store.list_agents(&auth.account_id, &site_id).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site_id}/agents/{agent_id}", tag = "telephony",
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_agent(
    State(st): State<AppState>,
    auth: Auth,
    Path((site_id, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let agents = st.store.list_agents(&auth.account_id, &site_id).await?;
    if !agents.iter().any(|a| a.id == id) {
        return Err(crate::error::ApiError::NotFound("agent".into()));
    }
    st.store.delete_agent(&auth.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
