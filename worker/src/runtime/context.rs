//! The context of the workflow execution a task is running, carried in a task-local.
//!
//! Invariants: operation IDs (`function_id`) are handed out when an operation is *called*, in
//! call order, starting at 1, so concurrent steps (`join!`) get the same IDs on every replay; a
//! first execution carries no recorded steps and never reads before a step, while a replay
//! carries every recorded step, read once when it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::model::clock::now_ms;
use crate::model::error::{Error, Result};
use crate::model::status::Status;
use crate::runtime::app::Runtime;
use crate::sysdb::{CheckpointOutcome, RecordedOp, StepRecord};

tokio::task_local! {
    static CONTEXT: Arc<WorkflowContext>;
    /// Set while the body of a step or transaction runs. Operations called there are plain
    /// calls that take no operation ID: a step body re-runs on retry and is skipped on replay,
    /// so IDs taken inside it would shift every later operation's ID between executions.
    static IN_STEP: ();
}

pub(crate) struct WorkflowContext {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) workflow_id: Arc<str>,
    pub(crate) owner: Arc<str>,
    next_function_id: AtomicI32,
    recorded: Option<HashMap<i32, RecordedOp>>,
    pub(crate) cancel: CancellationToken,
    /// When the workflow is cancelled for running too long (epoch ms).
    pub(crate) deadline_ms: Option<i64>,
}

impl WorkflowContext {
    pub(crate) fn new(
        rt: Arc<Runtime>,
        workflow_id: &str,
        owner: &str,
        recorded: Option<Vec<RecordedOp>>,
        deadline_ms: Option<i64>,
    ) -> WorkflowContext {
        WorkflowContext {
            rt,
            workflow_id: Arc::from(workflow_id),
            owner: Arc::from(owner),
            next_function_id: AtomicI32::new(1),
            recorded: recorded.map(|ops| ops.into_iter().map(|op| (op.function_id, op)).collect()),
            cancel: CancellationToken::new(),
            deadline_ms,
        }
    }

    /// Whether this execution replays an earlier one's recorded operations.
    pub(crate) fn is_replay(&self) -> bool {
        self.recorded.is_some()
    }

    pub(crate) fn next_function_id(&self) -> i32 {
        self.next_function_id.fetch_add(1, Ordering::SeqCst)
    }

    /// The record of operation `function_id`, if a previous execution wrote one. A record under
    /// another name means the code changed: a non-determinism error.
    pub(crate) fn replayed(&self, function_id: i32, name: &str) -> Result<Option<&RecordedOp>> {
        let Some(op) = self.recorded.as_ref().and_then(|r| r.get(&function_id)) else {
            return Ok(None);
        };
        if op.name != name {
            return Err(Error::NonDeterministic {
                workflow_id: self.workflow_id.to_string(),
                function_id,
                recorded: op.name.clone(),
                called: name.to_string(),
            });
        }
        crate::runtime::spans::record_replayed();
        Ok(Some(op))
    }

    /// Records the outcome of operation `function_id` (owner-checked, group-committed).
    pub(crate) async fn checkpoint(
        &self,
        function_id: i32,
        name: String,
        output: Option<String>,
        error: Option<String>,
        started_ms: i64,
    ) -> Result<CheckpointOutcome> {
        let record = StepRecord {
            workflow_id: self.workflow_id.clone(),
            owner: self.owner.clone(),
            function_id,
            name,
            output,
            error,
            child_workflow_id: None,
            started_ms,
            completed_ms: now_ms(),
        };
        self.rt.committer.checkpoint(record).await
    }

    /// Fails fast when the workflow was cancelled or the runtime is stopping.
    pub(crate) fn check_interrupted(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled { workflow_id: self.workflow_id.to_string() });
        }
        if self.rt.shutdown.is_cancelled() {
            return Err(Error::Shutdown { workflow_id: self.workflow_id.to_string() });
        }
        Ok(())
    }

    /// Sleeps until `deadline`, unless the workflow is cancelled or the runtime stops first.
    pub(crate) async fn sleep_until(&self, deadline: tokio::time::Instant) -> Result<()> {
        self.interruptible(tokio::time::sleep_until(deadline)).await
    }

    /// Runs `fut` unless the workflow is cancelled or the runtime stops first.
    pub(crate) async fn interruptible<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        tokio::select! {
            out = fut => Ok(out),
            _ = self.cancel.cancelled() => {
                Err(Error::Cancelled { workflow_id: self.workflow_id.to_string() })
            }
            _ = self.rt.shutdown.cancelled() => {
                Err(Error::Shutdown { workflow_id: self.workflow_id.to_string() })
            }
        }
    }

    /// Records a value-less operation's checkpoint (a timeout, a send) and maps the outcome:
    /// `Ok(None)` when recorded now, `Ok(Some(op))` when an earlier execution recorded it.
    pub(crate) async fn record(&self, function_id: i32, name: &str, output: Option<String>, started_ms: i64) -> Result<Option<RecordedOp>> {
        match self.checkpoint(function_id, name.to_string(), output, None, started_ms).await? {
            CheckpointOutcome::Recorded => Ok(None),
            CheckpointOutcome::Existing(op) => Ok(Some(op)),
            CheckpointOutcome::NotOwner => Err(self.lost_ownership().await),
        }
    }

    /// Records operation `function_id`'s output and returns `fresh()`, the value it encodes; if
    /// an earlier execution recorded the operation first, returns that record instead. (A
    /// closure, so that no value of a possibly non-`Send` type is held across the write.)
    pub(crate) async fn record_or_replay<T: serde::de::DeserializeOwned>(
        &self,
        function_id: i32,
        name: &str,
        output: String,
        started_ms: i64,
        fresh: impl FnOnce() -> T,
    ) -> Result<T> {
        match self.record(function_id, name, Some(output), started_ms).await? {
            None => Ok(fresh()),
            Some(op) => crate::runtime::step::recorded_result(&op, &self.workflow_id),
        }
    }

    /// Explains why a write owned by this execution was refused.
    pub(crate) async fn lost_ownership(&self) -> Error {
        match self.rt.db.get_status(&self.workflow_id).await {
            Ok(Some(s)) if s.status == Status::Cancelled => Error::Cancelled { workflow_id: self.workflow_id.to_string() },
            Ok(_) => Error::NotOwner { workflow_id: self.workflow_id.to_string() },
            Err(e) => e,
        }
    }
}

/// The context of the workflow this task is running, if any.
pub(crate) fn current() -> Option<Arc<WorkflowContext>> {
    CONTEXT.try_with(|c| c.clone()).ok()
}

/// The payload limit for an operation called here: the current workflow's runtime's (inside a
/// step body too), else the launched runtime's, else the default (such a call then fails for
/// want of a runtime anyway).
pub(crate) fn payload_limit() -> usize {
    match current() {
        Some(ctx) => ctx.rt.db.payload_limit(),
        None => crate::runtime::app::global().map(|rt| rt.db.payload_limit()).unwrap_or(crate::model::config::DEFAULT_MAX_PAYLOAD_BYTES),
    }
}

/// Whether the calling task is inside the body of a step or transaction.
pub(crate) fn in_step() -> bool {
    IN_STEP.try_with(|_| ()).is_ok()
}

/// Where an operation that needs a workflow was called from, for its error message.
pub(crate) fn not_in_workflow() -> &'static str {
    if in_step() {
        "inside a step, whose body is not recorded operation by operation"
    } else {
        "outside a workflow"
    }
}

/// Runs a step or transaction body: `make` builds its future (closures may do work when
/// called) and the future runs, both marked as inside a step.
pub(crate) async fn step_body<F: std::future::Future>(make: impl FnOnce() -> F) -> F::Output {
    let fut = IN_STEP.sync_scope((), make);
    IN_STEP.scope((), fut).await
}

/// The current workflow and the next operation ID in it, taken now; `None` outside a workflow
/// and inside a step body.
pub(crate) fn position() -> Option<(Arc<WorkflowContext>, i32)> {
    if in_step() {
        return None;
    }
    current().map(|ctx| {
        let id = ctx.next_function_id();
        (ctx, id)
    })
}

/// Like [`position`], for an operation with a durable timeout: two IDs are taken, the
/// operation's and (right after it) its timeout's.
pub(crate) fn position_with_timeout() -> Option<(Arc<WorkflowContext>, i32)> {
    if in_step() {
        return None;
    }
    current().map(|ctx| {
        let id = ctx.next_function_id();
        ctx.next_function_id();
        (ctx, id)
    })
}

/// Runs `fut` with `ctx` as the current workflow context.
pub(crate) async fn scope<F: std::future::Future>(ctx: Arc<WorkflowContext>, fut: F) -> F::Output {
    CONTEXT.scope(ctx, fut).await
}

/// The ID of the workflow the calling task is running, if it is running one.
pub fn workflow_id() -> Option<String> {
    current().map(|c| c.workflow_id.to_string())
}
