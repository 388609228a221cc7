//! Request extractors: JSON bodies that name the bad field, and API token auth.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use calltrail_core::Invalid;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// A JSON body. Malformed JSON is a 400; a value of the wrong type or an unknown field is
/// a 422 that names the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::BadRequest(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::BadRequest(format!("cannot read the body: {}", e.body_text()))
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse JSON, naming the field at fault when the shape is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Most bodies are good: parse them without tracking the path (serde_path_to_error
    // wraps every field, on the tracking endpoints' every request), and only a body that
    // failed again with the path, which fails the same way, to say where.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest(format!("malformed JSON: {inner}"));
        }
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        // serde_path_to_error's path already ends at an unknown field; a missing field is
        // reported at its parent, so name it from the message.
        let field = match (path.as_str(), unknown_field_name(&msg)) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            (p, Some(name)) if msg.starts_with("missing") => format!("{p}.{name}"),
            (p, _) => p.to_owned(),
        };
        ApiError::Invalid(Invalid::field(field, msg))
    })
}

/// The field an "unknown field `x`" or "missing field `x`" message names.
fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

/// Query parameters; a bad one is a 400 that says which.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The account an API request acts for, from `Authorization: Bearer <token>`.
pub struct Auth {
    pub account_id: String,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "send `Authorization: Bearer <API token>`",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() < 200)
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <API token>`",
            ))?;
        match state.store.authenticate_token(token).await? {
            Some(account_id) => Ok(Self { account_id }),
            None => Err(ApiError::Unauthorized(
                "the API token is unknown or revoked",
            )),
        }
    }
}
