//! Names that reach the cluster: field manager, finalizer, labels, condition types and
//! reasons, container and port names. One place, so they never drift apart.

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "mainstay-operator";
/// Finalizer on DurableApps and Schedules.
pub const FINALIZER: &str = "mainstay.dev/finalizer";

/// Label: the DurableApp a worker belongs to.
pub const LABEL_APP: &str = "mainstay.dev/app";
/// Label: the application version a worker runs.
pub const LABEL_VERSION: &str = "mainstay.dev/version";
/// Label: what manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the component.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "mainstay-operator";
/// Value of [`LABEL_COMPONENT`] on workers.
pub const COMPONENT_WORKER: &str = "worker";

/// Name of the worker container.
pub const WORKER_CONTAINER: &str = "worker";
/// Port of the runtime's health endpoint in worker pods.
pub const HEALTH_PORT: i32 = 8081;
/// Path of the liveness probe.
pub const LIVENESS_PATH: &str = "/healthz";
/// Path of the readiness probe.
pub const READINESS_PATH: &str = "/readyz";

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const MIGRATED: &str = "Migrated";
}

/// Condition reasons.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DATABASE_UNREACHABLE: &str = "DatabaseUnreachable";
    pub const MIGRATED: &str = "Migrated";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const SCALING: &str = "Scaling";
    pub const AVAILABLE: &str = "Available";
}
