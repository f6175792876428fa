//! Unfinished work of every application on one system database, read with one statement and
//! divided per application in memory: what a controller watching many applications on one
//! database needs, at the cost of one query per look instead of several per application.
//!
//! Invariants: an application's share follows exactly the rule the per-application queries
//! of [`Client`](crate::Client) apply in SQL (its own rows, and rows of no application that
//! carry no version or a version it owns), so [`UnfinishedWork::outstanding_by_version`] and
//! [`Client::outstanding_by_version`](crate::Client::outstanding_by_version) agree, and
//! likewise for the other figures (a test against Postgres holds them together).
//! [`Progress`] changes whenever a workflow's status, recovery attempts or recorded steps do
//! (an event is set by a step, so it changes the step count too).

use std::collections::{BTreeMap, HashSet};

use crate::model::management::{ExecutorWork, RegisteredWorkflow, VersionWork};
use crate::model::status::Status;

/// Unfinished workflows sharing every attribute below, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkGroup {
    pub application_name: Option<String>,
    pub app_version: Option<String>,
    /// The applications that own `app_version` (normally one).
    pub version_owners: Vec<String>,
    pub queue_name: Option<String>,
    pub executor_id: Option<String>,
    /// `Pending`, `Enqueued` or `Delayed`.
    pub status: Status,
    pub workflow_name: Option<String>,
    pub count: i64,
    /// For `Enqueued` groups, when the longest-waiting one became ready to run (epoch ms):
    /// enqueued, its delay over, or re-enqueued (a recovery, a resume).
    pub oldest_ready_ms: Option<i64>,
}

/// Everything but `oldest_ready_ms`, which moves with every claim from a busy queue: a digest
/// of the work changes when its amounts do, and what depends on waiting times is judged again
/// on a clock (see [`UnfinishedWork::queue_waits`]).
impl std::hash::Hash for WorkGroup {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (&self.application_name, &self.app_version, &self.version_owners, &self.queue_name, &self.executor_id).hash(h);
        (self.status.as_str(), &self.workflow_name, self.count).hash(h);
    }
}

impl WorkGroup {
    /// Whether workers of application `app` count this work as theirs (`None`: every
    /// application's): see the module's invariants.
    pub fn in_scope(&self, app: Option<&str>) -> bool {
        let Some(app) = app else { return true };
        match &self.application_name {
            Some(name) => name == app,
            None => self.app_version.is_none() || self.version_owners.iter().any(|o| o == app),
        }
    }
}

/// A snapshot of every unfinished (`PENDING`, `ENQUEUED` or `DELAYED`) workflow of a
/// database, grouped (see [`Client::unfinished_work`](crate::Client::unfinished_work)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnfinishedWork {
    pub groups: Vec<WorkGroup>,
}

impl UnfinishedWork {
    /// The groups application `app` counts as its own, in a stable order.
    pub fn of(&self, app: Option<&str>) -> Vec<&WorkGroup> {
        let mut mine: Vec<&WorkGroup> = self.groups.iter().filter(|g| g.in_scope(app)).collect();
        mine.sort_by(|a, b| {
            (&a.application_name, &a.app_version, &a.queue_name, &a.executor_id, a.status.as_str(), &a.workflow_name).cmp(&(
                &b.application_name,
                &b.app_version,
                &b.queue_name,
                &b.executor_id,
                b.status.as_str(),
                &b.workflow_name,
            ))
        });
        mine
    }

    /// As [`Client::pending_by_executor`](crate::Client::pending_by_executor), sorted by
    /// executor and version.
    pub fn pending_by_executor(&self, app: Option<&str>) -> Vec<ExecutorWork> {
        let mut by: BTreeMap<(String, Option<String>), i64> = BTreeMap::new();
        for g in self.of(app) {
            if let (Status::Pending, Some(executor)) = (&g.status, &g.executor_id) {
                *by.entry((executor.clone(), g.app_version.clone())).or_default() += g.count;
            }
        }
        by.into_iter().map(|((executor_id, app_version), pending)| ExecutorWork { executor_id, app_version, pending }).collect()
    }

    /// As [`Client::outstanding_by_version`](crate::Client::outstanding_by_version), sorted by
    /// version (no version first).
    pub fn outstanding_by_version(&self, app: Option<&str>) -> Vec<VersionWork> {
        let mut by: BTreeMap<Option<String>, VersionWork> = BTreeMap::new();
        for g in self.of(app) {
            let w = by.entry(g.app_version.clone()).or_insert_with(|| VersionWork {
                app_version: g.app_version.clone(),
                pending: 0,
                enqueued: 0,
                delayed: 0,
            });
            match g.status {
                Status::Pending => w.pending += g.count,
                Status::Enqueued => w.enqueued += g.count,
                Status::Delayed => w.delayed += g.count,
                _ => {}
            }
        }
        by.into_values().collect()
    }

    /// As [`Client::queue_depths`](crate::Client::queue_depths), sorted by queue.
    pub fn queue_depths(&self, app: Option<&str>) -> Vec<QueueDepth> {
        let mut by: BTreeMap<String, QueueDepth> = BTreeMap::new();
        for g in self.of(app) {
            let Some(queue) = &g.queue_name else { continue };
            if !matches!(g.status, Status::Enqueued | Status::Pending) {
                continue;
            }
            let d = by.entry(queue.clone()).or_insert_with(|| QueueDepth { queue: queue.clone(), enqueued: 0, pending: 0 });
            match g.status {
                Status::Enqueued => d.enqueued += g.count,
                Status::Pending => d.pending += g.count,
                _ => {}
            }
        }
        by.into_values().collect()
    }

    /// As [`Client::unrunnable`](crate::Client::unrunnable), given what `version`'s workers
    /// registered (read with [`Client::registered_workflows`](crate::Client::registered_workflows)):
    /// nothing registered means unknown, and nothing is reported.
    pub fn unrunnable(&self, app: Option<&str>, version: &str, registered: &[RegisteredWorkflow]) -> Vec<UnrunnableWork> {
        if registered.is_empty() {
            return Vec::new();
        }
        let names: HashSet<&str> = registered.iter().map(|r| r.name.as_str()).collect();
        let mut by: BTreeMap<String, UnrunnableWork> = BTreeMap::new();
        for g in self.of(app) {
            let versioned_here = g.app_version.is_none() || g.app_version.as_deref() == Some(version);
            let name = g.workflow_name.as_deref().unwrap_or_default();
            if g.status != Status::Enqueued || !versioned_here || names.contains(name) {
                continue;
            }
            let u = by.entry(name.to_string()).or_insert_with(|| UnrunnableWork { workflow_name: name.to_string(), queued: 0, own: 0 });
            u.queued += g.count;
            if app.is_some() && g.application_name.as_deref() == app {
                u.own += g.count;
            }
        }
        by.into_values().collect()
    }
}

/// How far one workflow has got: a change in any field means its record or steps changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Progress {
    pub workflow_id: String,
    pub status: Status,
    /// When its record last changed (epoch milliseconds).
    pub updated_at_ms: Option<i64>,
    pub recovery_attempts: i64,
    /// Recorded steps (operations).
    pub steps: i64,
}

/// What one version of one application registered, as a digest: it changes when a launch of
/// the version records other workflows, argument types or schedules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistrationMark {
    /// Empty for workers without an application name.
    pub application_name: String,
    pub app_version: String,
    pub digest: String,
}

/// Work waiting in and running from one queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub enqueued: i64,
    pub pending: i64,
}

/// Queued workflows of one name that a version does not register.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnrunnableWork {
    pub workflow_name: String,
    /// Queued, counting work of no application the version's workers would otherwise take.
    pub queued: i64,
    /// Of those, enqueued for this application itself (a misnamed workflow, most likely).
    pub own: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(app: Option<&str>, version: Option<&str>, owners: &[&str], status: Status, name: &str, count: i64) -> WorkGroup {
        WorkGroup {
            application_name: app.map(str::to_string),
            app_version: version.map(str::to_string),
            version_owners: owners.iter().map(|o| o.to_string()).collect(),
            queue_name: Some("q".into()),
            executor_id: (status == Status::Pending).then(|| "w1".to_string()),
            status,
            workflow_name: Some(name.into()),
            count,
            oldest_ready_ms: None,
        }
    }

    #[test]
    fn an_application_counts_its_own_and_claimable_unowned_work() {
        let work = UnfinishedWork {
            groups: vec![
                group(Some("a"), Some("v1"), &["a"], Status::Enqueued, "f", 2),
                group(Some("b"), Some("v9"), &["b"], Status::Enqueued, "f", 5),
                // No application: version-less counts for everyone, a version counts for its owner.
                group(None, None, &[], Status::Enqueued, "f", 1),
                group(None, Some("v1"), &["a"], Status::Pending, "f", 3),
                group(None, Some("v7"), &[], Status::Enqueued, "f", 4),
            ],
        };
        let a = work.outstanding_by_version(Some("a"));
        assert_eq!(a.iter().map(|w| (w.app_version.clone(), w.outstanding())).collect::<Vec<_>>(), vec![(None, 1), (Some("v1".into()), 5)]);
        let b: i64 = work.outstanding_by_version(Some("b")).iter().map(VersionWork::outstanding).sum();
        assert_eq!(b, 6);
        let all: i64 = work.outstanding_by_version(None).iter().map(VersionWork::outstanding).sum();
        assert_eq!(all, 15);
        assert_eq!(
            work.pending_by_executor(Some("a")),
            vec![ExecutorWork { executor_id: "w1".into(), app_version: Some("v1".into()), pending: 3 }]
        );
        assert!(work.pending_by_executor(Some("b")).is_empty());
        assert_eq!(work.queue_depths(Some("a")), vec![QueueDepth { queue: "q".into(), enqueued: 3, pending: 3 }]);
    }

    #[test]
    fn unrunnable_work_needs_a_recorded_registry() {
        let work = UnfinishedWork {
            groups: vec![
                group(Some("a"), Some("v1"), &["a"], Status::Enqueued, "typo", 2),
                group(None, None, &[], Status::Enqueued, "typo", 1),
                group(Some("a"), Some("v0"), &["a"], Status::Enqueued, "typo", 7),
                group(Some("a"), Some("v1"), &["a"], Status::Enqueued, "known", 4),
            ],
        };
        assert!(work.unrunnable(Some("a"), "v1", &[]).is_empty());
        let registered = [RegisteredWorkflow { name: "known".into(), arguments: None, schedule: None }];
        assert_eq!(work.unrunnable(Some("a"), "v1", &registered), vec![UnrunnableWork { workflow_name: "typo".into(), queued: 3, own: 2 }]);
    }
}
