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

/// A fleet of mainstay workers for one application.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mainstay.dev",
    version = "v1alpha1",
    kind = "DurableApp",
    namespaced,
    status = "DurableAppStatus",
    shortname = "dapp",
    category = "mainstay",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyWorkers"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".status.desiredWorkers"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.queuedWorkflows"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DurableAppSpec {
    /// Worker image, e.g. `registry.example.com/shop-worker:1.4.2`.
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Service account of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extras merged into the worker pod template.
    #[serde(default)]
    pub pod_template: PodTemplateExtras,
    /// The system database.
    pub database: DatabaseSpec,
    /// Application name recorded with the workers' workflows (DBOS's `application_name`);
    /// defaults to the DurableApp's name. Applications sharing a system database need distinct
    /// names: each claims, recovers and counts only its own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Application version of these workers; defaults to the image tag. A new version rolls out
    /// as a new Deployment with its own image and settings; the old one keeps its own and drains
    /// its workflows, then goes. Version names are unique in a system database: applications
    /// sharing one need distinct versions (e.g. `billing-1.4.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Queues and their limits, written to the system database's `queues` table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueSpec>,
    /// A fixed number of workers. When set (by you, or by an external autoscaler through the
    /// `/scale` subresource) the operator does not autoscale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Autoscaling on queue depth, used when `replicas` is unset.
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// Deletion of finished workflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// An HTTP port served by the workers, and optionally a Service for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
}

/// Image pull policy.
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod-level security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Container-level security context of the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}

/// A key of a Secret in the DurableApp's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("self != ''").message("secret name must not be empty"))]
    pub name: String,
    /// Key in the Secret (default `url`).
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
    /// Secret key holding the URL used for migrations (an admin role); defaults to `urlSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url_secret: Option<SecretKeyRef>,
    /// Schema of the system tables (default `dbos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"))]
    pub system_schema: Option<String>,
}

/// A queue and its limits. Unset limits do not limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.workerConcurrency) || !has(self.concurrency) || self.workerConcurrency <= self.concurrency").message("workerConcurrency must not exceed concurrency"))]
pub struct QueueSpec {
    #[x_kube(validation = Rule::new("self != '' && self != '_dbos_internal_queue'").message("queue name must be non-empty and not the reserved _dbos_internal_queue"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub priority_enabled: bool,
    /// Per-partition limits; setting this makes the queue partitioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionSpec>,
}

/// At most `max` starts per `periodSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    #[schemars(range(min = 1))]
    pub max: u32,
    #[schemars(range(min = 0.001))]
    pub period_seconds: f64,
}

/// Limits applied to each partition of a partitioned queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub worker_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// Autoscaling on queue depth: desired = clamp(ceil((queued + running) / targetQueueDepth),
/// minReplicas, maxReplicas), stabilized.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be <= maxReplicas"))]
pub struct ScalingSpec {
    /// Fewest workers; zero scales to zero when no work is queued.
    #[serde(default = "default_min")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Most workers.
    #[serde(default = "default_max")]
    #[schemars(range(min = 0))]
    pub max_replicas: i32,
    /// Queued plus running workflows one worker is meant to carry.
    #[serde(default = "default_target")]
    #[schemars(range(min = 1))]
    pub target_queue_depth: i32,
    /// How long a higher desired count must hold before scaling up.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub scale_up_stabilization_seconds: i32,
    /// How long a lower desired count must hold before scaling down.
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
    /// Delete finished workflows older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age_seconds: Option<i64>,
    /// Keep the records of at most this many workflows, newest first (unfinished workflows are
    /// never deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_count: Option<i64>,
}

/// An HTTP port of the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Whether to create a Service for the port.
    #[serde(default)]
    pub service: bool,
}

/// Observed state of a DurableApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurableAppStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `Migrated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workers of all versions (for the `/scale` subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the worker pods (for the `/scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default)]
    pub ready_workers: i32,
    #[serde(default)]
    pub desired_workers: i32,
    /// Enqueued workflows across all queues.
    #[serde(default)]
    pub queued_workflows: i64,
    /// Running (`PENDING`) workflows.
    #[serde(default)]
    pub pending_workflows: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
    /// The version new work runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Versions with a Deployment (the current one and any draining).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
}

/// Depth of one queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub name: String,
    pub enqueued: i64,
    pub pending: i64,
}

/// A status condition, following the Kubernetes API conventions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
