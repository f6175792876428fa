//! Recovery: workflows left `PENDING` by a process that stopped are put back on a queue, and
//! the ordinary claim admits exactly one new runner, which replays them from their records.
//!
//! A process recovers its own executor's workflows of its own application and version at
//! launch (an executor ID can be shared by processes of other applications).
//! Dead executors (a pod that is gone) are recovered by whoever knows they are dead, through
//! [`recover_executor`] (the operator calls it when a worker pod disappears).

use std::sync::Arc;

use crate::model::error::Result;
use crate::model::names::INTERNAL_QUEUE;
use crate::runtime::app::Runtime;

/// Re-enqueues this process's own `PENDING` workflows; returns how many.
pub(crate) async fn recover_own(rt: &Arc<Runtime>) -> Result<usize> {
    let ids = rt.db.recover_executor(&rt.config.executor_id, Some(&rt.app_version), Some(rt.config.app_name.as_deref())).await?;
    rt.metrics.recovered.inc_by(ids.len() as u64);
    if !ids.is_empty() {
        tracing::info!(
            executor_id = %rt.config.executor_id,
            count = ids.len(),
            "re-enqueued pending workflows of this executor for recovery"
        );
    }
    Ok(ids.len())
}

impl crate::Mainstay {
    /// Re-enqueues every `PENDING` workflow of `executor_id` (any version) of this
    /// application, so that live workers run them. Call it only for an executor known to be
    /// dead. Returns the workflow IDs.
    pub async fn recover_executor(&self, executor_id: &str) -> Result<Vec<String>> {
        let app = self.runtime().config.app_name.as_deref();
        let ids = self.runtime().db.recover_executor(executor_id, None, Some(app)).await?;
        self.runtime().announce(INTERNAL_QUEUE);
        Ok(ids)
    }
}
