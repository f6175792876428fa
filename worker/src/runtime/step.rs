//! Steps: functions whose outcome is checkpointed, so a replay returns it without running them.
//!
//! Invariants: a step's ID is taken when the step is called (not when first polled); its output
//! or durable failure is recorded after its last attempt, owner-checked, in one write; a replay
//! returns the record, and the first execution returns exactly what the replay will (a failure
//! comes back as [`Error::Failed`] both times). Interruptions (cancel, shutdown, lost
//! ownership, database outages) are never recorded.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::Instrument;

use crate::model::clock::now_ms;
use crate::model::error::{Error, Result};
use crate::model::serialization::{decode, decode_failure, encode, encode_failure, fit_failure};
use crate::runtime::context::{self, WorkflowContext};
use crate::runtime::spans::{self, Operation};
use crate::runtime::workflow::{Workflow, WorkflowCall};
use crate::sysdb::{CheckpointOutcome, RecordedOp};

/// Retry policy of a step: `StepOptions::retries(5).interval(..).backoff_rate(..)
/// .max_interval(..)`. Non-exhaustive, so new options are not a breaking change: build it with
/// those methods (or from `default()`), not with a struct literal.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StepOptions {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub interval: Duration,
    /// Factor applied to the wait after each retry.
    pub backoff_rate: f64,
    /// Upper bound of the wait between attempts.
    pub max_interval: Duration,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions { max_attempts: 1, interval: Duration::from_secs(1), backoff_rate: 2.0, max_interval: Duration::from_secs(3600) }
    }
}

impl StepOptions {
    /// Retries up to `max_attempts` attempts in all.
    pub fn retries(max_attempts: u32) -> Self {
        StepOptions { max_attempts: max_attempts.max(1), ..StepOptions::default() }
    }

    /// The wait before the first retry.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The factor the wait grows by after each retry (at least 1).
    pub fn backoff_rate(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }

    /// The longest wait between attempts, however many retries came before.
    pub fn max_interval(mut self, max_interval: Duration) -> Self {
        self.max_interval = max_interval;
        self
    }

    fn delay_before(&self, retry: u32) -> Duration {
        let factor = self.backoff_rate.max(1.0).powi(retry.saturating_sub(1) as i32);
        self.interval.mul_f64(factor.min(1e9)).min(self.max_interval)
    }
}

/// Runs `f` as a step named `name` with no retries. Outside a workflow it simply runs `f`.
pub fn step<T, F, Fut>(name: impl Into<String>, f: F) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T>> + Send,
{
    step_with(name, StepOptions::default(), f)
}

/// Runs `f` as a step named `name`, retrying failures as `options` says.
pub fn step_with<T, F, Fut>(name: impl Into<String>, options: StepOptions, f: F) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T>> + Send,
{
    // Taken now, at the call, so that concurrently called steps replay with the same IDs.
    run_step_at(context::position(), name.into(), options, f)
}

/// Runs a step at an already taken position (`None`: outside a workflow). Not an `async fn`:
/// the `Send` bound on the future is part of its contract.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run_step_at<T, F, Fut>(
    position: Option<(Arc<WorkflowContext>, i32)>,
    name: String,
    options: StepOptions,
    mut f: F,
) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T>> + Send,
{
    let span = spans::operation(Operation::Step, &name, position.as_ref());
    async move {
        let Some((ctx, function_id)) = position else {
            return attempt(&options, &mut f, None).await.0;
        };
        if let Some(op) = ctx.replayed(function_id, &name)? {
            return recorded_result(op, &ctx.workflow_id);
        }
        ctx.check_interrupted()?;
        let started_ms = now_ms();
        // An output too large to record is the step's failure, recorded like any other, so a
        // replay sees the same outcome; it is not retried (it would be as large again).
        let limit = ctx.rt.db.payload_limit();
        let timer = std::time::Instant::now();
        let (result, attempts) = attempt(&options, &mut f, Some(&ctx)).await;
        spans::record_attempts(attempts);
        ctx.rt.metrics.step_ran(&name, timer.elapsed().as_secs_f64(), attempts);
        let result = result.and_then(|value| Ok((encode(&value, &format!("the output of step {name}"), limit)?, value)));
        let (result, output, error) = match result {
            Ok((json, value)) => (Ok(value), Some(json), None),
            Err(e) => match e.to_failure() {
                Some(f) => {
                    let f = fit_failure(f, &format!("the error of step {name}"), limit);
                    let error = encode_failure(&f);
                    (Err(Error::Failed(f)), None, Some(error))
                }
                None => return Err(e),
            },
        };
        match ctx.checkpoint(function_id, name, output, error, started_ms).await? {
            CheckpointOutcome::Recorded => result,
            CheckpointOutcome::Existing(op) => recorded_result(&op, &ctx.workflow_id),
            CheckpointOutcome::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
    .instrument(span)
}

/// Runs the step's body until it succeeds, fails for good or runs out of attempts; returns the
/// last result and how many attempts it took.
async fn attempt<T, F, Fut>(options: &StepOptions, f: &mut F, ctx: Option<&Arc<WorkflowContext>>) -> (Result<T>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let result = context::step_body(&mut *f).await.map_err(Error::into_body_error);
        match result {
            Err(ref e) if tries < options.max_attempts && e.to_failure().is_some() => {
                let delay = options.delay_before(tries);
                tracing::debug!(error = %e, attempt = tries, ?delay, "step failed; retrying");
                match ctx {
                    Some(ctx) => {
                        if let Err(e) = ctx.sleep_until(tokio::time::Instant::now() + delay).await {
                            return (Err(e), tries);
                        }
                    }
                    None => tokio::time::sleep(delay).await,
                }
            }
            other => return (other, tries),
        }
    }
}

/// A step that can also be enqueued on its own: `#[mainstay::step(enqueue)]` implements it.
/// Enqueued, it runs as a workflow of that one step, named after the step.
pub trait Step: Send + Sync + 'static {
    /// The name recorded for the step (and for the workflow that runs it when enqueued).
    const NAME: &'static str;
    /// The arguments as a tuple; cloned for each attempt.
    type Args: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The retry policy.
    fn options() -> StepOptions;
    /// Runs the body once.
    fn run(args: Self::Args) -> BoxFuture<'static, Result<Self::Output>>;
}

/// A call of step `S`: `.await` it to run it as a step, or enqueue it
/// (`queue.enqueue(step(args))`) to run it as a workflow of its own.
#[must_use = "a step call does nothing until it is awaited or enqueued"]
pub struct StepCall<S: Step> {
    args: S::Args,
    position: Option<(Arc<WorkflowContext>, i32)>,
}

impl<S: Step> StepCall<S> {
    /// A call of `S`; inside a workflow its step ID is taken now.
    pub fn new(args: S::Args) -> Self {
        StepCall { args, position: context::position() }
    }
}

impl<S: Step> IntoFuture for StepCall<S> {
    type Output = Result<S::Output>;
    type IntoFuture = BoxFuture<'static, Result<S::Output>>;

    fn into_future(self) -> Self::IntoFuture {
        let args = self.args;
        run_step_at(self.position, S::NAME.to_string(), S::options(), move || S::run(args.clone())).boxed()
    }
}

/// The workflow that runs an enqueued step.
pub struct StepWorkflow<S>(PhantomData<fn() -> S>);

impl<S: Step> Workflow for StepWorkflow<S> {
    const NAME: &'static str = S::NAME;
    type Args = S::Args;
    type Output = S::Output;

    fn run(args: S::Args) -> BoxFuture<'static, Result<S::Output>> {
        StepCall::<S>::new(args).into_future()
    }
}

/// Anything that can be enqueued: a workflow call, or a call of an enqueueable step.
pub trait IntoWorkflowCall {
    type Workflow: Workflow;
    fn into_workflow_call(self) -> WorkflowCall<Self::Workflow>;
}

impl<W: Workflow> IntoWorkflowCall for WorkflowCall<W> {
    type Workflow = W;
    fn into_workflow_call(self) -> WorkflowCall<W> {
        self
    }
}

impl<S: Step> IntoWorkflowCall for StepCall<S> {
    type Workflow = StepWorkflow<S>;
    fn into_workflow_call(self) -> WorkflowCall<StepWorkflow<S>> {
        // The position taken for the step call becomes the enqueue's.
        WorkflowCall::at(self.args, self.position)
    }
}

/// The outcome a previous execution recorded for an operation.
pub(crate) fn recorded_result<T: DeserializeOwned>(op: &RecordedOp, workflow_id: &str) -> Result<T> {
    let what = format!("the recorded result of step {} ({}) of workflow {workflow_id}", op.function_id, op.name);
    if let Some(err) = &op.error {
        return Err(Error::Failed(decode_failure(err, op.serialization.as_deref(), &what)?));
    }
    decode(op.output.as_deref(), op.serialization.as_deref(), &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = StepOptions::retries(5).interval(Duration::from_millis(100)).backoff_rate(2.0);
        assert_eq!(o.delay_before(1), Duration::from_millis(100));
        assert_eq!(o.delay_before(3), Duration::from_millis(400));
        let capped = o.max_interval(Duration::from_millis(250));
        assert_eq!(capped.delay_before(3), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn outside_a_workflow_a_step_just_runs_with_retries() {
        let mut calls = 0;
        let out: Result<u32> = step_with("flaky", StepOptions::retries(3).interval(Duration::from_millis(1)), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Error::msg("not yet"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 3);
    }
}
