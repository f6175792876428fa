//! A Schedule's runs as WorkflowRun objects: which of the schedule's workflows appear as
//! objects, the name each gets, and which objects go.
//!
//! Invariants: the system database stays the source of truth (exactly once per tick is the
//! tick's workflow ID there, never the object); the objects are a bounded window on it, the
//! newest unfinished runs (at most [`MAX_UNFINISHED_SHOWN`]) and the newest finished ones within
//! the history limits, recomputed on every reconcile, so a lost create or delete heals itself.
//! An object's name is a function of its workflow ID alone, so two reconciles (or two operator
//! replicas) never make two objects for one run. Deleting a run's object never touches the
//! workflow.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::ticks::parse_time;

/// Most unfinished runs of one Schedule shown as objects at once (a backfill or a stuck
/// every-second schedule must not flood the namespace); the database has them all.
pub const MAX_UNFINISHED_SHOWN: usize = 10;

/// How a run of the schedule stands, as far as history is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enqueued, delayed or running.
    Unfinished,
    Succeeded,
    /// Failed, cancelled or parked at its recovery limit.
    Failed,
}

/// One workflow the schedule fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub workflow_id: String,
    pub outcome: Outcome,
    /// When it was enqueued (epoch milliseconds): newest first decides what is kept.
    pub created_at_ms: i64,
}

/// What to change: objects to create (name, workflow ID, scheduled time if it is a tick) and
/// object names to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    pub create: Vec<NewRun>,
    pub delete: Vec<String>,
}

/// An object to create for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub name: String,
    pub workflow_id: String,
    /// The tick the run is for, when its ID is a tick's (not a trigger's).
    pub tick: Option<DateTime<Utc>>,
}

/// The tick of a tick's workflow ID `sched-{db_name}-{tick}`, if `id` is one.
pub fn tick_of(db_name: &str, id: &str) -> Option<DateTime<Utc>> {
    let rest = id.strip_prefix("sched-")?.strip_prefix(db_name)?.strip_prefix('-')?;
    parse_time(rest)
}

/// The object name of run `id` of Schedule `schedule` (`db_name` in the database):
/// `{schedule}-{tick in Unix seconds}` for a tick, as a CronJob names its Jobs, so they sort in
/// time; `{schedule}-{hash}` for other runs (triggered ones), the hash of the workflow ID.
pub fn object_name(schedule: &str, db_name: &str, id: &str) -> String {
    match tick_of(db_name, id) {
        Some(tick) => format!("{schedule}-{}", tick.timestamp()),
        None => format!("{schedule}-{:08x}", fnv1a32(id)),
    }
}

fn fnv1a32(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The runs to show: the newest unfinished ones (at most [`MAX_UNFINISHED_SHOWN`]), the newest
/// `successful` succeeded ones and the newest `failed` failed ones.
pub fn shown(runs: &[Run], successful: usize, failed: usize) -> Vec<&Run> {
    let mut newest: Vec<&Run> = runs.iter().collect();
    newest.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.workflow_id.cmp(&a.workflow_id)));
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (outcome, cap) in [(Outcome::Unfinished, MAX_UNFINISHED_SHOWN), (Outcome::Succeeded, successful), (Outcome::Failed, failed)] {
        for run in newest.iter().filter(|r| r.outcome == outcome).take(cap) {
            if seen.insert(run.workflow_id.as_str()) {
                kept.push(*run);
            }
        }
    }
    kept
}

/// Brings `existing` (the names of the objects the schedule owns) in line with the runs to
/// show.
pub fn plan(schedule: &str, db_name: &str, runs: &[Run], existing: &[String], successful: usize, failed: usize) -> Sync {
    let shown = shown(runs, successful, failed);
    let wanted: BTreeSet<String> = shown.iter().map(|r| object_name(schedule, db_name, &r.workflow_id)).collect();
    let have: BTreeSet<&str> = existing.iter().map(String::as_str).collect();
    let mut create: Vec<NewRun> = shown
        .iter()
        .map(|r| NewRun {
            name: object_name(schedule, db_name, &r.workflow_id),
            workflow_id: r.workflow_id.clone(),
            tick: tick_of(db_name, &r.workflow_id),
        })
        .filter(|n| !have.contains(n.name.as_str()))
        .collect();
    // Oldest first, so objects appear in the order the runs started.
    create.reverse();
    let delete = existing.iter().filter(|n| !wanted.contains(*n)).cloned().collect();
    Sync { create, delete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticks::{tick_workflow_id, utc};

    const DB: &str = "prod/nightly";

    fn tick_run(minute: u32, outcome: Outcome) -> Run {
        let tick = utc(2026, 1, 1, 0, minute, 0);
        Run { workflow_id: tick_workflow_id(DB, tick), outcome, created_at_ms: tick.timestamp_millis() }
    }

    #[test]
    fn tick_runs_are_named_by_their_tick_and_triggered_ones_by_a_hash() {
        let tick = utc(2026, 1, 31, 23, 0, 0);
        let id = tick_workflow_id(DB, tick);
        assert_eq!(tick_of(DB, &id), Some(tick));
        assert_eq!(object_name("nightly", DB, &id), format!("nightly-{}", tick.timestamp()));
        // A Schedule of another namespace, or another Schedule whose name starts the same, is
        // not mistaken for this one.
        assert_eq!(tick_of("dev/nightly", &id), None);
        assert_eq!(tick_of("prod/night", &id), None);
        let trigger = format!("sched-{DB}-trigger-1767225600");
        assert_eq!(tick_of(DB, &trigger), None);
        let name = object_name("nightly", DB, &trigger);
        assert!(name.starts_with("nightly-") && name.len() == "nightly-".len() + 8, "{name}");
        assert_eq!(name, object_name("nightly", DB, &trigger), "stable");
        assert_ne!(name, object_name("nightly", DB, &format!("sched-{DB}-trigger-other")));
    }

    #[test]
    fn history_limits_keep_the_newest_of_each_outcome() {
        let runs = vec![
            tick_run(1, Outcome::Succeeded),
            tick_run(2, Outcome::Failed),
            tick_run(3, Outcome::Succeeded),
            tick_run(4, Outcome::Succeeded),
            tick_run(5, Outcome::Failed),
            tick_run(6, Outcome::Succeeded),
            tick_run(7, Outcome::Unfinished),
        ];
        let ids = |v: Vec<&Run>| v.into_iter().map(|r| r.created_at_ms).collect::<Vec<_>>();
        let minute = |m: u32| utc(2026, 1, 1, 0, m, 0).timestamp_millis();
        assert_eq!(ids(shown(&runs, 3, 1)), vec![minute(7), minute(6), minute(4), minute(3), minute(5)]);
        assert_eq!(ids(shown(&runs, 0, 0)), vec![minute(7)], "limits of 0 keep only unfinished runs");
    }

    #[test]
    fn the_plan_creates_missing_objects_oldest_first_and_deletes_the_rest() {
        let runs: Vec<Run> = (1..=5).map(|m| tick_run(m, Outcome::Succeeded)).collect();
        let name = |m: u32| format!("nightly-{}", utc(2026, 1, 1, 0, m, 0).timestamp());
        // Objects exist for minutes 1-3 (made before); minutes 4 and 5 are new.
        let existing = vec![name(1), name(2), name(3), "nightly-deadbeef".to_string()];
        let sync = plan("nightly", DB, &runs, &existing, 3, 1);
        let created: Vec<_> = sync.create.iter().map(|c| c.name.clone()).collect();
        assert_eq!(created, vec![name(4), name(5)]);
        assert_eq!(sync.create[0].tick, Some(utc(2026, 1, 1, 0, 4, 0)));
        assert_eq!(sync.delete, vec![name(1), name(2), "nightly-deadbeef".to_string()]);
        // Once applied, the same state plans nothing.
        let now = vec![name(3), name(4), name(5)];
        assert_eq!(plan("nightly", DB, &runs, &now, 3, 1), Sync::default());
    }

    #[test]
    fn a_backlog_of_unfinished_runs_shows_only_the_newest() {
        let runs: Vec<Run> = (0..50).map(|m| tick_run(m, Outcome::Unfinished)).collect();
        let sync = plan("nightly", DB, &runs, &[], 3, 1);
        assert_eq!(sync.create.len(), MAX_UNFINISHED_SHOWN);
        assert_eq!(sync.create.last().unwrap().tick, Some(utc(2026, 1, 1, 0, 49, 0)));
    }
}
