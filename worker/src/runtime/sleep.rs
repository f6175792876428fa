//! Durable sleep: the wake-up time is recorded before sleeping, so after a crash a workflow
//! sleeps only what is left.
//!
//! The record is DBOS's `DBOS.sleep` operation whose output is the wake-up time in epoch
//! seconds, so DBOS SDKs and mainstay read each other's sleeps. Timeouts of `recv` and
//! `get_event` are such records too, taken right after the operation's own ID.

use std::future::Future;
use std::time::Duration;

use tracing::Instrument;

use crate::model::clock::now_ms;
use crate::model::error::Result;
use crate::model::names::SLEEP_OPERATION;
use crate::model::serialization::encode;
use crate::runtime::context::{self, WorkflowContext};
use crate::runtime::spans::{self, Operation};
use crate::runtime::step::recorded_result;

/// Sleeps durably inside a workflow (plainly outside one).
pub fn sleep(duration: Duration) -> impl Future<Output = Result<()>> + Send {
    let position = context::position();
    let span = spans::operation(Operation::Sleep, SLEEP_OPERATION, position.as_ref());
    async move {
        let Some((ctx, function_id)) = position else {
            tokio::time::sleep(duration).await;
            return Ok(());
        };
        let wake_ms = durable_deadline(&ctx, function_id, duration).await?;
        let remaining = Duration::from_millis((wake_ms - now_ms()).max(0) as u64);
        ctx.sleep_until(tokio::time::Instant::now() + remaining).await
    }
    .instrument(span)
}

/// The wake-up time (epoch ms) of the durable timer at `function_id`: the recorded one on a
/// replay, otherwise now + `duration`, recorded before it is returned.
pub(crate) async fn durable_deadline(ctx: &WorkflowContext, function_id: i32, duration: Duration) -> Result<i64> {
    let op = match ctx.replayed(function_id, SLEEP_OPERATION)? {
        Some(op) => op.clone(),
        None => {
            ctx.check_interrupted()?;
            let now = now_ms();
            let wake_ms = now.saturating_add(crate::model::clock::millis(duration));
            let output = encode(&(wake_ms as f64 / 1000.0), "a sleep's wake-up time", ctx.rt.db.payload_limit())?;
            match ctx.record(function_id, SLEEP_OPERATION, Some(output), now).await? {
                None => return Ok(wake_ms),
                Some(existing) => existing,
            }
        }
    };
    Ok((recorded_result::<f64>(&op, &ctx.workflow_id)? * 1000.0).round() as i64)
}
