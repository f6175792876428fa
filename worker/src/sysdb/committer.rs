//! Group commit of workflow starts, step checkpoints and outcomes.
//!
//! Callers submit a write and await its reply. A few writer tasks, each owning one connection,
//! take turns at the queue: a writer that becomes free takes everything that queued up while
//! it was busy and writes it as one statement (see `batch`), so under load one commit carries
//! many checkpoints, while a lone write costs a single round trip. Invariant: a caller is
//! answered only after its own row committed, or with the error that prevented it. A failed
//! batch is retried row by row, so one bad row cannot fail its neighbours.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};

use prometheus_client::metrics::histogram::Histogram;

use super::batch::{Batch, Written};
use super::{CheckpointOutcome, NewWorkflow, Outcome, StartOutcome, StepRecord, SystemDatabase};
use crate::model::error::is_transient;
use crate::model::error::{Error, Result};

const MAX_BATCH: usize = 512;
const RETRIES: u32 = 4;

enum Write {
    // Boxed: a row is far larger than the other writes, and every queued write is as large
    // as the largest variant.
    Start(Box<NewWorkflow>, oneshot::Sender<Result<StartOutcome>>),
    Step(StepRecord, oneshot::Sender<Result<CheckpointOutcome>>),
    Finish(Outcome, oneshot::Sender<Result<bool>>),
}

/// Submits writes to the group committer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Write>,
    busy: Arc<Semaphore>,
    writers: usize,
}

impl Committer {
    /// Starts `writers` writer tasks on the current runtime. They stop when every `Committer`
    /// is dropped, after writing what was already submitted. Each batch's size (writes in one
    /// commit) is observed in `batch_sizes`.
    pub(crate) fn start(db: SystemDatabase, writers: usize, batch_sizes: Histogram) -> Committer {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(rx));
        let busy = Arc::new(Semaphore::new(writers));
        for _ in 0..writers {
            tokio::spawn(writer(db.clone(), queue.clone(), busy.clone(), batch_sizes.clone()));
        }
        Committer { tx, busy, writers }
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Write) -> Result<T> {
        let (reply, wait) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return Err(Error::NotLaunched("mainstay's committer has stopped (the runtime shut down)"));
        }
        wait.await.unwrap_or(Err(Error::NotLaunched("mainstay's committer stopped before confirming a write")))
    }

    pub(crate) async fn start_workflow(&self, row: NewWorkflow) -> Result<StartOutcome> {
        self.submit(|r| Write::Start(Box::new(row), r)).await
    }

    pub(crate) async fn checkpoint(&self, row: StepRecord) -> Result<CheckpointOutcome> {
        self.submit(|r| Write::Step(row, r)).await
    }

    pub(crate) async fn finish(&self, row: Outcome) -> Result<bool> {
        self.submit(|r| Write::Finish(row, r)).await
    }

    /// Waits (at most `grace`) until no batch is being written.
    pub(crate) async fn quiesce(&self, grace: Duration) {
        let all = self.busy.acquire_many(self.writers as u32);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("checkpoint writes still in flight after {grace:?}");
        }
    }
}

async fn writer(db: SystemDatabase, queue: Arc<Mutex<mpsc::UnboundedReceiver<Write>>>, busy: Arc<Semaphore>, batch_sizes: Histogram) {
    let mut conn: Option<PgConnection> = None;
    loop {
        let batch = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            batch
        };
        let Ok(_writing) = busy.acquire().await else { return };
        batch_sizes.observe(batch.len() as f64);
        flush(&db, &mut conn, batch).await;
    }
}

type Replies<R, T> = Vec<(R, oneshot::Sender<Result<T>>)>;

#[derive(Default)]
struct Split {
    starts: Replies<NewWorkflow, StartOutcome>,
    steps: Replies<StepRecord, CheckpointOutcome>,
    finishes: Replies<Outcome, bool>,
}

impl Split {
    fn len(&self) -> usize {
        self.starts.len() + self.steps.len() + self.finishes.len()
    }

    fn batch(&self) -> Batch<'_> {
        Batch {
            starts: self.starts.iter().map(|(r, _)| r).collect(),
            steps: self.steps.iter().map(|(r, _)| r).collect(),
            finishes: self.finishes.iter().map(|(r, _)| r).collect(),
        }
    }

    /// Each write as a batch of its own.
    fn singles(self) -> Vec<Split> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.starts.into_iter().map(|w| Split { starts: vec![w], ..Split::default() }));
        out.extend(self.steps.into_iter().map(|w| Split { steps: vec![w], ..Split::default() }));
        out.extend(self.finishes.into_iter().map(|w| Split { finishes: vec![w], ..Split::default() }));
        out
    }

    fn reply(self, (starts, steps, finishes): Written) {
        reply_all(self.starts, starts);
        reply_all(self.steps, steps);
        reply_all(self.finishes, finishes);
    }

    fn fail(self, e: &sqlx::Error) {
        let msg = e.to_string();
        let err = |what: String| Error::db(what, sqlx::Error::Protocol(msg.clone()));
        for (r, s) in self.starts {
            let e = super::duplicate_of(e, &r).unwrap_or_else(|| err(format!("record the start of workflow {}", r.id)));
            let _ = s.send(Err(e));
        }
        for (r, s) in self.steps {
            let _ = s.send(Err(err(format!("checkpoint step {} of workflow {}", r.function_id, r.workflow_id))));
        }
        for (r, s) in self.finishes {
            let _ = s.send(Err(err(format!("record the outcome of workflow {}", r.workflow_id))));
        }
    }
}

fn reply_all<R, T>(senders: Replies<R, T>, results: Vec<T>) {
    for ((_, s), r) in senders.into_iter().zip(results) {
        let _ = s.send(Ok(r));
    }
}

async fn flush(db: &SystemDatabase, conn: &mut Option<PgConnection>, writes: Vec<Write>) {
    let mut split = Split::default();
    for w in writes {
        match w {
            Write::Start(r, s) => split.starts.push((*r, s)),
            Write::Step(r, s) => split.steps.push((r, s)),
            Write::Finish(r, s) => split.finishes.push((r, s)),
        }
    }
    match write_with_retries(db, conn, &split).await {
        Ok(written) => split.reply(written),
        Err(e) if split.len() > 1 => {
            tracing::debug!(error = %e, rows = split.len(), "batch failed; writing its rows one by one");
            for single in split.singles() {
                match write_with_retries(db, conn, &single).await {
                    Ok(written) => single.reply(written),
                    Err(e) => single.fail(&e),
                }
            }
        }
        Err(e) => split.fail(&e),
    }
}

async fn write_with_retries(
    db: &SystemDatabase,
    conn: &mut Option<PgConnection>,
    split: &Split,
) -> std::result::Result<Written, sqlx::Error> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        let result = match conn {
            Some(c) => db.write_batch(c, &split.batch()).await,
            None => match db.pool().connect_options().connect().await {
                Ok(c) => db.write_batch(conn.insert(c), &split.batch()).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(w) => return Ok(w),
            Err(e) if is_transient(&e) && attempt < RETRIES => {
                // The connection may be broken: the next attempt opens a fresh one.
                *conn = None;
                attempt += 1;
                tracing::warn!(error = %e, attempt, "checkpoint write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                if is_transient(&e) {
                    *conn = None;
                }
                return Err(e);
            }
        }
    }
}
