//! Prometheus metrics of the operator, served on `/metrics` in the OpenMetrics text format.
//!
//! Labels are bounded: controller names, and the namespace/name of resources that exist (their
//! series are removed when the resource goes).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub namespace: String,
    pub app: String,
    pub queue: String,
    pub state: String,
}

/// A queue of an app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppQueueLabels {
    pub namespace: String,
    pub app: String,
    pub queue: String,
}

/// The kinds of stuck work a DurableApp reports (see `status.stuck`).
pub const STUCK_KINDS: [&str; 3] = ["stalled", "stranded", "parked"];

/// `kind`: one of [`STUCK_KINDS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StuckLabels {
    pub namespace: String,
    pub name: String,
    pub kind: &'static str,
}

/// One of the operator's CRDs, by name (`durableapps.mainstay.dev`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrdLabels {
    pub crd: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub reconcile_duration: HistogramFamily,
    pub schedule_fires: Family<ObjectLabels, Counter>,
    pub schedule_missed: Family<ObjectLabels, Counter>,
    pub recovered_workflows: Family<ObjectLabels, Counter>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub desired_workers: Family<ObjectLabels, Gauge>,
    pub queue_oldest_wait: Family<AppQueueLabels, Gauge<f64, AtomicU64>>,
    pub stuck_workflows: Family<StuckLabels, Gauge>,
    pub crd_missing_fields: Family<CrdLabels, Gauge>,
    pub leader: Gauge,
    /// Requests to the Kubernetes API (see [`crate::api_requests`]).
    pub api_requests: Family<crate::api_requests::RequestLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("mainstay_operator"),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            schedule_fires: Family::default(),
            schedule_missed: Family::default(),
            recovered_workflows: Family::default(),
            queue_depth: Family::default(),
            desired_workers: Family::default(),
            queue_oldest_wait: Family::default(),
            stuck_workflows: Family::default(),
            crd_missing_fields: Family::default(),
            leader: Gauge::default(),
            api_requests: Family::default(),
        };
        let registry = &mut m.registry;
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed and were retried", m.reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent per reconcile", m.reconcile_duration.clone());
        registry.register("schedule_fires", "Schedule ticks enqueued", m.schedule_fires.clone());
        registry.register("schedule_missed", "Schedule ticks missed beyond the starting deadline", m.schedule_missed.clone());
        registry.register("recovered_workflows", "Workflows of dead workers re-enqueued for live ones", m.recovered_workflows.clone());
        registry.register("queue_depth", "Workflows per queue and state (enqueued, pending)", m.queue_depth.clone());
        registry.register("desired_workers", "Workers the autoscaler wants per DurableApp", m.desired_workers.clone());
        registry.register(
            "queue_oldest_wait_seconds",
            "How long the oldest ready workflow of each queue has waited (0: none waiting)",
            m.queue_oldest_wait.clone(),
        );
        registry.register(
            "stuck_workflows",
            "Workflows stalled (running without progress), stranded (queued, no running version can run them) or parked",
            m.stuck_workflows.clone(),
        );
        registry.register(
            "crd_missing_fields",
            "Fields this operator knows that the installed CRD lacks, so the API server drops them (0: current)",
            m.crd_missing_fields.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        registry.register("api_requests", "Requests to the Kubernetes API by verb and resource", m.api_requests.clone());
        m
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Removes the series of queue `queue` of app `namespace/app`.
    pub fn forget_queue(&self, namespace: &str, app: &str, queue: &str) {
        let labels = |state: &str| QueueLabels { namespace: namespace.into(), app: app.into(), queue: queue.into(), state: state.into() };
        self.queue_oldest_wait.remove(&AppQueueLabels { namespace: namespace.into(), app: app.into(), queue: queue.into() });
        self.queue_depth.remove(&labels("enqueued"));
        self.queue_depth.remove(&labels("pending"));
    }

    /// Removes every series of DurableApp `namespace/name`, its queues' (`queues`) among them.
    pub fn forget_app<'q>(&self, namespace: &str, name: &str, queues: impl IntoIterator<Item = &'q str>) {
        self.desired_workers.remove(&ObjectLabels { namespace: namespace.into(), name: name.into() });
        for kind in STUCK_KINDS {
            self.stuck_workflows.remove(&StuckLabels { namespace: namespace.into(), name: name.into(), kind });
        }
        for queue in queues {
            self.forget_queue(namespace, name, queue);
        }
    }

    /// Records one reconcile of `controller`.
    pub fn observe_reconcile(&self, controller: &str, seconds: f64, failed: bool) {
        let labels = ControllerLabels { controller: controller.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(seconds);
        if failed {
            self.reconcile_errors.get_or_create(&labels).inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_apps_series_all_go() {
        let m = Metrics::new();
        let app = |name: &str| ObjectLabels { namespace: "ns".into(), name: name.into() };
        for name in ["shop", "other"] {
            m.desired_workers.get_or_create(&app(name)).set(2);
            for kind in STUCK_KINDS {
                m.stuck_workflows.get_or_create(&StuckLabels { namespace: "ns".into(), name: name.into(), kind }).set(1);
            }
            m.queue_oldest_wait
                .get_or_create(&AppQueueLabels { namespace: "ns".into(), app: name.into(), queue: "orders".into() })
                .set(1.0);
            for state in ["enqueued", "pending"] {
                let labels = QueueLabels { namespace: "ns".into(), app: name.into(), queue: "orders".into(), state: state.into() };
                m.queue_depth.get_or_create(&labels).set(3);
            }
        }
        m.forget_app("ns", "shop", ["orders"]);
        let text = m.encode();
        assert!(!text.contains("\"shop\""), "{text}");
        assert_eq!(text.matches("\"other\"").count(), 7, "{text}");
    }

    #[test]
    fn metrics_are_exposed_with_the_prefix() {
        let m = Metrics::new();
        m.observe_reconcile("durableapp", 0.01, true);
        m.queue_depth
            .get_or_create(&QueueLabels {
                namespace: "default".into(),
                app: "shop".into(),
                queue: "orders".into(),
                state: "enqueued".into(),
            })
            .set(7);
        let text = m.encode();
        assert!(text.contains("mainstay_operator_reconciles_total{controller=\"durableapp\"} 1"), "{text}");
        assert!(text.contains("mainstay_operator_reconcile_errors_total"), "{text}");
        assert!(text.contains("queue=\"orders\"") && text.contains("} 7"), "{text}");
    }
}
