//! Which worker Deployments (one per application version) a DurableApp keeps.
//!
//! The current version always has one. An older version keeps its Deployment while any of its
//! workflows is `PENDING` or `ENQUEUED` (only its own workers may run them), and loses it once
//! drained. Its replica count stays as it was while draining: the autoscaler sizes the current
//! version only.

use std::collections::BTreeMap;

/// Work still owned by one version: `PENDING` plus `ENQUEUED` workflows.
pub type Outstanding = BTreeMap<String, i64>;

/// The roll-out decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Versions whose Deployments stay (current first).
    pub keep: Vec<String>,
    /// Versions whose Deployments are removed: drained.
    pub remove: Vec<String>,
}

/// Decides, given the versions that have Deployments and each version's outstanding work.
pub fn decide(current: &str, deployed: &[String], outstanding: &Outstanding) -> Rollout {
    let mut keep = vec![current.to_string()];
    let mut remove = Vec::new();
    for v in deployed {
        if v == current {
            continue;
        }
        if outstanding.get(v).copied().unwrap_or(0) > 0 {
            keep.push(v.clone());
        } else {
            remove.push(v.clone());
        }
    }
    Rollout { keep, remove }
}

/// Versions with unfinished work that no Deployment runs (nor will: they are neither current
/// nor deployed), with how much: work that would otherwise wait forever, silently.
pub fn stranded(current: &str, deployed: &[String], outstanding: &Outstanding) -> Vec<(String, i64)> {
    outstanding.iter().filter(|(v, n)| **n > 0 && v.as_str() != current && !deployed.contains(v)).map(|(v, n)| (v.clone(), *n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_versions_drain_then_go() {
        let deployed = vec!["v1".to_string(), "v2".to_string()];
        let mut work = Outstanding::new();
        work.insert("v1".into(), 3);
        let r = decide("v2", &deployed, &work);
        assert_eq!((r.keep, r.remove), (vec!["v2".to_string(), "v1".to_string()], vec![]));
        work.insert("v1".into(), 0);
        let r = decide("v2", &deployed, &work);
        assert_eq!((r.keep, r.remove), (vec!["v2".to_string()], vec!["v1".to_string()]));
        // A first deploy: nothing to remove, the current version is created.
        let r = decide("v1", &[], &Outstanding::new());
        assert_eq!((r.keep, r.remove), (vec!["v1".to_string()], vec![]));
    }

    #[test]
    fn work_of_a_version_nobody_runs_is_stranded() {
        let deployed = vec!["v2".to_string(), "v3".to_string()];
        let mut work = Outstanding::new();
        work.insert("v1".into(), 2);
        work.insert("v2".into(), 5);
        work.insert("v3".into(), 1);
        work.insert("v0".into(), 0);
        assert_eq!(stranded("v3", &deployed, &work), vec![("v1".to_string(), 2)]);
        assert!(stranded("v1", &deployed, &work).is_empty(), "the current version is being deployed");
    }
}
