//! The system database: the only module that issues SQL against it.
//!
//! Invariants:
//! - every write is one statement (or one transaction for a group-committed batch) and is
//!   acknowledged to its caller only after it committed;
//! - step checkpoints and outcomes carry the writer's owner token, and the token check is part of
//!   the writing statement itself: two executions racing on one workflow never both record;
//! - a first execution writes its row and then only checkpoints; replays read the recorded steps
//!   once, up front.

mod batch;
mod committer;
mod management;
mod messaging;
mod migrate;
mod queues;
mod schedules;
mod sql;
mod stuck;
mod transactions;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Row};

pub(crate) use batch::Batch;
pub(crate) use committer::Committer;
pub(crate) use management::as_json;
pub use migrate::{DBOS_SCHEMA_VERSION, MAINSTAY_SCHEMA_VERSION};

/// A row of `mainstay_registered_workflows`: a workflow a version registers, its argument types
/// (JSON text) and its schedule (cron, and time zone after a space), when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisteredRow {
    pub(crate) name: String,
    pub(crate) arguments: Option<String>,
    pub(crate) schedule: Option<String>,
}
pub(crate) use messaging::{OpWrite, Received, StoredValue, StreamEntry};
pub(crate) use queues::Claimer;
use sql::Renderer;
pub(crate) use transactions::{AppDatabase, TransactionRecord};

use crate::model::clock::now_ms;
use crate::model::config::{redact, without_unsupported_secrets, Config};
use crate::model::error::{is_transient, Error, Result};
use crate::model::names::INTERNAL_QUEUE;
use crate::model::options::WorkflowOptions;
use crate::model::status::{Status, WorkflowStatus};

/// A workflow row to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewWorkflow {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub inputs: String,
    pub owner: Option<String>,
    pub executor_id: Option<String>,
    pub app_version: Option<String>,
    pub app_name: Option<String>,
    pub queue_name: Option<String>,
    pub parent_id: Option<String>,
    pub timeout_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub priority: i32,
    pub deduplication_id: Option<String>,
    pub partition_key: Option<String>,
    pub delay_until_ms: Option<i64>,
    pub recovery_attempts: i64,
    pub schedule_name: Option<String>,
    /// The W3C trace context it was started in, kept so every execution joins that trace.
    pub traceparent: Option<String>,
}

impl NewWorkflow {
    /// This enqueued row with the options of its enqueue: its timeout (its deadline starts when
    /// it is dequeued), priority, deduplication ID, partition key, delay and schedule.
    pub(crate) fn with_enqueue_options(self, options: &WorkflowOptions) -> NewWorkflow {
        let mut row = self.delayed_until(options.delay.map(|d| now_ms() + d.as_millis() as i64));
        row.timeout_ms = options.timeout.map(|t| t.as_millis() as i64);
        row.priority = options.priority.unwrap_or(0);
        row.deduplication_id = options.deduplication_id.clone();
        row.partition_key = options.partition_key.clone();
        row.schedule_name = options.schedule_name.clone();
        row
    }

    /// A row waiting on `queue` for a worker to claim it (`ENQUEUED`; see
    /// [`NewWorkflow::delayed_until`]), of no executor yet.
    pub(crate) fn enqueued(
        id: String,
        name: String,
        inputs: String,
        queue: String,
        app_name: Option<String>,
        app_version: Option<String>,
    ) -> Self {
        NewWorkflow {
            id,
            name,
            status: Status::ENQUEUED,
            inputs,
            owner: None,
            executor_id: None,
            app_version,
            app_name,
            queue_name: Some(queue),
            parent_id: None,
            timeout_ms: None,
            deadline_ms: None,
            priority: 0,
            deduplication_id: None,
            partition_key: None,
            delay_until_ms: None,
            recovery_attempts: 0,
            schedule_name: None,
            traceparent: None,
        }
    }

    /// A row started at once by `executor_id` under `owner` (`PENDING`, its first attempt).
    pub(crate) fn started(
        id: String,
        name: String,
        inputs: String,
        executor_id: String,
        owner: String,
        app_name: Option<String>,
        app_version: Option<String>,
    ) -> Self {
        NewWorkflow {
            status: Status::PENDING,
            owner: Some(owner),
            executor_id: Some(executor_id),
            queue_name: None,
            recovery_attempts: 1,
            ..NewWorkflow::enqueued(id, name, inputs, String::new(), app_name, app_version)
        }
    }

    /// The row, `DELAYED` until `at_ms` instead of claimable at once (`None`: unchanged).
    pub(crate) fn delayed_until(mut self, at_ms: Option<i64>) -> Self {
        if let Some(at) = at_ms {
            self.status = Status::DELAYED;
            self.delay_until_ms = Some(at);
        }
        self
    }
}

/// What inserting a workflow found.
#[derive(Debug, Clone)]
pub(crate) enum StartOutcome {
    Inserted,
    Exists { name: Option<String> },
}

/// A step's checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct StepRecord {
    pub workflow_id: Arc<str>,
    pub owner: Arc<str>,
    pub function_id: i32,
    pub name: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub child_workflow_id: Option<String>,
    pub started_ms: i64,
    pub completed_ms: i64,
}

/// A recorded operation, read back on replay or on a checkpoint conflict.
#[derive(Debug, Clone)]
pub(crate) struct RecordedOp {
    pub function_id: i32,
    pub name: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub child_workflow_id: Option<String>,
    pub serialization: Option<String>,
}

/// What a checkpoint found.
#[derive(Debug, Clone)]
pub(crate) enum CheckpointOutcome {
    Recorded,
    /// Another execution recorded this step first; its record wins.
    Existing(RecordedOp),
    /// This execution no longer owns the workflow (cancelled, recovered elsewhere).
    NotOwner,
}

/// A workflow's final outcome.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub workflow_id: Arc<str>,
    pub owner: Arc<str>,
    pub status: &'static str,
    pub output: Option<String>,
    pub error: Option<String>,
}

/// A workflow claimed from a queue.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    /// The queue it was claimed from.
    pub queue: String,
    pub id: String,
    pub name: String,
    pub status: Status,
    pub owner: String,
    pub inputs: Option<String>,
    pub serialization: Option<String>,
    pub deadline_ms: Option<i64>,
    /// Whether an earlier execution recorded steps (a replay must load them).
    pub has_steps: bool,
    /// How long it waited since it became ready to run (enqueued, its delay over, or
    /// re-enqueued by a recovery), in milliseconds.
    pub wait_ms: Option<i64>,
    /// The trace context it was started in (see `runtime::telemetry`).
    pub traceparent: Option<String>,
}

/// All statements, with the schema name spliced in once.
struct Sql {
    batch: batch::Statements,
    existing_workflows: Arc<str>,
    existing_steps: Arc<str>,
    finished_check: Arc<str>,
    start_child: Arc<str>,
    recorded_steps: Arc<str>,
    get_status: Arc<str>,
    queues: queues::Statements,
    management: management::Statements,
    messaging: messaging::Statements,
    schedules: schedules::Statements,
    stuck: stuck::Statements,
    recover_executor: Arc<str>,
    cancel: Arc<str>,
    resume: Arc<str>,
    register_version: Arc<str>,
    set_latest_version: Arc<str>,
    latest_version: Arc<str>,
    release_claim: Arc<str>,
    register_workflows: Arc<str>,
    registered_workflows: Arc<str>,
    register_queues: Arc<str>,
    registered_queues: Arc<str>,
    cancelled_among: Arc<str>,
    /// Every statement above, for the test that has Postgres prepare each.
    all: Vec<Arc<str>>,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        let r = Renderer::new(schema);
        let f = |text: &str| r.sql(text);
        let mut sql = Sql {
            batch: batch::Statements::new(&r),
            queues: queues::Statements::new(&r),
            management: management::Statements::new(&r),
            messaging: messaging::Statements::new(&r),
            schedules: schedules::Statements::new(&r),
            stuck: stuck::Statements::new(&r),
            existing_workflows: f("SELECT workflow_uuid, name FROM {s}.workflow_status \
                 WHERE workflow_uuid = ANY($1::text[])"),
            existing_steps: f(r#"
SELECT o.workflow_uuid, o.function_id, o.function_name, o.output, o.error, o.child_workflow_id,
       o.serialization
FROM {s}.operation_outputs o
JOIN UNNEST($1::text[], $2::int4[]) AS k(wf, fid) ON o.workflow_uuid = k.wf AND o.function_id = k.fid"#),
            finished_check: f("SELECT workflow_uuid, status, owner_xid FROM {s}.workflow_status \
                 WHERE workflow_uuid = ANY($1::text[])"),
            start_child: f(r#"
WITH own AS (
    SELECT 1 FROM {s}.workflow_status
    WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING'
), child AS (
    INSERT INTO {s}.workflow_status (
        workflow_uuid, name, status, owner_xid, executor_id, application_version,
        application_name, parent_workflow_id, workflow_timeout_ms, workflow_deadline_epoch_ms,
        recovery_attempts, queue_name, priority, deduplication_id, queue_partition_key,
        delay_until_epoch_ms, serialization, creator_xid, created_at, updated_at)
    SELECT $3, $4, $13, $5, $6, $7, $8, $1, $9, $10, $14, $15, $16, $17, $18, $19,
           'portable_json', $2, {now}, {now}
    FROM own
    ON CONFLICT (workflow_uuid) DO NOTHING
    RETURNING workflow_uuid
), inp AS (
    INSERT INTO {s}.workflow_input (workflow_uuid, inputs)
    SELECT workflow_uuid, $11 FROM child
    ON CONFLICT (workflow_uuid) DO NOTHING
), trace AS (
    INSERT INTO {s}.mainstay_workflow_trace (workflow_uuid, traceparent)
    SELECT workflow_uuid, $20::text FROM child WHERE $20::text IS NOT NULL
    ON CONFLICT (workflow_uuid) DO NOTHING
), rec AS (
    INSERT INTO {s}.operation_outputs (
        workflow_uuid, function_id, function_name, child_workflow_id, started_at_epoch_ms,
        serialization)
    SELECT $1, $12, $4, $3, {now}, 'portable_json' FROM own
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM own) AS owned, (SELECT count(*) FROM child) AS created,
       (SELECT count(*) FROM rec) AS recorded"#),
            recorded_steps: f("SELECT function_id, function_name, output, error, child_workflow_id, serialization \
                 FROM {s}.operation_outputs WHERE workflow_uuid = $1"),
            get_status: r.sql_with(
                "SELECT {columns} FROM {s}.workflow_status ws \
                 LEFT JOIN {s}.workflow_output o ON o.workflow_uuid = ws.workflow_uuid \
                 WHERE ws.workflow_uuid = $1",
                &[("columns", management::STATUS_COLUMNS)],
            ),
            recover_executor: f(r#"
UPDATE {s}.workflow_status
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, $3), owner_xid = NULL,
    started_at_epoch_ms = NULL, updated_at = {now}
WHERE status = 'PENDING' AND executor_id = $1
  AND ($2::text IS NULL OR application_version = $2 OR application_version IS NULL)
  AND (NOT $4 OR application_name IS NOT DISTINCT FROM $5 OR application_name IS NULL)
RETURNING workflow_uuid"#),
            cancel: f(r#"
WITH upd AS (
    UPDATE {s}.workflow_status
    SET status = 'CANCELLED', updated_at = {now}, deduplication_id = NULL
    WHERE workflow_uuid = $1 AND status NOT IN ('SUCCESS', 'ERROR')
    RETURNING workflow_uuid
), notify AS (
    SELECT pg_notify('mainstay_cancelled', workflow_uuid) FROM upd
)
SELECT (SELECT count(*) FROM notify) AS cancelled,
       (SELECT status FROM {s}.workflow_status WHERE workflow_uuid = $1) AS previous"#),
            resume: f(r#"
UPDATE {s}.workflow_status
SET status = 'ENQUEUED', queue_name = $2, owner_xid = NULL, started_at_epoch_ms = NULL,
    recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, deduplication_id = NULL,
    updated_at = {now}
WHERE workflow_uuid = $1 AND status IN ('CANCELLED', 'ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED',
                                        'ENQUEUED', 'DELAYED')
RETURNING workflow_uuid"#),
            cancelled_among: f("SELECT workflow_uuid FROM {s}.workflow_status \
                 WHERE workflow_uuid = ANY($1::text[]) AND status = 'CANCELLED'"),
            // As DBOS registers a version: take an unowned row of that name, or insert one (its
            // timestamp, now, makes a new version the newest); either way answer who owns it.
            // Version names are unique across the database (DBOS's constraint).
            register_version: f(r#"
WITH taken AS (
    UPDATE {s}.application_versions SET application_name = $2
    WHERE version_name = $1 AND application_name IS NULL AND $2::text IS NOT NULL
    RETURNING application_name
), inserted AS (
    INSERT INTO {s}.application_versions (version_id, version_name, application_name, version_timestamp)
    SELECT gen_random_uuid()::text, $1, $2, COALESCE($3, {now}) WHERE NOT EXISTS (SELECT 1 FROM taken)
    ON CONFLICT DO NOTHING
    RETURNING application_name
)
SELECT EXISTS (SELECT 1 FROM taken) OR EXISTS (SELECT 1 FROM inserted) AS mine,
       (SELECT application_name FROM {s}.application_versions WHERE version_name = $1) AS owner,
       EXISTS (SELECT 1 FROM {s}.application_versions WHERE version_name = $1) AS existed"#),
            // The newest version takes the work enqueued without one (DBOS's "latest").
            set_latest_version: f(r#"
UPDATE {s}.application_versions
SET version_timestamp = GREATEST({clock}, (SELECT max(version_timestamp) + 1 FROM {s}.application_versions
                                           WHERE application_name IS NOT DISTINCT FROM $2 OR application_name IS NULL)),
    application_name = COALESCE(application_name, $2)
WHERE version_name = $1 AND (application_name IS NOT DISTINCT FROM $2 OR application_name IS NULL)
RETURNING 1"#),
            latest_version: f(r#"
SELECT version_name FROM {s}.application_versions
WHERE application_name IS NOT DISTINCT FROM $1 OR application_name IS NULL
ORDER BY version_timestamp DESC, created_at DESC LIMIT 1"#),
            // A version's code does not change, but a newer binary may know more of it (the
            // argument types), so a relaunch fills what an older one left unknown.
            register_workflows: f(r#"
INSERT INTO {s}.mainstay_registered_workflows (application_name, application_version, workflow_name, arguments, schedule)
SELECT COALESCE($1, ''), $2, w.name, w.arguments::jsonb, w.schedule
FROM UNNEST($3::text[], $4::text[], $5::text[]) AS w(name, arguments, schedule)
ON CONFLICT (application_name, application_version, workflow_name)
DO UPDATE SET arguments = COALESCE(EXCLUDED.arguments, {s}.mainstay_registered_workflows.arguments),
              schedule = COALESCE(EXCLUDED.schedule, {s}.mainstay_registered_workflows.schedule)"#),
            registered_workflows: f("SELECT workflow_name, arguments::text, schedule FROM {s}.mainstay_registered_workflows \
                 WHERE application_name = COALESCE($1, '') AND application_version = $2 ORDER BY workflow_name"),
            register_queues: f(r#"
INSERT INTO {s}.mainstay_registered_queues (application_name, application_version, queue_name)
SELECT COALESCE($1, ''), $2, name FROM UNNEST($3::text[]) AS name
ON CONFLICT DO NOTHING"#),
            registered_queues: f("SELECT queue_name FROM {s}.mainstay_registered_queues \
                 WHERE application_name = COALESCE($1, '') AND application_version = $2 ORDER BY queue_name"),
            release_claim: f(r#"
UPDATE {s}.workflow_status
SET status = 'ENQUEUED', owner_xid = NULL, executor_id = NULL, started_at_epoch_ms = NULL,
    recovery_attempts = GREATEST(COALESCE(recovery_attempts, 1) - 1, 0), updated_at = {now}
WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING'"#),
            all: Vec::new(),
        };
        sql.all = r.rendered();
        sql
    }
}

/// Handle to the system database. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SystemDatabase {
    pool: PgPool,
    schema: Arc<str>,
    sql: Arc<Sql>,
    /// The largest payload written to it (`Config::max_payload_bytes`).
    payload_limit: usize,
}

fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(AssertSqlSafe(sql.clone()))
}

/// The clear error for an enqueue refused by the deduplication index, if that is what `e` is.
pub(crate) fn duplicate_of(e: &sqlx::Error, row: &NewWorkflow) -> Option<Error> {
    let db = e.as_database_error()?;
    (db.constraint() == Some("uq_workflow_status_dedup_id")).then(|| Error::Duplicate {
        queue: row.queue_name.clone().unwrap_or_default(),
        deduplication_id: row.deduplication_id.clone().unwrap_or_default(),
    })
}

/// Has Postgres prepare (parse, analyze, not run) every statement of a handle on `schema`;
/// returns how many, or each failure with its statement.
pub(crate) async fn prepare_every_statement(pool: &PgPool, schema: &str) -> std::result::Result<usize, Vec<String>> {
    use sqlx::{Executor, SqlSafeStr};
    let all = Sql::new(schema).all;
    let mut conn = pool.acquire().await.map_err(|e| vec![format!("connect: {e}")])?;
    let mut failed = Vec::new();
    for text in &all {
        if let Err(e) = conn.prepare(AssertSqlSafe(text.to_string()).into_sql_str()).await {
            failed.push(format!("{e}\n{text}"));
        }
    }
    // The application database's statements, on a table created in the same schema.
    let app = AppDatabase::open(pool.clone(), schema).await.map_err(|e| vec![e.to_string()])?;
    for text in app.statements() {
        if let Err(e) = conn.prepare(AssertSqlSafe(text.to_string()).into_sql_str()).await {
            failed.push(format!("{e}\n{text}"));
        }
    }
    if failed.is_empty() {
        Ok(all.len() + app.statements().len())
    } else {
        Err(failed)
    }
}

/// A pool for `url`, retrying an unreachable server with backoff until `connect_timeout`;
/// `which` names the database in errors ("system", "application").
pub(crate) async fn connect_pool(url: &str, pool_size: u32, connect_timeout: Duration, which: &str) -> Result<PgPool> {
    // The driver logs unknown parameters with their values: a secret one it cannot use anyway
    // is dropped here, named without its value.
    let (usable, dropped) = without_unsupported_secrets(url);
    for name in dropped {
        tracing::warn!(
            parameter = %name,
            "ignoring connection parameter {name} of the {which} database URL: the Postgres driver \
             does not support it (remove it from the URL; a client key must not be encrypted)"
        );
    }
    let options: PgConnectOptions =
        usable.parse().map_err(|e| Error::Config(format!("{which} database URL {} is invalid: {e}", redact(url))))?;
    let options = options.application_name("mainstay");
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let mut delays = crate::model::backoff::jittered(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        let attempt = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(1)
            // A liveness ping per checkout doubles the round trips of short statements;
            // broken connections surface as errors and are retried instead.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if is_transient(&e) && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    url = %redact(url),
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "{which} database unreachable; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                return Err(Error::Connect { which: which.to_string(), url: redact(url), retried: is_transient(&e), source: e });
            }
        }
    }
}

impl SystemDatabase {
    /// Connects, retrying an unreachable server with backoff until `connect_timeout`.
    pub(crate) async fn connect(config: &Config) -> Result<SystemDatabase> {
        config.validate()?;
        let pool = connect_pool(&config.database_url, config.pool_size, config.connect_timeout, "system").await?;
        Ok(SystemDatabase {
            pool,
            schema: Arc::from(config.system_schema.as_str()),
            sql: Arc::new(Sql::new(&config.system_schema)),
            payload_limit: config.max_payload_bytes,
        })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The largest payload, in bytes, that may be written: every encode is bounded by it.
    pub(crate) fn payload_limit(&self) -> usize {
        self.payload_limit
    }

    /// Runs the system-database migrations (idempotent, under an advisory lock).
    pub(crate) async fn migrate(&self) -> Result<()> {
        migrate::run(&self.pool, &self.schema).await
    }

    /// Drops the system schema with every workflow in it.
    pub(crate) async fn reset(&self) -> Result<()> {
        migrate::reset(&self.pool, &self.schema).await
    }

    /// One round trip, to tell whether the database answers.
    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(|e| Error::db("reach the system database", e))?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    // ---- direct statements ----

    /// Starts a child workflow and records it as the parent's step, in one statement.
    /// Returns `(owned, created)`: whether the parent is still owned, whether the child is new.
    pub(crate) async fn start_child(
        &self,
        parent_id: &str,
        parent_owner: &str,
        function_id: i32,
        child: &NewWorkflow,
    ) -> Result<(bool, bool)> {
        let row = q(&self.sql.start_child)
            .bind(parent_id)
            .bind(parent_owner)
            .bind(&child.id)
            .bind(&child.name)
            .bind(&child.owner)
            .bind(&child.executor_id)
            .bind(&child.app_version)
            .bind(&child.app_name)
            .bind(child.timeout_ms)
            .bind(child.deadline_ms)
            .bind(&child.inputs)
            .bind(function_id)
            .bind(child.status)
            .bind(child.recovery_attempts)
            .bind(&child.queue_name)
            .bind(child.priority)
            .bind(&child.deduplication_id)
            .bind(&child.partition_key)
            .bind(child.delay_until_ms)
            .bind(&child.traceparent)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| match duplicate_of(&e, child) {
                Some(dup) => dup,
                None => Error::db(format!("start child workflow {}", child.id), e),
            })?;
        let owned: i64 = row.get("owned");
        let created: i64 = row.get("created");
        Ok((owned > 0, created > 0))
    }

    /// Every recorded operation of a workflow, for a replay.
    pub(crate) async fn recorded_steps(&self, workflow_id: &str) -> Result<Vec<RecordedOp>> {
        let rows = q(&self.sql.recorded_steps)
            .bind(workflow_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("load the recorded steps of workflow {workflow_id}"), e))?;
        Ok(rows
            .into_iter()
            .map(|row| RecordedOp {
                function_id: row.get(0),
                name: row.get(1),
                output: row.get(2),
                error: row.get(3),
                child_workflow_id: row.get(4),
                serialization: row.get(5),
            })
            .collect())
    }

    pub(crate) async fn get_status(&self, workflow_id: &str) -> Result<Option<WorkflowStatus>> {
        let row = q(&self.sql.get_status)
            .bind(workflow_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read the status of workflow {workflow_id}"), e))?;
        Ok(row.as_ref().map(management::status_from_row))
    }

    /// Re-enqueues the `PENDING` workflows of an executor (of one version, or any if `None`;
    /// of one application and of none if `app` is `Some`, of any application if it is `None`).
    pub(crate) async fn recover_executor(
        &self,
        executor_id: &str,
        app_version: Option<&str>,
        app: Option<Option<&str>>,
    ) -> Result<Vec<String>> {
        let rows = q(&self.sql.recover_executor)
            .bind(executor_id)
            .bind(app_version)
            .bind(INTERNAL_QUEUE)
            .bind(app.is_some())
            .bind(app.flatten())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("re-enqueue the pending workflows of executor {executor_id}"), e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Cancels a workflow that has not finished (a finished one is left as it is).
    pub(crate) async fn cancel(&self, workflow_id: &str) -> Result<()> {
        let row = q(&self.sql.cancel)
            .bind(workflow_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::db(format!("cancel workflow {workflow_id}"), e))?;
        match row.get::<Option<String>, _>("previous") {
            None => Err(Error::NotFound { workflow_id: workflow_id.to_string() }),
            Some(_) => Ok(()),
        }
    }

    /// Puts a stopped workflow back on the internal queue so it runs again from its last step.
    /// Errors name the status that prevents it.
    pub(crate) async fn resume(&self, workflow_id: &str) -> Result<()> {
        let rows = q(&self.sql.resume)
            .bind(workflow_id)
            .bind(INTERNAL_QUEUE)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("resume workflow {workflow_id}"), e))?;
        if !rows.is_empty() {
            return Ok(());
        }
        match self.get_status(workflow_id).await? {
            None => Err(Error::NotFound { workflow_id: workflow_id.to_string() }),
            Some(s) => Err(Error::InvalidState(format!(
                "workflow {workflow_id} is {} and cannot be resumed; only CANCELLED, ERROR, \
                 MAX_RECOVERY_ATTEMPTS_EXCEEDED, ENQUEUED or DELAYED workflows can",
                s.status
            ))),
        }
    }

    /// Registers `version` for application `app_name`; refused when another application owns
    /// a version of that name. A new row's timestamp is now (it becomes the newest), or with
    /// `reserve` the oldest possible, so it becomes the latest only when made so.
    pub(crate) async fn register_version(&self, version: &str, app_name: Option<&str>) -> Result<()> {
        self.register_version_at(version, app_name, None).await
    }

    /// [`register_version`](Self::register_version) without becoming the latest: the row, if
    /// new, gets the oldest timestamp.
    pub(crate) async fn reserve_version(&self, version: &str, app_name: Option<&str>) -> Result<()> {
        self.register_version_at(version, app_name, Some(0)).await
    }

    async fn register_version_at(&self, version: &str, app_name: Option<&str>, timestamp: Option<i64>) -> Result<()> {
        // A concurrent insert of the same name can leave this statement's snapshot without the
        // row: look again.
        for _ in 0..3 {
            let row = q(&self.sql.register_version)
                .bind(version)
                .bind(app_name)
                .bind(timestamp)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Error::db(format!("register application version {version}"), e))?;
            let (mine, owner, existed): (bool, Option<String>, bool) = (row.get(0), row.get(1), row.get(2));
            if mine || (existed && (owner.is_none() || owner.as_deref() == app_name)) {
                return Ok(());
            }
            if existed {
                return Err(Error::VersionConflict {
                    version: version.to_string(),
                    owner: owner.unwrap_or_default(),
                    app: app_name.map(str::to_string),
                });
            }
        }
        Err(Error::Contended(format!(
            "failed to register application version {version}: it was inserted and removed concurrently; launch again"
        )))
    }

    /// Makes `version` the newest of application `app_name`, so it takes work enqueued without a
    /// version. Returns whether the version is registered for that application (or for none).
    pub(crate) async fn set_latest_version(&self, version: &str, app_name: Option<&str>) -> Result<bool> {
        let rows = q(&self.sql.set_latest_version)
            .bind(version)
            .bind(app_name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("make application version {version} the latest"), e))?;
        Ok(!rows.is_empty())
    }

    /// The newest version of application `app_name` (rows of no application count for every
    /// application, as in DBOS).
    pub(crate) async fn latest_version(&self, app_name: Option<&str>) -> Result<Option<String>> {
        let row = q(&self.sql.latest_version)
            .bind(app_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db("read the latest application version", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records the workflows a version of an application registers, with their argument types
    /// (JSON arrays of type names; `None` when unknown) and schedules.
    pub(crate) async fn register_workflows(&self, app_name: Option<&str>, version: &str, workflows: &[RegisteredRow]) -> Result<()> {
        let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
        let arguments: Vec<Option<&str>> = workflows.iter().map(|w| w.arguments.as_deref()).collect();
        let schedules: Vec<Option<&str>> = workflows.iter().map(|w| w.schedule.as_deref()).collect();
        q(&self.sql.register_workflows)
            .bind(app_name)
            .bind(version)
            .bind(names)
            .bind(arguments)
            .bind(schedules)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(format!("record the workflows of application version {version}"), e))?;
        Ok(())
    }

    /// The workflows recorded for a version of an application, with their argument types as
    /// recorded (JSON text) and schedules, in name order (empty: none recorded).
    pub(crate) async fn registered_workflows(&self, app_name: Option<&str>, version: &str) -> Result<Vec<RegisteredRow>> {
        let rows = q(&self.sql.registered_workflows)
            .bind(app_name)
            .bind(version)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read the workflows of application version {version}"), e))?;
        Ok(rows.into_iter().map(|r| RegisteredRow { name: r.get(0), arguments: r.get(1), schedule: r.get(2) }).collect())
    }

    /// Records the queues the workers of a version of an application listen to.
    pub(crate) async fn register_queues(&self, app_name: Option<&str>, version: &str, queues: &[String]) -> Result<()> {
        q(&self.sql.register_queues)
            .bind(app_name)
            .bind(version)
            .bind(queues)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(format!("record the queues of application version {version}"), e))?;
        Ok(())
    }

    /// The queues recorded for a version of an application, in name order (empty: none
    /// recorded).
    pub(crate) async fn registered_queues(&self, app_name: Option<&str>, version: &str) -> Result<Vec<String>> {
        let rows = q(&self.sql.registered_queues)
            .bind(app_name)
            .bind(version)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read the queues of application version {version}"), e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Puts a claimed workflow back on its queue, unclaimed, if `owner` still holds it.
    pub(crate) async fn release_claim(&self, workflow_id: &str, owner: &str) -> Result<()> {
        q(&self.sql.release_claim)
            .bind(workflow_id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(format!("release the claim on workflow {workflow_id}"), e))?;
        Ok(())
    }

    /// Which of these workflows were cancelled (by anyone: this SDK, DBOS's CLI or clients).
    pub(crate) async fn cancelled_among(&self, ids: &[String]) -> Result<Vec<String>> {
        let rows = q(&self.sql.cancelled_among)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("check running workflows for cancellation", e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// A listener subscribed to `channels`.
    pub(crate) async fn listener(&self, channels: &[&str]) -> Result<sqlx::postgres::PgListener> {
        let mut listener =
            sqlx::postgres::PgListener::connect_with(&self.pool).await.map_err(|e| Error::db("open a notification listener", e))?;
        listener.listen_all(channels.iter().copied()).await.map_err(|e| Error::db("listen for notifications", e))?;
        Ok(listener)
    }
}
