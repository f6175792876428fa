//! Cancellation of running workflows, wherever it was requested.
//!
//! Mainstay's own cancel announces itself on a channel and takes effect at once; a cancel
//! written by another tool (DBOS's CLI or clients) only changes the row, so a watcher checks
//! the workflows running here against the database every polling interval. Either way the
//! workflow stops at its next step (a durable sleep is interrupted), and nothing more is
//! written for it.

use std::sync::Arc;

use crate::runtime::app::Runtime;

pub(crate) fn start_watcher(rt: Arc<Runtime>) {
    let tasks = rt.tasks.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = rt.shutdown.cancelled() => return,
                _ = tokio::time::sleep(rt.config.polling_interval) => {}
            }
            let running = rt.local_ids();
            if running.is_empty() {
                continue;
            }
            match rt.db.cancelled_among(&running).await {
                Ok(cancelled) => {
                    for id in cancelled {
                        tracing::info!(workflow_id = %id, "workflow was cancelled; stopping it");
                        rt.cancel_local(&id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check running workflows for cancellation"),
            }
        }
    });
}
