//! `DurableApp`: the workers of one application, their database, queues and scaling.
//!
//! Invariants expressed in the schema (so `kubectl apply` rejects violations with a message):
//! non-negative counts, `minReplicas <= maxReplicas`, non-empty image and secret names. What the
//! schema cannot express is checked by the operator and reported as a `Degraded` condition with
//! reason `InvalidSpec`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a DurableApp: the worker image, its system database, queues and scaling.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    doc = "DurableApp runs the mainstay workers of one application: a Deployment per application \
           version, sized on queue depth, against a Postgres system database whose migrations, \
           queue settings, workflow recovery and retention the operator manages. Its conditions \
           (Ready, Progressing, Degraded, Migrated) say what is wrong when something is.",
    group = "mainstay.dev",
    version = "v1alpha1",
    kind = "DurableApp",
    namespaced,
    status = "DurableAppStatus",
    shortname = "dapp",
    // Worker pod names are `{app}-{version}-{10}-{5}` and must fit in a 63-character hostname.
    validation = Rule::new("self.metadata.name.size() <= 36").message("a DurableApp's name must be at most 36 characters, so its worker pod names fit in 63"),
    category = "mainstay",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".status.readyWorkers"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredWorkers"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.queuedWorkflows"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DurableAppSpec {
    /// Worker image, e.g. `registry.example.com/shop-worker:1.4.2`. Its tag (or digest) is the
    /// application version unless `appVersion` is set; `latest` names no version.
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// Image pull policy of the worker container: `Always`, `IfNotPresent` or `Never`.
    /// Default: Kubernetes' default (`Always` for a `:latest` tag, else `IfNotPresent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::optional_enum)]
    pub image_pull_policy: Option<PullPolicy>,
    /// Entrypoint of the worker container. Default: the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the worker container. Default: the image's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables of the worker container. Those the operator sets itself
    /// (database URLs, system schema, application name and versions, executor ID, health port)
    /// are refused with reason `InvalidSpec`. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory requests and limits of the worker container. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Service account of the worker pods. Default: the namespace's `default` account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Mount the service account's API token into the worker pods. Workers never call the
    /// Kubernetes API themselves, so a token is only a credential to steal; set true if your
    /// code needs one. Default: false.
    #[serde(default)]
    pub automount_service_account_token: bool,
    /// Labels, annotations, scheduling and security contexts merged into the worker pod
    /// template. Default: {} (nothing extra; the security defaults apply).
    #[serde(default)]
    pub pod_template: PodTemplateExtras,
    /// The system database: Secrets holding its URLs, and the schema of its tables.
    pub database: DatabaseSpec,
    /// Application name recorded with the workers' workflows (DBOS's `application_name`).
    /// Default: the DurableApp's name. Applications sharing a system database need distinct
    /// names: each claims, recovers and counts only its own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Application version of these workers. Default: the image tag (or the first 12 hex digits
    /// of its digest). A new version rolls out
    /// as a new Deployment with its own image and settings; the old one keeps its own and drains
    /// its workflows, then goes. Version names are unique in a system database: applications
    /// sharing one need distinct versions (e.g. `billing-1.4.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Queues and their limits, written to the system database's `queues` table. Default: none
    /// (workflows use the internal queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueSpec>,
    /// A fixed number of workers. When set (by you, or by an external autoscaler through the
    /// `/scale` subresource) the operator does not autoscale. Default: unset (autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Autoscaling on queue depth, used when `replicas` is unset. Default: {minReplicas: 0,
    /// maxReplicas: 10, targetQueueDepth: 10, scaleUpStabilizationSeconds: 0,
    /// scaleDownStabilizationSeconds: 60}.
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// Deletion of finished workflows. Default: none (finished workflows are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// An HTTP port served by the workers, and optionally a Service for it. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    /// When work counts as stuck (reported in `status.stuck`, as Warning Events and as
    /// metrics). Default: {stalledAfterSeconds: 600, queueWaitSeconds: 300}.
    #[serde(default)]
    pub stuck: StuckSpec,
}

/// Thresholds of stuck work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckSpec {
    /// A running (`PENDING`) workflow on a live worker without a new checkpoint for this many
    /// seconds is stalled. A durable sleep, `recv` or `get_event` waiting for its timer is not.
    /// Default: 600.
    #[serde(default = "default_stalled_after")]
    #[schemars(range(min = 1))]
    pub stalled_after_seconds: i64,
    /// A queue whose oldest ready workflow has waited this many seconds is slow. Default: 300.
    #[serde(default = "default_queue_wait")]
    #[schemars(range(min = 1))]
    pub queue_wait_seconds: i64,
}

impl Default for StuckSpec {
    fn default() -> Self {
        StuckSpec { stalled_after_seconds: default_stalled_after(), queue_wait_seconds: default_queue_wait() }
    }
}

fn default_stalled_after() -> i64 {
    600
}
fn default_queue_wait() -> i64 {
    300
}

/// Image pull policy of the worker container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Extras of the worker pod template. Security defaults (non-root, read-only root filesystem,
/// no privilege escalation) apply unless overridden here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateExtras {
    /// Extra labels of the worker pods (the operator's own labels win). Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the worker pods. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node labels the worker pods must be scheduled on. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the worker pods tolerate. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod-level security context, merged field by field over the defaults (a field set here
    /// wins; a field left out keeps its default). Default: non-root with the `RuntimeDefault`
    /// seccomp profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Container-level security context of the worker, merged field by field over the defaults
    /// (e.g. `{runAsUser: 1000}` keeps the rest). Default: non-root, read-only root
    /// filesystem, no privilege escalation, all capabilities dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}

/// The workflows one application version registers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct VersionWorkflows {
    /// The application version.
    #[serde(default)]
    pub version: String,
    /// Its registered workflow names, sorted.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// Its `#[scheduled]` workflows, as `name: cron [time zone]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
}

/// A key of a Secret in the DurableApp's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("secret name must not be empty"))]
    pub name: String,
    /// Key in the Secret. Default: `url`.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "url".to_string()
}

/// The system database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the Postgres URL the workers use.
    pub url_secret: SecretKeyRef,
    /// Secret key holding the URL used for migrations (an admin role). Default: `urlSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url_secret: Option<SecretKeyRef>,
    /// Schema of the system tables. Default: `dbos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"))]
    pub system_schema: Option<String>,
}

/// A queue and its limits. Unset limits do not limit.
// A list item: no schema defaults (see `crate::schema::without_defaults`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
#[x_kube(validation = Rule::new("!has(self.workerConcurrency) || !has(self.concurrency) || self.workerConcurrency <= self.concurrency").message("workerConcurrency must not exceed concurrency"))]
pub struct QueueSpec {
    /// Queue name, as the application enqueues on it. Unique in the list.
    #[x_kube(validation = Rule::new("self != '' && self != '_dbos_internal_queue'").message("queue name must be non-empty and not the reserved _dbos_internal_queue"))]
    pub name: String,
    /// Most workflows of this queue running at once, across all workers. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// Most workflows of this queue running at once on one worker. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_concurrency: Option<u32>,
    /// Most workflows of this queue started per period. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Whether workflows are dequeued by priority (lower first) rather than in order of
    /// enqueueing. Default: false.
    #[serde(default)]
    pub priority_enabled: bool,
    /// Per-partition limits; setting this makes the queue partitioned. Default: none (the queue
    /// is not partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionSpec>,
}

/// At most `max` starts per `periodSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Most workflows started per period.
    #[schemars(range(min = 1))]
    pub max: u32,
    /// Length of the period in seconds (fractions allowed, at least 0.001).
    #[schemars(range(min = 0.001))]
    pub period_seconds: f64,
}

/// Limits applied to each partition of a partitioned queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSpec {
    /// Most workflows of one partition running at once, across all workers. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// Most workflows of one partition running at once on one worker. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_concurrency: Option<u32>,
    /// Most workflows of one partition started per period. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// Autoscaling on queue depth: desired = clamp(ceil((queued + running) / targetQueueDepth),
/// minReplicas, maxReplicas), stabilized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be <= maxReplicas"))]
pub struct ScalingSpec {
    /// Fewest workers; zero scales to zero when no work is queued. Default: 0.
    #[serde(default = "default_min")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Most workers. Default: 10.
    #[serde(default = "default_max")]
    #[schemars(range(min = 0))]
    pub max_replicas: i32,
    /// Queued plus running workflows one worker is meant to carry. Default: 10.
    #[serde(default = "default_target")]
    #[schemars(range(min = 1))]
    pub target_queue_depth: i32,
    /// Seconds a higher desired count must hold before scaling up. Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub scale_up_stabilization_seconds: i32,
    /// Seconds a lower desired count must hold before scaling down. Default: 60.
    #[serde(default = "default_down")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: i32,
}

fn default_min() -> i32 {
    0
}
fn default_max() -> i32 {
    10
}
fn default_target() -> i32 {
    10
}
fn default_down() -> i32 {
    60
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            min_replicas: default_min(),
            max_replicas: default_max(),
            target_queue_depth: default_target(),
            scale_up_stabilization_seconds: 0,
            scale_down_stabilization_seconds: default_down(),
        }
    }
}

/// Deletion of finished workflows (by age, by count, or both).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Delete finished workflows older than this many seconds. Default: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age_seconds: Option<i64>,
    /// Keep the records of at most this many workflows, newest first (unfinished workflows are
    /// never deleted). Default: no count limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_count: Option<i64>,
}

/// An HTTP port of the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    /// Container port the workers serve HTTP on (named `http`); not the health port 8081.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Whether to create a Service (named after the DurableApp) for the port, selecting the
    /// workers of every version. Default: false.
    #[serde(default)]
    pub service: bool,
}

/// Observed state of a DurableApp, written by the operator.
// No schema defaults: the operator writes every field it has (see
// `crate::schema::without_defaults`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct DurableAppStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions of the app: `Ready` (workers are up, or none are needed: reasons `Available`,
    /// `ScaledToZero`; or why not, e.g. `WorkersNotReady`, `SecretNotFound`,
    /// `DatabaseUnreachable`, `InvalidSpec`, `VersionConflict`; `Unknown` with `Paused`),
    /// `Progressing` (a roll-out or scaling under way),
    /// `Degraded` (something needs fixing; `AsExpected` when nothing does) and `Migrated` (the
    /// system database's schema is current).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workers of all versions, ready or not (for the `/scale` subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the worker pods (for the `/scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Ready workers of the versions kept (the current one and any draining).
    #[serde(default)]
    pub ready_workers: i32,
    /// Workers the current version should have: `spec.replicas`, or the autoscaler's count.
    #[serde(default)]
    pub desired_workers: i32,
    /// Enqueued workflows across all queues.
    #[serde(default)]
    pub queued_workflows: i64,
    /// Running (`PENDING`) workflows.
    #[serde(default)]
    pub pending_workflows: i64,
    /// Depth of each queue: those in the spec and any other with work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
    /// The version new work runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Versions with a Deployment (the current one and any draining).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The workflows each version in service registers (recorded by its workers when they
    /// launch; a version none of whose workers has launched yet is absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<VersionWorkflows>,
    /// Stuck and stranded work (see `spec.stuck`); absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<StuckStatus>,
}

/// Stuck and stranded work of an app. `mainstay stuck` lists the workflows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct StuckStatus {
    /// Running workflows on live workers without a new checkpoint for
    /// `spec.stuck.stalledAfterSeconds`.
    #[serde(default)]
    pub stalled_workflows: i64,
    /// A few of them, the longest stalled first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalled: Vec<String>,
    /// Queued workflows no running version can run (pinned to a version without workers, or
    /// not registered by the version that would take them).
    #[serde(default)]
    pub stranded_workflows: i64,
    /// Workflows parked after too many recovery attempts (`MAX_RECOVERY_ATTEMPTS_EXCEEDED`),
    /// waiting to be resumed.
    #[serde(default)]
    pub parked_workflows: i64,
    /// A few of them, the oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<String>,
    /// Queues whose oldest ready workflow has waited `spec.stuck.queueWaitSeconds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slow_queues: Vec<SlowQueueStatus>,
}

/// A queue whose oldest ready workflow waits too long.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct SlowQueueStatus {
    /// Queue name.
    pub name: String,
    /// Workflows waiting in it.
    pub enqueued: i64,
    /// When its oldest ready workflow became ready (RFC 3339).
    pub waiting_since: String,
}

/// Depth of one queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct QueueStatus {
    /// Queue name.
    pub name: String,
    /// Workflows waiting in the queue (`ENQUEUED`).
    pub enqueued: i64,
    /// Workflows of the queue running (`PENDING`).
    pub pending: i64,
}

/// A status condition, following the Kubernetes API conventions.
// A list item: no schema defaults (see `crate::schema::without_defaults`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::without_defaults)]
pub struct Condition {
    /// Condition type, e.g. `Ready` or `Degraded`; one condition of each type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why the condition has its status, in CamelCase (e.g. `Available`, `InvalidSpec`).
    pub reason: String,
    /// What happened, for humans. Default: empty.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
