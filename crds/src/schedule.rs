//! `Schedule`: a cron schedule that enqueues a workflow of a DurableApp once per tick.
//!
//! Each tick becomes the workflow ID `sched-{namespace}/{name}-{tick}` (DBOS's convention, with
//! the namespace so Schedules of one name in two namespaces never collide, and a `/` no code
//! schedule `{app}.{workflow}` has), so a tick runs
//! exactly once however often the controller retries it. The cron expression is checked for
//! shape in the schema (5 or 6 fields, or an `@` macro) and fully by the operator.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

/// Desired state of a Schedule: the app and workflow, the cron expression and its time zone.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    doc = "Schedule enqueues a workflow of a DurableApp (same namespace) once per tick of a cron \
           schedule, as the workflow ID `sched-{namespace}/{name}-{tick}`, so each tick runs exactly once. \
           Missed ticks are caught up within a deadline; overlapping runs are allowed, skipped or \
           replaced. Each run appears as a WorkflowRun owned by the Schedule and labelled \
           `mainstay.dev/schedule={name}` (the unfinished ones and the newest finished ones, \
           within the history limits). Its Ready condition says whether it is firing, and why not.",
    group = "mainstay.dev",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    shortname = "msched",
    // Run objects are named `{name}-{tick in Unix seconds}` (10 digits) and labelled with the
    // name: 52 + 11 keeps both within a label value's 63 characters, as CronJob does.
    validation = Rule::new("self.metadata.name.size() <= 52").message("a Schedule's name must be at most 52 characters (its runs are named {name}-{tick in Unix seconds})"),
    category = "mainstay",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "TZ", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    // A `date` column shows a future time as `<invalid>`: the next tick is shown as its text.
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// The DurableApp (same namespace) whose workers run the workflow.
    #[x_kube(validation = Rule::new("self != ''").message("appRef must name a DurableApp"))]
    pub app_ref: String,
    /// Registered name of the workflow to enqueue.
    #[x_kube(validation = Rule::new("self != ''").message("workflowName must not be empty"))]
    pub workflow_name: String,
    /// Cron expression: 5 fields (minute first), 6 fields (seconds first), or a macro such as
    /// `@hourly`. Time zones go in `timeZone`, not in the expression.
    #[x_kube(validation = Rule::new("self.startsWith('@') || self.split(' ').filter(f, f != '').size() in [5, 6]").message("schedule must have 5 fields (minute hour day month weekday), 6 fields (seconds first), or be a macro like @hourly"))]
    #[x_kube(validation = Rule::new("!self.contains('TZ=')").message("put the time zone in spec.timeZone, not in the schedule"))]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The schedule's context, any JSON value. Every scheduled workflow takes two arguments,
    /// whatever fires it (this resource, a schedule stored with `mainstay schedule create`, or
    /// `#[mainstay::scheduled]`): the tick's scheduled time (RFC 3339 text, e.g.
    /// `2026-01-31T23:00:00+00:00`) and the schedule's context, this value. Default: `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::any_json")]
    pub input: Option<serde_json::Value>,
    /// Queue to enqueue on. Default: the internal queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// What to do when a tick comes while the previous run is still going: `Allow` (runs may
    /// overlap), `Forbid` (the tick is skipped) or `Replace` (the previous run is cancelled).
    /// Default: Allow.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Ticks missed (operator down, suspended) are caught up if at most this many seconds late;
    /// older ones are reported as missed, not run. Default: unset (only the most recent missed
    /// tick runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Stops firing while true. Default: false.
    #[serde(default)]
    pub suspend: bool,
    /// Runs every tick in `[start, end)` that has not run, once (the ticks' own workflow IDs, so
    /// none runs twice, even one that already fired). Done once per (start, end); change it to
    /// backfill again. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillSpec>,
    /// How many succeeded runs are kept as WorkflowRun objects (the newest); older ones are
    /// deleted (their records stay in the database). Default: 3.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// How many failed or cancelled runs are kept as WorkflowRun objects (the newest). Default: 1.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
}

fn default_successful_history() -> i32 {
    3
}

fn default_failed_history() -> i32 {
    1
}

/// A range of ticks to run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// The first time of the range, RFC 3339 (e.g. `2026-01-31T00:00:00Z`), included.
    pub start: String,
    /// The end of the range, RFC 3339, excluded.
    pub end: String,
}

/// Overlap handling, as the CronJob controller does it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    #[default]
    Allow,
    /// A tick is skipped while the previous run is in flight.
    Forbid,
    /// The previous run is cancelled and the new one starts.
    Replace,
}

/// Observed state of a Schedule, written by the operator.
// No schema defaults: the operator writes every field it has (see
// `crate::schema::without_defaults`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct ScheduleStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions of the schedule: `Ready` (firing: reason `Scheduling`; or why not, e.g.
    /// `Suspended`, `Paused`, `InvalidSpec`, `AppNotFound`, `AppNotMigrated`, `WorkflowNotFound`,
    /// `InvalidInput` (the workflow does not take `(scheduled_at, context)`), `QueueNotFound`,
    /// `RunsFailing`, `EnqueueFailed`) and
    /// `Degraded` (something needs fixing; `AsExpected` when nothing does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Scheduled time of the last tick fired (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The workflow ID of the last tick fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_workflow_id: Option<String>,
    /// When a run last succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// Scheduled time of the next tick (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// The `mainstay.dev/trigger` annotation value last acted on (each new value runs the
    /// workflow once, now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
    /// The backfill range last run (`start/end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backfill: Option<String>,
    /// Workflow IDs of runs in flight (at most 10, newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
}
