//! Group commit of workflow starts, step checkpoints and outcomes.
//!
//! Callers submit a write and await its reply. A collector takes whatever has queued up while
//! earlier batches were in flight and writes it as one statement per kind (one transaction when
//! kinds mix), so under load one commit carries many checkpoints, while a lone write still costs
//! a single round trip. Invariant: a caller is answered only after its own row committed, or
//! with the error that prevented it. A failed batch is retried row by row, so one bad row cannot
//! fail its neighbours.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, PgConnection};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{is_transient, CheckpointOutcome, NewWorkflow, Outcome, StartOutcome, StepRecord, SystemDatabase};
use crate::error::{Error, Result};

const MAX_BATCH: usize = 512;
const RETRIES: u32 = 4;

enum Write {
    Start(NewWorkflow, oneshot::Sender<Result<StartOutcome>>),
    Step(StepRecord, oneshot::Sender<Result<CheckpointOutcome>>),
    Finish(Outcome, oneshot::Sender<Result<bool>>),
}

/// Submits writes to the group committer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Write>,
    permits: Arc<Semaphore>,
    concurrency: usize,
}

impl Committer {
    /// Starts the collector on the current runtime. It stops when every `Committer` is dropped,
    /// after writing what was already submitted.
    pub(crate) fn start(db: SystemDatabase, concurrency: usize) -> Committer {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(concurrency));
        tokio::spawn(collect(db, rx, permits.clone(), concurrency));
        Committer { tx, permits, concurrency }
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Write) -> Result<T> {
        let (reply, wait) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return Err(Error::NotLaunched("mainstay's committer has stopped (the runtime shut down)"));
        }
        wait.await.unwrap_or(Err(Error::NotLaunched(
            "mainstay's committer stopped before confirming a write",
        )))
    }

    pub(crate) async fn start_workflow(&self, row: NewWorkflow) -> Result<StartOutcome> {
        self.submit(|r| Write::Start(row, r)).await
    }

    pub(crate) async fn checkpoint(&self, row: StepRecord) -> Result<CheckpointOutcome> {
        self.submit(|r| Write::Step(row, r)).await
    }

    pub(crate) async fn finish(&self, row: Outcome) -> Result<bool> {
        self.submit(|r| Write::Finish(row, r)).await
    }

    /// Waits (at most `grace`) until no batch is being written.
    pub(crate) async fn quiesce(&self, grace: Duration) {
        let all = self.permits.acquire_many(self.concurrency as u32);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("checkpoint writes still in flight after {grace:?}");
        }
    }
}

async fn collect(
    db: SystemDatabase,
    mut rx: mpsc::UnboundedReceiver<Write>,
    permits: Arc<Semaphore>,
    concurrency: usize,
) {
    loop {
        let Some(first) = rx.recv().await else { break };
        // Waiting for a free writer lets the next batch grow: that is the group commit.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let db = db.clone();
        tokio::spawn(async move {
            flush(&db, batch).await;
            drop(permit);
        });
    }
    // Wait for in-flight batches before the task ends.
    let _ = permits.acquire_many(concurrency as u32).await;
}

#[derive(Default)]
struct Split {
    starts: Vec<(NewWorkflow, oneshot::Sender<Result<StartOutcome>>)>,
    steps: Vec<(StepRecord, oneshot::Sender<Result<CheckpointOutcome>>)>,
    finishes: Vec<(Outcome, oneshot::Sender<Result<bool>>)>,
}

async fn flush(db: &SystemDatabase, batch: Vec<Write>) {
    let mut split = Split::default();
    for w in batch {
        match w {
            Write::Start(r, s) => split.starts.push((r, s)),
            Write::Step(r, s) => split.steps.push((r, s)),
            Write::Finish(r, s) => split.finishes.push((r, s)),
        }
    }
    let total = split.starts.len() + split.steps.len() + split.finishes.len();
    match write_with_retries(db, &split).await {
        Ok((starts, steps, finishes)) => {
            reply_all(split.starts, starts);
            reply_all(split.steps, steps);
            reply_all(split.finishes, finishes);
        }
        Err(e) if total > 1 => {
            tracing::debug!(error = %e, rows = total, "batch failed; writing its rows one by one");
            for (row, s) in split.starts {
                let one = Split { starts: vec![(row, s)], ..Split::default() };
                finish_single(db, one).await;
            }
            for (row, s) in split.steps {
                let one = Split { steps: vec![(row, s)], ..Split::default() };
                finish_single(db, one).await;
            }
            for (row, s) in split.finishes {
                let one = Split { finishes: vec![(row, s)], ..Split::default() };
                finish_single(db, one).await;
            }
        }
        Err(e) => fail_all(split, e),
    }
}

async fn finish_single(db: &SystemDatabase, split: Split) {
    match write_with_retries(db, &split).await {
        Ok((a, b, c)) => {
            reply_all(split.starts, a);
            reply_all(split.steps, b);
            reply_all(split.finishes, c);
        }
        Err(e) => fail_all(split, e),
    }
}

fn reply_all<R, T>(senders: Vec<(R, oneshot::Sender<Result<T>>)>, results: Vec<T>) {
    for ((_, s), r) in senders.into_iter().zip(results) {
        let _ = s.send(Ok(r));
    }
}

fn fail_all(split: Split, e: sqlx::Error) {
    let msg = e.to_string();
    let err = |what: String| Error::db(what, sqlx::Error::Protocol(msg.clone()));
    for (r, s) in split.starts {
        let _ = s.send(Err(err(format!("record the start of workflow {}", r.id))));
    }
    for (r, s) in split.steps {
        let _ = s.send(Err(err(format!(
            "checkpoint step {} of workflow {}",
            r.function_id, r.workflow_id
        ))));
    }
    for (r, s) in split.finishes {
        let _ = s.send(Err(err(format!("record the outcome of workflow {}", r.workflow_id))));
    }
}

type Written = (Vec<StartOutcome>, Vec<CheckpointOutcome>, Vec<bool>);

async fn write_with_retries(db: &SystemDatabase, split: &Split) -> std::result::Result<Written, sqlx::Error> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        match write(db, split).await {
            Ok(w) => return Ok(w),
            Err(e) if is_transient(&e) && attempt < RETRIES => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "checkpoint write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write(db: &SystemDatabase, split: &Split) -> std::result::Result<Written, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let kinds = [!split.starts.is_empty(), !split.steps.is_empty(), !split.finishes.is_empty()]
        .iter()
        .filter(|k| **k)
        .count();
    if kinds <= 1 {
        // A single statement commits by itself: one round trip.
        return write_kinds(db, &mut conn, split).await;
    }
    let mut tx = conn.begin().await?;
    let written = write_kinds(db, &mut tx, split).await?;
    tx.commit().await?;
    Ok(written)
}

async fn write_kinds(
    db: &SystemDatabase,
    conn: &mut PgConnection,
    split: &Split,
) -> std::result::Result<Written, sqlx::Error> {
    let starts = if split.starts.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<&NewWorkflow> = split.starts.iter().map(|(r, _)| r).collect();
        db.insert_workflows(conn, &rows).await?
    };
    let steps = if split.steps.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<&StepRecord> = split.steps.iter().map(|(r, _)| r).collect();
        db.insert_steps(conn, &rows).await?
    };
    let finishes = if split.finishes.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<&Outcome> = split.finishes.iter().map(|(r, _)| r).collect();
        db.finish_workflows(conn, &rows).await?
    };
    Ok((starts, steps, finishes))
}
