//! Call recordings: fetched from the provider's URL (or uploaded through the generic
//! adapter) into `<data dir>/recordings`, served with HTTP range support to the account's
//! API users only, and deleted after the account's retention.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::error::{ApiError, ApiResult};
use crate::extract::Auth;
use crate::AppState;

/// Largest recording kept.
pub const MAX_RECORDING_BYTES: u64 = 200 * 1024 * 1024;

fn dir(st: &AppState) -> PathBuf {
    st.config.data_dir.join("recordings")
}

#[allow(clippy::case_sensitive_file_extension_comparisons)] // `path` is lowercased
fn extension(content_type: Option<&str>, url: &str) -> &'static str {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("mpeg") || ct.contains("mp3") || path.ends_with(".mp3") {
        "mp3"
    } else if ct.contains("wav") || path.ends_with(".wav") {
        "wav"
    } else if ct.contains("ogg") || path.ends_with(".ogg") || path.ends_with(".opus") {
        "ogg"
    } else {
        "bin"
    }
}

/// Keep `bytes` as the recording of `call_id`; written whole, then renamed into place.
pub async fn keep(st: &AppState, call_id: &str, bytes: &[u8], ext: &str) -> anyhow::Result<()> {
    let d = dir(st);
    tokio::fs::create_dir_all(&d).await?;
    let name = format!("{call_id}.{ext}");
    let tmp = d.join(format!(".{name}.part"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, d.join(&name)).await?;
    st.store.set_recording_path(call_id, &name).await?;
    Ok(())
}

async fn fetch(st: &AppState, call_id: &str, url: &str) -> anyhow::Result<()> {
    let res = st
        .http
        .get(url)
        .timeout(Duration::from_secs(120))
        .send()
        .await?
        .error_for_status()?;
    if res
        .content_length()
        .is_some_and(|n| n > MAX_RECORDING_BYTES)
    {
        anyhow::bail!("recording is larger than {MAX_RECORDING_BYTES} bytes");
    }
    let ext = extension(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        url,
    );
    let bytes = res.bytes().await?;
    if bytes.len() as u64 > MAX_RECORDING_BYTES {
        anyhow::bail!("recording is larger than {MAX_RECORDING_BYTES} bytes");
    }
    keep(st, call_id, &bytes, ext).await
}

/// Fetch a call's recording in the background, retrying a few times; the sweeper picks
/// up whatever still fails.
pub fn fetch_later(st: &AppState, call_id: String, url: String) {
    let resolve = move |_st: AppState| {
        let url = url.clone();
        async move { anyhow::Ok(url) }
    };
    fetch_resolved_later(st, call_id, resolve);
}

/// Like [`fetch_later`], for providers that hand out a short-lived link on request (asked
/// again on every attempt).
pub fn fetch_resolved_later<F, Fut>(st: &AppState, call_id: String, resolve: F)
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<String>> + Send,
{
    let st = st.clone();
    tokio::spawn(async move {
        for attempt in 0..3u32 {
            let got = match resolve(st.clone()).await {
                Ok(url) => fetch(&st, &call_id, &url).await,
                Err(e) => Err(e),
            };
            match got {
                Ok(()) => {
                    st.metrics.count("calltrail_recordings_fetched_total");
                    return;
                }
                Err(e) => {
                    tracing::warn!(call = %call_id, attempt, error = %e, "recording fetch failed");
                    tokio::time::sleep(Duration::from_secs(2u64.pow(attempt + 1))).await;
                }
            }
        }
        st.metrics.count("calltrail_recordings_failed_total");
    });
}

/// Every few minutes: fetch recordings still missing, delete those past retention.
pub fn spawn_sweeper(st: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = sweep(&st).await {
                tracing::warn!(error = %e, "recording sweep failed");
            }
            tokio::time::sleep(every).await;
        }
    })
}

pub async fn sweep(st: &AppState) -> anyhow::Result<()> {
    for (call_id, url) in st.store.calls_missing_recordings(20).await? {
        if let Err(e) = fetch(st, &call_id, &url).await {
            tracing::warn!(call = %call_id, error = %e, "recording fetch failed");
        }
    }
    let now = jiff::Timestamp::now().as_millisecond();
    for (call_id, name) in st.store.expired_recordings(now, 200).await? {
        let path = dir(st).join(&name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        st.store.clear_recording(&call_id).await?;
    }
    Ok(())
}

/// `GET /api/v1/calls/{id}/recording`: the file, with `Range` support.
pub async fn download(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let name = st
        .store
        .recording_path(&auth.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("recording of this call".into()))?;
    // Names are ours (`<call id>.<ext>`); refuse anything else.
    if name.contains('/') || name.contains("..") {
        return Err(ApiError::NotFound("recording".into()));
    }
    let path = dir(&st).join(name);
    match ServeFile::new(path).oneshot(req).await {
        Ok(res) => Ok(res.into_response()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(extension(Some("audio/mpeg"), "https://x/r"), "mp3");
        assert_eq!(extension(None, "https://x/r.wav?sig=1"), "wav");
        assert_eq!(extension(Some("audio/x-wav"), "https://x/r"), "wav");
        assert_eq!(
            extension(Some("application/octet-stream"), "https://x/r"),
            "bin"
        );
    }
}
