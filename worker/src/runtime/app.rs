//! The runtime: launch, the process-wide instance, in-process bookkeeping, and shutdown.
//!
//! Launch order matters: migrate, register the application version, re-enqueue this executor's
//! `PENDING` workflows, and only then start claiming, so recovered work is claimed like any
//! queued work (one owner wins). Shutdown stops claiming and interrupts running workflows
//! without writing anything for them: they stay `PENDING` and are recovered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::config::Config;
use crate::model::error::{Error, Failure, Result};
use crate::model::names::INTERNAL_QUEUE;
use crate::model::serialization::encode;
use crate::model::status::WorkflowStatus;
use crate::runtime::registry::{Registration, Registry};
use crate::runtime::wakeup::Wakeups;
use crate::runtime::workflow::WorkflowHandle;
use crate::sysdb::{connect_pool, AppDatabase, Committer, RegisteredRow, SystemDatabase};
use crate::{runtime::cancellation, runtime::dispatch, runtime::health, runtime::recovery, runtime::scheduler};

/// What a local waiter learns when a workflow run in this process ends.
#[derive(Debug, Clone)]
pub(crate) enum LocalOutcome {
    Success(String),
    Failed(Failure),
    /// Ended without recording an outcome; the database has the truth.
    Interrupted,
}

struct LocalRun {
    cancel: CancellationToken,
    done: watch::Receiver<Option<LocalOutcome>>,
}

pub(crate) struct Runtime {
    pub(crate) config: Config,
    pub(crate) db: SystemDatabase,
    pub(crate) committer: Committer,
    pub(crate) registry: Registry,
    /// The registered workflow names: claims take no others.
    pub(crate) workflow_names: Vec<String>,
    pub(crate) app_version: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) wake: Notify,
    /// Queues announced since the last claim round; claimed first, and alone if nothing else
    /// calls for a full round.
    pub(crate) announced: Mutex<std::collections::HashSet<String>>,
    pub(crate) queues: Vec<String>,
    pub(crate) slots: Arc<Semaphore>,
    local: Mutex<HashMap<String, LocalRun>>,
    /// When the claim loop last turned (epoch ms), for the liveness check.
    pub(crate) heartbeat_ms: AtomicI64,
    /// Where the health endpoint listens, once bound.
    health_addr: OnceLock<SocketAddr>,
    /// Waiters for messages, events and stream values.
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) metrics: crate::runtime::metrics::Metrics,
    /// The application database, opened by the first transaction.
    app_db: tokio::sync::OnceCell<AppDatabase>,
}

impl Runtime {
    pub(crate) fn register_local(&self, id: &str, cancel: CancellationToken, done: watch::Receiver<Option<LocalOutcome>>) {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), LocalRun { cancel, done });
    }

    pub(crate) fn deregister_local(&self, id: &str) {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub(crate) fn local_outcome(&self, id: &str) -> Option<watch::Receiver<Option<LocalOutcome>>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).get(id).map(|r| r.done.clone())
    }

    pub(crate) fn cancel_local(&self, id: &str) {
        if let Some(run) = self.local.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            run.cancel.cancel();
        }
    }

    /// Work was enqueued on `queue`: claim from it soon.
    pub(crate) fn announce(&self, queue: &str) {
        if self.queues.iter().any(|q| q == queue) {
            self.announced.lock().unwrap_or_else(|p| p.into_inner()).insert(queue.to_string());
            self.wake.notify_one();
        }
    }

    /// The application database where transactions run: the configured one, or the system
    /// database. Opened (and its outputs table created) on first use.
    pub(crate) async fn app_db(&self) -> Result<AppDatabase> {
        self.app_db
            .get_or_try_init(|| async {
                let pool = match &self.config.app_database_url {
                    Some(url) => connect_pool(url, self.config.app_pool_size, self.config.connect_timeout, "application").await?,
                    None => self.db.pool().clone(),
                };
                AppDatabase::open(pool, &self.config.system_schema).await
            })
            .await
            .cloned()
    }

    /// How code waiting outside a workflow reads and is woken through this runtime.
    pub(crate) fn waiter(&self) -> crate::runtime::wakeup::Waiter {
        crate::runtime::wakeup::Waiter { db: self.db.clone(), wakeups: self.wakeups.clone(), poll: self.config.polling_interval }
    }

    pub(crate) fn local_ids(&self) -> Vec<String> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    pub(crate) fn local_count(&self) -> usize {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

static GLOBAL: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

pub(crate) fn global() -> Result<Arc<Runtime>> {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::NotLaunched(
        "mainstay is not launched: call Mainstay::launch(config) before running workflows \
             (or run them with .on(&app))",
    ))
}

/// A launched mainstay runtime. Cheap to clone.
#[derive(Clone)]
pub struct Mainstay {
    rt: Arc<Runtime>,
}

/// Configures and launches a [`Mainstay`].
pub struct MainstayBuilder {
    config: Config,
    registrations: Vec<Registration>,
    queues: Vec<String>,
    declared: Vec<crate::Queue>,
    global: bool,
}

impl MainstayBuilder {
    /// Registers a workflow type by hand (the macros register theirs automatically).
    pub fn register<W: crate::Workflow>(mut self) -> Self {
        self.registrations.push(Registration::of::<W>());
        self
    }

    /// Declares a queue (its settings are written unless the queue already has some) and
    /// claims work from it.
    pub fn queue(mut self, queue: crate::Queue) -> Self {
        self.queues.push(queue.name.clone());
        self.declared.push(queue);
        self
    }

    /// Also claims work from this queue (the internal queue is always listened to); its
    /// settings come from the database.
    pub fn listen_queue(mut self, name: impl Into<String>) -> Self {
        self.queues.push(name.into());
        self
    }

    /// Whether this instance becomes the process-wide one that plain `.await`ed workflow calls
    /// use (default: yes).
    pub fn global(mut self, global: bool) -> Self {
        self.global = global;
        self
    }

    /// Connects, migrates, recovers this executor's pending workflows and starts working.
    pub async fn launch(self) -> Result<Mainstay> {
        let config = self.config;
        for q in &self.declared {
            q.validate()?;
        }
        let registry = Registry::collect(&self.registrations)?;
        let db = SystemDatabase::connect(&config).await?;
        db.migrate().await?;
        for q in &self.declared {
            db.declare_queue(q).await?;
        }
        // Schedules declared in code are rows like any other, so they can be listed, paused and
        // resumed; their definition follows the code. An application's are named
        // `{app}.{workflow}`, so applications sharing a database never share one (nor a tick
        // ID); the row an older release named after the bare workflow is renamed.
        for (workflow, cron, zone) in registry.schedules() {
            let mut s = crate::Schedule::new(code_schedule_name(config.app_name.as_deref(), workflow), workflow, cron);
            s.time_zone = zone.map(str::to_string);
            s.validate()?;
            db.declare_schedule(&s, config.app_name.as_deref(), Some(workflow)).await?;
        }
        let app_version = config.app_version.clone().unwrap_or_else(|| default_version(&registry));
        db.register_version(&app_version, config.app_name.as_deref()).await?;
        if config.latest_version {
            db.set_latest_version(&app_version, config.app_name.as_deref()).await?;
        } else if let Some(latest) = db.latest_version(config.app_name.as_deref()).await?.filter(|l| *l != app_version) {
            // Not an error (an old version draining is normal), but a rollback that forgot to
            // say so would leave version-less work to a version nobody runs: say it.
            tracing::warn!(
                app_version = %app_version,
                latest = %latest,
                "this version is not its application's latest, so it takes no work enqueued without a version; \
                 if this launch is a rollback, set MAINSTAY_LATEST_VERSION=true"
            );
        }
        let workflows: Vec<RegisteredRow> = registry
            .signatures()
            .map(|(name, arguments, schedule)| {
                Ok(RegisteredRow {
                    name: name.to_string(),
                    arguments: arguments.map(|a| encode(a, "the argument types of a workflow", db.payload_limit())).transpose()?,
                    schedule: schedule.map(|(cron, zone)| match zone {
                        Some(z) => format!("{cron} {z}"),
                        None => cron.to_string(),
                    }),
                })
            })
            .collect::<Result<_>>()?;
        db.register_workflows(config.app_name.as_deref(), &app_version, &workflows).await?;
        let workflow_names: Vec<String> = workflows.into_iter().map(|w| w.name).collect();
        let metrics = crate::runtime::metrics::Metrics::new();
        let committer = Committer::start(db.clone(), config.commit_concurrency, metrics.commit_batch_size.clone());
        // The application's queues first: claim rounds visit them in this order.
        let mut queues: Vec<String> = Vec::new();
        for q in self.queues.into_iter().chain([INTERNAL_QUEUE.to_string()]) {
            if !queues.contains(&q) {
                queues.push(q);
            }
        }
        // The internal queue too, so a version recorded by this release always has a row
        // (none at all means "unknown", as for versions launched before queues were recorded).
        db.register_queues(config.app_name.as_deref(), &app_version, &queues).await?;
        let rt = Arc::new(Runtime {
            slots: Arc::new(Semaphore::new(config.worker_concurrency)),
            config,
            db,
            committer,
            workflow_names,
            registry,
            app_version,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            wake: Notify::new(),
            announced: Mutex::new(Default::default()),
            queues,
            local: Mutex::new(HashMap::new()),
            heartbeat_ms: AtomicI64::new(crate::model::clock::now_ms()),
            health_addr: OnceLock::new(),
            wakeups: Arc::new(Wakeups::default()),
            metrics,
            app_db: tokio::sync::OnceCell::new(),
        });
        if let Some(addr) = rt.config.health_addr {
            let bound = health::serve(rt.clone(), addr).await?;
            let _ = rt.health_addr.set(bound);
        }
        let recovered = recovery::recover_own(&rt).await?;
        dispatch::start_listener(rt.clone()).await?;
        dispatch::start_dispatcher(rt.clone());
        cancellation::start_watcher(rt.clone());
        scheduler::start(rt.clone());
        tracing::info!(
            executor_id = %rt.config.executor_id,
            app_version = %rt.app_version,
            workflows = rt.registry.names().count(),
            recovered,
            "mainstay launched"
        );
        if self.global {
            *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(rt.clone());
        }
        Ok(Mainstay { rt })
    }
}

/// The name of the schedule a `#[scheduled]` workflow declares: `{app}.{workflow}`, or the
/// workflow's name for an application without a name.
fn code_schedule_name(app_name: Option<&str>, workflow: &str) -> String {
    match app_name {
        Some(app) => format!("{app}.{workflow}"),
        None => workflow.to_string(),
    }
}

/// The version used when none is configured: a hash (FNV-1a) of every registered workflow's
/// name and source, so a process whose workflow code changed gets a new version and does not
/// recover old executions on new code, as DBOS hashes its workflows' source. Workflows
/// registered without the macros contribute their name and [`crate::Workflow::SOURCE_HASH`].
fn default_version(registry: &Registry) -> String {
    version_hash(registry.sources())
}

/// FNV-1a (64 bits) over each workflow's name and source hash, each followed by a zero byte.
/// It names versions already recorded in databases, so it must never change.
fn version_hash<'a>(sources: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    for (name, source) in sources {
        for bytes in [name.as_bytes(), &source.to_le_bytes()] {
            hash.write(bytes);
            hash.write_u8(0);
        }
    }
    format!("{:016x}", hash.finish())
}

impl Mainstay {
    /// A builder for this configuration.
    pub fn builder(config: Config) -> MainstayBuilder {
        MainstayBuilder { config, registrations: Vec::new(), queues: Vec::new(), declared: Vec::new(), global: true }
    }

    /// Launches with this configuration and the workflows the macros registered.
    pub async fn launch(config: Config) -> Result<Mainstay> {
        Mainstay::builder(config).launch().await
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    pub fn executor_id(&self) -> &str {
        &self.rt.config.executor_id
    }

    pub fn app_version(&self) -> &str {
        &self.rt.app_version
    }

    pub fn config(&self) -> &Config {
        &self.rt.config
    }

    /// The address the health endpoint listens on, if [`Config::health_addr`] is set (with port
    /// 0 this is where to find the port the system chose).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.rt.health_addr.get().copied()
    }

    /// Runs a workflow call on this instance and waits for its output.
    pub async fn run<W: crate::Workflow>(&self, call: crate::WorkflowCall<W>) -> Result<W::Output> {
        call.on(self).await
    }

    /// Starts a workflow call on this instance in the background.
    pub async fn start<W: crate::Workflow>(&self, call: crate::WorkflowCall<W>) -> Result<WorkflowHandle<W::Output>> {
        call.on(self).start().await
    }

    /// Enqueues a workflow call on `queue` through this instance.
    pub async fn enqueue<C: crate::IntoWorkflowCall>(
        &self,
        call: C,
        queue: &crate::Queue,
    ) -> Result<WorkflowHandle<<C::Workflow as crate::Workflow>::Output>> {
        call.into_workflow_call().on(self).enqueue(queue).await
    }

    /// A handle to an existing workflow, by ID.
    pub fn retrieve<T: serde::de::DeserializeOwned>(&self, workflow_id: impl Into<String>) -> WorkflowHandle<T> {
        WorkflowHandle::new(self.rt.clone(), workflow_id.into())
    }

    /// The status record of a workflow, if it exists.
    pub async fn status(&self, workflow_id: &str) -> Result<Option<WorkflowStatus>> {
        self.rt.db.get_status(workflow_id).await
    }

    /// Cancels a workflow: it stops at its next step (or at once if it is sleeping) and its
    /// status becomes `CANCELLED`. Cancelling a finished workflow changes nothing.
    pub async fn cancel(&self, workflow_id: &str) -> Result<()> {
        self.rt.db.cancel(workflow_id).await?;
        self.rt.cancel_local(workflow_id);
        Ok(())
    }

    /// Resumes a cancelled, failed or parked workflow from its last completed step.
    pub async fn resume<T: serde::de::DeserializeOwned>(&self, workflow_id: &str) -> Result<WorkflowHandle<T>> {
        self.rt.db.resume(workflow_id).await?;
        self.rt.announce(INTERNAL_QUEUE);
        Ok(self.retrieve(workflow_id))
    }

    /// Workflows matching `filter`.
    pub async fn list_workflows(&self, filter: &crate::WorkflowFilter) -> Result<Vec<WorkflowStatus>> {
        self.rt.db.list_workflows(filter).await
    }

    /// The recorded steps of a workflow, in order.
    pub async fn list_steps(&self, workflow_id: &str) -> Result<Vec<crate::StepInfo>> {
        self.rt.db.list_steps(workflow_id).await
    }

    /// Forks a workflow (see [`crate::Client::fork`]); returns a handle to the new run.
    pub async fn fork<T: serde::de::DeserializeOwned>(&self, workflow_id: &str, options: &crate::ForkOptions) -> Result<WorkflowHandle<T>> {
        let id = self.rt.db.fork(workflow_id, options, INTERNAL_QUEUE).await?;
        self.rt.announce(INTERNAL_QUEUE);
        Ok(self.retrieve(id))
    }

    /// Deletes a workflow and its records (see [`crate::Client::delete_workflow`]).
    pub async fn delete_workflow(&self, workflow_id: &str, children: bool) -> Result<Vec<String>> {
        let deleted = self.rt.db.delete_workflow(workflow_id, children).await?;
        for id in &deleted {
            self.rt.cancel_local(id);
        }
        Ok(deleted)
    }

    /// Sends `message` to workflow `destination_id` under `topic` (see [`crate::send`]).
    pub async fn send<T: serde::Serialize + ?Sized>(&self, destination_id: &str, message: &T, topic: Option<&str>) -> Result<()> {
        use crate::runtime::message::{encode_message, send_outside, stored_topic};
        let message = encode_message(destination_id, message, self.rt.db.payload_limit())?;
        send_outside(&self.rt.db, destination_id, &message, &stored_topic(topic), None).await
    }

    /// The value of event `key` of a workflow, waiting up to `timeout` for it to be set.
    pub async fn get_event<T: serde::de::DeserializeOwned>(&self, workflow_id: &str, key: &str, timeout: Duration) -> Result<Option<T>> {
        crate::runtime::event::wait_for_event(&self.rt.waiter(), workflow_id, key, timeout).await
    }

    /// The values of stream `key` of a workflow, from the first, as they are written.
    pub fn read_stream<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> futures::stream::BoxStream<'static, Result<T>> {
        crate::runtime::stream::values(Ok(self.rt.waiter()), workflow_id.to_string(), key.to_string())
    }

    /// Workflows running in this process right now.
    pub fn running_workflows(&self) -> usize {
        self.rt.local_count()
    }

    /// Stops claiming work, interrupts running workflows (they stay `PENDING` for recovery),
    /// waits for in-flight writes, and closes the connections.
    pub async fn shutdown(&self) {
        self.shutdown_within(Duration::from_secs(10)).await
    }

    /// [`shutdown`](Mainstay::shutdown) with a bound on how long to wait for tasks.
    pub async fn shutdown_within(&self, grace: Duration) {
        if self.rt.shutdown.is_cancelled() {
            return;
        }
        tracing::info!(executor_id = %self.rt.config.executor_id, "mainstay shutting down");
        self.rt.shutdown.cancel();
        self.rt.tasks.close();
        if tokio::time::timeout(grace, self.rt.tasks.wait()).await.is_err() {
            tracing::warn!("some workflow tasks did not stop within {grace:?}");
        }
        self.rt.committer.quiesce(grace).await;
        {
            let mut global = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
            if global.as_ref().is_some_and(|g| Arc::ptr_eq(g, &self.rt)) {
                *global = None;
            }
        }
        self.rt.db.close().await;
        // The spans of what ran here, before the process goes.
        crate::runtime::telemetry::flush().await;
    }

    /// Waits for SIGINT (Ctrl-C) or SIGTERM, then shuts down.
    pub async fn run_until_signal(&self) -> Result<()> {
        wait_for_signal().await?;
        self.shutdown().await;
        Ok(())
    }
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|source| Error::Io { what: "cannot install the SIGTERM handler".into(), source })?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_version_hash_never_changes() {
        // Computed independently (FNV-1a by hand); versions in databases carry these values.
        assert_eq!(version_hash([("checkout", 7), ("refund", 0xdead)]), "f43e812cd1d7d5eb");
        assert_eq!(version_hash([]), "cbf29ce484222325");
    }
}
