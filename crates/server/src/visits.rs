//! New sessions, opened together: group commit for `/t/v1/visit`.
//!
//! Every new visitor needs a session, a page view and usually a lease, written in a
//! transaction before the answer goes out. Written one visit per transaction, a visit costs
//! about ten database round trips, all behind the pool's lock. Here one writer task takes
//! the visits that arrived while it was writing the last batch and opens them all in one
//! transaction (`Store::open_sessions`, a handful of statements whatever the batch's size),
//! then answers each. Under light load a batch is one visit and nothing waits; under heavy
//! load batches grow and each visit's share of the work shrinks. Every visit is still
//! answered only after its transaction committed.

use std::sync::OnceLock;

use calltrail_core::engine::Millis;
use calltrail_store::engine::{NewSession, Shown, Target};
use calltrail_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// The most visits one transaction opens.
pub const MAX_BATCH: usize = 256;
/// Visits waiting for the writer; beyond this, callers wait for room (and the tracking
/// deadline answers 503 if that takes too long).
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<Shown, StoreError>>;

struct Job {
    session: NewSession,
    target: Target,
    reply: Reply,
}

/// The queue of new sessions in front of their writer task (started on first use, so it
/// runs on the server's runtime; it ends when the last handle is dropped).
pub struct VisitWriter {
    store: Store,
    tx: OnceLock<mpsc::Sender<Job>>,
    clock: fn() -> Millis,
}

impl VisitWriter {
    pub fn new(store: Store, clock: fn() -> Millis) -> Self {
        Self {
            store,
            tx: OnceLock::new(),
            clock,
        }
    }

    /// Open a session (with the next batch) and give it its number.
    pub async fn open(&self, session: NewSession, target: Target) -> Result<Shown, StoreError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.store.clone(), rx, self.clock));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Job {
            session,
            target,
            reply,
        })
        .await
        .map_err(|_| StoreError::Unavailable("the visit writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the visit writer stopped".into()))?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, clock: fn() -> Millis) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Callers that gave up (their deadline passed) need nothing opened.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let batch: Vec<(NewSession, Target)> = jobs
            .iter_mut()
            .map(|j| {
                (
                    std::mem::take(&mut j.session),
                    std::mem::replace(&mut j.target, Target::None),
                )
            })
            .collect();
        // One clock reading for the batch, taken once the writer holds it: nothing committed
        // before can look as if it happened later.
        match store.open_sessions(&batch, clock()).await {
            Ok(shown) => {
                for (job, shown) in jobs.drain(..).zip(shown) {
                    let _ = job.reply.send(Ok(shown));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                // One visit must not fail the others: open them one by one, so each gets
                // its own answer.
                tracing::warn!(error = %e, visits = batch.len(), "a batch of visits failed; opening them one by one");
                for (job, (s, t)) in jobs.drain(..).zip(batch) {
                    let one = store.open_session(&s, &t, clock()).await;
                    let _ = job.reply.send(one);
                }
            }
        }
        jobs.clear();
    }
}
