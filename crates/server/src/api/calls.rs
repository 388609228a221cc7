//! Calls: test calls through the engine, the call list, one call with its visit, and
//! attribution by a visitor's track code.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use calltrail_core::validate::Errors;
use calltrail_core::{Phone, Region};
use calltrail_store::calls::{CallFilter, CallUpdate, CATEGORIES, FINAL_STATUSES};
use calltrail_store::tracking::CallInput;
use calltrail_store::{Call, Page, PageView, Session};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::AppState;

/// A call to run through the same path a provider's webhook takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCall {
    /// The number called: a tracking number of the site (any written form).
    pub to: String,
    /// The caller, or `hidden`.
    pub from: String,
    /// When the call came (RFC 3339); now by default.
    pub at: Option<String>,
    /// Your own id for the call; the same id twice makes one call.
    pub call_id: Option<String>,
    /// Seconds of conversation (default 60 when answered).
    pub talk_seconds: Option<u32>,
    /// Whether someone picked up (default true).
    pub answered: Option<bool>,
}

/// Call log filters. Dates are `YYYY-MM-DD` in the site's time zone (UTC without
/// `site_id`) or RFC 3339 times; `to` is exclusive for times and inclusive for dates.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    pub site_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// ringing | in_progress | answered | missed | busy | failed | voicemail
    pub status: Option<String>,
    pub source: Option<String>,
    pub channel: Option<String>,
    pub campaign: Option<String>,
    /// target | service | non_target | spam | unset
    pub category: Option<String>,
    pub tag: Option<String>,
    /// Extension or phone that answered.
    pub agent: Option<String>,
    /// The caller's number (any written form).
    pub caller: Option<String>,
    /// Only first-time callers (`true`) or only repeat callers (`false`).
    pub first_time: Option<bool>,
    /// Minimum talk time in seconds.
    pub min_duration: Option<i64>,
    /// `newest` (default) or `oldest`.
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Read a date or time bound of the call log filter.
fn bound(
    field: &str,
    v: &str,
    tz: &jiff::tz::TimeZone,
    end: bool,
) -> Result<i64, calltrail_core::Invalid> {
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let d: jiff::civil::Date = v.parse().map_err(|_| {
        calltrail_core::Invalid::field(
            field,
            format!("`{v}` is not a date (YYYY-MM-DD) or an RFC 3339 time"),
        )
    })?;
    let d = if end {
        d.tomorrow()
            .map_err(|e| calltrail_core::Invalid::field(field, e.to_string()))?
    } else {
        d
    };
    d.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| calltrail_core::Invalid::field(field, e.to_string()))
}

/// The work done on a call; absent fields stay, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallPatch {
    /// target | service | non_target | spam | unset
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Deal value in the account's currency (2 decimals).
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<f64>)]
    pub deal_value: Option<Option<f64>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>)]
    pub comment: Option<Option<String>>,
}

/// A call with the visit it was attributed to.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallDetail {
    #[serde(flatten)]
    pub call: Call,
    pub session: Option<Session>,
    /// Pages seen in that visit.
    pub pages: Vec<PageView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackCodeBody {
    /// The code the caller read out (4-6 digits).
    pub code: String,
}

/// Read a caller: an E.164 number in the site's region, or `hidden`.
pub fn caller(from: &str, region: Region) -> Result<String, calltrail_core::Invalid> {
    let f = from.trim();
    if f.is_empty() || f.eq_ignore_ascii_case("hidden") || f.eq_ignore_ascii_case("anonymous") {
        return Ok("hidden".into());
    }
    Phone::parse(f, Some(region)).map(|p| p.as_str().to_owned())
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/test-calls", tag = "calls", request_body = TestCall,
    responses((status = 201, description = "A new call, attributed", body = Call), (status = 200, description = "This call_id was stored before", body = Call), (status = 422, body = Problem)))]
pub async fn test_call(
    State(st): State<AppState>,
    auth: Auth,
    Path(site_id): Path<String>,
    ApiJson(b): ApiJson<TestCall>,
) -> ApiResult<(StatusCode, Json<Call>)> {
    let site = st.store.get_site(&auth.account_id, &site_id).await?;
    let region = Region::parse(&site.default_region)?;
    let mut errs = Errors::new();
    let to = errs.check("to", Phone::parse(&b.to, Some(region)));
    let from = errs.check("from", caller(&b.from, region));
    let at = match &b.at {
        Some(s) => errs.check(
            "at",
            s.parse::<jiff::Timestamp>().map_err(|e| {
                calltrail_core::Invalid::field("", format!("not an RFC 3339 time: {e}"))
            }),
        ),
        None => Some(jiff::Timestamp::now()),
    };
    if let Some(id) = &b.call_id {
        if id.trim().is_empty() || id.len() > 200 {
            errs.push("call_id", "1-200 characters");
        }
    }
    errs.finish()?;
    let (Some(to), Some(from), Some(at)) = (to, from, at) else {
        return Err(calltrail_core::Invalid::field("body", "invalid test call").into());
    };
    let input = CallInput {
        account_id: auth.account_id.clone(),
        site_id: site.id.clone(),
        provider: "test".into(),
        provider_call_id: b.call_id.clone().unwrap_or_else(|| uuid_like(&site.id, at)),
        to: to.as_str().to_owned(),
        from,
        at: at.as_millisecond(),
        answered: b.answered.unwrap_or(true),
        talk_seconds: i64::from(b.talk_seconds.unwrap_or(60)),
    };
    let (call, created) = st.store.ingest_call(&input).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(call),
    ))
}

/// A unique id for a test call without one.
fn uuid_like(site_id: &str, at: jiff::Timestamp) -> String {
    use rand::Rng;
    format!(
        "test-{site_id}-{}-{:016x}",
        at.as_millisecond(),
        rand::thread_rng().gen::<u64>()
    )
}

#[utoipa::path(get, path = "/api/v1/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = Page<Call>), (status = 422, body = Problem)))]
pub async fn list_calls(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<CallQuery>,
) -> ApiResult<Json<Page<Call>>> {
    let (tz, region) = match &q.site_id {
        Some(sid) => {
            let site = st.store.get_site(&auth.account_id, sid).await?;
            (
                jiff::tz::TimeZone::get(&site.timezone).unwrap_or(jiff::tz::TimeZone::UTC),
                Region::parse(&site.default_region).ok(),
            )
        }
        None => (jiff::tz::TimeZone::UTC, None),
    };
    let mut errs = Errors::new();
    let from = q
        .from
        .as_deref()
        .and_then(|v| errs.check("from", bound("", v, &tz, false)));
    let to =
        q.to.as_deref()
            .and_then(|v| errs.check("to", bound("", v, &tz, !v.contains('T'))));
    if let Some(s) = &q.status {
        if !["ringing", "in_progress"].contains(&s.as_str())
            && !FINAL_STATUSES.contains(&s.as_str())
        {
            errs.push(
                "status",
                format!(
                    "`{s}` is not one of: ringing, in_progress, {}",
                    FINAL_STATUSES.join(", ")
                ),
            );
        }
    }
    if let Some(c) = &q.category {
        if !CATEGORIES.contains(&c.as_str()) {
            errs.push(
                "category",
                format!("`{c}` is not one of: {}", CATEGORIES.join(", ")),
            );
        }
    }
    let caller = q.caller.as_deref().and_then(|c| {
        errs.check(
            "caller",
            caller(c, region.unwrap_or(Region::parse("RU").ok()?)),
        )
    });
    let oldest_first = match q.sort.as_deref() {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(other) => {
            errs.push("sort", format!("`{other}` is not newest or oldest"));
            false
        }
    };
    errs.finish()?;
    let f = CallFilter {
        site_id: q.site_id,
        from,
        to,
        status: q.status,
        source: q.source,
        channel: q.channel,
        campaign: q.campaign,
        category: q.category,
        tag: q.tag.map(|t| t.trim().to_lowercase()),
        agent: q.agent,
        caller,
        first_time: q.first_time,
        min_duration: q.min_duration,
        oldest_first,
    };
    Ok(Json(
        st.store
            .list_calls(
                &auth.account_id,
                &f,
                q.cursor.as_deref(),
                q.limit.unwrap_or(super::DEFAULT_LIMIT),
            )
            .await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/calls/{call_id}", tag = "calls", request_body = CallPatch,
    responses((status = 200, body = Call), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_call(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<CallPatch>,
) -> ApiResult<Json<Call>> {
    let mut errs = Errors::new();
    if let Some(c) = &b.category {
        if !CATEGORIES.contains(&c.as_str()) {
            errs.push(
                "category",
                format!("`{c}` is not one of: {}", CATEGORIES.join(", ")),
            );
        }
    }
    let tags = b.tags.as_ref().map(|tags| {
        let mut out: Vec<String> = Vec::new();
        if tags.len() > 20 {
            errs.push("tags", "at most 20 tags");
        }
        for (i, t) in tags.iter().enumerate() {
            let t = t.trim().to_lowercase();
            if t.is_empty()
                || t.chars().count() > 50
                || t.chars().any(|c| c.is_control() || c == '"' || c == '\\')
            {
                errs.push(format!("tags[{i}]"), "1-50 characters, no quotes");
            } else if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    });
    let deal_value = match b.deal_value {
        Some(Some(v)) if !(0.0..=1e12).contains(&v) || !v.is_finite() => {
            errs.push("deal_value", "a number from 0 to 1,000,000,000,000");
            None
        }
        Some(v) => Some(v.map(|v| (v * 100.0).round() as i64)),
        None => None,
    };
    let comment = match b.comment {
        Some(Some(c)) if c.chars().count() > 5000 => {
            errs.push("comment", "at most 5000 characters");
            None
        }
        Some(c) => Some(c.filter(|c| !c.trim().is_empty())),
        None => None,
    };
    errs.finish()?;
    let u = CallUpdate {
        category: b.category,
        tags,
        deal_value,
        comment,
    };
    Ok(Json(st.store.update_call(&auth.account_id, &id, &u).await?))
}

#[utoipa::path(get, path = "/api/v1/calls/{call_id}", tag = "calls",
    responses((status = 200, body = CallDetail), (status = 404, body = Problem)))]
pub async fn get_call(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CallDetail>> {
    let call = st.store.get_call(&auth.account_id, &id).await?;
    let (session, pages) = match &call.session_id {
        Some(sid) => (
            Some(st.store.get_session(&call.site_id, sid).await?),
            st.store.session_pages(sid).await?,
        ),
        None => (None, Vec::new()),
    };
    Ok(Json(CallDetail {
        call,
        session,
        pages,
    }))
}

#[utoipa::path(post, path = "/api/v1/calls/{call_id}/track-code", tag = "calls", request_body = TrackCodeBody,
    responses((status = 200, body = Call), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn attribute_by_code(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<TrackCodeBody>,
) -> ApiResult<Json<Call>> {
    let code = b.code.trim();
    if !(4..=6).contains(&code.len()) || !code.bytes().all(|c| c.is_ascii_digit()) {
        return Err(calltrail_core::Invalid::field("code", "a track code is 4-6 digits").into());
    }
    let call = st.store.get_call(&auth.account_id, &id).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    let session = st
        .store
        .session_by_track_code(&call.site_id, code, now.max(call.started_at.as_millisecond()))
        .await?
        .ok_or_else(|| calltrail_core::Invalid::field("code", format!("no visit of this site shows the code {code} (codes live 24 hours after the visit)")))?;
    Ok(Json(
        st.store
            .attribute_call(&auth.account_id, &id, &session, "track_code", 1.0)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/calls/{call_id}/recording", tag = "calls",
    responses((status = 200, description = "The recording (audio); `Range` requests get 206", content_type = "audio/mpeg"), (status = 404, body = Problem)))]
pub async fn recording(
    st: State<AppState>,
    auth: Auth,
    id: Path<String>,
    req: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    crate::recordings::download(st, auth, id, req).await
}
