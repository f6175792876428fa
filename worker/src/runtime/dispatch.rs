//! Dispatch of queued work: wake on notification, claim in batches, run.
//!
//! Invariants: a workflow runs here only after this process claimed it (a fresh owner token,
//! `PENDING`, `SKIP LOCKED` so claimers never block each other); at most `worker_concurrency`
//! claimed workflows run at once; notifications only shorten the wait, and polling with jitter
//! finds everything a lost notification would have announced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::error::Result;
use crate::model::names::{CANCELLED_CHANNEL, ENQUEUED_CHANNEL};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::runtime::app::Runtime;
use crate::runtime::wakeup;
use crate::sysdb::Claimer;

/// Subscribes to wake-ups before the first claim, so nothing enqueued after launch is missed.
/// The same connection carries the DBOS channels that wake waiting `recv`, `get_event` and
/// stream readers.
pub(crate) async fn start_listener(rt: Arc<Runtime>) -> Result<()> {
    let mut channels = vec![ENQUEUED_CHANNEL, CANCELLED_CHANNEL];
    channels.extend(wakeup::CHANNELS);
    let (on_msg, on_reconnect) = (rt.clone(), rt.clone());
    wakeup::listen(
        &rt.db,
        &channels,
        rt.shutdown.clone(),
        &rt.tasks,
        move |n| match n.channel() {
            ENQUEUED_CHANNEL => {
                tracing::trace!(queue = n.payload(), "work enqueued");
                on_msg.announce(n.payload());
            }
            CANCELLED_CHANNEL => on_msg.cancel_local(n.payload()),
            other => on_msg.wakeups.deliver(other, n.payload()),
        },
        // The connection was lost and re-established: anything could have been missed, so
        // look for work and re-check every wait now.
        move || {
            on_reconnect.wake.notify_one();
            on_reconnect.wakeups.deliver_all();
        },
    )
    .await
}

/// Starts the claim loop.
pub(crate) fn start_dispatcher(rt: Arc<Runtime>) {
    let tasks = rt.tasks.clone();
    tasks.spawn(dispatch_loop(rt));
}

/// How long queue settings read from the database are reused before they are read again.
const SETTINGS_TTL: Duration = Duration::from_secs(1);

async fn dispatch_loop(rt: Arc<Runtime>) {
    let mut failures = 0u32;
    let mut settings: Option<(Instant, Vec<Queue>)> = None;
    let mut promoted = Instant::now() - rt.config.polling_interval;
    // The first round, and every round after a poll interval, claims from every queue; a round
    // woken by announcements (an enqueue, a finished workflow) claims from those queues only.
    let mut full = true;
    loop {
        rt.heartbeat_ms.store(crate::model::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let announced: Vec<String> = std::mem::take(&mut *rt.announced.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        let round = async {
            if settings.as_ref().is_none_or(|(at, _)| at.elapsed() > SETTINGS_TTL) {
                settings = Some((Instant::now(), queue_settings(&rt).await?));
            }
            let mut more = false;
            if full && promoted.elapsed() >= rt.config.polling_interval {
                promoted = Instant::now();
                more |= !rt.db.promote_delayed(&rt.queues, rt.config.app_name.as_deref()).await?.is_empty();
            }
            let all: &[Queue] = settings.as_ref().map(|(_, q)| q.as_slice()).unwrap_or_default();
            // Announced queues first: they are known to have work.
            let mut queues: Vec<&Queue> = all.iter().filter(|q| announced.contains(&q.name)).collect();
            if full {
                queues.extend(all.iter().filter(|q| !announced.contains(&q.name)));
            }
            more |= claim_round(&rt, &queues).await?;
            Ok::<bool, crate::Error>(more)
        };
        let more = match round.await {
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
            full = true;
            continue;
        }
        let interval = settings
            .as_ref()
            .and_then(|(_, qs)| qs.iter().map(|q| q.polling_interval).min())
            .unwrap_or(rt.config.polling_interval)
            .min(rt.config.polling_interval);
        let base = interval.mul_f64(if failures > 0 { 2f64.powi(failures.min(5) as i32) } else { 1.0 });
        let jitter = base.mul_f64(crate::model::backoff::jitter_fraction() * 0.2);
        tokio::select! {
            _ = rt.shutdown.cancelled() => return,
            _ = rt.wake.notified() => full = false,
            _ = tokio::time::sleep(base + jitter) => full = true,
        }
    }
}

/// The settings of every listened queue: stored ones, or no limits for queues without a row.
async fn queue_settings(rt: &Arc<Runtime>) -> Result<Vec<Queue>> {
    let stored = rt.db.queue_settings(&rt.queues).await?;
    Ok(rt.queues.iter().map(|name| stored.iter().find(|q| q.name == *name).cloned().unwrap_or_else(|| Queue::new(name.clone()))).collect())
}

/// Claims what fits in the free worker slots from every listened queue. Returns whether a
/// queue filled the slots it was offered (more work is probably waiting).
async fn claim_round(rt: &Arc<Runtime>, queues: &[&Queue]) -> Result<bool> {
    let mut more = false;
    for queue in queues {
        let free = rt.slots.available_permits();
        if free == 0 || rt.shutdown.is_cancelled() {
            return Ok(false);
        }
        let who = Claimer {
            app_name: rt.config.app_name.as_deref(),
            names: &rt.workflow_names,
            app_version: &rt.app_version,
            executor_id: &rt.config.executor_id,
            max_recovery_attempts: rt.config.max_recovery_attempts,
            free: free as i64,
        };
        let claimed = rt.db.claim_queue(queue, &who).await?;
        tracing::trace!(queue = %queue.name, claimed = claimed.len(), "claimed");
        if !claimed.is_empty() {
            rt.metrics.claimed(&queue.name, claimed.iter().map(|c| c.wait_ms));
        }
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
                // Claims take only registered names, so this cannot happen; if it ever does,
                // the work goes back to the queue for a worker that can run it.
                tracing::error!(workflow_id = %c.id, name = %c.name, "claimed a workflow that is not registered here; releasing it");
                if let Err(e) = rt.db.release_claim(&c.id, &c.owner).await {
                    tracing::error!(workflow_id = %c.id, error = %e, "cannot release the claim; recovery will");
                }
                continue;
            };
            let Ok(permit) = rt.slots.clone().try_acquire_owned() else {
                // Slots are only taken here, so this cannot happen; stay safe anyway.
                return Ok(false);
            };
            let run = (reg.runner)(rt.clone(), c);
            let (finished, queue_name) = (rt.clone(), queue.name.clone());
            rt.tasks.spawn(async move {
                run.await;
                drop(permit);
                // A finished workflow frees a slot here and budget in its queue: claim from it
                // again now rather than at the next poll.
                finished.announce(&queue_name);
            });
        }
    }
    Ok(more)
}
