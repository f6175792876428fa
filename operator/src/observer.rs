//! One look per database: the operator's periodic reading of the system databases it reaches.
//!
//! Every poll interval, for each database (URL and schema) some DurableApp or unfinished
//! WorkflowRun is on, the observer reads the unfinished work of every application on it in one
//! query, and the progress of every watched run on it in another. It then asks for a reconcile
//! of exactly the DurableApps whose share of the work changed and the runs whose progress
//! changed. So the database cost at rest is two queries per database per interval whatever
//! the number of apps and runs, and an idle object is not reconciled at all; a change (an
//! enqueue on an app at zero workers, a run's next step) is acted on within one interval.
//!
//! Invariants:
//! - an app's digest is the one of the reading its last reconcile acted on, or of the
//!   observer's last reading of its database, whichever came last: a change after the
//!   reconcile's reading always differs from it, so it is never taken as the starting point
//!   and lost (at worst an app is reconciled once more than needed);
//! - a reading older than the poll interval is never used for a decision: a reconcile reads
//!   again instead (see [`Observer::unfinished`]);
//! - a database that stops (or starts again) answering brings every app on it back once, so
//!   their conditions say so without waiting for a resync;
//! - what it holds about objects that are gone is dropped by the periodic sweeps, and the
//!   triggers go to the controllers of the current leadership term only.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use mainstay::{Client, Progress, RegistrationMark, UnfinishedWork};
use mainstay_crds::{DurableApp, WorkflowRun};

use crate::database::PoolKey;

/// Workflow IDs per progress query (Postgres takes far more; this keeps each statement small).
const PROGRESS_BATCH: usize = 5_000;

/// How long one database's reading may take before it is given up until the next interval.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Databases read at the same time.
const CONCURRENT_READS: usize = 8;

struct Database {
    /// Any client of the database's shared pool (what is read covers every application).
    client: Client,
    /// The latest reading, with when it was taken.
    reading: Option<(Instant, Arc<Reading>)>,
    /// Whether the last reading failed.
    failing: bool,
}

/// One reading of a database: its unfinished work and what its application versions
/// registered.
#[derive(Debug, Default)]
pub struct Reading {
    pub work: UnfinishedWork,
    pub marks: Vec<RegistrationMark>,
}

impl Reading {
    /// The digest of what application `app` reads in it: its share of the work and what its
    /// versions registered.
    pub fn digest(&self, app: Option<&str>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.work.of(app).hash(&mut h);
        self.marks.iter().filter(|m| Some(m.application_name.as_str()) == app).for_each(|m| m.hash(&mut h));
        h.finish()
    }
}

struct WatchedApp {
    pool: PoolKey,
    /// The application name its share is counted under.
    name: Option<String>,
    /// The digest of its share in the observer's last reading (`None`: not read yet).
    digest: Option<u64>,
    obj: ObjectRef<DurableApp>,
}

struct WatchedRun {
    pool: PoolKey,
    workflow_id: String,
    /// As its reconcile last mirrored it.
    mirrored: Progress,
    /// What of the object its reconcile acted on (see `controller::acted_on`).
    acted: Option<u64>,
    /// When a reading last found the workflow as mirrored (`None`: the latest one did not).
    confirmed: Option<Instant>,
    /// What the latest differing reading found (`None`: no record), so one change asks for
    /// one reconcile, not one per reading.
    reported: Option<Option<Progress>>,
    obj: ObjectRef<WorkflowRun>,
}

#[derive(Default)]
struct State {
    databases: HashMap<PoolKey, Database>,
    apps: HashMap<String, WatchedApp>,
    runs: HashMap<String, WatchedRun>,
    apps_to: Option<UnboundedSender<ObjectRef<DurableApp>>>,
    runs_to: Option<UnboundedSender<ObjectRef<WorkflowRun>>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Observer {
    state: Mutex<State>,
    /// Serializes readings per database, so reconciles needing a fresh one at the same time
    /// share one query.
    reads: tokio::sync::Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// What one reading of a database changed: the apps and runs to reconcile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub apps: Vec<String>,
    pub runs: Vec<String>,
}

impl Observer {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a leadership term: the returned streams carry the objects to reconcile (for the
    /// DurableApp and WorkflowRun controllers' `reconcile_on`); a previous term's are closed.
    pub fn begin_term(&self) -> (UnboundedReceiver<ObjectRef<DurableApp>>, UnboundedReceiver<ObjectRef<WorkflowRun>>) {
        let (apps_to, apps) = unbounded();
        let (runs_to, runs) = unbounded();
        let mut state = self.state();
        state.apps_to = Some(apps_to);
        state.runs_to = Some(runs_to);
        // A new term's controllers reconcile everything once; digests start afresh.
        for app in state.apps.values_mut() {
            app.digest = None;
        }
        (apps, runs)
    }

    /// Watches app `key` (`namespace/name`) on database `pool` under application `name`
    /// (moving it from another database if it was on one), as its reconcile saw it in `seen`:
    /// a later reading that differs brings it back (a change between `seen` and now is never
    /// taken as the starting point).
    pub fn watch_app(&self, pool: &PoolKey, client: &Client, key: &str, name: Option<String>, obj: ObjectRef<DurableApp>, seen: &Reading) {
        let digest = Some(seen.digest(name.as_deref()));
        let mut state = self.state();
        database(&mut state, pool, client);
        state.apps.insert(key.to_string(), WatchedApp { pool: pool.clone(), name, digest, obj });
    }

    /// Watches unfinished run `key` (`namespace/name`) on database `pool`, as its reconcile
    /// last mirrored it (`progress`, which names its workflow) and acted on its object (`acted`).
    pub fn watch_run(
        &self,
        pool: &PoolKey,
        client: &Client,
        key: &str,
        progress: Progress,
        acted: Option<u64>,
        obj: ObjectRef<WorkflowRun>,
    ) {
        let mut state = self.state();
        database(&mut state, pool, client);
        let run = WatchedRun {
            pool: pool.clone(),
            workflow_id: progress.workflow_id.clone(),
            mirrored: progress,
            acted,
            confirmed: None,
            reported: None,
            obj,
        };
        state.runs.insert(key.to_string(), run);
    }

    /// Whether run `key`'s status is known to be current without reading its database: its
    /// object is as its reconcile acted on it (`acted`), and a reading younger than `max_age`
    /// found its workflow as that reconcile mirrored it. A resync of an idle run then costs
    /// no query.
    pub fn run_is_current(&self, key: &str, acted: Option<u64>, max_age: Duration) -> bool {
        let state = self.state();
        state.runs.get(key).is_some_and(|r| r.acted == acted && r.confirmed.is_some_and(|at| at.elapsed() < max_age))
    }

    /// Stops watching run `key` (it finished).
    pub fn forget_run(&self, key: &str) {
        self.state().runs.remove(key);
    }

    /// Forgets the apps not in `live` and the databases nothing is watched on any more.
    pub fn forget_apps_except(&self, live: &HashSet<String>) {
        let mut state = self.state();
        state.apps.retain(|k, _| live.contains(k));
        drop_unwatched(&mut state);
    }

    /// Forgets the runs not in `live`.
    pub fn forget_runs_except(&self, live: &HashSet<String>) {
        let mut state = self.state();
        state.runs.retain(|k, _| live.contains(k));
        drop_unwatched(&mut state);
    }

    /// The unfinished work on database `pool`: the latest reading if it is younger than
    /// `max_age`, else a new one (kept for the next caller; apps' digests do not move, see
    /// the module's invariants).
    pub async fn unfinished(&self, pool: &PoolKey, client: &Client, max_age: Duration) -> Result<Arc<Reading>, mainstay::Error> {
        if let Some(fresh) = self.fresh(pool, max_age) {
            return Ok(fresh);
        }
        let gate = self.reads.lock().await.entry(pool.clone()).or_default().clone();
        let _one = gate.lock().await;
        // Someone else may have read it while this waited.
        if let Some(fresh) = self.fresh(pool, max_age) {
            return Ok(fresh);
        }
        let reading = Arc::new(Reading { work: client.unfinished_work().await?, marks: client.registration_marks().await? });
        let mut state = self.state();
        database(&mut state, pool, client).reading = Some((Instant::now(), reading.clone()));
        Ok(reading)
    }

    /// The digest of what version `version` of application `app` registered, as of the latest
    /// reading of database `pool`: `None` before a reading, `Some(None)` when nothing was.
    pub fn registration_mark(&self, pool: &PoolKey, app: &str, version: &str) -> Option<Option<String>> {
        let state = self.state();
        let marks = &state.databases.get(pool)?.reading.as_ref()?.1.marks;
        Some(marks.iter().find(|m| m.application_name == app && m.app_version == version).map(|m| m.digest.clone()))
    }

    fn fresh(&self, pool: &PoolKey, max_age: Duration) -> Option<Arc<Reading>> {
        let state = self.state();
        let (at, work) = state.databases.get(pool)?.reading.as_ref()?;
        (at.elapsed() < max_age).then(|| work.clone())
    }

    /// Reads every watched database once and asks for the reconciles the changes call for.
    pub async fn observe_once(&self) {
        let databases: Vec<(PoolKey, Client, bool, Vec<String>)> = {
            let state = self.state();
            state
                .databases
                .iter()
                .map(|(pool, db)| {
                    let has_apps = state.apps.values().any(|a| a.pool == *pool);
                    let ids = state.runs.values().filter(|r| r.pool == *pool).map(|r| r.workflow_id.clone()).collect();
                    (pool.clone(), db.client.clone(), has_apps, ids)
                })
                .collect()
        };
        futures::stream::iter(databases)
            .for_each_concurrent(CONCURRENT_READS, |(pool, client, has_apps, ids)| async move {
                let read = tokio::time::timeout(READ_TIMEOUT, read(&client, has_apps, &ids)).await;
                match read {
                    Ok(Ok((work, progress))) => self.take(&pool, work, progress.map(|p| (ids, p))),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "cannot read a system database's unfinished work");
                        self.failed(&pool);
                    }
                    Err(_) => {
                        tracing::debug!("reading a system database's unfinished work timed out");
                        self.failed(&pool);
                    }
                }
            })
            .await;
    }

    /// Takes one database's reading: keeps it, and asks for the reconciles it calls for.
    fn take(&self, pool: &PoolKey, work: Option<Reading>, progress: Option<(Vec<String>, Vec<Progress>)>) {
        let mut state = self.state();
        let mut changed = changes(&mut state, pool, work, progress);
        if let Some(db) = state.databases.get_mut(pool) {
            if std::mem::take(&mut db.failing) {
                // Reachable again: every app on it says so.
                changed.apps = state.apps.iter().filter(|(_, a)| a.pool == *pool).map(|(k, _)| k.clone()).collect();
            }
        }
        for key in changed.apps {
            if let (Some(app), Some(to)) = (state.apps.get(&key), &state.apps_to) {
                let _ = to.unbounded_send(app.obj.clone());
            }
        }
        for key in changed.runs {
            if let (Some(run), Some(to)) = (state.runs.get(&key), &state.runs_to) {
                let _ = to.unbounded_send(run.obj.clone());
            }
        }
    }

    /// A reading of database `pool` failed: the first failure brings every app on it back, so
    /// each reports the database as unreachable (their reconciles read it themselves).
    fn failed(&self, pool: &PoolKey) {
        let state = &mut *self.state();
        let Some(db) = state.databases.get_mut(pool) else { return };
        // Never decide on a reading from before the failure: the apps read for themselves.
        db.reading = None;
        if std::mem::replace(&mut db.failing, true) {
            return;
        }
        if let Some(to) = &state.apps_to {
            for app in state.apps.values().filter(|a| a.pool == *pool) {
                let _ = to.unbounded_send(app.obj.clone());
            }
        }
    }

    /// Runs [`Observer::observe_once`] every `interval` until dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.observe_once().await;
        }
    }

    /// How many apps, runs and databases are watched (for tests and metrics).
    pub fn watched(&self) -> (usize, usize, usize) {
        let state = self.state();
        (state.apps.len(), state.runs.len(), state.databases.len())
    }
}

async fn read(client: &Client, has_apps: bool, ids: &[String]) -> Result<(Option<Reading>, Option<Vec<Progress>>), mainstay::Error> {
    let work =
        if has_apps { Some(Reading { work: client.unfinished_work().await?, marks: client.registration_marks().await? }) } else { None };
    let progress = if ids.is_empty() {
        None
    } else {
        let mut all = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PROGRESS_BATCH) {
            all.extend(client.progress(chunk).await?);
        }
        Some(all)
    };
    Ok((work, progress))
}

/// Applies one reading of database `pool` to what is watched on it, returning what changed.
fn changes(state: &mut State, pool: &PoolKey, reading: Option<Reading>, progress: Option<(Vec<String>, Vec<Progress>)>) -> Changed {
    let mut changed = Changed::default();
    if let Some(reading) = reading {
        for (key, app) in state.apps.iter_mut().filter(|(_, a)| a.pool == *pool) {
            let d = reading.digest(app.name.as_deref());
            if app.digest.is_some_and(|old| old != d) {
                changed.apps.push(key.clone());
            }
            app.digest = Some(d);
        }
        if let Some(db) = state.databases.get_mut(pool) {
            db.reading = Some((Instant::now(), Arc::new(reading)));
        }
    }
    if let Some((asked, progress)) = progress {
        let by_id: HashMap<&str, &Progress> = progress.iter().map(|p| (p.workflow_id.as_str(), p)).collect();
        // Only the runs asked about: one watched since has no record in this reading, which
        // says nothing about it.
        let asked: HashSet<&str> = asked.iter().map(String::as_str).collect();
        for (key, run) in state.runs.iter_mut().filter(|(_, r)| r.pool == *pool && asked.contains(r.workflow_id.as_str())) {
            let now = by_id.get(run.workflow_id.as_str()).map(|p| (*p).clone());
            if now.as_ref() == Some(&run.mirrored) {
                run.confirmed = Some(Instant::now());
                run.reported = None;
                continue;
            }
            run.confirmed = None;
            if run.reported.as_ref() != Some(&now) {
                changed.runs.push(key.clone());
                run.reported = Some(now);
            }
        }
    }
    changed.apps.sort();
    changed.runs.sort();
    changed
}

/// Database `pool`'s entry, reading through `client` from now on: the client a reconcile just
/// used is open, while one kept from before may belong to a pool closed since (its apps went,
/// then one came back).
fn database<'a>(state: &'a mut State, pool: &PoolKey, client: &Client) -> &'a mut Database {
    let db = state.databases.entry(pool.clone()).or_insert_with(|| Database { client: client.clone(), reading: None, failing: false });
    db.client = client.clone();
    db
}

fn drop_unwatched(state: &mut State) {
    let used: HashSet<PoolKey> = state.apps.values().map(|a| a.pool.clone()).chain(state.runs.values().map(|r| r.pool.clone())).collect();
    state.databases.retain(|k, _| used.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainstay::{Status, WorkGroup};

    fn pool(n: &str) -> PoolKey {
        (format!("postgres://db-{n}"), "dbos".into())
    }

    fn work(app: &str, enqueued: i64) -> UnfinishedWork {
        UnfinishedWork {
            groups: vec![WorkGroup {
                application_name: Some(app.into()),
                app_version: Some("v1".into()),
                version_owners: vec![app.into()],
                queue_name: Some("q".into()),
                executor_id: None,
                status: Status::Enqueued,
                workflow_name: Some("f".into()),
                count: enqueued,
                oldest_ready_ms: None,
            }],
        }
    }

    fn reading(app: &str, enqueued: i64, marks: Vec<RegistrationMark>) -> Reading {
        Reading { work: work(app, enqueued), marks }
    }

    fn state_with(apps: &[(&str, &str)], runs: &[(&str, &str, Progress)]) -> State {
        let mut state = State::default();
        for (key, app) in apps {
            let obj = ObjectRef::new(key.split('/').nth(1).unwrap()).within("ns");
            state.apps.insert(key.to_string(), WatchedApp { pool: pool("a"), name: Some(app.to_string()), digest: None, obj });
        }
        for (key, id, progress) in runs {
            let obj = ObjectRef::new(key.split('/').nth(1).unwrap()).within("ns");
            let run = WatchedRun {
                pool: pool("a"),
                workflow_id: id.to_string(),
                mirrored: progress.clone(),
                acted: Some(1),
                confirmed: None,
                reported: None,
                obj,
            };
            state.runs.insert(key.to_string(), run);
        }
        state
    }

    /// A progress reading that asked about w1 and w2.
    fn asked(found: Vec<Progress>) -> Option<(Vec<String>, Vec<Progress>)> {
        Some((vec!["w1".into(), "w2".into()], found))
    }

    fn progress(id: &str, steps: i64) -> Progress {
        Progress { workflow_id: id.into(), status: Status::Pending, updated_at_ms: Some(1), recovery_attempts: 0, steps }
    }

    #[test]
    fn only_apps_whose_share_changed_are_reconciled() {
        let mut state = state_with(&[("ns/a", "app-a"), ("ns/b", "app-b")], &[]);
        // Not yet seen by a reconcile (a new term's controllers reconcile everything anyway).
        assert_eq!(changes(&mut state, &pool("a"), Some(reading("app-a", 1, vec![])), None), Changed::default());
        assert_eq!(changes(&mut state, &pool("a"), Some(reading("app-a", 1, vec![])), None), Changed::default());
        let c = changes(&mut state, &pool("a"), Some(reading("app-a", 2, vec![])), None);
        assert_eq!(c.apps, vec!["ns/a".to_string()], "app-b's share did not change");
        // A new registration of app-b's (its workers launched) changes app-b's digest only.
        let mark = RegistrationMark { application_name: "app-b".into(), app_version: "v1".into(), digest: "d1".into() };
        let c = changes(&mut state, &pool("a"), Some(reading("app-a", 2, vec![mark])), None);
        assert_eq!(c.apps, vec!["ns/b".to_string()]);
        // Another database's reading touches nothing here.
        assert_eq!(changes(&mut state, &pool("b"), Some(reading("app-a", 9, vec![])), None), Changed::default());
    }

    #[test]
    fn runs_whose_progress_changed_or_whose_record_went_are_reconciled_once() {
        let mut state = state_with(&[], &[("ns/r1", "w1", progress("w1", 1)), ("ns/r2", "w2", progress("w2", 1))]);
        let c = changes(&mut state, &pool("a"), None, asked(vec![progress("w1", 2), progress("w2", 1)]));
        assert_eq!(c.runs, vec!["ns/r1".to_string()]);
        let c = changes(&mut state, &pool("a"), None, asked(vec![progress("w1", 2)]));
        assert_eq!(c.runs, vec!["ns/r2".to_string()], "w2's record is gone");
        assert_eq!(changes(&mut state, &pool("a"), None, asked(vec![progress("w1", 2)])), Changed::default());
    }

    #[test]
    fn a_run_is_current_only_while_readings_find_it_as_mirrored() {
        let observer = Observer::default();
        *observer.state() = state_with(&[], &[("ns/r1", "w1", progress("w1", 1)), ("ns/r3", "w3", progress("w3", 1))]);
        let minute = Duration::from_secs(60);
        assert!(!observer.run_is_current("ns/r1", Some(1), minute), "no reading yet");
        changes(&mut observer.state(), &pool("a"), None, asked(vec![progress("w1", 1)]));
        assert!(observer.run_is_current("ns/r1", Some(1), minute));
        assert!(!observer.run_is_current("ns/r1", Some(2), minute), "the object changed since");
        assert!(!observer.run_is_current("ns/r3", Some(1), minute), "w3 was not asked about");
        changes(&mut observer.state(), &pool("a"), None, asked(vec![progress("w1", 2)]));
        assert!(!observer.run_is_current("ns/r1", Some(1), minute), "moved on since its mirror");
    }
}
