//! Group-committed writes: workflow starts, step checkpoints and outcomes of many workflows in
//! one statement, and so in one commit and one round trip.
//!
//! Each kind is a set of data-modifying CTEs over `UNNEST`ed arrays. A batch of one kind runs
//! that kind's statement; a mixed batch runs all three sets in one statement. That is safe
//! because a batch never holds two writes of one workflow (a workflow awaits each write before
//! it makes the next), and all CTEs of a statement see one snapshot. Rows a statement did not
//! write (an existing workflow ID, a step recorded first by another execution, a lost owner) are
//! explained by a follow-up read, which only that rare path pays.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use super::{q, CheckpointOutcome, NewWorkflow, Outcome, RecordedOp, Renderer, StartOutcome, StepRecord, SystemDatabase};

const START_PARAMS: usize = 19;
const START_CTES: &str = r#"
r AS (
    SELECT * FROM UNNEST(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::text[], ?6::text[],
                         ?7::text[], ?8::text[], ?9::text[], ?10::text[], ?11::int8[], ?12::int8[],
                         ?13::int4[], ?14::text[], ?15::text[], ?16::int8[], ?17::int8[], ?18::text[],
                         ?19::text[])
        AS r(id, name, status, inputs, owner, executor, version, app_name, queue, parent,
             timeout_ms, deadline, priority, dedup, partition_key, delay_until, attempts, schedule,
             traceparent)
), ins AS (
    INSERT INTO {s}.workflow_status (
        workflow_uuid, name, status, owner_xid, executor_id, application_version,
        application_name, queue_name, parent_workflow_id, workflow_timeout_ms,
        workflow_deadline_epoch_ms, priority, deduplication_id, queue_partition_key,
        delay_until_epoch_ms, recovery_attempts, schedule_name, serialization, creator_xid,
        created_at, updated_at)
    SELECT id, name, status, owner, executor, version, app_name, queue, parent, timeout_ms,
           deadline, priority, dedup, partition_key, delay_until, attempts, schedule,
           'portable_json', owner, {now}, {now}
    FROM r
    ON CONFLICT (workflow_uuid) DO NOTHING
    RETURNING workflow_uuid
), inp AS (
    INSERT INTO {s}.workflow_input (workflow_uuid, inputs)
    SELECT r.id, r.inputs FROM r JOIN ins ON ins.workflow_uuid = r.id
    ON CONFLICT (workflow_uuid) DO NOTHING
)"#;

/// Added to [`START_CTES`] when a row carries a trace context: a batch without one never names
/// Mainstay's trace table, so a client (which does not migrate) still enqueues against a
/// database its workers have not yet migrated to it.
const TRACE_CTE: &str = r#", trace AS (
    INSERT INTO {s}.mainstay_workflow_trace (workflow_uuid, traceparent)
    SELECT r.id, r.traceparent FROM r JOIN ins ON ins.workflow_uuid = r.id
    WHERE r.traceparent IS NOT NULL
    ON CONFLICT (workflow_uuid) DO NOTHING
)"#;

const STEP_PARAMS: usize = 9;
const STEP_CTES: &str = r#"
sr AS (
    SELECT * FROM UNNEST(?1::text[], ?2::text[], ?3::int4[], ?4::text[], ?5::text[], ?6::text[],
                         ?7::text[], ?8::int8[], ?9::int8[])
        AS sr(wf, owner, fid, name, output, error, child, started, completed)
), steps AS (
    INSERT INTO {s}.operation_outputs (
        workflow_uuid, function_id, function_name, output, error, child_workflow_id,
        started_at_epoch_ms, completed_at_epoch_ms, serialization)
    SELECT sr.wf, sr.fid, sr.name, sr.output, sr.error, sr.child, sr.started, sr.completed,
           'portable_json'
    FROM sr
    WHERE EXISTS (SELECT 1 FROM {s}.workflow_status ws
                  WHERE ws.workflow_uuid = sr.wf AND ws.owner_xid = sr.owner
                    AND ws.status = 'PENDING')
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING
    RETURNING workflow_uuid, function_id
)"#;

const FINISH_PARAMS: usize = 5;
const FINISH_CTES: &str = r#"
fr AS (
    SELECT * FROM UNNEST(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::text[])
        AS fr(id, owner, status, output, error)
), upd AS (
    UPDATE {s}.workflow_status ws
    SET status = fr.status, updated_at = {now}, completed_at = {now}, deduplication_id = NULL
    FROM fr
    WHERE ws.workflow_uuid = fr.id AND ws.owner_xid = fr.owner AND ws.status = 'PENDING'
    RETURNING ws.workflow_uuid
), out AS (
    INSERT INTO {s}.workflow_output (workflow_uuid, output, error)
    SELECT fr.id, fr.output, fr.error FROM fr JOIN upd ON upd.workflow_uuid = fr.id
    ON CONFLICT (workflow_uuid) DO UPDATE SET output = EXCLUDED.output, error = EXCLUDED.error
)"#;

const STARTS_DONE: &str = "SELECT 1, workflow_uuid, 0 FROM ins";
const STEPS_DONE: &str = "SELECT 2, workflow_uuid, function_id FROM steps";
const FINISHES_DONE: &str = "SELECT 3, workflow_uuid, 0 FROM upd";

/// Numbers the `?k` placeholders of a fragment as `$(k + offset)`.
fn numbered(fragment: &str, offset: usize, count: usize) -> String {
    let mut text = fragment.to_string();
    for k in (1..=count).rev() {
        text = text.replace(&format!("?{k}:"), &format!("${}:", k + offset));
    }
    text
}

/// The batch statements, with the schema spliced in (`*_traced`: writing trace contexts too).
pub(super) struct Statements {
    starts: Arc<str>,
    starts_traced: Arc<str>,
    steps: Arc<str>,
    finishes: Arc<str>,
    mixed: Arc<str>,
    mixed_traced: Arc<str>,
}

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let start = numbered(START_CTES, 0, START_PARAMS);
        let start_traced = numbered(&format!("{START_CTES}{TRACE_CTE}"), 0, START_PARAMS);
        let step = numbered(STEP_CTES, 0, STEP_PARAMS);
        let finish = numbered(FINISH_CTES, 0, FINISH_PARAMS);
        let later_step = numbered(STEP_CTES, START_PARAMS, STEP_PARAMS);
        let later_finish = numbered(FINISH_CTES, START_PARAMS + STEP_PARAMS, FINISH_PARAMS);
        let names = [
            ("start", start.as_str()),
            ("start_traced", start_traced.as_str()),
            ("step", step.as_str()),
            ("finish", finish.as_str()),
            ("later_step", later_step.as_str()),
            ("later_finish", later_finish.as_str()),
            ("starts_done", STARTS_DONE),
            ("steps_done", STEPS_DONE),
            ("finishes_done", FINISHES_DONE),
        ];
        Statements {
            starts: r.sql_with("WITH {start}\n{starts_done}", &names),
            starts_traced: r.sql_with("WITH {start_traced}\n{starts_done}", &names),
            steps: r.sql_with("WITH {step}\n{steps_done}", &names),
            finishes: r.sql_with("WITH {finish}\n{finishes_done}", &names),
            mixed: r.sql_with(
                "WITH {start}, {later_step}, {later_finish}\n{starts_done}\nUNION ALL {steps_done}\nUNION ALL {finishes_done}",
                &names,
            ),
            mixed_traced: r.sql_with(
                "WITH {start_traced}, {later_step}, {later_finish}\n{starts_done}\nUNION ALL {steps_done}\nUNION ALL {finishes_done}",
                &names,
            ),
        }
    }
}

/// The writes of one group commit.
#[derive(Default)]
pub(crate) struct Batch<'a> {
    pub starts: Vec<&'a NewWorkflow>,
    pub steps: Vec<&'a StepRecord>,
    pub finishes: Vec<&'a Outcome>,
}

/// What each write of a batch found, in the batch's order.
pub(crate) type Written = (Vec<StartOutcome>, Vec<CheckpointOutcome>, Vec<bool>);

type PgQuery = Query<'static, Postgres, PgArguments>;

fn bind_starts(query: PgQuery, rows: &[&NewWorkflow]) -> PgQuery {
    let text = |f: &dyn Fn(&NewWorkflow) -> Option<String>| -> Vec<Option<String>> { rows.iter().map(|r| f(r)).collect() };
    query
        .bind(text(&|r| Some(r.id.clone())))
        .bind(text(&|r| Some(r.name.clone())))
        .bind(text(&|r| Some(r.status.to_string())))
        .bind(text(&|r| Some(r.inputs.clone())))
        .bind(text(&|r| r.owner.clone()))
        .bind(text(&|r| r.executor_id.clone()))
        .bind(text(&|r| r.app_version.clone()))
        .bind(text(&|r| r.app_name.clone()))
        .bind(text(&|r| r.queue_name.clone()))
        .bind(text(&|r| r.parent_id.clone()))
        .bind(rows.iter().map(|r| r.timeout_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.deadline_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.priority).collect::<Vec<_>>())
        .bind(text(&|r| r.deduplication_id.clone()))
        .bind(text(&|r| r.partition_key.clone()))
        .bind(rows.iter().map(|r| r.delay_until_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.recovery_attempts).collect::<Vec<_>>())
        .bind(text(&|r| r.schedule_name.clone()))
        .bind(text(&|r| r.traceparent.clone()))
}

fn bind_steps(query: PgQuery, rows: &[&StepRecord]) -> PgQuery {
    query
        .bind(rows.iter().map(|r| r.workflow_id.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.owner.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.function_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.output.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.child_workflow_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.started_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.completed_ms).collect::<Vec<_>>())
}

fn bind_finishes(query: PgQuery, rows: &[&Outcome]) -> PgQuery {
    query
        .bind(rows.iter().map(|r| r.workflow_id.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.owner.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status.to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.output.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
}

impl SystemDatabase {
    /// Writes a batch in one statement (autocommit) and reports what each write found.
    pub(crate) async fn write_batch(&self, conn: &mut PgConnection, batch: &Batch<'_>) -> std::result::Result<Written, sqlx::Error> {
        let stmts = &self.sql.batch;
        let (has_starts, has_steps, has_finishes) = (!batch.starts.is_empty(), !batch.steps.is_empty(), !batch.finishes.is_empty());
        let traced = batch.starts.iter().any(|r| r.traceparent.is_some());
        let (starts, mixed) = if traced { (&stmts.starts_traced, &stmts.mixed_traced) } else { (&stmts.starts, &stmts.mixed) };
        let query = match (has_starts, has_steps, has_finishes) {
            (_, false, false) => bind_starts(q(starts), &batch.starts),
            (false, true, false) => bind_steps(q(&stmts.steps), &batch.steps),
            (false, false, true) => bind_finishes(q(&stmts.finishes), &batch.finishes),
            _ => bind_finishes(bind_steps(bind_starts(q(mixed), &batch.starts), &batch.steps), &batch.finishes),
        };
        let mut started = Vec::new();
        let mut stepped = Vec::new();
        let mut finished = Vec::new();
        for row in query.fetch_all(&mut *conn).await? {
            let id: String = row.get(1);
            match row.get::<i32, _>(0) {
                1 => started.push(id),
                2 => stepped.push((id, row.get::<i32, _>(2))),
                _ => finished.push(id),
            }
        }
        Ok((
            self.resolve_starts(conn, &batch.starts, started).await?,
            self.resolve_steps(conn, &batch.steps, stepped).await?,
            self.resolve_finishes(conn, &batch.finishes, finished).await?,
        ))
    }

    async fn resolve_starts(
        &self,
        conn: &mut PgConnection,
        rows: &[&NewWorkflow],
        mut inserted: Vec<String>,
    ) -> std::result::Result<Vec<StartOutcome>, sqlx::Error> {
        // Two starts of one ID in a batch: only the first inserted it.
        let fresh: Vec<bool> = rows
            .iter()
            .map(|r| match inserted.iter().position(|id| *id == r.id) {
                Some(i) => {
                    inserted.swap_remove(i);
                    true
                }
                None => false,
            })
            .collect();
        let missing: Vec<String> = rows.iter().zip(&fresh).filter(|(_, f)| !**f).map(|(r, _)| r.id.clone()).collect();
        let mut names = HashMap::new();
        if !missing.is_empty() {
            for row in q(&self.sql.existing_workflows).bind(&missing).fetch_all(&mut *conn).await? {
                names.insert(row.get::<String, _>(0), row.get::<Option<String>, _>(1));
            }
        }
        Ok(rows
            .iter()
            .zip(fresh)
            .map(
                |(r, fresh)| {
                    if fresh {
                        StartOutcome::Inserted
                    } else {
                        StartOutcome::Exists { name: names.get(&r.id).cloned().flatten() }
                    }
                },
            )
            .collect())
    }

    async fn resolve_steps(
        &self,
        conn: &mut PgConnection,
        rows: &[&StepRecord],
        inserted: Vec<(String, i32)>,
    ) -> std::result::Result<Vec<CheckpointOutcome>, sqlx::Error> {
        let is_inserted = |r: &StepRecord| inserted.iter().any(|(w, f)| **w == *r.workflow_id && *f == r.function_id);
        let missing: Vec<&&StepRecord> = rows.iter().filter(|r| !is_inserted(r)).collect();
        let mut existing: Vec<(String, RecordedOp)> = Vec::new();
        if !missing.is_empty() {
            let found = q(&self.sql.existing_steps)
                .bind(missing.iter().map(|r| r.workflow_id.to_string()).collect::<Vec<_>>())
                .bind(missing.iter().map(|r| r.function_id).collect::<Vec<_>>())
                .fetch_all(&mut *conn)
                .await?;
            for row in found {
                existing.push((
                    row.get(0),
                    RecordedOp {
                        function_id: row.get(1),
                        name: row.get(2),
                        output: row.get(3),
                        error: row.get(4),
                        child_workflow_id: row.get(5),
                        serialization: row.get(6),
                    },
                ));
            }
        }
        Ok(rows
            .iter()
            .map(|r| {
                if is_inserted(r) {
                    return CheckpointOutcome::Recorded;
                }
                existing
                    .iter()
                    .find(|(w, op)| **w == *r.workflow_id && op.function_id == r.function_id)
                    .map(|(_, op)| CheckpointOutcome::Existing(op.clone()))
                    .unwrap_or(CheckpointOutcome::NotOwner)
            })
            .collect())
    }

    async fn resolve_finishes(
        &self,
        conn: &mut PgConnection,
        rows: &[&Outcome],
        updated: Vec<String>,
    ) -> std::result::Result<Vec<bool>, sqlx::Error> {
        let missing: Vec<String> =
            rows.iter().filter(|r| !updated.iter().any(|u| **u == *r.workflow_id)).map(|r| r.workflow_id.to_string()).collect();
        // A retry after an ambiguous commit finds its own outcome already written.
        let mut already: Vec<String> = Vec::new();
        if !missing.is_empty() {
            for row in q(&self.sql.finished_check).bind(&missing).fetch_all(&mut *conn).await? {
                let id: String = row.get(0);
                let status: Option<String> = row.get(1);
                let owner: Option<String> = row.get(2);
                if let Some(r) = rows.iter().find(|r| *r.workflow_id == *id) {
                    if status.as_deref() == Some(r.status) && owner.as_deref() == Some(&*r.owner) {
                        already.push(id);
                    }
                }
            }
        }
        Ok(rows.iter().map(|r| updated.iter().chain(&already).any(|u| **u == *r.workflow_id)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_without_clashes() {
        let text = numbered("?1::text[], ?10::int8[], ?2::text[]", 17, 10);
        assert_eq!(text, "$18::text[], $27::int8[], $19::text[]");
    }

    #[test]
    fn the_mixed_statement_uses_every_parameter_once() {
        let stmts = Statements::new(&Renderer::new("dbos"));
        for n in 1..=(START_PARAMS + STEP_PARAMS + FINISH_PARAMS) {
            assert_eq!(stmts.mixed.matches(&format!("${n}:")).count(), 1, "${n}");
        }
        assert!(!stmts.mixed.contains('?'));
    }
}
