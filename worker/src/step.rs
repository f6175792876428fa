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

use crate::context::{self, now_ms};
use crate::error::{Error, Result};
use crate::serialization::{decode, decode_failure, encode, encode_failure};
use crate::sysdb::{CheckpointOutcome, RecordedOp};

/// Retry policy of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
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
        StepOptions {
            max_attempts: 1,
            interval: Duration::from_secs(1),
            backoff_rate: 2.0,
            max_interval: Duration::from_secs(3600),
        }
    }
}

impl StepOptions {
    /// Retries up to `max_attempts` attempts in all.
    pub fn retries(max_attempts: u32) -> Self {
        StepOptions { max_attempts: max_attempts.max(1), ..StepOptions::default() }
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn backoff_rate(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
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
pub fn step_with<T, F, Fut>(
    name: impl Into<String>,
    options: StepOptions,
    mut f: F,
) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T>> + Send,
{
    let name = name.into();
    // Taken now, at the call, so that concurrently called steps replay with the same IDs.
    let position = context::current().map(|ctx| {
        let id = ctx.next_function_id();
        (ctx, id)
    });
    async move {
        let Some((ctx, function_id)) = position else {
            return attempt(&options, &mut f, None).await;
        };
        if let Some(op) = ctx.replayed(function_id, &name)? {
            return recorded_result(op, &ctx.workflow_id);
        }
        ctx.check_interrupted()?;
        let started_ms = now_ms();
        let result = attempt(&options, &mut f, Some(&ctx)).await;
        let (output, error, failure) = match &result {
            Ok(value) => (Some(encode(value, &format!("the output of step {name}"))?), None, None),
            Err(e) => match e.to_failure() {
                Some(f) => (None, Some(encode_failure(&f)), Some(f)),
                None => return result,
            },
        };
        match ctx.checkpoint(function_id, name, output, error, started_ms).await? {
            CheckpointOutcome::Recorded => match failure {
                Some(f) => Err(Error::Failed(f)),
                None => result,
            },
            CheckpointOutcome::Existing(op) => recorded_result(&op, &ctx.workflow_id),
            CheckpointOutcome::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
}

async fn attempt<T, F, Fut>(
    options: &StepOptions,
    f: &mut F,
    ctx: Option<&std::sync::Arc<context::WorkflowContext>>,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let result = f().await;
        match result {
            Err(ref e) if tries < options.max_attempts && e.to_failure().is_some() => {
                let delay = options.delay_before(tries);
                tracing::debug!(error = %e, attempt = tries, ?delay, "step failed; retrying");
                match ctx {
                    Some(ctx) => ctx.sleep_until(tokio::time::Instant::now() + delay).await?,
                    None => tokio::time::sleep(delay).await,
                }
            }
            other => return other,
        }
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
        let capped = StepOptions { max_interval: Duration::from_millis(250), ..o };
        assert_eq!(capped.delay_before(3), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn outside_a_workflow_a_step_just_runs_with_retries() {
        let mut calls = 0;
        let out: Result<u32> = step_with(
            "flaky",
            StepOptions::retries(3).interval(Duration::from_millis(1)),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(Error::msg("not yet")) } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(out.unwrap(), 3);
    }
}
