//! The worker's Prometheus metrics, served at `/metrics` on the health port
//! (`MAINSTAY_HEALTH_PORT`, see `health` for the formats), names prefixed `mainstay_`.
//!
//! Invariants: label values are bounded by the code, never by the data: workflow and step
//! names (the registered functions), queue names, outcomes; never a workflow ID. Counters count
//! what this process did since it started; the pool gauges are read at each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::runtime::app::LocalOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WorkflowLabels {
    pub workflow: String,
}

/// `outcome`: `success` or `error` (recorded), or `interrupted` (shutdown, cancellation, lost
/// ownership, database outage: it finishes elsewhere or later).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FinishedLabels {
    pub workflow: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub queue: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// From 1 ms to about 9 hours, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// Every metric a worker exports.
pub(crate) struct Metrics {
    registry: Registry,
    pub workflows_started: Family<WorkflowLabels, Counter>,
    pub workflows_finished: Family<FinishedLabels, Counter>,
    pub workflow_seconds: Histograms<WorkflowLabels>,
    pub step_seconds: Histograms<StepLabels>,
    pub step_retries: Family<StepLabels, Counter>,
    pub claimed: Family<QueueLabels, Counter>,
    pub queue_wait_seconds: Histograms<QueueLabels>,
    pub recovered: Counter,
    pub commit_batch_size: Histogram,
    pub pool_connections: Gauge,
    pub pool_idle: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("mainstay"),
            workflows_started: Family::default(),
            workflows_finished: Family::default(),
            workflow_seconds: Family::new_with_constructor(seconds as fn() -> Histogram),
            step_seconds: Family::new_with_constructor(seconds as fn() -> Histogram),
            step_retries: Family::default(),
            claimed: Family::default(),
            queue_wait_seconds: Family::new_with_constructor(seconds as fn() -> Histogram),
            recovered: Counter::default(),
            // 1 to 512 writes (the committer's largest batch), doubling.
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            pool_connections: Gauge::default(),
            pool_idle: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "workflows_started",
            "Workflow executions started in this process (a recovery is a new one)",
            m.workflows_started.clone(),
        );
        r.register("workflows_finished", "Workflow executions ended in this process, by outcome", m.workflows_finished.clone());
        r.register("workflow_duration_seconds", "Time from an execution's start here to its outcome", m.workflow_seconds.clone());
        r.register("step_duration_seconds", "Time a step took, its retries included (replayed steps not counted)", m.step_seconds.clone());
        r.register("step_retries", "Step attempts that failed and were retried", m.step_retries.clone());
        r.register("queue_claims", "Queued workflows this process claimed, per queue", m.claimed.clone());
        r.register(
            "queue_wait_seconds",
            "Time from a workflow becoming ready in a queue (enqueued, its delay over, re-enqueued by a recovery or a resume) to its claim here",
            m.queue_wait_seconds.clone(),
        );
        r.register("recovered_workflows", "Workflows of this executor recovered at launch", m.recovered.clone());
        r.register("commit_batch_size", "Writes (starts, checkpoints, outcomes) per group commit", m.commit_batch_size.clone());
        r.register("db_pool_connections", "Open connections of the system database pool", m.pool_connections.clone());
        r.register("db_pool_idle_connections", "Idle connections of the system database pool", m.pool_idle.clone());
        m
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An execution of workflow `name` started here.
    pub(crate) fn workflow_started(&self, name: &str) {
        self.workflows_started.get_or_create(&WorkflowLabels { workflow: name.to_string() }).inc();
    }

    /// This process claimed workflows of `queue` that had waited `waits_ms` (`None`: not known).
    pub(crate) fn claimed(&self, queue: &str, waits_ms: impl Iterator<Item = Option<i64>>) {
        let labels = QueueLabels { queue: queue.to_string() };
        let mut n = 0;
        let waits = self.queue_wait_seconds.get_or_create(&labels);
        for wait in waits_ms {
            n += 1;
            if let Some(ms) = wait {
                // A writer's clock may run ahead of the database's: a negative wait is 0.
                waits.observe(ms.max(0) as f64 / 1000.0);
            }
        }
        drop(waits);
        self.claimed.get_or_create(&labels).inc_by(n);
    }

    /// An execution of workflow `name` ended here after `seconds`, with `outcome`.
    pub(crate) fn workflow_finished(&self, name: &str, seconds: f64, outcome: &LocalOutcome) {
        self.workflow_seconds.get_or_create(&WorkflowLabels { workflow: name.to_string() }).observe(seconds);
        let outcome = match outcome {
            LocalOutcome::Success(_) => "success",
            LocalOutcome::Failed(_) => "error",
            LocalOutcome::Interrupted => "interrupted",
        };
        self.workflows_finished.get_or_create(&FinishedLabels { workflow: name.to_string(), outcome }).inc();
    }

    /// Step `name` ran (not replayed) for `seconds` in `attempts` attempts.
    pub(crate) fn step_ran(&self, name: &str, seconds: f64, attempts: u32) {
        let labels = StepLabels { step: name.to_string() };
        self.step_seconds.get_or_create(&labels).observe(seconds);
        if attempts > 1 {
            self.step_retries.get_or_create(&labels).inc_by(u64::from(attempts - 1));
        }
    }
}
