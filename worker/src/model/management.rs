//! Types for operating many workflows at once: which to list, and the outstanding work of each
//! application version and executor (what an operator needs to scale, drain old versions and
//! recover dead executors). The [`Client`](crate::Client) methods take and return them.

use serde::Serialize;
use serde_json::Value;

use crate::model::status::Status;

/// Which workflows to list; every set field must match. Newest first unless `oldest_first`.
/// Built with chained setters: `WorkflowFilter::active().queue("jobs").limit(10)`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkflowFilter {
    /// Workflow IDs starting with this text.
    pub id_prefix: Option<String>,
    /// Any of these statuses (empty: any status).
    pub statuses: Vec<Status>,
    /// Registered workflow name.
    pub name: Option<String>,
    pub app_version: Option<String>,
    pub executor_id: Option<String>,
    pub queue: Option<String>,
    /// Runs fired by this schedule.
    pub schedule_name: Option<String>,
    /// Created at or after this time (epoch milliseconds).
    pub created_from_ms: Option<i64>,
    /// Created before this time (epoch milliseconds).
    pub created_before_ms: Option<i64>,
    /// At most this many (default: all).
    pub limit: Option<u32>,
    /// Skip this many first.
    pub offset: u32,
    pub oldest_first: bool,
}

impl WorkflowFilter {
    /// Every workflow.
    pub fn new() -> WorkflowFilter {
        WorkflowFilter::default()
    }

    /// Workflows that have not finished: `PENDING`, `ENQUEUED` or `DELAYED`.
    pub fn active() -> WorkflowFilter {
        WorkflowFilter::new().statuses([Status::Pending, Status::Enqueued, Status::Delayed])
    }

    /// Workflow IDs starting with `prefix`.
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = Some(prefix.into());
        self
    }

    /// Any of these statuses (none: any status).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = Status>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Workflows registered under `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Workflows of application version `version`.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Workflows of executor `executor_id`.
    pub fn executor_id(mut self, executor_id: impl Into<String>) -> Self {
        self.executor_id = Some(executor_id.into());
        self
    }

    /// Workflows of queue `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Runs fired by schedule `name`.
    pub fn schedule_name(mut self, name: impl Into<String>) -> Self {
        self.schedule_name = Some(name.into());
        self
    }

    /// Created at or after `ms` (epoch milliseconds).
    pub fn created_from_ms(mut self, ms: i64) -> Self {
        self.created_from_ms = Some(ms);
        self
    }

    /// Created before `ms` (epoch milliseconds).
    pub fn created_before_ms(mut self, ms: i64) -> Self {
        self.created_before_ms = Some(ms);
        self
    }

    /// At most `limit` workflows (`None`: all).
    pub fn limit(mut self, limit: impl Into<Option<u32>>) -> Self {
        self.limit = limit.into();
        self
    }

    /// Skips the first `offset`.
    pub fn offset(mut self, offset: u32) -> Self {
        self.offset = offset;
        self
    }

    /// Oldest first (default: newest first).
    pub fn oldest_first(mut self, oldest_first: bool) -> Self {
        self.oldest_first = oldest_first;
        self
    }
}

/// A workflow a version of an application registers, as its workers recorded it at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredWorkflow {
    pub name: String,
    /// The Rust types of its positional arguments as written (`["i64"]`); `None` when unknown
    /// (implemented without the macros, or recorded by an older release).
    pub arguments: Option<Vec<String>>,
    /// The cron expression it runs on (and its time zone after a space), if it is a
    /// `#[scheduled]` workflow.
    pub schedule: Option<String>,
}

/// `PENDING` workflows held by one executor under one application version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutorWork {
    pub executor_id: String,
    pub app_version: Option<String>,
    pub pending: i64,
}

/// Workflows of one application version that have not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionWork {
    /// `None` for workflows enqueued without a version (any worker may run them).
    pub app_version: Option<String>,
    pub pending: i64,
    pub enqueued: i64,
    pub delayed: i64,
}

impl VersionWork {
    /// Everything that still needs a worker of this version.
    pub fn outstanding(&self) -> i64 {
        self.pending + self.enqueued + self.delayed
    }
}

/// A recorded step (operation) of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepInfo {
    /// Position in the workflow, from 1 in call order.
    pub function_id: i32,
    /// The step's name (`DBOS.sleep`, `DBOS.recv`, … for built-in operations).
    pub name: String,
    /// The recorded output as JSON (`None` while a child workflow runs, or for a failure).
    pub output: Option<Value>,
    /// The recorded failure, as DBOS's portable error JSON.
    pub error: Option<Value>,
    /// The child workflow this step started, if it is one.
    pub child_workflow_id: Option<String>,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
}

/// How to fork a workflow: a new run that replays the original's steps before `start_step`
/// and runs the rest anew. Built with chained setters: `ForkOptions::new().start_step(3)`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ForkOptions {
    /// The first step to run again (1 runs everything again; default 1).
    pub start_step: i32,
    /// The new run's ID (default: a fresh UUID).
    pub new_id: Option<String>,
    /// The application version to run it on (default: the original's).
    pub app_version: Option<String>,
}

impl ForkOptions {
    /// Runs every step again, under a fresh ID, on the original's version.
    pub fn new() -> ForkOptions {
        ForkOptions::default()
    }

    /// Replays the steps before `step` and runs the rest anew.
    pub fn start_step(mut self, step: i32) -> Self {
        self.start_step = step;
        self
    }

    /// Gives the new run this ID.
    pub fn new_id(mut self, id: impl Into<String>) -> Self {
        self.new_id = Some(id.into());
        self
    }

    /// Runs the fork on application version `version`.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }
}
