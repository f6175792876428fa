//! Statements finding stalled and parked workflows (see `model::stuck` for what they are).
//!
//! Invariants: both are scoped as an application's figures are (`{scope}`); the stalled one
//! reads only `PENDING` rows (a partial index holds them) and, per row, its latest operation by
//! primary key, so its cost follows the work in flight, not the history; the parked one reads
//! the failed-status index. Counts are whole (also per executor, so a caller that knows which
//! executors are alive counts theirs exactly); the rows listed are the oldest, up to a limit.

use std::sync::Arc;

use sqlx::Row;

use super::{q, Renderer, SystemDatabase};
use crate::model::error::{Error, Result};
use crate::model::names::{GET_EVENT_OPERATION, RECV_OPERATION, SLEEP_OPERATION};
use crate::model::stuck::{ParkedWorkflow, StalledOnExecutor, StalledWorkflow, StuckWorkflows};

/// The latest time the query computes (epoch ms; far beyond any real one, within `bigint`).
const MAX_MS: &str = "4000000000000000";

pub(super) struct Statements {
    stalled: Arc<str>,
    parked: Arc<str>,
}

/// `$1` application (NULL: every one), `$2` stalled after (ms), `$3` rows listed.
/// A workflow last moved at the latest of its start, its record's update, its latest
/// operation's start and end, and the wake-up time of the timer that operation set when the
/// workflow still waits on it (a sleep, or the timeout of a `recv`/`get_event` that has not
/// returned: its record, the operation just before the timer, is not there yet). One with an
/// unfinished child is not judged (the child is). Rows of kind 0 list the oldest stalled, of
/// kind 1 count them per executor (together: the total), and the one of kind 2 carries the
/// next stall. Times are computed in `numeric` and capped, so a timer set for ever (a wake-up
/// time past the `bigint` range) cannot break the query.
const STALLED: &str = r#"
WITH pending AS (
    SELECT workflow_uuid, name, executor_id, application_version, queue_name, updated_at, started_at_epoch_ms
    FROM {s}.workflow_status WHERE status = 'PENDING' AND {scope}
), judged AS (
    SELECT p.*, op.function_name,
           LEAST(GREATEST(p.updated_at, p.started_at_epoch_ms, op.started_at_epoch_ms, op.completed_at_epoch_ms,
                          CASE WHEN op.function_name = {sleep} AND op.output ~ '^[0-9]+(\.[0-9]+)?$'
                                    AND NOT EXISTS (
                                        SELECT 1 FROM {s}.operation_outputs w
                                        WHERE w.workflow_uuid = p.workflow_uuid AND w.function_id = op.function_id - 1
                                          AND w.function_name IN ({recv}, {get_event}))
                               THEN op.output::numeric * 1000 END),
                 {max_ms})::bigint AS active_at
    FROM pending p
    LEFT JOIN LATERAL (
        SELECT o.function_id, o.function_name, o.started_at_epoch_ms, o.completed_at_epoch_ms, o.output
        FROM {s}.operation_outputs o WHERE o.workflow_uuid = p.workflow_uuid
        ORDER BY o.function_id DESC LIMIT 1) op ON true
    WHERE NOT EXISTS (
        SELECT 1 FROM {s}.workflow_status c
        WHERE c.parent_workflow_id = p.workflow_uuid AND c.status IN ('PENDING', 'ENQUEUED', 'DELAYED'))
), stalled AS (
    SELECT * FROM judged WHERE active_at <= {clock} - $2::bigint
)
(SELECT 0::smallint, workflow_uuid, name, executor_id, application_version, queue_name, active_at, function_name,
        NULL::bigint, NULL::bigint
 FROM stalled ORDER BY active_at, workflow_uuid LIMIT $3)
UNION ALL
SELECT 1::smallint, NULL, NULL, executor_id, NULL, NULL, NULL, NULL, count(*), NULL FROM stalled GROUP BY executor_id
UNION ALL
SELECT 2::smallint, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT LEAST(min(active_at)::numeric + $2::bigint, {max_ms})::bigint FROM judged WHERE active_at > {clock} - $2::bigint)"#;

/// `$1` application (NULL: every one), `$2` rows listed. The last row carries the total.
const PARKED: &str = r#"
WITH parked AS (
    SELECT workflow_uuid, name, application_version, COALESCE(recovery_attempts, 0) AS attempts, updated_at, created_at
    FROM {s}.workflow_status WHERE status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' AND {scope}
)
(SELECT workflow_uuid, name, application_version, attempts, updated_at, NULL::bigint
 FROM parked ORDER BY created_at, workflow_uuid LIMIT $2)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM parked)"#;

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let (sleep, recv, get_event) = (format!("'{SLEEP_OPERATION}'"), format!("'{RECV_OPERATION}'"), format!("'{GET_EVENT_OPERATION}'"));
        let names = [("sleep", sleep.as_str()), ("recv", recv.as_str()), ("get_event", get_event.as_str()), ("max_ms", MAX_MS)];
        Statements { stalled: r.sql_with(STALLED, &names), parked: r.sql(PARKED) }
    }
}

impl SystemDatabase {
    /// The stalled and parked workflows of application `app` (`None`: of every application).
    pub(crate) async fn stuck_workflows(&self, app: Option<&str>, stalled_after_ms: i64, limit: i64) -> Result<StuckWorkflows> {
        let stmts = &self.sql.stuck;
        let rows = q(&stmts.stalled)
            .bind(app)
            .bind(stalled_after_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("find stalled workflows", e))?;
        let mut out = StuckWorkflows::default();
        for r in rows {
            match r.get::<i16, _>(0) {
                0 => out.stalled.push(StalledWorkflow {
                    workflow_id: r.get(1),
                    name: r.get(2),
                    executor_id: r.get(3),
                    app_version: r.get(4),
                    queue_name: r.get(5),
                    active_at_ms: r.get::<Option<i64>, _>(6).unwrap_or_default(),
                    last_step: r.get(7),
                }),
                1 => out
                    .stalled_per_executor
                    .push(StalledOnExecutor { executor_id: r.get(3), stalled: r.get::<Option<i64>, _>(8).unwrap_or_default() }),
                _ => out.next_stall_at_ms = r.get(9),
            }
        }
        out.stalled_total = out.stalled_per_executor.iter().map(|e| e.stalled).sum();
        let rows = q(&stmts.parked).bind(app).bind(limit).fetch_all(&self.pool).await.map_err(|e| Error::db("find parked workflows", e))?;
        for r in rows {
            match r.get::<Option<String>, _>(0) {
                Some(workflow_id) => out.parked.push(ParkedWorkflow {
                    workflow_id,
                    name: r.get(1),
                    app_version: r.get(2),
                    recovery_attempts: r.get::<Option<i64>, _>(3).unwrap_or_default(),
                    updated_at_ms: r.get(4),
                }),
                None => out.parked_total = r.get::<Option<i64>, _>(5).unwrap_or_default(),
            }
        }
        Ok(out)
    }
}
