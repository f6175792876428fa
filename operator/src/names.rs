//! Names that reach the cluster: field manager, finalizer, labels, condition types and
//! reasons, container and port names. One place, so they never drift apart.

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "mainstay-operator";
/// Finalizer earlier releases put on DurableApps and Schedules. None is added any more (it only
/// guarded in-memory state, and blocked deletion once the operator was gone); the operator
/// removes it where it finds it.
pub const LEGACY_FINALIZER: &str = "mainstay.dev/finalizer";

/// Label: the DurableApp a worker belongs to.
pub const LABEL_APP: &str = "mainstay.dev/app";
/// Label: the application version a worker runs.
pub const LABEL_VERSION: &str = "mainstay.dev/version";
/// Label: the Schedule a WorkflowRun is a run of.
pub const LABEL_SCHEDULE: &str = "mainstay.dev/schedule";
/// Label: what manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the component.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "mainstay-operator";
/// Value of [`LABEL_COMPONENT`] on workers.
pub const COMPONENT_WORKER: &str = "worker";

/// Annotation on worker Deployments and pods: the exact application version (labels hold a
/// DNS-safe form of it).
pub const ANNOTATION_VERSION: &str = "mainstay.dev/version";
/// Annotation of the objects the operator applies: a hash of what it set, so an unchanged
/// object is not applied again.
pub const ANNOTATION_SPEC_HASH: &str = "mainstay.dev/spec-hash";
/// Annotation of worker pods: the `resourceVersion` of the Secret holding the database URL
/// (a new one, after a rotation, rolls the workers).
pub const ANNOTATION_DATABASE_SECRET_VERSION: &str = "mainstay.dev/database-secret-version";
/// Annotation a human sets to `"true"` on a DurableApp or Schedule to pause its reconciliation.
pub const ANNOTATION_PAUSED: &str = "mainstay.dev/paused";
/// Annotation of a Schedule: each new value runs its workflow once, now (as `kubectl create job
/// --from=cronjob/x` does for a CronJob).
pub const ANNOTATION_TRIGGER: &str = "mainstay.dev/trigger";

/// Annotation of a Schedule's WorkflowRun: the tick it runs (RFC 3339), when it is a tick's.
pub const ANNOTATION_SCHEDULED_TIME: &str = "mainstay.dev/scheduled-time";

/// Name of the worker container.
pub const WORKER_CONTAINER: &str = "worker";
/// Name of the health port of workers.
pub const HEALTH_PORT_NAME: &str = "health";
/// Name of the application's HTTP port of workers (and of their Service).
pub const HTTP_PORT_NAME: &str = "http";
/// Port of the runtime's health endpoint in worker pods.
pub const HEALTH_PORT: i32 = 8081;
/// Path of the liveness probe (served by the runtime).
pub const LIVENESS_PATH: &str = mainstay::health::LIVENESS_PATH;
/// Path of the readiness probe (served by the runtime).
pub const READINESS_PATH: &str = mainstay::health::READINESS_PATH;
/// Name of the operator's Lease for leader election.
pub const LEASE_NAME: &str = "mainstay-operator";
/// Controller name on Events.
pub const REPORTER: &str = "mainstay-operator";

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const MIGRATED: &str = "Migrated";
    /// WorkflowRun: the workflow succeeded (what `kubectl wait --for=condition=Succeeded` waits for).
    pub const SUCCEEDED: &str = "Succeeded";
    /// WorkflowRun: the workflow failed, was cancelled or parked, or could not start.
    pub const FAILED: &str = "Failed";
    /// WorkflowRun: a worker runs it.
    pub const RUNNING: &str = "Running";
}

/// Condition reasons.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const DATABASE_UNREACHABLE: &str = "DatabaseUnreachable";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const MIGRATED: &str = "Migrated";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const SCALING: &str = "Scaling";
    pub const STABLE: &str = "Stable";
    pub const AVAILABLE: &str = "Available";
    pub const WORKERS_NOT_READY: &str = "WorkersNotReady";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const PAUSED: &str = "Paused";
    pub const SUSPENDED: &str = "Suspended";
    pub const APP_NOT_FOUND: &str = "AppNotFound";
    pub const SCHEDULING: &str = "Scheduling";
    pub const ENQUEUE_FAILED: &str = "EnqueueFailed";
    pub const VERSION_CONFLICT: &str = "VersionConflict";
    pub const IMAGE_CHANGED: &str = "ImageChangedWithoutNewVersion";
    pub const STRANDED_WORK: &str = "StrandedWork";
    pub const APP_NOT_MIGRATED: &str = "AppNotMigrated";
    pub const WORKFLOW_NOT_FOUND: &str = "WorkflowNotFound";
    pub const RUNS_FAILING: &str = "RunsFailing";
    pub const UNRUNNABLE_WORK: &str = "UnrunnableWork";
    pub const QUEUE_CONFLICT: &str = "QueueConflict";
    pub const STALLED_WORKFLOWS: &str = "StalledWorkflows";
    pub const PARKED_WORKFLOWS: &str = "ParkedWorkflows";
    pub const SLOW_QUEUES: &str = "SlowQueues";
    /// DurableApp, Schedule: the installed CRD lacks fields this operator writes or reads (see
    /// `crd_drift`).
    pub const CRD_OUTDATED: &str = "CRDOutdated";
    pub const RUNNING: &str = "Running";
    pub const NOT_RUNNING: &str = "NotRunning";
    pub const WORKFLOW_SUCCEEDED: &str = "WorkflowSucceeded";
    pub const NOT_FINISHED: &str = "NotFinished";
    pub const WORKFLOW_FAILED: &str = "WorkflowFailed";
    pub const CANCELLED: &str = "Cancelled";
    pub const MAX_RECOVERY_ATTEMPTS: &str = "MaxRecoveryAttemptsExceeded";
    pub const DUPLICATE: &str = "Duplicate";
    pub const FORK_SOURCE_NOT_FOUND: &str = "ForkSourceNotFound";
    pub const INVALID_INPUT: &str = "InvalidInput";
    pub const QUEUE_NOT_FOUND: &str = "QueueNotFound";
}

/// Event reasons.
pub mod event {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const MIGRATED: &str = "Migrated";
    pub const RECOVERED: &str = "RecoveredWorkflows";
    pub const DRAINED: &str = "VersionDrained";
    pub const SCALED: &str = "Scaled";
    pub const RETENTION: &str = "DeletedFinishedWorkflows";
    pub const FIRED: &str = "Fired";
    pub const MISSED: &str = "MissedSchedule";
    pub const TOO_MANY_MISSED: &str = "TooManyMissedTimes";
    pub const SKIPPED: &str = "Skipped";
    pub const REPLACED: &str = "Replaced";
    pub const LATEST_VERSION: &str = "LatestVersion";
    pub const ENQUEUED: &str = "Enqueued";
    pub const RESUMED: &str = "Resumed";
    pub const MESSAGE_SENT: &str = "MessageSent";
    pub const TRIGGERED: &str = "Triggered";
    pub const BACKFILLED: &str = "Backfilled";
    pub const WORKFLOW_NOT_FOUND: &str = "WorkflowNotFound";
    pub const RUNS_FAILING: &str = "RunsFailing";
    /// DurableApp: more workflows than before stalled, stranded or parked, or a queue turned
    /// slow (see `status.stuck`).
    pub const STALLED_WORKFLOWS: &str = "StalledWorkflows";
    pub const STRANDED_WORK: &str = "StrandedWork";
    pub const PARKED_WORKFLOWS: &str = "ParkedWorkflows";
    pub const SLOW_QUEUE: &str = "SlowQueue";
}

/// Environment variables the operator binary reads (the chart sets them).
pub mod env {
    /// Watch only this namespace (unset: all namespaces).
    pub const WATCH_NAMESPACE: &str = "MAINSTAY_OPERATOR_NAMESPACE";
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub const METRICS_ADDR: &str = "MAINSTAY_OPERATOR_METRICS_ADDR";
    /// Whether to elect a leader (`true` unless a single replica runs).
    pub const LEADER_ELECT: &str = "MAINSTAY_OPERATOR_LEADER_ELECT";
    /// Log format: `text` or `json`.
    pub const LOG_FORMAT: &str = "MAINSTAY_OPERATOR_LOG_FORMAT";
    /// The operator pod's namespace (downward API): where its Lease lives.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The operator pod's name (downward API): its identity in the Lease and on Events.
    pub const POD_NAME: &str = "POD_NAME";
}
