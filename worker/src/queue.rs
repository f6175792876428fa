//! Dispatch of queued work: wake on notification, claim in batches, run.
//!
//! Invariants: a workflow runs here only after this process claimed it (a fresh owner token,
//! `PENDING`, `SKIP LOCKED` so claimers never block each other); at most `worker_concurrency`
//! claimed workflows run at once; notifications only shorten the wait, and polling with jitter
//! finds everything a lost notification would have announced.

use std::sync::Arc;
use std::time::Duration;

use crate::app::Runtime;
use crate::error::Result;
use crate::status::Status;
use crate::sysdb::{CANCELLED_CHANNEL, ENQUEUED_CHANNEL};

/// Subscribes to wake-ups before the first claim, so nothing enqueued after launch is missed.
pub(crate) async fn start_listener(rt: Arc<Runtime>) -> Result<()> {
    let mut listener = rt.db.listener().await?;
    let task_rt = rt.clone();
    rt.tasks.spawn(async move {
        let rt = task_rt;
        loop {
            tokio::select! {
                _ = rt.shutdown.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(n)) => match n.channel() {
                        ENQUEUED_CHANNEL => {
                            if rt.queues.iter().any(|q| q == n.payload()) {
                                rt.wake.notify_one();
                            }
                        }
                        CANCELLED_CHANNEL => rt.cancel_local(n.payload()),
                        _ => {}
                    },
                    // The connection was lost and re-established: anything could have been
                    // missed, so look for work now.
                    Ok(None) => rt.wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = rt.shutdown.cancelled() => return,
                        }
                    }
                },
            }
        }
    });
    Ok(())
}

/// Starts the claim loop.
pub(crate) fn start_dispatcher(rt: Arc<Runtime>) {
    let tasks = rt.tasks.clone();
    tasks.spawn(dispatch_loop(rt));
}

async fn dispatch_loop(rt: Arc<Runtime>) {
    let mut failures = 0u32;
    loop {
        let more = match claim_round(&rt).await {
            Ok(more) => {
                failures = 0;
                more
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "claiming queued workflows failed");
                false
            }
        };
        if more {
            continue;
        }
        let base = rt.config.polling_interval.mul_f64(if failures > 0 { 2f64.powi(failures.min(5) as i32) } else { 1.0 });
        let jitter = base.mul_f64(jitter_fraction() * 0.2);
        tokio::select! {
            _ = rt.shutdown.cancelled() => return,
            _ = rt.wake.notified() => {}
            _ = tokio::time::sleep(base + jitter) => {}
        }
    }
}

/// Claims what fits in the free worker slots from every listened queue. Returns whether a
/// queue filled the slots it was offered (more work is probably waiting).
async fn claim_round(rt: &Arc<Runtime>) -> Result<bool> {
    let mut more = false;
    for queue in &rt.queues {
        let free = rt.slots.available_permits();
        if free == 0 || rt.shutdown.is_cancelled() {
            return Ok(false);
        }
        let claimed = rt
            .db
            .claim(queue, &rt.app_version, &rt.config.executor_id, free as i64, rt.config.max_recovery_attempts)
            .await?;
        more |= claimed.len() == free;
        for c in claimed {
            if c.status == Status::MaxRecoveryAttemptsExceeded {
                tracing::warn!(
                    workflow_id = %c.id,
                    "workflow exceeded its maximum recovery attempts; parked as \
                     MAX_RECOVERY_ATTEMPTS_EXCEEDED (resume it after fixing the cause)"
                );
                continue;
            }
            let Some(reg) = rt.registry.get(&c.name).copied() else {
                tracing::error!(
                    workflow_id = %c.id,
                    name = %c.name,
                    "claimed a workflow that is not registered in this process"
                );
                crate::workflow::fail_unregistered(rt, &c).await;
                continue;
            };
            let Ok(permit) = rt.slots.clone().try_acquire_owned() else {
                // Slots are only taken here, so this cannot happen; stay safe anyway.
                return Ok(false);
            };
            let run = (reg.runner)(rt.clone(), c);
            rt.tasks.spawn(async move {
                run.await;
                drop(permit);
            });
        }
    }
    Ok(more)
}

fn jitter_fraction() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0
}
