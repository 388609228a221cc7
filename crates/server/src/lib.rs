//! calltrail-server: the HTTP face of calltrail: health and metrics, the REST API,
//! and (with later parts) the tracking endpoints, telephony hooks and dashboard.

pub mod ami;
pub mod api;
pub mod demo;
pub mod error;
pub mod extract;
pub mod geoip;
pub mod heartbeat;
pub mod hooks;
pub mod metrics;
pub mod recordings;
pub mod tracking;
pub mod visits;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use calltrail_store::Store;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// What the server needs to know beyond the database.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The URL people and browsers reach this server at (for the install snippet and
    /// webhook URLs), e.g. `https://track.example.com`.
    pub public_url: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest time a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// Seconds between the snippet's heartbeats while a tab is visible.
    pub ping_s: u32,
    /// The demo site's public key: serves the demo landing page at `/demo/`.
    pub demo_site_key: Option<String>,
    /// Where recordings and other files are kept.
    pub data_dir: std::path::PathBuf,
    /// City database (`geoip_db`); `None`: sessions get no city.
    pub geoip: Option<Arc<geoip::GeoIp>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8790".into(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            ping_s: 30,
            demo_site_key: None,
            data_dir: std::path::PathBuf::from("./data"),
            geoip: None,
        }
    }
}

/// Shared by every handler: one `Arc`, so the clones axum makes of it for every request
/// (one per layer and handler that holds the state) cost one reference count, not one per
/// field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub metrics: metrics::Metrics,
    pub sites: tracking::SiteCache,
    /// Heartbeats answered from memory and written back once a second.
    pub beats: heartbeat::Heartbeats,
    /// Page loads (new and live sessions), written in batches by one writer task.
    pub visits: visits::VisitWriter,
    /// Outbound HTTP (recordings, integrations).
    pub http: reqwest::Client,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        Self(Arc::new(Shared {
            visits: visits::VisitWriter::new(store.clone(), tracking::now_ms),
            store,
            config: Arc::new(config),
            metrics: metrics::Metrics::default(),
            sites: tracking::SiteCache::default(),
            beats: heartbeat::Heartbeats::default(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("calltrail/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
        }))
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), st.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database: no answer in 2 s\n".to_owned(),
        ),
    }
}

async fn not_found() -> error::ApiError {
    error::ApiError::NotFound("route".into())
}

/// The whole application as a router.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/demo/", get(demo::page))
        .route("/demo/{*rest}", get(demo::page))
        .merge(api::router(state.clone()))
        .merge(tracking::router())
        .merge(hooks::router())
        .fallback(not_found)
        // One stack, applied once (outermost first): `Router::layer` boxes every route
        // again for each layer it is given, and each box is cloned, and its future boxed,
        // on every request. Inside the routing, so the metrics see the matched path.
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    state.config.request_timeout,
                ))
                // The timeout answers 408 with a default body of the inner response's body
                // type, which the body limit's own type is not: make it axum's.
                .map_response(IntoResponse::into_response)
                .layer(RequestBodyLimitLayer::new(body_limit))
                // The body limit hands on a `Limited` body; the layers below take axum's.
                .map_request(|r: axum::extract::Request<_>| r.map(axum::body::Body::new))
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    metrics::track,
                )),
        )
        .with_state(state)
}

/// Serve until `shutdown` resolves, then finish the requests under way.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = heartbeat::spawn_flusher(state.clone());
    let last = state.clone();
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    flusher.abort();
    // Heartbeats remembered since the last flush go to the store before we leave.
    heartbeat::flush(&last).await;
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal sent as soon as the server says
/// it listens (a supervisor's quick stop, a test) must find them rather than the default
/// action, which kills the process at once.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn wait(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            let (term, int) = signals;
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing requests under way");
    }
}
