//! Statements for operating a fleet: listing workflows, outstanding work per application
//! version and per executor, and deleting finished workflows (retention).
//!
//! Retention never deletes a workflow that is `PENDING`, `ENQUEUED` or `DELAYED`, and deletes
//! in bounded batches so a first sweep over a large history does not hold one huge
//! transaction.

use std::sync::Arc;

use sqlx::Row;

use super::{q, Renderer, SystemDatabase};
use crate::model::error::{Error, Result};
use crate::model::fleet::{Progress, RegistrationMark, UnfinishedWork, WorkGroup};
use crate::model::management::{ExecutorWork, ForkOptions, StepInfo, VersionWork, WorkflowFilter};
use crate::model::status::{Status, WorkflowStatus};

/// Finished workflows deleted per statement by a retention sweep.
const DELETE_BATCH: i64 = 5_000;

/// When a queued workflow became ready to run (epoch ms): the later of when it was last put in
/// the queue (enqueued, re-enqueued by a recovery or a resume: `updated_at`) and the end of its
/// delay. As the claim of migration 0007 measures its wait.
const READY_AT: &str = "GREATEST(COALESCE(updated_at, created_at), delay_until_epoch_ms)";

/// Columns of a status read, in the order [`status_from_row`] expects.
pub(super) const STATUS_COLUMNS: &str = r#"
ws.workflow_uuid, ws.status, ws.name, ws.executor_id, ws.application_version,
ws.queue_name, ws.parent_workflow_id, COALESCE(ws.recovery_attempts, 0) AS recovery_attempts,
ws.created_at, ws.updated_at, ws.started_at_epoch_ms, ws.completed_at,
ws.workflow_deadline_epoch_ms,
COALESCE(o.output, ws.output) AS output, COALESCE(o.error, ws.error) AS error,
ws.serialization"#;

pub(super) fn status_from_row(row: &sqlx::postgres::PgRow) -> WorkflowStatus {
    WorkflowStatus {
        workflow_id: row.get(0),
        status: Status::parse(row.get::<Option<String>, _>(1).as_deref().unwrap_or("")),
        name: row.get(2),
        executor_id: row.get(3),
        app_version: row.get(4),
        queue_name: row.get(5),
        parent_workflow_id: row.get(6),
        recovery_attempts: row.get(7),
        created_at_ms: row.get(8),
        updated_at_ms: row.get(9),
        started_at_ms: row.get(10),
        completed_at_ms: row.get(11),
        deadline_epoch_ms: row.get(12),
        output: row.get(13),
        error: row.get(14),
        serialization: row.get(15),
    }
}

pub(super) struct Statements {
    list_newest_first: Arc<str>,
    list_oldest_first: Arc<str>,
    pending_by_executor: Arc<str>,
    outstanding_by_version: Arc<str>,
    unrunnable: Arc<str>,
    nth_newest: Arc<str>,
    delete_finished: Arc<str>,
    list_steps: Arc<str>,
    count_steps: Arc<str>,
    unfinished_work: Arc<str>,
    progress: Arc<str>,
    registration_marks: Arc<str>,
    fork: Arc<str>,
    delete: Arc<str>,
}

const LIST: &str = r#"
SELECT {columns}
FROM {s}.workflow_status ws LEFT JOIN {s}.workflow_output o ON o.workflow_uuid = ws.workflow_uuid
WHERE ($1::text IS NULL OR starts_with(ws.workflow_uuid, $1))
  AND ($2::text[] IS NULL OR ws.status = ANY($2))
  AND ($3::text IS NULL OR ws.name = $3)
  AND ($4::text IS NULL OR ws.application_version = $4)
  AND ($5::text IS NULL OR ws.executor_id = $5)
  AND ($6::text IS NULL OR ws.queue_name = $6)
  AND ($7::text IS NULL OR ws.schedule_name = $7)
  AND ($8::int8 IS NULL OR ws.created_at >= $8)
  AND ($9::int8 IS NULL OR ws.created_at < $9)
ORDER BY ws.created_at {dir}, ws.workflow_uuid {dir}
LIMIT $10 OFFSET $11"#;

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let f = |text: &str| r.sql(text);
        let list = |dir: &str| r.sql_with(LIST, &[("columns", STATUS_COLUMNS), ("dir", dir)]);
        Statements {
            list_newest_first: list("DESC"),
            list_oldest_first: list("ASC"),
            pending_by_executor: f("SELECT executor_id, application_version, count(*) FROM {s}.workflow_status \
                 WHERE status = 'PENDING' AND executor_id IS NOT NULL \
                   AND {scope} \
                 GROUP BY executor_id, application_version"),
            outstanding_by_version: f("SELECT application_version, count(*) FILTER (WHERE status = 'PENDING'), \
                        count(*) FILTER (WHERE status = 'ENQUEUED'), \
                        count(*) FILTER (WHERE status = 'DELAYED') \
                 FROM {s}.workflow_status WHERE status IN ('PENDING', 'ENQUEUED', 'DELAYED') \
                   AND {scope} \
                 GROUP BY application_version"),
            // Queued work the given version will never claim because it does not register the
            // workflow (only when the version recorded what it registers).
            unrunnable: f(r#"
SELECT ws.name, count(*), count(*) FILTER (WHERE ws.application_name = $1)
FROM {s}.workflow_status ws
WHERE ws.status = 'ENQUEUED' AND {scope}
  AND (ws.application_version = $2 OR ws.application_version IS NULL)
  AND EXISTS (SELECT 1 FROM {s}.mainstay_registered_workflows r
              WHERE r.application_name = COALESCE($1, '') AND r.application_version = $2)
  AND NOT EXISTS (SELECT 1 FROM {s}.mainstay_registered_workflows r
                  WHERE r.application_name = COALESCE($1, '') AND r.application_version = $2
                    AND r.workflow_name = ws.name)
GROUP BY ws.name ORDER BY ws.name"#),
            nth_newest: f("SELECT created_at FROM {s}.workflow_status \
                 WHERE {retention2} \
                 ORDER BY created_at DESC OFFSET $1 LIMIT 1"),
            delete_finished: f(r#"
WITH victims AS (
    SELECT workflow_uuid FROM {s}.workflow_status
    WHERE created_at < $1 AND status NOT IN ('PENDING', 'ENQUEUED', 'DELAYED')
      AND {retention3}
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), inputs AS (
    DELETE FROM {s}.workflow_input WHERE workflow_uuid IN (SELECT workflow_uuid FROM victims)
), outputs AS (
    DELETE FROM {s}.workflow_output WHERE workflow_uuid IN (SELECT workflow_uuid FROM victims)
), steps AS (
    DELETE FROM {s}.operation_outputs WHERE workflow_uuid IN (SELECT workflow_uuid FROM victims)
), gone AS (
    DELETE FROM {s}.workflow_status WHERE workflow_uuid IN (SELECT workflow_uuid FROM victims)
    RETURNING 1
)
SELECT count(*) FROM gone"#),
            list_steps: f("SELECT function_id, function_name, output, error, child_workflow_id, \
                        started_at_epoch_ms, completed_at_epoch_ms, serialization \
                 FROM {s}.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id"),
            count_steps: f("SELECT count(*) FROM {s}.operation_outputs WHERE workflow_uuid = $1"),
            // Every unfinished workflow, grouped by what the per-application figures divide
            // on, with the owners of each group's version (see `fleet`).
            unfinished_work: r.sql_with(
                r#"
SELECT g.application_name, g.application_version, g.queue_name, g.executor_id, g.status, g.name, g.n,
       ARRAY(SELECT av.application_name FROM {s}.application_versions av
             WHERE av.version_name = g.application_version AND av.application_name IS NOT NULL
             ORDER BY 1) AS owners,
       g.oldest_ready
FROM (SELECT application_name, application_version, queue_name, executor_id, status, name, count(*) AS n,
             min({ready_at}) FILTER (WHERE status = 'ENQUEUED') AS oldest_ready
      FROM {s}.workflow_status
      WHERE status IN ('PENDING', 'ENQUEUED', 'DELAYED')
      GROUP BY application_name, application_version, queue_name, executor_id, status, name) g"#,
                &[("ready_at", READY_AT)],
            ),
            registration_marks: f(r#"
SELECT application_name, application_version,
       md5(string_agg(workflow_name || '(' || COALESCE(arguments::text, '?') || ')' || COALESCE(schedule, ''), ',' ORDER BY workflow_name))
FROM {s}.mainstay_registered_workflows
GROUP BY application_name, application_version
ORDER BY application_name, application_version"#),
            // $1 workflow IDs.
            progress: f(r#"
SELECT ws.workflow_uuid, ws.status, ws.updated_at, COALESCE(ws.recovery_attempts, 0),
       (SELECT count(*) FROM {s}.operation_outputs o WHERE o.workflow_uuid = ws.workflow_uuid)
FROM {s}.workflow_status ws WHERE ws.workflow_uuid = ANY($1::text[])"#),
            // $1 original, $2 new ID, $3 version (NULL: the original's), $4 queue, $5 first
            // step to run again. Steps, event history and stream values from before it are
            // copied, so the fork replays them.
            fork: f(r#"
WITH src AS (
    SELECT * FROM {s}.workflow_status WHERE workflow_uuid = $1
), new AS (
    INSERT INTO {s}.workflow_status (
        workflow_uuid, status, name, class_name, config_name, authenticated_user, assumed_role,
        authenticated_roles, application_version, application_id, application_name, queue_name,
        workflow_timeout_ms, serialization, forked_from, priority, recovery_attempts,
        created_at, updated_at)
    SELECT $2, 'ENQUEUED', name, class_name, config_name, authenticated_user, assumed_role,
           authenticated_roles, COALESCE($3, application_version), application_id,
           application_name, $4, workflow_timeout_ms, serialization, $1, 0, 0, {now}, {now}
    FROM src
    RETURNING 1
), inp AS (
    INSERT INTO {s}.workflow_input (workflow_uuid, inputs)
    SELECT $2, COALESCE(i.inputs, src.inputs) FROM src
    LEFT JOIN {s}.workflow_input i ON i.workflow_uuid = $1
    WHERE EXISTS (SELECT 1 FROM new)
), steps AS (
    INSERT INTO {s}.operation_outputs (workflow_uuid, function_id, function_name, output, error,
        child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization,
        application_name)
    SELECT $2, function_id, function_name, output, error, child_workflow_id,
           started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name
    FROM {s}.operation_outputs
    WHERE workflow_uuid = $1 AND function_id < $5 AND EXISTS (SELECT 1 FROM new)
), history AS (
    INSERT INTO {s}.workflow_events_history (workflow_uuid, function_id, key, value, serialization)
    SELECT $2, function_id, key, value, serialization FROM {s}.workflow_events_history
    WHERE workflow_uuid = $1 AND function_id < $5 AND EXISTS (SELECT 1 FROM new)
), events AS (
    INSERT INTO {s}.workflow_events (workflow_uuid, key, value, serialization)
    SELECT DISTINCT ON (key) $2, key, value, serialization FROM {s}.workflow_events_history
    WHERE workflow_uuid = $1 AND function_id < $5 AND EXISTS (SELECT 1 FROM new)
    ORDER BY key, function_id DESC
), streams AS (
    INSERT INTO {s}.streams (workflow_uuid, key, value, "offset", function_id, serialization)
    SELECT $2, key, value, "offset", function_id, serialization FROM {s}.streams
    WHERE workflow_uuid = $1 AND function_id < $5 AND EXISTS (SELECT 1 FROM new)
), mark AS (
    UPDATE {s}.workflow_status SET was_forked_from = true
    WHERE workflow_uuid = $1 AND EXISTS (SELECT 1 FROM new)
)
SELECT (SELECT count(*) FROM src) AS found"#),
            // $1 workflow, $2 with its children (recursively).
            delete: f(r#"
WITH RECURSIVE victims(id) AS (
    SELECT workflow_uuid FROM {s}.workflow_status WHERE workflow_uuid = $1
    UNION
    SELECT ws.workflow_uuid FROM {s}.workflow_status ws JOIN victims v ON ws.parent_workflow_id = v.id
    WHERE $2
), inputs AS (
    DELETE FROM {s}.workflow_input WHERE workflow_uuid IN (SELECT id FROM victims)
), outputs AS (
    DELETE FROM {s}.workflow_output WHERE workflow_uuid IN (SELECT id FROM victims)
), steps AS (
    DELETE FROM {s}.operation_outputs WHERE workflow_uuid IN (SELECT id FROM victims)
), gone AS (
    DELETE FROM {s}.workflow_status WHERE workflow_uuid IN (SELECT id FROM victims)
    RETURNING workflow_uuid
)
SELECT workflow_uuid FROM gone"#),
        }
    }
}

impl SystemDatabase {
    pub(crate) async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<WorkflowStatus>> {
        let sql = if filter.oldest_first { &self.sql.management.list_oldest_first } else { &self.sql.management.list_newest_first };
        let statuses: Option<Vec<String>> =
            (!filter.statuses.is_empty()).then(|| filter.statuses.iter().map(|s| s.as_str().to_string()).collect());
        let rows = q(sql)
            .bind(&filter.id_prefix)
            .bind(statuses)
            .bind(&filter.name)
            .bind(&filter.app_version)
            .bind(&filter.executor_id)
            .bind(&filter.queue)
            .bind(&filter.schedule_name)
            .bind(filter.created_from_ms)
            .bind(filter.created_before_ms)
            .bind(filter.limit.map(|l| l as i64))
            .bind(filter.offset as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("list workflows", e))?;
        Ok(rows.iter().map(status_from_row).collect())
    }

    /// `app`: count only workflows of this application and of none (`None`: all).
    pub(crate) async fn pending_by_executor(&self, app: Option<&str>) -> Result<Vec<ExecutorWork>> {
        let rows = q(&self.sql.management.pending_by_executor)
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("count pending workflows per executor", e))?;
        Ok(rows.into_iter().map(|r| ExecutorWork { executor_id: r.get(0), app_version: r.get(1), pending: r.get(2) }).collect())
    }

    /// `app`: count only workflows of this application and of none (`None`: all).
    pub(crate) async fn outstanding_by_version(&self, app: Option<&str>) -> Result<Vec<VersionWork>> {
        let rows = q(&self.sql.management.outstanding_by_version)
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("count outstanding workflows per application version", e))?;
        Ok(rows
            .into_iter()
            .map(|r| VersionWork { app_version: r.get(0), pending: r.get(1), enqueued: r.get(2), delayed: r.get(3) })
            .collect())
    }

    /// Queued work of application `app`'s scope that `version` does not register:
    /// `(workflow name, queued, of which the application's own)`.
    pub(crate) async fn unrunnable(&self, app: Option<&str>, version: &str) -> Result<Vec<(Option<String>, i64, i64)>> {
        let rows = q(&self.sql.management.unrunnable)
            .bind(app)
            .bind(version)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("count queued workflows version {version} does not register"), e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Deletes finished workflows created before `cutoff_ms`, and beyond the newest `keep`
    /// workflows; returns how many it deleted. `app`: only workflows of this application
    /// (`None`: of every application).
    pub(crate) async fn delete_finished(&self, cutoff_ms: Option<i64>, keep: Option<i64>, app: Option<&str>) -> Result<u64> {
        let mut cutoff = cutoff_ms;
        if let Some(keep) = keep {
            // Everything older than the `keep`-th newest workflow goes (ties with it stay).
            let nth: Option<i64> = if keep <= 0 {
                Some(i64::MAX)
            } else {
                q(&self.sql.management.nth_newest)
                    .bind(keep - 1)
                    .bind(app)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| Error::db("find the retention threshold", e))?
                    .map(|r| r.get(0))
            };
            if let Some(nth) = nth {
                cutoff = Some(cutoff.map_or(nth, |c| c.max(nth)));
            }
        }
        let Some(cutoff) = cutoff else { return Ok(0) };
        let mut deleted = 0u64;
        loop {
            let n: i64 = q(&self.sql.management.delete_finished)
                .bind(cutoff)
                .bind(DELETE_BATCH)
                .bind(app)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| Error::db("delete finished workflows", e))?
                .get(0);
            deleted += n as u64;
            if n < DELETE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

/// A stored payload as JSON for display: the value itself, or a note naming a format mainstay
/// does not read.
pub(crate) fn as_json(text: Option<String>, serialization: Option<&str>) -> Option<serde_json::Value> {
    let text = text?;
    match serialization {
        None | Some(crate::model::serialization::PORTABLE_JSON) => {
            Some(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
        }
        Some(other) => Some(serde_json::Value::String(format!("<{other} value>"))),
    }
}

impl SystemDatabase {
    /// How many steps of a workflow are recorded (without reading their outputs).
    pub(crate) async fn count_steps(&self, workflow_id: &str) -> Result<i64> {
        q(&self.sql.management.count_steps)
            .bind(workflow_id)
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get::<i64, _>(0))
            .map_err(|e| Error::db(format!("count the steps of workflow {workflow_id}"), e))
    }

    /// Every unfinished workflow of the database, grouped (see [`UnfinishedWork`]).
    pub(crate) async fn unfinished_work(&self) -> Result<UnfinishedWork> {
        let rows = q(&self.sql.management.unfinished_work)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("count unfinished workflows per application", e))?;
        let groups = rows
            .into_iter()
            .map(|r| WorkGroup {
                application_name: r.get(0),
                app_version: r.get(1),
                queue_name: r.get(2),
                executor_id: r.get(3),
                status: Status::parse(r.get::<Option<String>, _>(4).as_deref().unwrap_or("")),
                workflow_name: r.get(5),
                count: r.get(6),
                version_owners: r.get::<Vec<String>, _>(7),
                oldest_ready_ms: r.get(8),
            })
            .collect();
        Ok(UnfinishedWork { groups })
    }

    /// The progress of the workflows among `ids` that exist.
    pub(crate) async fn progress(&self, ids: &[String]) -> Result<Vec<Progress>> {
        let rows = q(&self.sql.management.progress)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read the progress of {} workflow(s)", ids.len()), e))?;
        Ok(rows
            .into_iter()
            .map(|r| Progress {
                workflow_id: r.get(0),
                status: Status::parse(r.get::<Option<String>, _>(1).as_deref().unwrap_or("")),
                updated_at_ms: r.get(2),
                recovery_attempts: r.get(3),
                steps: r.get(4),
            })
            .collect())
    }

    /// A digest of what each version of each application registered.
    pub(crate) async fn registration_marks(&self) -> Result<Vec<RegistrationMark>> {
        let rows = q(&self.sql.management.registration_marks)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("read what application versions registered", e))?;
        Ok(rows.into_iter().map(|r| RegistrationMark { application_name: r.get(0), app_version: r.get(1), digest: r.get(2) }).collect())
    }

    /// The recorded steps of a workflow, in order.
    pub(crate) async fn list_steps(&self, workflow_id: &str) -> Result<Vec<StepInfo>> {
        let rows = q(&self.sql.management.list_steps)
            .bind(workflow_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("list the steps of workflow {workflow_id}"), e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let ser: Option<String> = r.get(7);
                StepInfo {
                    function_id: r.get(0),
                    name: r.get(1),
                    output: as_json(r.get(2), ser.as_deref()),
                    error: as_json(r.get(3), ser.as_deref()),
                    child_workflow_id: r.get(4),
                    started_at_ms: r.get(5),
                    completed_at_ms: r.get(6),
                }
            })
            .collect())
    }

    /// Forks a workflow onto `queue`; returns the new run's ID.
    pub(crate) async fn fork(&self, workflow_id: &str, options: &ForkOptions, queue: &str) -> Result<String> {
        let new_id = options.new_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let row = q(&self.sql.management.fork)
            .bind(workflow_id)
            .bind(&new_id)
            .bind(&options.app_version)
            .bind(queue)
            .bind(options.start_step.max(1))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                if crate::model::error::sqlstate(&e).as_deref() == Some("23505") {
                    Error::AlreadyExists(format!(
                        "cannot fork workflow {workflow_id} as {new_id}: a workflow with that ID \
                         exists; choose another ID or leave it unset for a fresh one"
                    ))
                } else {
                    Error::db(format!("fork workflow {workflow_id}"), e)
                }
            })?;
        if row.get::<i64, _>("found") == 0 {
            return Err(Error::NotFound { workflow_id: workflow_id.to_string() });
        }
        Ok(new_id)
    }

    /// Deletes a workflow and everything recorded for it (with `children`, its child
    /// workflows too, recursively); returns the deleted IDs.
    pub(crate) async fn delete_workflow(&self, workflow_id: &str, children: bool) -> Result<Vec<String>> {
        let rows = q(&self.sql.management.delete)
            .bind(workflow_id)
            .bind(children)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("delete workflow {workflow_id}"), e))?;
        if rows.is_empty() {
            return Err(Error::NotFound { workflow_id: workflow_id.to_string() });
        }
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}
