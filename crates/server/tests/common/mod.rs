//! Spawns the real server on port 0 over a fresh database, per backend.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use calltrail_server::{AppState, ServerConfig};
use calltrail_store::testing::{self, TestDb};
use serde_json::{json, Value};

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    /// The server's data dir (recordings).
    pub data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(db: TestDb) -> Self {
        Self::start_with(db, |_| {}).await
    }

    /// [`TestServer::start`] with a changed config (e.g. a city database).
    pub async fn start_with(db: TestDb, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            data_dir: data_dir.path().to_owned(),
            public_url: format!("http://{addr}"),
            max_body_bytes: 64 * 1024,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let state = AppState::new(db.store.clone(), config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            calltrail_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            db,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.db.cleanup().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new account and its API token.
    pub async fn account(&self, name: &str) -> (String, String) {
        let acc = self.db.store.create_account(name).await.unwrap();
        let (_, token) = self.db.store.create_token(&acc.id, "test").await.unwrap();
        (acc.id, token)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn create_site(&self, token: &str) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/sites",
                token,
                Some(json!({
                    "name": "Shop",
                    "domains": ["shop.example"],
                    "timezone": "Europe/Moscow",
                    "default_region": "RU",
                    "site_numbers": ["8 (495) 123-45-67"],
                    "forward_to": "+7 916 000-00-00"
                })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }
}

/// Run `f` against a server on each configured backend.
pub async fn each_backend<F, Fut>(f: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: std::future::Future<Output = TestServer>,
{
    for db in testing::databases().await {
        let backend = db.backend();
        eprintln!("-- on {backend:?}");
        let srv = TestServer::start(db).await;
        f(srv).await.stop().await;
    }
}
