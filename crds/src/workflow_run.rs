//! `WorkflowRun`: one run of a workflow of a DurableApp, as a cluster object.
//!
//! The system database stays the source of truth: the operator enqueues the run once, under a
//! workflow ID derived from the object (so applying it again starts nothing new), and mirrors
//! the run's state into the status. Each field of the status is bounded in size.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// Desired state of a WorkflowRun: which workflow of which app, with what input and options.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    doc = "WorkflowRun is one run of a workflow of a DurableApp (same namespace). The operator \
           enqueues it once, under a workflow ID derived from the object (applying the same \
           object again starts nothing new), and mirrors its state from the system database: \
           phase, executor, steps, output or error. `kubectl wait --for=condition=Succeeded` \
           waits for it. Deleting it leaves the workflow as it is (cancel it first with \
           spec.cancel to stop it).",
    group = "mainstay.dev",
    version = "v1alpha1",
    kind = "WorkflowRun",
    namespaced,
    status = "WorkflowRunStatus",
    shortname = "wfr",
    // What to run is fixed once the object exists (as a Job's template is): a changed app or ID
    // would otherwise start a second workflow, other changes be ignored. (`input` is free-form
    // JSON, which validation rules cannot compare: it is read once, at start.)
    validation = Rule::new("self.spec.appRef == oldSelf.spec.appRef && self.spec.workflowName == oldSelf.spec.workflowName && has(self.spec.queue) == has(oldSelf.spec.queue) && (!has(self.spec.queue) || self.spec.queue == oldSelf.spec.queue) && has(self.spec.priority) == has(oldSelf.spec.priority) && (!has(self.spec.priority) || self.spec.priority == oldSelf.spec.priority) && has(self.spec.deduplicationId) == has(oldSelf.spec.deduplicationId) && (!has(self.spec.deduplicationId) || self.spec.deduplicationId == oldSelf.spec.deduplicationId) && has(self.spec.timeoutSeconds) == has(oldSelf.spec.timeoutSeconds) && (!has(self.spec.timeoutSeconds) || self.spec.timeoutSeconds == oldSelf.spec.timeoutSeconds) && has(self.spec.appVersion) == has(oldSelf.spec.appVersion) && (!has(self.spec.appVersion) || self.spec.appVersion == oldSelf.spec.appVersion) && has(self.spec.workflowId) == has(oldSelf.spec.workflowId) && (!has(self.spec.workflowId) || self.spec.workflowId == oldSelf.spec.workflowId) && has(self.spec.forkOf) == has(oldSelf.spec.forkOf) && (!has(self.spec.forkOf) || self.spec.forkOf == oldSelf.spec.forkOf)").message("appRef, workflowName, queue, priority, deduplicationId, timeoutSeconds, appVersion, workflowId and forkOf cannot change once a WorkflowRun exists; create a new WorkflowRun (cancel, resume, messages and ttlSecondsAfterFinished may change)"),
    category = "mainstay",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appRef"),
    printcolumn(name = "Workflow", type_ = "string", json_path = ".spec.workflowName"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Steps", type_ = "integer", json_path = ".status.stepsCompleted"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunSpec {
    /// The DurableApp (same namespace) whose workers run the workflow.
    #[x_kube(validation = Rule::new("self != ''").message("appRef must name a DurableApp"))]
    pub app_ref: String,
    /// Registered name of the workflow to run.
    #[x_kube(validation = Rule::new("self != ''").message("workflowName must not be empty"))]
    pub workflow_name: String,
    /// The workflow's arguments as JSON: an array holds the positional arguments, any other
    /// value is the only argument. Read once, when the run starts (changing it later has no
    /// effect; the other fields that say what to run cannot change). Default: no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub input: Option<serde_json::Value>,
    /// Queue to enqueue on. Default: the internal queue every worker listens to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Lower runs first (the queue must have priorities enabled). Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// While a workflow with this deduplication ID is queued or running on the queue, this run
    /// is refused (reported in the status). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication_id: Option<String>,
    /// The run is cancelled if it has not finished this many seconds after it started.
    /// Default: no timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
    /// Run on this application version. Default: the app's latest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// The workflow ID (an idempotency key in the system database). Default:
    /// `{namespace}.{name}.{uid}` of this object: stable for it, distinct across namespaces,
    /// and new when the object is deleted and created again (that starts a new run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Set to true to cancel the run (it stops at its next step). Default: false.
    #[serde(default)]
    pub cancel: bool,
    /// Increase to resume the run from its last completed step (when it failed, was cancelled
    /// or parked; `cancel` must be false): each increase resumes it once. Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub resume: i64,
    /// Start this run as a fork of another: a new workflow that replays the other's steps
    /// before `step` from their records and runs the rest. Default: not a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<ForkSpec>,
    /// Messages to send to the running workflow (what its `recv(topic)` receives), e.g. a
    /// human approval: add an item to send it. Each is sent once (its name is its idempotency
    /// key), however often the object is applied; names are unique. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub messages: Vec<RunMessage>,
    /// Delete this object this many seconds after the run finished (the workflow's records stay
    /// in the database, subject to the app's retention). Default: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// A message for a running workflow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct RunMessage {
    /// A name unique among the run's messages: the message is sent once under it.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The topic the workflow receives on. Default: none (the default topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The message, any JSON value.
    #[schemars(schema_with = "crate::schema::any_json")]
    pub message: serde_json::Value,
}

/// The run a fork starts from: a WorkflowRun of the namespace, or any workflow by ID.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkSpec {
    /// A WorkflowRun (same namespace) to fork. Default: none (then `workflowId` is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The workflow ID to fork, when it is not a WorkflowRun's. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The first step to run again (steps are numbered from 1). Default: 1.
    #[serde(default = "first_step")]
    #[schemars(range(min = 1))]
    pub step: i32,
}

fn first_step() -> i32 {
    1
}

/// The phase of a run, from its status in the system database.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkflowRunPhase {
    /// Accepted by the operator, not yet enqueued (or refused: see the conditions).
    Pending,
    /// Waiting on its queue.
    Enqueued,
    /// Waiting for its delay to pass.
    Delayed,
    /// Claimed by a worker and running.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Recovered too often; parked until resumed.
    MaxRecoveryAttemptsExceeded,
}

/// A recorded error.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct WorkflowRunError {
    /// The error's name (its type), e.g. `PaymentDeclined`.
    #[serde(default)]
    pub name: String,
    /// The error's message (at most 4,096 characters).
    #[serde(default)]
    pub message: String,
}

/// Observed state of a WorkflowRun, mirrored from the system database by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct WorkflowRunStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions of the run: `Succeeded` (true once it succeeded), `Failed` (true once it
    /// failed, was cancelled or parked; reasons `WorkflowFailed`, `Cancelled`,
    /// `MaxRecoveryAttemptsExceeded`, or why it could not start: `AppNotFound`,
    /// `WorkflowNotFound`, `QueueNotFound` (no worker listens to spec.queue) and
    /// `ForkSourceNotFound`, looked at again every 30 s, and the final `InvalidInput` (not as
    /// many arguments as the workflow takes), `Duplicate` and `EnqueueFailed`) and `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The phase, from the workflow's status: Pending, Enqueued, Delayed, Running, Succeeded,
    /// Failed, Cancelled or MaxRecoveryAttemptsExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::optional_enum)]
    pub phase: Option<WorkflowRunPhase>,
    /// The workflow ID in the system database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The application version running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// The executor (worker pod) running or last running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// When a worker started it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Steps recorded so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_completed: Option<i64>,
    /// Its output as JSON text, when it succeeded (at most 4,096 characters; longer outputs
    /// are cut and marked, the database has the whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Its error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkflowRunError>,
    /// The `spec.resume` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<i64>,
    /// How long it ran, from start to finish (e.g. `1m12s`), once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The workflow's current events (`set_event` keys) as JSON text, so its progress shows:
    /// at most 20 keys, each value at most 256 characters.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub events: std::collections::BTreeMap<String, String>,
    /// Names of the `spec.messages` sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages_sent: Vec<String>,
    /// The workflow ID this run was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
}
