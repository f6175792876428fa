//! Workflows: durable functions of steps, started, run, awaited and recorded.
//!
//! Invariants:
//! - a workflow ID names one execution record: starting an existing ID with the same workflow
//!   returns that run (it never runs twice); with another workflow it is a [`Error::WorkflowConflict`];
//! - a workflow's outcome is written once, by the execution that owns the row (`owner_xid`),
//!   and only while the row is `PENDING`;
//! - an interrupted workflow (shutdown, cancel, lost ownership, database outage) writes nothing
//!   and stays as it is for recovery; a panic is recorded as a failure named `Panic`.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Instrument, Span};

use crate::model::clock::now_ms;
use crate::model::error::{Error, Failure, Result};
use crate::model::options::WorkflowOptions;
use crate::model::queue::Queue;
use crate::model::serialization::{decode, decode_args, decode_failure, encode, encode_args, encode_failure, fit_failure};
use crate::model::status::{Status, WorkflowStatus};
use crate::runtime::app::{LocalOutcome, Mainstay, Runtime};
use crate::runtime::context::{self, WorkflowContext};
use crate::runtime::spans::{self, Operation};
use crate::runtime::step::IntoWorkflowCall;
use crate::runtime::telemetry;
use crate::sysdb::{Claimed, NewWorkflow, Outcome, StartOutcome, SystemDatabase};

/// A durable workflow. `#[mainstay::workflow]` implements it for an `async fn`; implement it by
/// hand to define workflows without macros.
pub trait Workflow: Send + Sync + 'static {
    /// The name recorded in the database, by which recovery and other SDKs find it.
    const NAME: &'static str;
    /// A hash of the workflow's source code, part of the default application version (so new
    /// workflow code is a new version). `#[mainstay::workflow]` sets it; by hand, change it
    /// whenever the body changes (or set the application version yourself).
    const SOURCE_HASH: u64 = 0;
    /// The Rust types of the positional arguments as written (`["i64", "String"]`), recorded at
    /// launch so tools can refuse an input of the wrong length before enqueueing it.
    /// `#[mainstay::workflow]` sets it; `None` (the default) means unknown, and nothing is
    /// checked.
    const ARGUMENTS: Option<&'static [&'static str]> = None;
    /// The arguments as a tuple (`()` for none, `(T,)` for one); stored as positional args.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The output on success.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the body.
    fn run(args: Self::Args) -> BoxFuture<'static, Result<Self::Output>>;
}

/// A call of workflow `W` with its arguments. `.await` it to run the workflow durably and get
/// its output, or [`start`](WorkflowCall::start) it in the background for a handle.
///
/// Inside a workflow, the call is a child workflow, recorded as a step of the caller.
#[must_use = "a workflow call does nothing until it is awaited or started"]
pub struct WorkflowCall<W: Workflow> {
    args: W::Args,
    options: WorkflowOptions,
    parent: Option<(Arc<WorkflowContext>, i32)>,
    runtime: Option<Arc<Runtime>>,
}

impl<W: Workflow> WorkflowCall<W> {
    /// A call of `W` with these arguments. Inside a workflow, its step ID is taken now.
    pub fn new(args: W::Args) -> Self {
        WorkflowCall::at(args, context::position())
    }

    pub(crate) fn at(args: W::Args, parent: Option<(Arc<WorkflowContext>, i32)>) -> Self {
        WorkflowCall { args, options: WorkflowOptions::default(), parent, runtime: None }
    }

    /// Runs the workflow under this ID (an idempotency key).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.options.id = Some(id.into());
        self
    }

    /// Enqueue only: refuse a second enqueue with this ID while the first is queued or running.
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.options.deduplication_id = Some(id.into());
        self
    }

    /// Enqueue only: the priority (lower runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// Enqueue only: become runnable only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }

    /// Cancel the workflow if it has not finished `timeout` after it started.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Enqueue only: the partition of a partitioned queue.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.options.partition_key = Some(key.into());
        self
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: WorkflowOptions) -> Self {
        self.options = options;
        self
    }

    /// Enqueues the workflow on `queue`; returns once the enqueue is durable. Inside a workflow
    /// the enqueue is recorded as a step: a replay returns the same handle and never enqueues
    /// twice.
    pub async fn enqueue(self, queue: &Queue) -> Result<WorkflowHandle<W::Output>> {
        queue.validate()?;
        queue.check_enqueue(self.options.priority, self.options.partition_key.as_deref())?;
        let rt = self.resolve_runtime()?;
        let handle = match self.parent {
            Some((parent, function_id)) => {
                start_child::<W>(rt.clone(), parent, function_id, self.args, self.options, Some(&queue.name)).await?.0
            }
            None => {
                let id = self.options.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let inputs = encode_args(&self.args, &format!("the inputs of workflow {id}"), rt.db.payload_limit())?;
                let row = new_row::<W>(&rt, id.clone(), inputs, &self.options, Some(&queue.name));
                match rt.committer.start_workflow(row).await? {
                    StartOutcome::Inserted => {}
                    StartOutcome::Exists { name } => check_same_workflow::<W>(&id, name)?,
                }
                WorkflowHandle::new(rt.clone(), id)
            }
        };
        rt.announce(&queue.name);
        Ok(handle)
    }

    /// Runs the workflow on this instance instead of the globally launched one.
    pub fn on(mut self, app: &Mainstay) -> Self {
        self.runtime = Some(app.runtime().clone());
        self
    }

    fn resolve_runtime(&self) -> Result<Arc<Runtime>> {
        if let Some((ctx, _)) = &self.parent {
            return Ok(ctx.rt.clone());
        }
        match &self.runtime {
            Some(rt) => Ok(rt.clone()),
            None => crate::runtime::app::global(),
        }
    }

    /// Starts the workflow in the background and returns once its start is durable.
    pub async fn start(self) -> Result<WorkflowHandle<W::Output>> {
        Ok(self.begin().await?.0)
    }

    async fn begin(self) -> Result<(WorkflowHandle<W::Output>, Option<tokio::task::JoinHandle<Result<W::Output>>>)> {
        let rt = self.resolve_runtime()?;
        match self.parent {
            Some((parent, function_id)) => start_child::<W>(rt, parent, function_id, self.args, self.options, None).await,
            None => start_top::<W>(rt, self.args, self.options).await,
        }
    }
}

impl<W: Workflow> IntoFuture for WorkflowCall<W> {
    type Output = Result<W::Output>;
    type IntoFuture = BoxFuture<'static, Result<W::Output>>;

    fn into_future(self) -> Self::IntoFuture {
        async move {
            let (handle, running) = self.begin().await?;
            if let Some(join) = running {
                match join.await {
                    Ok(Err(Error::NotOwner { .. })) => {}
                    Ok(result) => return result,
                    Err(e) => return Err(Error::msg(format!("workflow {} task failed: {e}", handle.workflow_id()))),
                }
            }
            handle.get_result().await
        }
        .boxed()
    }
}

/// A handle to a started workflow, possibly running in another process.
pub struct WorkflowHandle<T> {
    id: String,
    rt: Arc<Runtime>,
    _output: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for WorkflowHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowHandle").field("workflow_id", &self.id).finish()
    }
}

impl<T> Clone for WorkflowHandle<T> {
    fn clone(&self) -> Self {
        WorkflowHandle { id: self.id.clone(), rt: self.rt.clone(), _output: PhantomData }
    }
}

impl<T: DeserializeOwned> WorkflowHandle<T> {
    pub(crate) fn new(rt: Arc<Runtime>, id: String) -> Self {
        WorkflowHandle { id, rt, _output: PhantomData }
    }

    pub fn workflow_id(&self) -> &str {
        &self.id
    }

    /// The workflow's current status record.
    pub async fn status(&self) -> Result<WorkflowStatus> {
        self.rt.db.get_status(&self.id).await?.ok_or_else(|| Error::NotFound { workflow_id: self.id.clone() })
    }

    /// Waits for the workflow to finish and returns its recorded output or failure.
    pub async fn get_result(&self) -> Result<T> {
        let json = wait_for_outcome(&self.rt, &self.id).await?;
        decode(Some(&json), None, &format!("the output of workflow {}", self.id))
    }
}

/// Waits until a workflow has an outcome; returns the output JSON or the recorded failure.
pub(crate) async fn wait_for_outcome(rt: &Arc<Runtime>, id: &str) -> Result<String> {
    let mut delays = crate::model::backoff::delays(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        let delay = delays.next().unwrap_or(Duration::from_secs(1));
        if let Some(mut done) = rt.local_outcome(id) {
            let outcome = done.wait_for(Option::is_some).await.ok().and_then(|o| o.clone());
            match outcome {
                Some(LocalOutcome::Success(json)) => return Ok(json),
                Some(LocalOutcome::Failed(f)) => return Err(Error::Failed(f)),
                _ => {}
            }
        }
        if let Some(result) = recorded_outcome(&rt.db, id).await? {
            return result;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = rt.shutdown.cancelled() => return Err(Error::Shutdown { workflow_id: id.to_string() }),
        }
    }
}

/// The outcome recorded for a workflow, or `None` while it has not finished.
pub(crate) async fn recorded_outcome(db: &SystemDatabase, id: &str) -> Result<Option<Result<String>>> {
    let status = db.get_status(id).await?.ok_or_else(|| Error::NotFound { workflow_id: id.to_string() })?;
    Ok(outcome_of(&status))
}

/// The final result recorded in a status row, or `None` if the workflow has not finished.
fn outcome_of(status: &WorkflowStatus) -> Option<Result<String>> {
    let id = &status.workflow_id;
    let ser = status.serialization.as_deref();
    match status.status {
        Status::Success => Some(match &status.output {
            Some(o) => decode::<serde_json::Value>(Some(o), ser, &format!("the output of workflow {id}")).map(|_| o.clone()),
            None => Ok("null".to_string()),
        }),
        Status::Error => Some(Err(match &status.error {
            Some(e) => match decode_failure(e, ser, &format!("the error of workflow {id}")) {
                Ok(f) => Error::Failed(f),
                Err(e) => e,
            },
            None => Error::Failed(Failure::new("Error", "workflow failed without a recorded error")),
        })),
        Status::Cancelled => Some(Err(Error::Cancelled { workflow_id: id.clone() })),
        Status::MaxRecoveryAttemptsExceeded => Some(Err(Error::MaxRecoveryAttemptsExceeded { workflow_id: id.clone() })),
        _ => None,
    }
}

type Started<W> = (WorkflowHandle<<W as Workflow>::Output>, Option<tokio::task::JoinHandle<Result<<W as Workflow>::Output>>>);

/// The row of a new workflow: started here (`queue` None) or enqueued.
fn new_row<W: Workflow>(rt: &Runtime, id: String, inputs: String, options: &WorkflowOptions, queue: Option<&str>) -> NewWorkflow {
    let app_version = Some(options.app_version.clone().unwrap_or_else(|| rt.app_version.clone()));
    let app_name = rt.config.app_name.clone();
    let mut row = match queue {
        Some(queue) => {
            NewWorkflow::enqueued(id, W::NAME.to_string(), inputs, queue.to_string(), app_name, app_version).with_enqueue_options(options)
        }
        None => {
            let owner = uuid::Uuid::new_v4().to_string();
            let mut row =
                NewWorkflow::started(id, W::NAME.to_string(), inputs, rt.config.executor_id.clone(), owner, app_name, app_version);
            row.timeout_ms = options.timeout.map(|t| t.as_millis() as i64);
            row.deadline_ms = row.timeout_ms.map(|t| now_ms() + t);
            row.priority = options.priority.unwrap_or(0);
            row
        }
    };
    row.traceparent = telemetry::current_traceparent();
    row
}

async fn start_top<W: Workflow>(rt: Arc<Runtime>, args: W::Args, options: WorkflowOptions) -> Result<Started<W>> {
    if rt.shutdown.is_cancelled() {
        return Err(Error::NotLaunched("mainstay is shutting down; no new workflows start"));
    }
    let id = options.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let inputs = encode_args(&args, &format!("the inputs of workflow {id}"), rt.db.payload_limit())?;
    let row = new_row::<W>(&rt, id.clone(), inputs, &options, None);
    let (owner, deadline) = (row.owner.clone().unwrap_or_default(), row.deadline_ms);
    match rt.committer.start_workflow(row).await? {
        StartOutcome::Inserted => {
            let ctx = WorkflowContext::new(rt.clone(), &id, &owner, None, deadline);
            let join = spawn_run::<W>(rt.clone(), Arc::new(ctx), args);
            Ok((WorkflowHandle::new(rt, id), Some(join)))
        }
        StartOutcome::Exists { name, .. } => {
            check_same_workflow::<W>(&id, name)?;
            Ok((WorkflowHandle::new(rt, id), None))
        }
    }
}

fn check_same_workflow<W: Workflow>(id: &str, existing: Option<String>) -> Result<()> {
    match existing {
        Some(name) if name != W::NAME => {
            Err(Error::WorkflowConflict { workflow_id: id.to_string(), existing: name, requested: W::NAME.to_string() })
        }
        _ => Ok(()),
    }
}

async fn start_child<W: Workflow>(
    rt: Arc<Runtime>,
    parent: Arc<WorkflowContext>,
    function_id: i32,
    args: W::Args,
    options: WorkflowOptions,
    queue: Option<&str>,
) -> Result<Started<W>> {
    let span = spans::operation(Operation::Child, W::NAME, Some(&(parent.clone(), function_id)));
    async move {
        if let Some(op) = parent.replayed(function_id, W::NAME)? {
            let child = op.child_workflow_id.clone().ok_or_else(|| Error::NonDeterministic {
                workflow_id: parent.workflow_id.to_string(),
                function_id,
                recorded: format!("{} (a step)", op.name),
                called: format!("{} (a child workflow)", W::NAME),
            })?;
            return Ok((WorkflowHandle::new(rt, child), None));
        }
        parent.check_interrupted()?;
        let id = options.id.clone().unwrap_or_else(|| format!("{}-{function_id}", parent.workflow_id));
        Span::current().record("child.id", id.as_str());
        let inputs = encode_args(&args, &format!("the inputs of workflow {id}"), rt.db.payload_limit())?;
        let mut row = new_row::<W>(&rt, id.clone(), inputs, &options, queue);
        row.parent_id = Some(parent.workflow_id.to_string());
        // A child cannot outlive its parent's deadline.
        row.deadline_ms = match (row.deadline_ms, parent.deadline_ms) {
            (Some(own), Some(inherited)) => Some(own.min(inherited)),
            (own, inherited) => own.or(inherited),
        };
        let (owner, deadline) = (row.owner.clone(), row.deadline_ms);
        let (owned, created) = rt.db.start_child(&parent.workflow_id, &parent.owner, function_id, &row).await?;
        if !owned {
            return Err(parent.lost_ownership().await);
        }
        if !created {
            let existing = rt.db.get_status(&id).await?.and_then(|s| s.name);
            check_same_workflow::<W>(&id, existing)?;
            return Ok((WorkflowHandle::new(rt, id), None));
        }
        let Some(owner) = owner else {
            // Enqueued: a worker of the queue runs it.
            return Ok((WorkflowHandle::new(rt, id), None));
        };
        let ctx = WorkflowContext::new(rt.clone(), &id, &owner, None, deadline);
        let join = spawn_run::<W>(rt.clone(), Arc::new(ctx), args);
        Ok((WorkflowHandle::new(rt, id), Some(join)))
    }
    .instrument(span)
    .await
}

/// Runs a workflow in a task of the runtime, its span a child of the caller's (a request's, or
/// the parent workflow's child operation).
fn spawn_run<W: Workflow>(rt: Arc<Runtime>, ctx: Arc<WorkflowContext>, args: W::Args) -> tokio::task::JoinHandle<Result<W::Output>> {
    let tasks = rt.tasks.clone();
    tasks.spawn(run_local::<W>(rt, ctx, args, Span::current(), None))
}

/// Runs a workflow to its outcome, publishing it to local waiters.
/// `claim`: the claim it runs from (a queue's, or a recovery's), when it does not run under its
/// starter's span: its span then continues the trace it was started in.
async fn run_local<W: Workflow>(
    rt: Arc<Runtime>,
    ctx: Arc<WorkflowContext>,
    args: W::Args,
    caller: Span,
    claim: Option<&Claimed>,
) -> Result<W::Output> {
    let id = ctx.workflow_id.to_string();
    let (done, _) = watch::channel(None);
    rt.register_local(&id, ctx.cancel.clone(), done.subscribe());
    let queue = claim.map(|c| c.queue.as_str());
    let span = spans::workflow(&caller, W::NAME, &id, queue, &rt.app_version, &rt.config.executor_id, ctx.is_replay());
    telemetry::continue_trace(&span, claim.and_then(|c| c.traceparent.as_deref()));
    rt.metrics.workflow_started(W::NAME);
    let started = std::time::Instant::now();
    let (result, outcome) = execute::<W>(&rt, ctx, args).instrument(span).await;
    rt.metrics.workflow_finished(W::NAME, started.elapsed().as_secs_f64(), &outcome);
    let _ = done.send(Some(outcome));
    rt.deregister_local(&id);
    result
}

async fn execute<W: Workflow>(rt: &Arc<Runtime>, ctx: Arc<WorkflowContext>, args: W::Args) -> (Result<W::Output>, LocalOutcome) {
    let id = ctx.workflow_id.clone();
    let body = std::panic::AssertUnwindSafe(context::scope(ctx.clone(), W::run(args))).catch_unwind();
    let result = tokio::select! {
        r = body => match r {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".to_string());
                tracing::error!(workflow_id = %id, panic = %msg, "workflow panicked");
                Err(Error::Failed(Failure::new("Panic", msg)))
            }
        },
        _ = rt.shutdown.cancelled() => Err(Error::Shutdown { workflow_id: id.to_string() }),
        _ = until_deadline(ctx.deadline_ms) => {
            tracing::info!(workflow_id = %id, "workflow timed out; cancelling it");
            match rt.db.cancel(&id).await {
                Ok(_) => Err(Error::Cancelled { workflow_id: id.to_string() }),
                Err(e) => Err(e),
            }
        }
    };
    // An output too large to record fails the workflow (recorded as a PayloadTooLarge failure):
    // running it again would produce it again.
    let limit = rt.db.payload_limit();
    let encoded = result.and_then(|value| {
        let json = encode(&value, &format!("the output of workflow {id}"), limit)?;
        Ok((value, json))
    });
    let (status, output, error, outcome) = match &encoded {
        Ok((_, json)) => (Status::SUCCESS, Some(json.clone()), None, LocalOutcome::Success(json.clone())),
        Err(e) => match e.to_failure() {
            Some(f) => {
                let f = fit_failure(f, &format!("the error of workflow {id}"), limit);
                (Status::ERROR, None, Some(encode_failure(&f)), LocalOutcome::Failed(f))
            }
            None => {
                return (encoded.map(|(v, _)| v), LocalOutcome::Interrupted);
            }
        },
    };
    let write = Outcome { workflow_id: id.clone(), owner: ctx.owner.clone(), status, output, error };
    match rt.committer.finish(write).await {
        Ok(true) => {
            let result = match (encoded, outcome.clone()) {
                (Ok((value, _)), _) => Ok(value),
                (Err(_), LocalOutcome::Failed(f)) => Err(Error::Failed(f)),
                (Err(e), _) => Err(e),
            };
            (result, outcome)
        }
        Ok(false) => (Err(ctx.lost_ownership().await), LocalOutcome::Interrupted),
        Err(e) => (Err(e), LocalOutcome::Interrupted),
    }
}

async fn until_deadline(deadline_ms: Option<i64>) {
    match deadline_ms {
        Some(d) => {
            let left = Duration::from_millis((d - now_ms()).max(0) as u64);
            tokio::time::sleep(left).await
        }
        None => std::future::pending().await,
    }
}

/// Runs a workflow claimed from a queue (or recovered): the type-erased entry of the registry.
pub(crate) fn run_claimed<W: Workflow>(rt: Arc<Runtime>, claimed: Claimed) -> BoxFuture<'static, ()> {
    async move {
        let id = claimed.id.clone();
        let recorded = if claimed.has_steps {
            match rt.db.recorded_steps(&id).await {
                Ok(ops) => Some(ops),
                Err(e) => {
                    tracing::error!(workflow_id = %id, error = %e, "cannot load recorded steps; \
                        the workflow stays PENDING and is recovered at the next restart");
                    return;
                }
            }
        } else {
            None
        };
        let what = format!("the inputs of workflow {id}");
        let ctx = Arc::new(WorkflowContext::new(rt.clone(), &id, &claimed.owner, recorded, claimed.deadline_ms));
        match decode_args::<W::Args>(claimed.inputs.as_deref(), claimed.serialization.as_deref(), &what) {
            Ok(args) => {
                let _ = run_local::<W>(rt, ctx, args, Span::none(), Some(&claimed)).await;
            }
            Err(e) => {
                tracing::error!(workflow_id = %id, error = %e, "cannot decode workflow inputs");
                record_failure(&rt, &claimed, e).await;
            }
        }
    }
    .boxed()
}

/// Records that a claimed workflow cannot run here because nothing registered its name.
async fn record_failure(rt: &Arc<Runtime>, claimed: &Claimed, e: Error) {
    let f = e.to_failure().unwrap_or_else(|| Failure::new("Error", e.to_string()));
    let f = fit_failure(f, &format!("the error of workflow {}", claimed.id), rt.db.payload_limit());
    let write = Outcome {
        workflow_id: Arc::from(claimed.id.as_str()),
        owner: Arc::from(claimed.owner.as_str()),
        status: Status::ERROR,
        output: None,
        error: Some(encode_failure(&f)),
    };
    if let Err(e) = rt.committer.finish(write).await {
        tracing::error!(workflow_id = %claimed.id, error = %e, "cannot record the workflow's failure");
    }
}

/// Helper for the macros: the `T` of `Result<T>`.
#[doc(hidden)]
pub trait WorkflowResult {
    type Ok;
}

impl<T> WorkflowResult for Result<T> {
    type Ok = T;
}

/// Helper so generated code can box a future that borrows (a transaction's connection).
#[doc(hidden)]
pub fn boxed_for<'a, F: Future + Send + 'a>(f: F) -> BoxFuture<'a, F::Output> {
    f.boxed()
}

/// Helper so generated code can name a future type.
#[doc(hidden)]
pub fn boxed<F: Future + Send + 'static>(f: F) -> BoxFuture<'static, F::Output> {
    f.boxed()
}

impl Queue {
    /// Enqueues a workflow call (or a call of an enqueueable step) on this queue; returns once
    /// the enqueue is durable.
    pub async fn enqueue<C: IntoWorkflowCall>(&self, call: C) -> Result<WorkflowHandle<<C::Workflow as Workflow>::Output>> {
        call.into_workflow_call().enqueue(self).await
    }
}
