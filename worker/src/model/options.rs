//! Options of one workflow start or enqueue, built with chained setters:
//! `WorkflowOptions::new().id("order-42").priority(1)`. The struct is `#[non_exhaustive]`, so
//! an option added later is not a breaking change; its fields stay public to read.

use std::time::Duration;

/// Options of one workflow start or enqueue.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkflowOptions {
    /// The workflow ID: an idempotency key. A fresh UUID when unset.
    pub id: Option<String>,
    /// Enqueue only: a second enqueue with this ID is refused while the first is queued or
    /// running.
    pub deduplication_id: Option<String>,
    /// Enqueue only: lower runs first (the queue must have priorities enabled).
    pub priority: Option<i32>,
    /// Enqueue only: the workflow is `DELAYED` and becomes runnable after this long.
    pub delay: Option<Duration>,
    /// The workflow is cancelled if it has not finished this long after it started (for
    /// queued workflows: after it was dequeued).
    pub timeout: Option<Duration>,
    /// Enqueue only: the partition of a partitioned queue.
    pub partition_key: Option<String>,
    /// The application version to run it under (default: this process's).
    pub app_version: Option<String>,
    /// Enqueue only: the schedule that fired this run (recorded as `schedule_name`).
    pub schedule_name: Option<String>,
}

impl WorkflowOptions {
    /// No options: a fresh ID, this process's version, no limits.
    pub fn new() -> WorkflowOptions {
        WorkflowOptions::default()
    }

    /// Sets the workflow ID (see [`WorkflowOptions::id`](#structfield.id)).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the deduplication ID of an enqueue.
    pub fn deduplication_id(mut self, id: impl Into<String>) -> Self {
        self.deduplication_id = Some(id.into());
        self
    }

    /// Sets the priority of an enqueue (`None`: the default, 0).
    pub fn priority(mut self, priority: impl Into<Option<i32>>) -> Self {
        self.priority = priority.into();
        self
    }

    /// Delays an enqueued workflow by `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the timeout (`None`: none).
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Sets the partition key of an enqueue on a partitioned queue.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Runs the workflow under this application version.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Records the schedule that fired this run.
    pub fn schedule_name(mut self, name: impl Into<String>) -> Self {
        self.schedule_name = Some(name.into());
        self
    }
}
