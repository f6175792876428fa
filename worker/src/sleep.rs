//! Durable sleep: the wake-up time is recorded before sleeping, so after a crash a workflow
//! sleeps only what is left.
//!
//! The record is DBOS's `DBOS.sleep` operation whose output is the wake-up time in epoch
//! seconds, so DBOS SDKs and mainstay read each other's sleeps.

use std::future::Future;
use std::time::Duration;

use crate::context::{self, now_ms};
use crate::error::Result;
use crate::serialization::encode;
use crate::step::recorded_result;
use crate::sysdb::CheckpointOutcome;

/// Operation name DBOS uses for durable sleeps.
pub const SLEEP_OPERATION: &str = "DBOS.sleep";

/// Sleeps durably inside a workflow (plainly outside one).
pub fn sleep(duration: Duration) -> impl Future<Output = Result<()>> + Send {
    let position = context::current().map(|ctx| {
        let id = ctx.next_function_id();
        (ctx, id)
    });
    async move {
        let Some((ctx, function_id)) = position else {
            tokio::time::sleep(duration).await;
            return Ok(());
        };
        let wake_ms = match ctx.replayed(function_id, SLEEP_OPERATION)? {
            Some(op) => (recorded_result::<f64>(op, &ctx.workflow_id)? * 1000.0).round() as i64,
            None => {
                ctx.check_interrupted()?;
                let now = now_ms();
                let wake_ms = now + duration.as_millis() as i64;
                let output = encode(&(wake_ms as f64 / 1000.0), "a sleep's wake-up time")?;
                match ctx.checkpoint(function_id, SLEEP_OPERATION.into(), Some(output), None, now).await? {
                    CheckpointOutcome::Recorded => wake_ms,
                    CheckpointOutcome::Existing(op) => {
                        (recorded_result::<f64>(&op, &ctx.workflow_id)? * 1000.0).round() as i64
                    }
                    CheckpointOutcome::NotOwner => return Err(ctx.lost_ownership().await),
                }
            }
        };
        let remaining = Duration::from_millis((wake_ms - now_ms()).max(0) as u64);
        ctx.sleep_until(tokio::time::Instant::now() + remaining).await
    }
}
