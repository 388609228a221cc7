//! Page loads, written together: group commit for `/t/v1/visit` (and the store's part of
//! `/t/v1/event` and `/t/v1/ping`).
//!
//! Every page load writes a session or moves one on, adds a page view, and keeps or leases a
//! number, in a transaction, before the answer goes out. Written one per transaction, a page
//! load costs several database round trips, all behind the pool's lock. Here one writer task
//! takes the page loads that arrived while it was writing the last batch and writes them all
//! in one transaction per kind (`Store::continue_sessions` for live sessions, then
//! `Store::open_sessions` for new ones: a handful of statements whatever the batch's size),
//! then answers each. Under light load a batch is one page load and nothing waits; under
//! heavy load batches grow and each one's share of the work shrinks. Every page load is
//! still answered only after its transaction committed. A page load or event of a session
//! this node remembers (`heartbeat`) is only its page view (`Store::add_pages`): one
//! multi-row insert per batch, no read.
//!
//! On SQLite the writer task has a thread of its own (with a single-threaded runtime): it
//! does SQLite's work itself (see `calltrail_store`'s `script`), which on one of the
//! server's runtime threads held up the requests queued behind it there, and it waited its
//! turn behind them each time a page load woke it. The operating system shares the cores
//! between it and the server's threads; measured, the visit rates rose by a fifth
//! (docs/BENCHMARKS.md).
//!
//! On PostgreSQL, continuing sessions skip the queue: each is its own transaction (its kept
//! lease is moved on by an update that checks the lease is still live, which another node
//! may change at any moment), run by the request itself, so one node's page loads don't
//! wait on one another.

use std::sync::Mutex;

use calltrail_core::engine::Millis;
use calltrail_store::engine::{NewPage, NewSession, Shown, Target};
use calltrail_store::{Backend, Continuing, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// The most page loads one transaction writes.
pub const MAX_BATCH: usize = 256;
/// Page loads waiting for the writer; beyond this, callers wait for room (and the tracking
/// deadline answers 503 if that takes too long).
const QUEUE: usize = 8192;

enum Job {
    Open {
        session: Box<NewSession>,
        target: Target,
        reply: oneshot::Sender<Result<Shown, StoreError>>,
    },
    Continue {
        req: Continuing,
        reply: oneshot::Sender<Result<Option<Shown>, StoreError>>,
    },
    Page {
        page: (String, NewPage),
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

impl Job {
    fn abandoned(&self) -> bool {
        match self {
            Self::Open { reply, .. } => reply.is_closed(),
            Self::Continue { reply, .. } => reply.is_closed(),
            Self::Page { reply, .. } => reply.is_closed(),
        }
    }
}

/// The queue of page loads in front of their writer task (started on first use, and again
/// if it ever stopped; it ends when the last handle is dropped).
pub struct VisitWriter {
    store: Store,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    clock: fn() -> Millis,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the visit writer stopped".into())
}

impl VisitWriter {
    pub fn new(store: Store, clock: fn() -> Millis) -> Self {
        Self {
            store,
            tx: Mutex::new(None),
            clock,
        }
    }

    /// The writer's queue. A writer that stopped (a panic in a batch) is replaced, so one
    /// bad batch cannot leave the node answering 503 to every visit.
    fn queue(&self) -> mpsc::Sender<Job> {
        let mut tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tx.as_ref() {
            Some(q) if !q.is_closed() => q.clone(),
            _ => {
                let (q, rx) = mpsc::channel(QUEUE);
                start(self.store.clone(), rx, self.clock);
                *tx = Some(q.clone());
                q
            }
        }
    }

    /// Open a session (with the next batch) and give it its number.
    pub async fn open(&self, session: NewSession, target: Target) -> Result<Shown, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Open {
            session: Box::new(session),
            target,
            reply,
        };
        self.queue().send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Add a page view to a session whose answer the caller knows (with the next batch);
    /// `false` when the session no longer exists. PostgreSQL writes it at once.
    pub async fn add_page(&self, session_id: String, page: NewPage) -> Result<bool, StoreError> {
        let page = (session_id, page);
        if self.store.backend() == Backend::Postgres {
            let added = self
                .store
                .add_pages(std::slice::from_ref(&page), (self.clock)())
                .await?;
            return Ok(added.first().copied().unwrap_or(false));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Page { page, reply };
        self.queue().send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Continue a session (with the next batch); `None` when it is not live.
    pub async fn continue_session(&self, req: Continuing) -> Result<Option<Shown>, StoreError> {
        if self.store.backend() == Backend::Postgres {
            let now = (self.clock)();
            let page = req.page.as_ref();
            return self
                .store
                .continue_session(&req.site_id, &req.session_id, page, &req.pools, now)
                .await;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Continue { req, reply };
        self.queue().send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Start the writer task: on SQLite on a thread of its own, on PostgreSQL (whose work is
/// waiting on the network) on the server's runtime. If the thread cannot be had, the queue
/// closes with it and the next page load tries again.
fn start(store: Store, rx: mpsc::Receiver<Job>, clock: fn() -> Millis) {
    if store.backend() == Backend::Postgres {
        tokio::spawn(run(store, rx, clock));
        return;
    }
    let thread = std::thread::Builder::new()
        .name("calltrail-visits".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(store, rx, clock)),
                Err(e) => tracing::error!(error = %e, "cannot start the visit writer's runtime"),
            }
        });
    if let Err(e) = thread {
        tracing::error!(error = %e, "cannot start the visit writer's thread");
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, clock: fn() -> Millis) {
    let store = &store;
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Callers that gave up (their deadline passed) need nothing written.
        jobs.retain(|j| !j.abandoned());
        let mut continues = Vec::new();
        let mut pages = Vec::new();
        let mut opens = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Continue { req, reply } => continues.push((req, reply)),
                Job::Page { page, reply } => pages.push((page, reply)),
                Job::Open {
                    session,
                    target,
                    reply,
                } => opens.push(((*session, target), reply)),
            }
        }
        // One clock reading per transaction, taken once the writer holds it: nothing
        // committed before can look as if it happened later.
        if !continues.is_empty() {
            let (reqs, replies): (Vec<_>, Vec<_>) = continues.into_iter().unzip();
            let done = store.continue_sessions(&reqs, clock()).await;
            answer(done, reqs, replies, |r| async move {
                let page = r.page.as_ref();
                store
                    .continue_session(&r.site_id, &r.session_id, page, &r.pools, clock())
                    .await
            })
            .await;
        }
        if !pages.is_empty() {
            let (items, replies): (Vec<_>, Vec<_>) = pages.into_iter().unzip();
            let done = store.add_pages(&items, clock()).await;
            answer(done, items, replies, |p| async move {
                let added = store.add_pages(std::slice::from_ref(&p), clock()).await?;
                Ok(added.first().copied().unwrap_or(false))
            })
            .await;
        }
        if !opens.is_empty() {
            let (items, replies): (Vec<_>, Vec<_>) = opens.into_iter().unzip();
            let done = store.open_sessions(&items, clock()).await;
            answer(done, items, replies, |(s, t)| async move {
                store.open_session(&s, &t, clock()).await
            })
            .await;
        }
    }
}

/// Send each caller its answer. When the batch failed, one bad request must not fail the
/// others: each is written again on its own and gets its own answer.
async fn answer<I, T, F, Fut>(
    done: Result<Vec<T>, StoreError>,
    items: Vec<I>,
    replies: Vec<oneshot::Sender<Result<T, StoreError>>>,
    one: F,
) where
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match done {
        Ok(answers) => {
            for (reply, a) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(a));
            }
        }
        Err(e) if items.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = items.len(), "a batch of page loads failed; writing them one by one");
            for (item, reply) in items.into_iter().zip(replies) {
                let _ = reply.send(one(item).await);
            }
        }
    }
}
