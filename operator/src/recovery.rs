//! Which executors are dead: their workflows are `PENDING` under a worker pod that is gone.
//!
//! Invariants:
//! - an executor counts only if its ID has the shape of a pod name of this app's worker
//!   Deployment for the version it ran (`{app}-{version}-…`), so processes outside this
//!   DurableApp (another app on the same database, a developer's laptop) are never touched;
//! - a pod that still exists and has not terminated is alive, however unready: its process may
//!   still be running workflows, and running them twice is worse than late. The exception is a
//!   pod still present well past its deletion deadline (`deletionTimestamp`, which includes
//!   the grace period): no kubelet is finishing it, which is what a lost node looks like, and
//!   its process, if it still runs, loses ownership of its workflows when they are recovered;
//! - the caller reads the pending executors *before* it lists the pods. A pod that appears in
//!   the database existed before that read, so if it is missing from the later listing it is
//!   really gone (Deployment pod names are never reused). The listing comes from a watch,
//!   which can lag the database (a pod that started and claimed work since the watch's last
//!   event), so before recovering, the API server is asked about each dead pod directly.

use std::collections::BTreeSet;

use mainstay::ExecutorWork;

use crate::workload::deployment_name;

/// The pod phases after which a pod's containers never run again.
pub const TERMINAL_PHASES: &[&str] = &["Succeeded", "Failed"];

/// How long past its deletion deadline a pod may linger before its node counts as lost.
pub const LOST_AFTER_DEADLINE: chrono::Duration = chrono::Duration::seconds(30);

/// Whether a pod's worker process can no longer be running workflows as their owner.
pub fn is_gone(phase: Option<&str>, deletion_deadline: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> bool {
    phase.is_some_and(|p| TERMINAL_PHASES.contains(&p)) || deletion_deadline.is_some_and(|d| now > d + LOST_AFTER_DEADLINE)
}

/// [`is_gone`] of a pod object.
pub fn pod_is_gone(pod: &k8s_openapi::api::core::v1::Pod, now: chrono::DateTime<chrono::Utc>) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let deadline =
        pod.metadata.deletion_timestamp.as_ref().and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.0.as_millisecond()));
    is_gone(phase, deadline, now)
}

/// The executors among `pending` whose pods are not in `live_pods`.
pub fn dead_executors<'a>(app: &str, pending: &'a [ExecutorWork], live_pods: &BTreeSet<String>) -> Vec<&'a ExecutorWork> {
    pending
        .iter()
        .filter(|w| !live_pods.contains(&w.executor_id))
        .filter(|w| w.app_version.as_deref().is_some_and(|v| w.executor_id.starts_with(&format!("{}-", deployment_name(app, v)))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(executor: &str, version: &str) -> ExecutorWork {
        ExecutorWork { executor_id: executor.into(), app_version: Some(version.into()), pending: 2 }
    }

    #[test]
    fn terminated_pods_and_pods_stuck_past_their_deletion_are_gone() {
        let now = crate::ticks::utc(2026, 1, 1, 0, 10, 0);
        assert!(!is_gone(Some("Running"), None, now));
        assert!(!is_gone(None, None, now), "a pod not yet reported is alive");
        assert!(is_gone(Some("Failed"), None, now), "evicted");
        assert!(is_gone(Some("Succeeded"), None, now));
        let deadline = now - chrono::Duration::seconds(10);
        assert!(!is_gone(Some("Running"), Some(deadline), now), "still within its grace");
        let deadline = now - chrono::Duration::seconds(45);
        assert!(is_gone(Some("Running"), Some(deadline), now), "its node stopped finishing it");
    }

    #[test]
    fn only_this_apps_missing_pods_are_dead() {
        let d = deployment_name("shop", "v1");
        let pending = vec![
            work(&format!("{d}-7c9f8-abcde"), "v1"), // gone
            work(&format!("{d}-7c9f8-fghij"), "v1"), // alive
            work("shop-eu-v1-7c9f8-zzzzz", "v1"),    // another app sharing the database
            work("local", "v1"),                     // a developer's process
            work(&format!("{d}-7c9f8-klmno"), "v2"), // recorded under another version: not this pod shape
        ];
        let live = BTreeSet::from([format!("{d}-7c9f8-fghij")]);
        let dead: Vec<&str> = dead_executors("shop", &pending, &live).iter().map(|w| w.executor_id.as_str()).collect();
        assert_eq!(dead, vec![format!("{d}-7c9f8-abcde")]);
    }
}
