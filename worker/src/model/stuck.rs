//! Stuck and stranded work: what counts as such, and the report of it.
//!
//! Four kinds, each a question an operator of a fleet asks:
//! - **stalled**: `PENDING` with no new checkpoint for longer than a threshold. A workflow
//!   waiting by design is not stalled: in a durable sleep, `recv` or `get_event` (its timer's
//!   wake-up time counts as activity), or on a child that is still unfinished (the child is
//!   judged itself);
//! - **stranded**: queued work (`ENQUEUED` or `DELAYED`) that no running version can run: it
//!   is pinned to a version without workers, or the version that would take it does not
//!   register its workflow;
//! - **slow queue**: a queue whose oldest ready item waits longer than a threshold;
//! - **parked**: `MAX_RECOVERY_ATTEMPTS_EXCEEDED`, waiting for someone to resume it.
//!
//! Invariant: everything here is scoped as an application's other figures are (see `fleet`),
//! and the pure rules below take no clock of their own (the caller passes `now_ms`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::model::clock::millis;
use crate::model::fleet::UnfinishedWork;
use crate::model::management::RegisteredWorkflow;
use crate::model::status::Status;

/// A `PENDING` workflow without a new checkpoint for longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StalledWorkflow {
    pub workflow_id: String,
    pub name: Option<String>,
    pub executor_id: Option<String>,
    pub app_version: Option<String>,
    pub queue_name: Option<String>,
    /// When it last moved (epoch ms): its start, its latest checkpoint, or the wake-up time of
    /// the timer it waited on.
    pub active_at_ms: i64,
    /// The latest recorded operation's name, if any.
    pub last_step: Option<String>,
}

/// How many stalled workflows one executor holds (whether it is alive is for the caller to
/// tell: a dead one's are recovery's, not stuck).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StalledOnExecutor {
    pub executor_id: Option<String>,
    pub stalled: i64,
}

/// A workflow parked as `MAX_RECOVERY_ATTEMPTS_EXCEEDED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedWorkflow {
    pub workflow_id: String,
    pub name: Option<String>,
    pub app_version: Option<String>,
    pub recovery_attempts: i64,
    pub updated_at_ms: Option<i64>,
}

/// Stalled and parked workflows of an application (see
/// [`Client::stuck_workflows`](crate::Client::stuck_workflows)): the oldest first, at most the
/// limit asked for each, with the whole counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StuckWorkflows {
    pub stalled: Vec<StalledWorkflow>,
    pub stalled_total: i64,
    /// The whole count per executor (not only the workflows listed).
    pub stalled_per_executor: Vec<StalledOnExecutor>,
    /// When the next `PENDING` workflow not yet stalled will be, if nothing moves (epoch ms).
    pub next_stall_at_ms: Option<i64>,
    pub parked: Vec<ParkedWorkflow>,
    pub parked_total: i64,
}

/// Why queued work is stranded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrandedReason {
    /// Pinned to a version no worker runs (retired, or never deployed here).
    VersionNotRunning,
    /// The version that would take it does not register the workflow.
    UnknownWorkflow,
}

impl StrandedReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StrandedReason::VersionNotRunning => "version not running",
            StrandedReason::UnknownWorkflow => "workflow not registered",
        }
    }
}

/// Queued workflows of one name and version that no running version can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrandedWork {
    pub workflow_name: String,
    /// The version they are pinned to (`None`: the latest version's, which is `for_version`).
    pub app_version: Option<String>,
    /// The version that would run them.
    pub for_version: Option<String>,
    pub reason: StrandedReason,
    pub queued: i64,
    /// Of those, enqueued for this application itself (the rest are rows of no application,
    /// which another application sharing the database may be meant to run).
    pub own: i64,
}

/// How long the oldest ready workflow of a queue has waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueWait {
    pub queue: String,
    pub enqueued: i64,
    /// When its oldest ready workflow became ready (epoch ms).
    pub oldest_ready_ms: i64,
    /// How long that one has waited (ms).
    pub oldest_wait_ms: i64,
}

impl QueueWait {
    /// Whether its oldest ready workflow has waited `threshold` or longer: a slow queue.
    pub fn waited(&self, threshold: Duration) -> bool {
        self.oldest_wait_ms >= millis(threshold)
    }
}

/// What counts as stuck, for [`Client::stuck_work`](crate::Client::stuck_work).
#[derive(Debug, Clone)]
pub struct StuckCriteria {
    /// A `PENDING` workflow without a new checkpoint for this long is stalled.
    pub stalled_after: Duration,
    /// A queue whose oldest ready workflow waited this long is slow.
    pub queue_wait: Duration,
    /// The versions that have workers; `None`: only the application's latest version.
    pub running_versions: Option<Vec<String>>,
    /// Workflows listed per kind (the counts are whole regardless).
    pub limit: usize,
}

impl Default for StuckCriteria {
    fn default() -> Self {
        StuckCriteria { stalled_after: Duration::from_secs(600), queue_wait: Duration::from_secs(300), running_versions: None, limit: 20 }
    }
}

/// Everything stuck or stranded of an application (see [`StuckCriteria`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StuckWork {
    /// The versions taken as running.
    pub running_versions: Vec<String>,
    /// Whether stranded work was judged: it needs an application (whose latest version runs)
    /// or the running versions named; across every application of a shared database no one
    /// version is the latest.
    pub stranded_judged: bool,
    #[serde(flatten)]
    pub workflows: StuckWorkflows,
    pub stranded: Vec<StrandedWork>,
    /// Queues whose oldest ready workflow waited the threshold or longer.
    pub slow_queues: Vec<QueueWait>,
}

impl UnfinishedWork {
    /// Queued work of application `app` that none of the `running` versions (with what each
    /// registered; empty: not recorded, taken as able to run anything) can run. Work without a
    /// version is the `latest` version's.
    pub fn stranded(
        &self,
        app: Option<&str>,
        running: &BTreeMap<String, Vec<RegisteredWorkflow>>,
        latest: Option<&str>,
    ) -> Vec<StrandedWork> {
        let names: BTreeMap<&str, HashSet<&str>> =
            running.iter().map(|(v, r)| (v.as_str(), r.iter().map(|w| w.name.as_str()).collect())).collect();
        let registers = |version: &str, name: &str| names.get(version).is_none_or(|n| n.is_empty() || n.contains(name));
        let mut by: BTreeMap<(String, Option<String>), StrandedWork> = BTreeMap::new();
        for g in self.of(app) {
            if !matches!(g.status, Status::Enqueued | Status::Delayed) {
                continue;
            }
            let name = g.workflow_name.clone().unwrap_or_default();
            let for_version = g.app_version.as_deref().or(latest);
            let reason = match for_version {
                Some(v) if !running.contains_key(v) => StrandedReason::VersionNotRunning,
                None => StrandedReason::VersionNotRunning,
                Some(v) if !registers(v, &name) => StrandedReason::UnknownWorkflow,
                Some(_) => continue,
            };
            let s = by.entry((name.clone(), g.app_version.clone())).or_insert_with(|| StrandedWork {
                workflow_name: name,
                app_version: g.app_version.clone(),
                for_version: for_version.map(str::to_string),
                reason,
                queued: 0,
                own: 0,
            });
            s.queued += g.count;
            if app.is_some() && g.application_name.as_deref() == app {
                s.own += g.count;
            }
        }
        by.into_values().collect()
    }

    /// Every queue of application `app` with ready work, with how long its oldest ready
    /// workflow has waited at `now_ms`, sorted by queue.
    pub fn queue_waits(&self, app: Option<&str>, now_ms: i64) -> Vec<QueueWait> {
        let mut by: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for g in self.of(app) {
            let (Some(queue), Status::Enqueued, Some(ready)) = (g.queue_name.as_deref(), &g.status, g.oldest_ready_ms) else {
                continue;
            };
            let q = by.entry(queue).or_insert((0, i64::MAX));
            q.0 += g.count;
            q.1 = q.1.min(ready);
        }
        by.into_iter()
            .map(|(queue, (enqueued, oldest))| QueueWait {
                queue: queue.to_string(),
                enqueued,
                oldest_ready_ms: oldest,
                oldest_wait_ms: now_ms.saturating_sub(oldest).max(0),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fleet::WorkGroup;

    fn queued(app: Option<&str>, version: Option<&str>, name: &str, count: i64, ready: i64) -> WorkGroup {
        WorkGroup {
            application_name: app.map(str::to_string),
            app_version: version.map(str::to_string),
            version_owners: vec!["a".into()],
            queue_name: Some("q".into()),
            executor_id: None,
            status: Status::Enqueued,
            workflow_name: Some(name.into()),
            count,
            oldest_ready_ms: Some(ready),
        }
    }

    fn registered(names: &[&str]) -> Vec<RegisteredWorkflow> {
        names.iter().map(|n| RegisteredWorkflow { name: n.to_string(), arguments: None, schedule: None }).collect()
    }

    #[test]
    fn stranded_work_is_pinned_to_a_version_without_workers_or_unknown_to_the_one_that_would_run_it() {
        let work = UnfinishedWork {
            groups: vec![
                queued(Some("a"), Some("v1"), "old", 2, 0),
                queued(Some("a"), Some("v2"), "ok", 5, 0),
                queued(Some("a"), Some("v2"), "typo", 1, 0),
                queued(None, None, "typo", 3, 0),
                queued(Some("a"), None, "ok", 4, 0),
                queued(Some("b"), Some("v9"), "theirs", 7, 0),
            ],
        };
        let running = BTreeMap::from([("v2".to_string(), registered(&["ok"]))]);
        let stranded = work.stranded(Some("a"), &running, Some("v2"));
        let summary: Vec<_> =
            stranded.iter().map(|s| (s.workflow_name.as_str(), s.app_version.as_deref(), s.reason, s.queued, s.own)).collect();
        assert_eq!(
            summary,
            vec![
                ("old", Some("v1"), StrandedReason::VersionNotRunning, 2, 2),
                ("typo", None, StrandedReason::UnknownWorkflow, 3, 0),
                ("typo", Some("v2"), StrandedReason::UnknownWorkflow, 1, 1),
            ]
        );
        // A running version that recorded nothing is taken as able to run anything.
        let unknown = BTreeMap::from([("v2".to_string(), Vec::new())]);
        assert_eq!(work.stranded(Some("a"), &unknown, Some("v2")).len(), 1);
        // Without a latest version, work without a version has no one to run it.
        assert!(work.stranded(Some("a"), &running, None).iter().any(|s| s.app_version.is_none() && s.workflow_name == "ok"));
    }

    #[test]
    fn a_queue_waits_as_long_as_its_oldest_ready_item() {
        let mut late = queued(Some("a"), Some("v1"), "x", 3, 1_000);
        late.queue_name = Some("late".into());
        let mut running = queued(Some("a"), Some("v1"), "x", 4, 0);
        running.status = Status::Pending;
        let work = UnfinishedWork {
            groups: vec![queued(Some("a"), Some("v1"), "x", 2, 9_000), queued(Some("a"), None, "y", 1, 5_000), late, running],
        };
        let waits: Vec<_> = work.queue_waits(Some("a"), 10_000).into_iter().map(|w| (w.queue, w.enqueued, w.oldest_wait_ms)).collect();
        assert_eq!(waits, vec![("late".to_string(), 3, 9_000), ("q".to_string(), 3, 5_000)]);
    }
}
