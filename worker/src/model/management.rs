//! Types for operating many workflows at once: which to list, and the outstanding work of each
//! application version and executor (what an operator needs to scale, drain old versions and
//! recover dead executors). The [`Client`](crate::Client) methods take and return them.

use serde::Serialize;
use serde_json::Value;

use crate::model::status::Status;

/// Which workflows to list; every set field must match. Newest first unless `oldest_first`.
#[derive(Debug, Clone, Default)]
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
    /// Workflows that have not finished: `PENDING`, `ENQUEUED` or `DELAYED`.
    pub fn active() -> WorkflowFilter {
        WorkflowFilter { statuses: vec![Status::Pending, Status::Enqueued, Status::Delayed], ..Default::default() }
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
/// and runs the rest anew.
#[derive(Debug, Clone, Default)]
pub struct ForkOptions {
    /// The first step to run again (1 runs everything again; default 1).
    pub start_step: i32,
    /// The new run's ID (default: a fresh UUID).
    pub new_id: Option<String>,
    /// The application version to run it on (default: the original's).
    pub app_version: Option<String>,
}
