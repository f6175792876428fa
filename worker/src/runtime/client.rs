//! A client that needs only the database URL: enqueue workflows by name, inspect, cancel and
//! resume them, list them, manage queue settings and retention, from any process (a web tier,
//! a script, the operator). It runs no workflows, and migrates only when asked to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::clock::{millis, now_ms};
use crate::model::config::Config;
use crate::model::names::INTERNAL_QUEUE;

use crate::model::error::{Error, Result};
use crate::model::fleet::{Progress, QueueDepth, RegistrationMark, UnfinishedWork, UnrunnableWork};
use crate::model::management::{ExecutorWork, ForkOptions, RegisteredWorkflow, StepInfo, VersionWork, WorkflowFilter};
use crate::model::options::WorkflowOptions;
use crate::model::queue::Queue;
use crate::model::schedule::{Schedule, ScheduleStatus};
use crate::model::serialization::{decode, encode};
use crate::model::status::WorkflowStatus;
use crate::model::stuck::{StuckCriteria, StuckWork, StuckWorkflows};
use crate::runtime::event::wait_for_event;
use crate::runtime::message::{encode_message, send_outside, stored_topic};
use crate::runtime::stream;
use crate::runtime::wakeup::{self, Waiter, Wakeups};
use crate::runtime::workflow::recorded_outcome;
use crate::sysdb::{as_json, duplicate_of, Batch, NewWorkflow, StartOutcome, SystemDatabase};

/// A connection to a system database, for code that does not run workflows.
///
/// A client with an application name ([`Config::app_name`]) speaks for that application in a
/// shared database: it enqueues for it, and its figures (queue depths, outstanding and pending
/// work) count only that application's workflows and those of no application (which its
/// workers may claim); retention deletes only its own. Without one it sees everything.
#[derive(Clone)]
pub struct Client {
    db: SystemDatabase,
    app_name: Option<String>,
    listening: Arc<Listening>,
}

/// The client's notification listener, started by the first wait that needs it and stopped
/// when the last clone of the client is dropped or closed.
#[derive(Default)]
struct Listening {
    wakeups: Arc<Wakeups>,
    started: tokio::sync::OnceCell<()>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    /// Connects to the system database at `database_url` (schema `dbos`).
    pub async fn connect(database_url: &str) -> Result<Client> {
        let mut config = Config::new(database_url);
        config.pool_size = 4;
        Client::connect_with(&config).await
    }

    /// Connects with a full configuration (schema, pool size, connect timeout).
    pub async fn connect_with(config: &Config) -> Result<Client> {
        Ok(Client { db: SystemDatabase::connect(config).await?, app_name: config.app_name.clone(), listening: Arc::default() })
    }

    /// The same database, through the same connection pool, speaking for application
    /// `app_name` (or for none): one pool serves the clients of every application of a database
    /// (a tool watching many applications keeps one pool per database, not per application).
    /// Closing any of them closes the shared pool.
    pub fn for_application(&self, app_name: Option<&str>) -> Client {
        Client { db: self.db.clone(), app_name: app_name.map(str::to_string), listening: Arc::default() }
    }

    /// The application this client speaks for, if any.
    pub fn app_name(&self) -> Option<&str> {
        self.app_name.as_deref()
    }

    /// Makes `version` the latest of this client's application, so its workers take the work
    /// enqueued without a version (as DBOS's `set_latest_application_version`). Registers the
    /// version first if it is new; refused with [`Error::VersionConflict`] when another
    /// application owns a version of that name.
    pub async fn set_latest_version(&self, version: &str) -> Result<()> {
        self.db.register_version(version, self.app_name.as_deref()).await?;
        if !self.db.set_latest_version(version, self.app_name.as_deref()).await? {
            return Err(Error::VersionNotRegistered { version: version.to_string(), app: self.app_name.clone() });
        }
        Ok(())
    }

    /// The current value of every event of a workflow (`set_event` keys), by key, at most
    /// `limit`. Values of another serialization read as a note naming it.
    pub async fn list_events(&self, workflow_id: &str, limit: usize) -> Result<Vec<(String, Value)>> {
        let events = self.db.list_events(workflow_id, limit.min(i64::MAX as usize) as i64).await?;
        Ok(events
            .into_iter()
            .map(|(key, v)| {
                let serialization = v.serialization;
                (key, as_json(Some(v.value), serialization.as_deref()).unwrap_or(Value::Null))
            })
            .collect())
    }

    /// The workflows that workers of `version` of this client's application registered when
    /// they launched (empty if none has launched, or they were not Mainstay workers).
    pub async fn registered_workflows(&self, version: &str) -> Result<Vec<RegisteredWorkflow>> {
        let rows = self.db.registered_workflows(self.app_name.as_deref(), version).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                // Written by the workers as JSON arrays of strings; anything else is unknown.
                let arguments = row.arguments.and_then(|a| serde_json::from_str(&a).ok());
                RegisteredWorkflow { name: row.name, arguments, schedule: row.schedule }
            })
            .collect())
    }

    /// The queues workers of `version` of this client's application listen to, the internal
    /// queue included (empty if none has launched, they were not Mainstay workers, or they
    /// predate this record).
    pub async fn registered_queues(&self, version: &str) -> Result<Vec<String>> {
        self.db.registered_queues(self.app_name.as_deref(), version).await
    }

    /// Queued work that `version` of this client's application will never run because it does
    /// not register the workflow (known only once a worker of that version has launched).
    pub async fn unrunnable(&self, version: &str) -> Result<Vec<UnrunnableWork>> {
        Ok(self
            .db
            .unrunnable(self.app_name.as_deref(), version)
            .await?
            .into_iter()
            .map(|(workflow_name, queued, own)| UnrunnableWork { workflow_name: workflow_name.unwrap_or_default(), queued, own })
            .collect())
    }

    /// Registers `version` for this client's application without making it the latest (a
    /// deploy that is not yet serving: [`Client::set_latest_version`] promotes it). Work pinned
    /// to it then counts in the application's figures. Refused with
    /// [`Error::VersionConflict`] when another application owns a version of this name (DBOS
    /// makes version names unique in a database).
    pub async fn reserve_version(&self, version: &str) -> Result<()> {
        self.db.reserve_version(version, self.app_name.as_deref()).await
    }

    /// The latest version of this client's application (the one that takes work enqueued
    /// without a version), if any is registered.
    pub async fn latest_version(&self) -> Result<Option<String>> {
        self.db.latest_version(self.app_name.as_deref()).await
    }

    /// How this client waits for messages, events and stream values.
    async fn waiter(&self) -> Result<Waiter> {
        let l = &self.listening;
        l.started
            .get_or_try_init(|| {
                let (deliver, deliver_all) = (l.wakeups.clone(), l.wakeups.clone());
                wakeup::listen(
                    &self.db,
                    &wakeup::CHANNELS,
                    l.stop.clone(),
                    &l.tasks,
                    move |n| deliver.deliver(n.channel(), n.payload()),
                    move || deliver_all.deliver_all(),
                )
            })
            .await?;
        Ok(Waiter { db: self.db.clone(), wakeups: l.wakeups.clone(), poll: Duration::from_secs(1) })
    }

    /// Sends `message` to workflow `destination_id` under `topic`. With an `idempotency_key`,
    /// sending again with the same key delivers nothing more.
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        destination_id: &str,
        message: &T,
        topic: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        let message = encode_message(destination_id, message, self.db.payload_limit())?;
        send_outside(&self.db, destination_id, &message, &stored_topic(topic), idempotency_key).await
    }

    /// The value of event `key` of a workflow, waiting up to `timeout` for it to be set.
    pub async fn get_event<T: DeserializeOwned>(&self, workflow_id: &str, key: &str, timeout: Duration) -> Result<Option<T>> {
        wait_for_event(&self.waiter().await?, workflow_id, key, timeout).await
    }

    /// The values of stream `key` of a workflow, from the first, as they are written; the
    /// stream ends when the workflow closes it or finishes.
    pub async fn read_stream<T: DeserializeOwned + Send + 'static>(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> Result<BoxStream<'static, Result<T>>> {
        Ok(stream::values(Ok(self.waiter().await?), workflow_id.to_string(), key.to_string()))
    }

    /// Enqueues workflow `workflow_name` on `queue` with positional JSON arguments; returns the
    /// workflow ID. Without `options.app_version` the newest application version runs it.
    pub async fn enqueue(&self, workflow_name: &str, queue: &str, args: Vec<Value>, options: WorkflowOptions) -> Result<String> {
        if workflow_name.trim().is_empty() || queue.trim().is_empty() {
            return Err(Error::InvalidArgument("enqueue needs a workflow name and a queue name".into()));
        }
        let id = options.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let inputs = encode(
            &serde_json::json!({"positionalArgs": args, "namedArgs": {}}),
            &format!("the inputs of workflow {id}"),
            self.db.payload_limit(),
        )?;
        let queued = NewWorkflow::enqueued(
            id.clone(),
            workflow_name.to_string(),
            inputs,
            queue.to_string(),
            self.app_name.clone(),
            options.app_version.clone(),
        );
        let mut row = queued.with_enqueue_options(&options);
        row.traceparent = crate::runtime::telemetry::current_traceparent();
        let written = self.insert_rows(std::slice::from_ref(&row), &format!("enqueue workflow {id}")).await?;
        if let Some(StartOutcome::Exists { name: Some(existing) }) = written.first() {
            if existing != workflow_name {
                return Err(Error::WorkflowConflict { workflow_id: id, existing: existing.clone(), requested: workflow_name.to_string() });
            }
        }
        Ok(id)
    }

    /// The status record of a workflow, if it exists.
    pub async fn status(&self, workflow_id: &str) -> Result<Option<WorkflowStatus>> {
        self.db.get_status(workflow_id).await
    }

    /// Waits for a workflow to finish and returns its output or recorded failure.
    pub async fn get_result<T: DeserializeOwned>(&self, workflow_id: &str) -> Result<T> {
        let mut delays = crate::model::backoff::delays(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            if let Some(result) = recorded_outcome(&self.db, workflow_id).await? {
                let json = result?;
                return decode(Some(&json), None, &format!("the output of workflow {workflow_id}"));
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
        }
    }

    /// Cancels a workflow (see [`crate::Mainstay::cancel`]).
    pub async fn cancel(&self, workflow_id: &str) -> Result<()> {
        self.db.cancel(workflow_id).await
    }

    /// Puts a cancelled, failed or parked workflow back on the internal queue.
    pub async fn resume(&self, workflow_id: &str) -> Result<()> {
        self.db.resume(workflow_id).await
    }

    /// Re-enqueues every `PENDING` workflow of a dead executor (of this client's application
    /// and of none, if it has one) so live workers run them.
    pub async fn recover_executor(&self, executor_id: &str) -> Result<Vec<String>> {
        let app = self.app_name.as_deref().map(Some);
        self.db.recover_executor(executor_id, None, app).await
    }

    /// Writes a queue's settings; running workers apply them within about a second.
    pub async fn set_queue(&self, queue: &Queue) -> Result<()> {
        queue.validate()?;
        self.db.update_queue(queue, self.app_name.as_deref()).await
    }

    /// The stored settings of a queue, if it has any.
    pub async fn queue(&self, name: &str) -> Result<Option<Queue>> {
        Ok(self.db.queue_settings(&[name.to_string()]).await?.into_iter().next())
    }

    /// The stored settings of every queue.
    pub async fn list_queues(&self) -> Result<Vec<Queue>> {
        self.db.all_queue_settings().await
    }

    /// Enqueued and running workflows per queue.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>> {
        Ok(self
            .db
            .queue_depths(self.app_name.as_deref())
            .await?
            .into_iter()
            .map(|(queue, enqueued, pending)| QueueDepth { queue, enqueued, pending })
            .collect())
    }

    /// Workflows matching `filter`.
    pub async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<WorkflowStatus>> {
        self.db.list_workflows(filter).await
    }

    /// `PENDING` workflows per executor and version: a dead executor among them has work to
    /// recover.
    pub async fn pending_by_executor(&self) -> Result<Vec<ExecutorWork>> {
        self.db.pending_by_executor(self.app_name.as_deref()).await
    }

    /// Unfinished workflows per application version: a version with none left has drained.
    pub async fn outstanding_by_version(&self) -> Result<Vec<VersionWork>> {
        self.db.outstanding_by_version(self.app_name.as_deref()).await
    }

    /// Every unfinished workflow of the database (of every application, whatever this
    /// client's), grouped, in one query: [`UnfinishedWork`] divides it per application the way
    /// [`Client::outstanding_by_version`] and its siblings do. For watching many applications
    /// on one database at the cost of one.
    pub async fn unfinished_work(&self) -> Result<UnfinishedWork> {
        self.db.unfinished_work().await
    }

    /// This client's application's stalled `PENDING` workflows (no new checkpoint for
    /// `stalled_after`, see [`crate::StuckWork`]) and parked ones, the oldest `limit` of each
    /// listed, with whole counts.
    pub async fn stuck_workflows(&self, stalled_after: Duration, limit: usize) -> Result<StuckWorkflows> {
        self.db.stuck_workflows(self.app_name.as_deref(), millis(stalled_after), limit.min(i64::MAX as usize) as i64).await
    }

    /// Everything stuck or stranded of this client's application, by `criteria`: stalled and
    /// parked workflows, queued work no running version can run (judged only for an
    /// application or named running versions), slow queues.
    pub async fn stuck_work(&self, criteria: &StuckCriteria) -> Result<StuckWork> {
        let app = self.app_name.as_deref();
        let workflows = self.stuck_workflows(criteria.stalled_after, criteria.limit).await?;
        let work = self.unfinished_work().await?;
        let slow_queues = work.queue_waits(app, now_ms()).into_iter().filter(|w| w.waited(criteria.queue_wait)).collect();
        let stranded_judged = app.is_some() || criteria.running_versions.is_some();
        if !stranded_judged {
            return Ok(StuckWork { running_versions: Vec::new(), stranded_judged, workflows, stranded: Vec::new(), slow_queues });
        }
        let latest = self.latest_version().await?;
        let running_versions = match &criteria.running_versions {
            Some(v) => v.clone(),
            None => latest.iter().cloned().collect(),
        };
        let mut running = BTreeMap::new();
        for v in &running_versions {
            running.insert(v.clone(), self.registered_workflows(v).await?);
        }
        let stranded = work.stranded(app, &running, latest.as_deref());
        Ok(StuckWork { running_versions, stranded_judged, workflows, stranded, slow_queues })
    }

    /// How far each of the workflows among `ids` that exist has got, in one query: compare
    /// two readings to learn which changed, without reading their records.
    pub async fn progress(&self, ids: &[String]) -> Result<Vec<Progress>> {
        self.db.progress(ids).await
    }

    /// A digest of what each version of each application on the database registered (see
    /// [`Client::registered_workflows`]), in one query: compare two readings to learn whose
    /// registrations changed.
    pub async fn registration_marks(&self) -> Result<Vec<RegistrationMark>> {
        self.db.registration_marks().await
    }

    /// Deletes finished workflows (with their inputs, outputs and steps) created more than
    /// `max_age` ago, and beyond the newest `keep` workflows. Unfinished workflows are never
    /// deleted. Returns how many were deleted.
    pub async fn delete_finished(&self, max_age: Option<Duration>, keep: Option<u64>) -> Result<u64> {
        let cutoff = max_age.map(|age| now_ms() - millis(age));
        let keep = keep.map(|k| k.min(i64::MAX as u64) as i64);
        self.db.delete_finished(cutoff, keep, self.app_name.as_deref()).await
    }

    /// The recorded steps of a workflow, in order.
    pub async fn list_steps(&self, workflow_id: &str) -> Result<Vec<StepInfo>> {
        self.db.list_steps(workflow_id).await
    }

    /// How many steps of a workflow are recorded, without reading their outputs (what a
    /// progress display needs, at a fraction of [`Client::list_steps`]'s cost).
    pub async fn count_steps(&self, workflow_id: &str) -> Result<i64> {
        self.db.count_steps(workflow_id).await
    }

    /// Forks a workflow: a new run (enqueued on the internal queue) that replays the original's
    /// steps before `options.start_step` and runs the rest anew. Returns the new ID.
    pub async fn fork(&self, workflow_id: &str, options: &ForkOptions) -> Result<String> {
        self.db.fork(workflow_id, options, INTERNAL_QUEUE).await
    }

    /// Deletes a workflow and everything recorded for it (its inputs, outputs, steps, messages,
    /// events and streams); with `children`, its child workflows too. A running workflow that
    /// is deleted stops at its next step. Returns the deleted IDs.
    pub async fn delete_workflow(&self, workflow_id: &str, children: bool) -> Result<Vec<String>> {
        self.db.delete_workflow(workflow_id, children).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await
    }

    /// Runs the system-database migrations (idempotent; needs a role that may create tables).
    pub async fn migrate(&self) -> Result<()> {
        self.db.migrate().await
    }

    /// Creates a schedule; an existing schedule of that name is an error. Its runs receive
    /// `(scheduled_at, context)`: the tick and [`Schedule::context`]. It belongs to
    /// `schedule.application_name`, or else to this client's application.
    pub async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        schedule.validate()?;
        let app = schedule.application_name.as_deref().or(self.app_name.as_deref());
        if !self.db.create_schedule(schedule, app).await? {
            return Err(Error::AlreadyExists(format!("a schedule named {} exists; delete it first or choose another name", schedule.name)));
        }
        Ok(())
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.db.list_schedules(None).await
    }

    /// The schedule named `name`, if it exists.
    pub async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
        Ok(self.db.list_schedules(Some(name)).await?.into_iter().next())
    }

    /// Stops a schedule from firing until it is resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<()> {
        Self::found(name, self.db.set_schedule_status(name, ScheduleStatus::Paused).await?)
    }

    /// Lets a paused schedule fire again, from its next tick (missed ticks are not run).
    pub async fn resume_schedule(&self, name: &str) -> Result<()> {
        Self::found(name, self.db.set_schedule_status(name, ScheduleStatus::Active).await?)
    }

    /// Deletes a schedule (its past runs stay).
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        Self::found(name, self.db.delete_schedule(name).await?)
    }

    /// `Ok` if the schedule a statement looked for was there.
    fn found(name: &str, found: bool) -> Result<()> {
        if found {
            Ok(())
        } else {
            Err(Error::ScheduleNotFound { name: name.to_string() })
        }
    }

    /// The schedule named `name`, or the error that it does not exist.
    async fn existing_schedule(&self, name: &str) -> Result<Schedule> {
        self.get_schedule(name).await?.ok_or_else(|| Error::ScheduleNotFound { name: name.to_string() })
    }

    /// Runs a schedule's workflow now, as if a tick fell now, with the schedule's context;
    /// returns its workflow ID. The run belongs to the schedule's application (or, for a
    /// schedule of none, to this client's).
    pub async fn trigger_schedule(&self, name: &str) -> Result<String> {
        let schedule = self.existing_schedule(name).await?;
        let mut row = NewWorkflow::tick(&schedule, crate::model::schedule::now_utc(), None, self.db.payload_limit())?;
        row.app_name = row.app_name.or_else(|| self.app_name.clone());
        self.insert_rows(std::slice::from_ref(&row), &format!("trigger schedule {name}")).await?;
        Ok(row.id)
    }

    /// Runs every tick of a schedule in `[start, end)` that has not run (at most 10,000), as
    /// the scheduler would have (same IDs, arguments and application); returns the workflow
    /// IDs of those ticks. Running it twice runs nothing twice.
    pub async fn backfill_schedule(
        &self,
        name: &str,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>> {
        let schedule = self.existing_schedule(name).await?;
        let cron = schedule.validate()?;
        let step = chrono::Duration::nanoseconds(1);
        let ticks = cron.ticks_between(start - step, end - step, 10_000);
        let rows = ticks
            .into_iter()
            .map(|t| {
                let mut row = NewWorkflow::tick(&schedule, t, None, self.db.payload_limit())?;
                row.app_name = row.app_name.or_else(|| self.app_name.clone());
                Ok(row)
            })
            .collect::<Result<Vec<_>>>()?;
        let ids = rows.iter().map(|r| r.id.clone()).collect();
        for chunk in rows.chunks(500) {
            self.insert_rows(chunk, &format!("backfill schedule {name}")).await?;
        }
        Ok(ids)
    }

    /// Inserts new workflow rows in one statement (existing IDs are left as they are; the
    /// outcomes say which). `what` names the action in errors.
    async fn insert_rows(&self, rows: &[NewWorkflow], what: &str) -> Result<Vec<StartOutcome>> {
        let mut conn = self.db.pool().acquire().await.map_err(|e| Error::db("connect to enqueue", e))?;
        let batch = Batch { starts: rows.iter().collect(), ..Batch::default() };
        let written = self
            .db
            .write_batch(&mut conn, &batch)
            .await
            .map_err(|e| rows.first().and_then(|row| duplicate_of(&e, row)).unwrap_or_else(|| Error::db(what, e)))?;
        Ok(written.0)
    }

    /// Drops the system schema and everything in it (every workflow, step, message, queue and
    /// schedule). Irreversible; for development databases.
    pub async fn reset(&self) -> Result<()> {
        self.db.reset().await
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.listening.stop.cancel();
        self.db.close().await
    }
}
