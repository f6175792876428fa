//! The controllers: DurableApp, Schedule and WorkflowRun, each a pipeline of validate → build →
//! apply → status, run by kube-runtime while this replica holds the leader lease.
//!
//! Invariants shared by both:
//! - every write to the cluster is a server-side apply with one field manager, so repeated
//!   reconciles converge and never fight each other;
//! - a problem with the spec, a Secret or the database becomes a condition with a reason and a
//!   retry with backoff, never a panic and never a crash loop;
//! - status is written only when it changed, so a steady resource costs no writes.

pub mod durable_app;
pub mod schedule;
pub mod workflow_run;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::database::Databases;
use crate::metrics::Metrics;
use crate::names::{FIELD_MANAGER, LEGACY_FINALIZER};
use crate::scaling::History;

/// A reconcile that failed and is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to reach the system database for {object}: {source}")]
    Database {
        object: String,
        #[source]
        source: mainstay::Error,
    },
}

/// Shorthand for a failed API call.
pub(crate) fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Shorthand for a failed call to an object's system database.
pub(crate) fn db_err(object: &str) -> impl FnOnce(mainstay::Error) -> Error {
    let object = object.to_string();
    move |source| Error::Database { object, source }
}

/// Why `version` of `app` (default: its current version) cannot run `start` (see
/// [`crate::runnable`]), or `None` when it can, or when nothing is known (no current version
/// yet, or none of its workers has recorded what it runs).
pub(crate) async fn refusal(
    ctx: &Context,
    db: &mainstay::Client,
    app: &mainstay_crds::DurableApp,
    version: Option<&str>,
    start: &crate::runnable::Start<'_>,
) -> Result<Option<crate::runnable::Refusal>, mainstay::Error> {
    let current = app.status.as_ref().and_then(|s| s.current_version.clone());
    let Some(version) = version.map(str::to_string).or(current) else { return Ok(None) };
    let app_key = object_key(app);
    let workflows = ctx.registered_workflows(db, app, &version, true).await?;
    if workflows.is_empty() {
        return Ok(None);
    }
    let queues = match start.queue {
        Some(_) => db.registered_queues(&version).await?,
        None => Vec::new(),
    };
    let recorded = crate::runnable::Recorded { app: &app_key, version: &version, workflows: &workflows, queues: &queues };
    Ok(crate::runnable::check(&recorded, start))
}

/// How long what a version's workers recorded is reused.
const REGISTERED_TTL: Duration = Duration::from_secs(30);

/// How often what is kept in memory about deleted objects is forgotten.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// What a reconcile acts on, as a hash: the spec (generation), annotations (pause, trigger),
/// labels, finalizers and deletion. A change to the status alone (the operator's own writes)
/// hashes the same, so it does not cause another reconcile (and another round of database
/// queries): periodic work comes from requeues, not from echoes of status writes.
pub(crate) fn acted_on<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// The store and trigger stream of a controller's own kind: a watch whose events are filtered
/// by [`acted_on`].
pub(crate) fn primary<K>(
    api: Api<K>,
) -> (kube::runtime::reflector::Store<K>, impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = crate::stores::watch(api, kube::runtime::watcher::Config::default());
    let stream = kube::runtime::reflector::reflector(writer, objects)
        .default_backoff()
        .applied_objects()
        .predicate_filter(acted_on::<K>, Default::default());
    (reader, stream)
}

/// Calls `forget` every [`SWEEP_INTERVAL`] with the keys (`namespace/name`) of the objects in
/// `store`, so what is kept in memory about objects that are gone can go too (no finalizer
/// announces a deletion).
pub(crate) async fn forget_deleted<K, F, Fut>(store: kube::runtime::reflector::Store<K>, mut forget: F)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: FnMut(HashSet<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    // An empty store before the first listing would make every object look gone.
    if store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        forget(store.state().iter().map(|o| object_key(o.as_ref())).collect()).await;
    }
}

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often each system database is read (see `observer`): autoscaling, recovery and
    /// WorkflowRun statuses react within this.
    pub poll_interval: Duration,
    /// How often retention sweeps run per DurableApp.
    pub retention_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { poll_interval: Duration::from_secs(2), retention_interval: Duration::from_secs(60) }
    }
}

/// How long a recorder of one event message is kept after its last use: kube's recorder
/// aggregates within six minutes, so a younger one still has something to fold into.
const RECORDER_TTL: Duration = Duration::from_secs(7 * 60);

/// Most event recorders kept (each holds the last Event it published).
const MAX_RECORDERS: usize = 1_000;

/// An event recorder's key: (object UID, warning, reason, note).
type RecorderKey = (String, bool, String, String);

/// What a version's workers recorded, as read.
pub(crate) struct Registered {
    read: std::time::Instant,
    /// The observer's digest of it when read.
    mark: Option<String>,
    workflows: Vec<mainstay::RegisteredWorkflow>,
}

/// Status fields the API server refused for one CRD (paths, see `crd_drift`), and when.
type Refused = (std::time::Instant, Vec<Vec<crate::crd_drift::Step>>);

/// What the controllers share.
pub struct Context {
    pub kube: kube::Client,
    /// What the watches show (reads come from here, not from the API server).
    pub stores: crate::stores::Stores,
    pub databases: Databases,
    /// The periodic reading of each database (see `observer`).
    pub observer: Arc<crate::observer::Observer>,
    pub metrics: Arc<Metrics>,
    /// Event recorders by (object, type, reason, note): see [`Context::event`].
    recorders: Mutex<HashMap<RecorderKey, (std::time::Instant, Recorder)>>,
    reporter: Reporter,
    pub settings: Settings,
    /// Scaling recommendations per DurableApp (`namespace/name`).
    pub(crate) scaling: Mutex<HashMap<String, History>>,
    /// Queue settings last written per DurableApp, to write only changes.
    pub(crate) queues_written: Mutex<HashMap<String, Vec<mainstay::Queue>>>,
    /// When retention last ran per DurableApp.
    pub(crate) retention_ran: Mutex<HashMap<String, std::time::Instant>>,
    /// The stuck work last reported per DurableApp (Events go out when it grows; kept here so a
    /// status the API server does not keep, under an old CRD, does not repeat them).
    pub(crate) stuck_reported: Mutex<HashMap<String, mainstay_crds::StuckStatus>>,
    /// The retry delays of each object whose reconciles are failing (see `retry`).
    failures: Mutex<HashMap<String, backon::ExponentialBackoff>>,
    /// The spec hash of the Service last applied per DurableApp (`None`: known to have none).
    pub(crate) services_applied: Mutex<HashMap<String, Option<String>>>,
    /// The version reserved per DurableApp by this process.
    pub(crate) reserved: Mutex<HashMap<String, String>>,
    /// What each version's workers recorded, per (DurableApp, version).
    pub(crate) registered: Mutex<HashMap<(String, String), Registered>>,
    /// Schedules (`namespace/name`) with metric series, to remove them once the Schedule goes.
    pub(crate) schedules_seen: Mutex<HashSet<String>>,
    /// What the installed CRDs lack (fed by `crd_watch`, which the binary starts).
    pub crd_drift: Arc<crate::crd_drift::CrdDrift>,
    /// Status fields the API server refused per CRD, and since when (see [`write_status`]).
    refused: Mutex<HashMap<&'static str, Refused>>,
}

impl Context {
    pub fn new(
        kube: kube::Client,
        stores: crate::stores::Stores,
        metrics: Arc<Metrics>,
        settings: Settings,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter { controller: crate::names::REPORTER.to_string(), instance };
        Context {
            recorders: Mutex::default(),
            reporter,
            kube,
            stores,
            databases: Databases::default(),
            observer: Arc::default(),
            metrics,
            settings,
            scaling: Mutex::default(),
            queues_written: Mutex::default(),
            retention_ran: Mutex::default(),
            stuck_reported: Mutex::default(),
            failures: Mutex::default(),
            schedules_seen: Mutex::default(),
            services_applied: Mutex::default(),
            reserved: Mutex::default(),
            registered: Mutex::default(),
            crd_drift: Arc::default(),
            refused: Mutex::default(),
        }
    }

    /// Publishes an Event about `obj`; failing to is logged, never fatal.
    ///
    /// kube's recorder folds every event of the same object, type and reason within six
    /// minutes into the first one, keeping its note: "Scaled from 0 to 1" would stand for every
    /// later scaling. So each distinct note gets its own recorder: repeats of one message still
    /// fold into a series, and a new message is a new Event.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
        let note: String = note.chars().take(1000).collect();
        let recorder = {
            let mut recorders = self.recorders.lock().unwrap_or_else(|p| p.into_inner());
            recorders.retain(|_, (used, _)| used.elapsed() < RECORDER_TTL);
            let uid = obj.meta().uid.clone().unwrap_or_default();
            let k = (uid, warning, reason.to_string(), note.clone());
            // Bounded: with thousands of objects starting at once (each run's "enqueued"
            // message is its own), the least recently used go first; a repeat of one of
            // those is a new Event instead of a count on the old one.
            if recorders.len() >= MAX_RECORDERS && !recorders.contains_key(&k) {
                if let Some(oldest) = recorders.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone()) {
                    recorders.remove(&oldest);
                }
            }
            let entry =
                recorders.entry(k).or_insert_with(|| (std::time::Instant::now(), Recorder::new(self.kube.clone(), self.reporter.clone())));
            entry.0 = std::time::Instant::now();
            entry.1.clone()
        };
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish an event");
        }
    }

    /// Forgets what is kept in memory about DurableApps not in `live` (`namespace/name`
    /// keys): their database clients, scaling history, written queue settings, retention
    /// times and metric series. Run periodically, since no finalizer announces a deletion.
    pub(crate) async fn sweep_apps(&self, live: &HashSet<String>) {
        self.databases.forget_except(live).await;
        self.databases.forget_deleted_secrets(&self.stores).await;
        self.observer.forget_apps_except(live);
        // Each app gone, with the queues whose settings were written for it (their series go too).
        let gone: HashMap<String, Vec<String>> = {
            let mut scaling = self.scaling.lock().unwrap_or_else(|p| p.into_inner());
            let mut gone: HashMap<String, Vec<String>> =
                scaling.keys().filter(|k| !live.contains(*k)).map(|k| (k.clone(), Vec::new())).collect();
            scaling.retain(|k, _| live.contains(k));
            let mut written = self.queues_written.lock().unwrap_or_else(|p| p.into_inner());
            for (key, queues) in written.iter().filter(|(k, _)| !live.contains(*k)) {
                gone.insert(key.clone(), queues.iter().map(|q| q.name.clone()).collect());
            }
            written.retain(|k, _| live.contains(k));
            self.retention_ran.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
            self.stuck_reported.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
            self.services_applied.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
            self.reserved.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(k));
            self.registered.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| live.contains(&k.0));
            gone
        };
        for (key, queues) in &gone {
            if let Some((namespace, name)) = key.split_once('/') {
                self.metrics.forget_app(namespace, name, queues.iter().map(String::as_str));
            }
        }
    }

    /// Forgets the metric series of Schedules not in `live` (`namespace/name` keys).
    pub(crate) fn sweep_schedules(&self, live: &HashSet<String>) {
        let mut fired = self.schedules_seen.lock().unwrap_or_else(|p| p.into_inner());
        for key in fired.iter().filter(|k| !live.contains(*k)) {
            if let Some((namespace, name)) = key.split_once('/') {
                let labels = crate::metrics::ObjectLabels { namespace: namespace.into(), name: name.into() };
                self.metrics.schedule_fires.remove(&labels);
                self.metrics.schedule_missed.remove(&labels);
            }
        }
        fired.retain(|k| live.contains(k));
    }

    /// The workflows version `version` of `app` registers. The observer's latest reading of
    /// the database says whether anything is registered and a digest of it, so the database is
    /// read only when that digest moved; before a reading, at most every [`REGISTERED_TTL`]
    /// (nothing recorded yet is asked again each time). With `exact`, "nothing registered" is
    /// read from the database too rather than from the reading (which may be a poll interval
    /// old): what decides whether work starts uses it.
    pub(crate) async fn registered_workflows(
        &self,
        db: &mainstay::Client,
        app: &mainstay_crds::DurableApp,
        version: &str,
        exact: bool,
    ) -> Result<Vec<mainstay::RegisteredWorkflow>, mainstay::Error> {
        let mark = match self.databases.pool_of(app).await {
            Some(pool) => self.observer.registration_mark(&pool, &crate::workload::application_name(app), version),
            None => None,
        };
        if mark == Some(None) && !exact {
            return Ok(Vec::new());
        }
        let mark = mark.flatten();
        let k = (object_key(app), version.to_string());
        if let Some(cached) = self.registered.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            let current = match (&mark, &cached.mark) {
                (Some(now), Some(then)) => now == then,
                _ => cached.read.elapsed() < REGISTERED_TTL,
            };
            if current && !cached.workflows.is_empty() {
                return Ok(cached.workflows.clone());
            }
        }
        let workflows = db.registered_workflows(version).await?;
        let entry = Registered { read: std::time::Instant::now(), mark, workflows: workflows.clone() };
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(k, entry);
        Ok(workflows)
    }

    /// Forgets what a previous leadership term remembered about scaling: its recommendations
    /// are as stale as a restarted process's, and an app must be re-seeded from the workers
    /// it has (see `scaling::History::seed`) rather than scaled on old samples.
    pub fn begin_term(&self) {
        self.scaling.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The status fields of `crd` the API server refused within [`REFUSALS_KEPT`].
    fn refused_lately(&self, crd: &'static str) -> Vec<Vec<crate::crd_drift::Step>> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.get(crd).filter(|(since, _)| since.elapsed() < REFUSALS_KEPT).map(|(_, paths)| paths.clone()).unwrap_or_default()
    }

    /// Remembers that the API server refused `paths` of `crd` (those refused lately are kept,
    /// the time starts again); returns whether this is the first time in this process (an
    /// entry, once made, is only ever replaced).
    fn remember_refused(&self, crd: &'static str, paths: Vec<Vec<crate::crd_drift::Step>>) -> bool {
        let mut all = self.refused_lately(crd);
        all.extend(paths.into_iter().filter(|p| !all.contains(p)).collect::<Vec<_>>());
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(crd, (std::time::Instant::now(), all)).is_none()
    }

    /// The next retry delay for `key` after a failure: 1–2 s, doubling, at most 5 min (jittered).
    pub(crate) fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let delays = failures.entry(key.to_string()).or_insert_with(crate::retry::object_delays);
        delays.next().unwrap_or(Duration::from_secs(300))
    }

    /// Forgets `key`'s failures after a success (an apply that ends in a retry with backoff
    /// does not call this, so its delays keep growing).
    pub(crate) fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// `namespace/name` of an object.
pub(crate) fn object_key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Most refusals one status write is retried after (each takes out at least one field).
const MAX_REFUSALS: usize = 16;

/// How long status fields the API server refused are left out without asking again (the CRD
/// may be upgraded meanwhile, unseen when the operator may not read it).
const REFUSALS_KEPT: Duration = Duration::from_secs(300);

/// Writes `status` with a server-side apply on the status subresource, if it differs from
/// `current`.
///
/// An installed CRD older than the operator lacks some status fields, and the API server
/// refuses an apply naming any of them (it does not drop them, as it would in an update). So
/// the fields the CRD is known to lack (see `crd_drift`), or that the API server refused in the
/// last [`REFUSALS_KEPT`], are left out at once, and a status that differs from `current` only
/// there is no change; any other field refused is taken out and the write retried (said once
/// per CRD). The rest, the conditions that say what is wrong among them, still shows.
pub(crate) async fn write_status<K, S>(ctx: &Context, api: &Api<K>, obj: &K, current: Option<&S>, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + kube::CustomResourceExt + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    use crate::crd_drift::{apply_hint, leave_out, status_paths, take_out, undeclared_fields};
    if current == Some(status) {
        return Ok(());
    }
    let crd = K::crd_name();
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let mut known = status_paths(&ctx.crd_drift.missing(crd));
    known.extend(ctx.refused_lately(crd));
    if !leave_out(&mut patch, current.and_then(|c| serde_json::to_value(c).ok()), &known) {
        return Ok(());
    }
    let action = || format!("write the status of {} {}", K::kind(&()), object_key(obj));
    let (mut refused, mut refusals) = (Vec::new(), 0);
    loop {
        let e = match api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
            Ok(_) => break,
            Err(e) => e,
        };
        let paths = match &e {
            kube::Error::Api(s) if refusals < MAX_REFUSALS => undeclared_fields(&s.message),
            _ => Vec::new(),
        };
        let taken = take_out(&mut patch, &paths);
        if taken.is_empty() {
            return Err(kube_err(action())(e));
        }
        refusals += 1;
        refused.extend(paths);
        tracing::debug!(object = %object_key(obj), fields = ?taken, "the API server refused these status fields; writing the rest");
    }
    if !refused.is_empty() {
        let names: Vec<String> = refused.iter().map(|p| crate::crd_drift::display_path(p)).collect();
        if ctx.remember_refused(crd, refused) {
            tracing::warn!(
                crd,
                "the installed CRD lacks status fields the operator writes ({}): the API server refused them, so they are \
                 left out. {}",
                names.join(", "),
                apply_hint()
            );
        }
    }
    Ok(())
}

/// Retries a failed reconcile with per-object backoff.
pub(crate) fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles `obj` with `apply`, or with `cleanup` once it is being deleted. No finalizer:
/// what the operator keeps about an object is only in memory (clients, scaling history,
/// metrics) and is swept once the object is gone (see `Context::sweep_apps`), so deleting an
/// object (or its namespace) never waits for an operator that may be uninstalled. The
/// finalizer earlier releases added is removed when seen.
pub(crate) async fn reconciled<K, Fa, Ra, Fc, Rc>(
    controller: &str,
    obj: Arc<K>,
    ctx: &Context,
    apply: Fa,
    cleanup: Fc,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
    Fa: FnOnce(Arc<K>) -> Ra,
    Ra: Future<Output = Result<Action, Error>>,
    Fc: FnOnce(Arc<K>) -> Rc,
    Rc: Future<Output = Result<Action, Error>>,
{
    let started = std::time::Instant::now();
    let result = async {
        let finalizers = obj.meta().finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| f == LEGACY_FINALIZER) {
            let api = Api::<K>::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != LEGACY_FINALIZER).collect();
            // Tested against the list read, so another controller's finalizer added meanwhile
            // is never dropped (the patch fails and the next reconcile tries again).
            let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "replace", "path": "/metadata/finalizers", "value": kept},
            ]))
            .expect("a well-formed JSON patch");
            api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(kube_err(format!("remove the legacy finalizer of {}", object_key(obj.as_ref()))))?;
        }
        if obj.meta().deletion_timestamp.is_some() {
            return cleanup(obj).await;
        }
        apply(obj).await
    }
    .await;
    ctx.metrics.observe_reconcile(controller, started.elapsed().as_secs_f64(), result.is_err());
    result
}

/// Logs what a controller stream yields (reconcile outcomes are logged where they happen).
pub(crate) async fn log_outcome<T, E: std::fmt::Display>(controller: &str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(controller, error = %e, "controller event");
    }
}

/// Whether a human paused reconciliation of this object with the pause annotation.
pub(crate) fn is_paused<K: ResourceExt>(obj: &K) -> bool {
    obj.annotations().get(crate::names::ANNOTATION_PAUSED).is_some_and(|v| v == "true")
}
