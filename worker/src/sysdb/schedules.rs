//! Statements for schedules: rows of DBOS's `workflow_schedules` table.

use std::sync::Arc;

use sqlx::Row;

use chrono::{DateTime, Utc};

use super::{q, NewWorkflow, Renderer, SystemDatabase};
use crate::model::error::{Error, Result};
use crate::model::names::INTERNAL_QUEUE;
use crate::model::schedule::{Schedule, ScheduleStatus};
use crate::model::serialization::encode;

pub(super) struct Statements {
    create: Arc<str>,
    drop_legacy: Arc<str>,
    rename_legacy: Arc<str>,
    declare: Arc<str>,
    owner: Arc<str>,
    list: Arc<str>,
    list_for_app: Arc<str>,
    set_status: Arc<str>,
    delete: Arc<str>,
    fired: Arc<str>,
}

const COLUMNS: &str = "schedule_name, workflow_name, schedule, cron_timezone, queue_name, status, \
                       automatic_backfill, last_fired_at, context, application_name";

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let f = |text: &str| r.sql(text);
        Statements {
            create: f(r#"
INSERT INTO {s}.workflow_schedules (schedule_id, schedule_name, workflow_name, schedule,
    cron_timezone, queue_name, status, automatic_backfill, context, application_name)
VALUES (gen_random_uuid()::text, $1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (schedule_name) DO NOTHING
RETURNING 1"#),
            // A code schedule's row from before it was named `{app}.{workflow}` ($1: that old
            // name, the workflow's; $2: the new name; $3: the application; $4: the workflow):
            // dropped when a row of the new name exists already (an old version declared it
            // again), otherwise renamed, keeping its status and last fire.
            drop_legacy: f(r#"
DELETE FROM {s}.workflow_schedules
WHERE schedule_name = $1 AND application_name = $3 AND workflow_name = $4
  AND EXISTS (SELECT 1 FROM {s}.workflow_schedules WHERE schedule_name = $2)
RETURNING 1"#),
            rename_legacy: f(r#"
UPDATE {s}.workflow_schedules SET schedule_name = $2
WHERE schedule_name = $1 AND application_name = $3 AND workflow_name = $4
RETURNING 1"#),
            // A schedule declared in code: its definition follows the code, its status (paused
            // or not) and last fire stay as operators left them. Only a row of the same
            // application (or of none, for an application without a name) is updated; no
            // row back means the name is another application's.
            declare: f(r#"
INSERT INTO {s}.workflow_schedules (schedule_id, schedule_name, workflow_name, schedule,
    cron_timezone, queue_name, status, automatic_backfill, context, application_name)
VALUES (gen_random_uuid()::text, $1, $2, $3, $4, $5, 'ACTIVE', $6, 'null', $7)
ON CONFLICT (schedule_name) DO UPDATE SET workflow_name = EXCLUDED.workflow_name,
    schedule = EXCLUDED.schedule, cron_timezone = EXCLUDED.cron_timezone,
    queue_name = EXCLUDED.queue_name, automatic_backfill = EXCLUDED.automatic_backfill
WHERE {s}.workflow_schedules.application_name IS NOT DISTINCT FROM EXCLUDED.application_name
RETURNING 1"#),
            owner: f("SELECT application_name FROM {s}.workflow_schedules WHERE schedule_name = $1"),
            list: r.sql_with(
                "SELECT {columns} FROM {s}.workflow_schedules \
                 WHERE $1::text IS NULL OR schedule_name = $1 ORDER BY schedule_name",
                &[("columns", COLUMNS)],
            ),
            // The schedules an application fires: its own and those of no application (DBOS's
            // rule), never another application's.
            list_for_app: r.sql_with(
                "SELECT {columns} FROM {s}.workflow_schedules \
                 WHERE application_name IS NOT DISTINCT FROM $1 OR application_name IS NULL \
                 ORDER BY schedule_name",
                &[("columns", COLUMNS)],
            ),
            set_status: f("UPDATE {s}.workflow_schedules SET status = $2 WHERE schedule_name = $1 RETURNING 1"),
            delete: f("DELETE FROM {s}.workflow_schedules WHERE schedule_name = $1 RETURNING 1"),
            // Text comparison orders these timestamps: all are written in the same UTC form.
            fired: f("UPDATE {s}.workflow_schedules SET last_fired_at = $2 \
                 WHERE schedule_name = $1 AND (last_fired_at IS NULL OR last_fired_at < $2)"),
        }
    }
}

fn from_row(r: &sqlx::postgres::PgRow) -> Schedule {
    // A context that is not JSON is kept as it is, never read as null: the schedule then does
    // not fire (see `Schedule::validate`).
    let stored: Option<String> = r.get(8);
    let (context, unreadable_context) = match stored.as_deref().map(serde_json::from_str::<serde_json::Value>) {
        None => (serde_json::Value::Null, None),
        Some(Ok(value)) => (value, None),
        Some(Err(_)) => (serde_json::Value::Null, stored),
    };
    Schedule {
        name: r.get(0),
        workflow_name: r.get(1),
        cron: r.get(2),
        time_zone: r.get(3),
        queue: r.get(4),
        status: ScheduleStatus::parse(&r.get::<String, _>(5)),
        automatic_backfill: r.get(6),
        last_fired_at: r.get(7),
        context,
        unreadable_context,
        application_name: r.get(9),
    }
}

impl SystemDatabase {
    /// Creates a schedule owned by `app_name`, with its context as compact JSON; `false` if
    /// one of that name exists.
    pub(crate) async fn create_schedule(&self, s: &Schedule, app_name: Option<&str>) -> Result<bool> {
        let context = encode(&s.context, &format!("the context of schedule {}", s.name), self.payload_limit)?;
        let rows = q(&self.sql.schedules.create)
            .bind(&s.name)
            .bind(&s.workflow_name)
            .bind(&s.cron)
            .bind(&s.time_zone)
            .bind(&s.queue)
            .bind(s.status.as_str())
            .bind(s.automatic_backfill)
            .bind(context)
            .bind(app_name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("create schedule {}", s.name), e))?;
        Ok(!rows.is_empty())
    }

    /// Creates or updates a schedule declared in code, keeping its status and last fire.
    /// `legacy`: the name this schedule had before (the bare workflow name, for an application
    /// with a name), whose row of the same application and workflow is renamed, or dropped if
    /// the new name exists already. A name held by another application's row is refused.
    pub(crate) async fn declare_schedule(&self, s: &Schedule, app_name: Option<&str>, legacy: Option<&str>) -> Result<()> {
        let ctx = || format!("declare schedule {}", s.name);
        let stmts = &self.sql.schedules;
        let mut tx = self.pool.begin().await.map_err(|e| Error::db(ctx(), e))?;
        if let (Some(old), Some(app)) = (legacy.filter(|old| *old != s.name), app_name) {
            let outcomes = [
                (&stmts.drop_legacy, "deleted, as a row of the new name exists"),
                (&stmts.rename_legacy, "renamed, keeping its status and last fire"),
            ];
            for (statement, done) in outcomes {
                let hit = q(statement)
                    .bind(old)
                    .bind(&s.name)
                    .bind(app)
                    .bind(&s.workflow_name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| Error::db(ctx(), e))?;
                if hit.is_some() {
                    tracing::info!(schedule = %s.name, old, application = app,
                        "the code schedule of workflow {} is now named {}: its row under the old name was {done}",
                        s.workflow_name, s.name);
                    break;
                }
            }
        }
        let written = q(&stmts.declare)
            .bind(&s.name)
            .bind(&s.workflow_name)
            .bind(&s.cron)
            .bind(&s.time_zone)
            .bind(&s.queue)
            .bind(s.automatic_backfill)
            .bind(app_name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| Error::db(ctx(), e))?;
        if written.is_none() {
            let owner: Option<String> =
                q(&stmts.owner).bind(&s.name).fetch_optional(&mut *tx).await.map_err(|e| Error::db(ctx(), e))?.and_then(|r| r.get(0));
            return Err(Error::ScheduleConflict {
                schedule: s.name.clone(),
                workflow: s.workflow_name.clone(),
                owner,
                app: app_name.map(str::to_string),
            });
        }
        tx.commit().await.map_err(|e| Error::db(ctx(), e))?;
        Ok(())
    }

    /// Every schedule, or the one named.
    pub(crate) async fn list_schedules(&self, name: Option<&str>) -> Result<Vec<Schedule>> {
        let rows = q(&self.sql.schedules.list).bind(name).fetch_all(&self.pool).await.map_err(|e| Error::db("list schedules", e))?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// The schedules application `app` fires (its own and those of no application).
    pub(crate) async fn schedules_of(&self, app: Option<&str>) -> Result<Vec<Schedule>> {
        let rows = q(&self.sql.schedules.list_for_app).bind(app).fetch_all(&self.pool).await.map_err(|e| Error::db("list schedules", e))?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Sets a schedule's status; `false` if there is no such schedule.
    pub(crate) async fn set_schedule_status(&self, name: &str, status: ScheduleStatus) -> Result<bool> {
        let rows = q(&self.sql.schedules.set_status)
            .bind(name)
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("set the status of schedule {name}"), e))?;
        Ok(!rows.is_empty())
    }

    /// Deletes a schedule; `false` if there is no such schedule.
    pub(crate) async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let rows = q(&self.sql.schedules.delete)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("delete schedule {name}"), e))?;
        Ok(!rows.is_empty())
    }

    /// Records that a schedule fired the tick `tick` (kept if a later one is recorded).
    pub(crate) async fn schedule_fired(&self, name: &str, tick: &str) -> Result<()> {
        q(&self.sql.schedules.fired)
            .bind(name)
            .bind(tick)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(format!("record the last fire of schedule {name}"), e))?;
        Ok(())
    }
}

impl NewWorkflow {
    /// The row that runs `schedule`'s tick `tick`: enqueued for the schedule's application on
    /// its queue (DBOS's internal queue when it names none), its inputs at most `limit` bytes.
    pub(crate) fn tick(schedule: &Schedule, tick: DateTime<Utc>, app_version: Option<String>, limit: usize) -> Result<NewWorkflow> {
        let (id, inputs) = schedule.tick_inputs(tick, limit)?;
        let queue = schedule.queue.clone().unwrap_or_else(|| INTERNAL_QUEUE.to_string());
        let mut row =
            NewWorkflow::enqueued(id, schedule.workflow_name.clone(), inputs, queue, schedule.application_name.clone(), app_version);
        row.schedule_name = Some(schedule.name.clone());
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const LIMIT: usize = crate::model::config::DEFAULT_MAX_PAYLOAD_BYTES;

    #[test]
    fn a_tick_row_is_enqueued_for_the_schedules_application() {
        let t = Utc.with_ymd_and_hms(2026, 1, 31, 23, 0, 15).unwrap();
        let row = NewWorkflow::tick(&Schedule::new("nightly", "report", "0 3 * * *"), t, None, LIMIT).unwrap();
        assert_eq!(row.id, "sched-nightly-2026-01-31T23:00:15+00:00");
        assert_eq!(row.status, crate::model::status::Status::ENQUEUED);
        assert_eq!(row.queue_name.as_deref(), Some(INTERNAL_QUEUE));
        assert_eq!(row.schedule_name.as_deref(), Some("nightly"));
        assert_eq!(row.app_name, None);
        let mut s = Schedule::new("nightly", "report", "0 3 * * *").queue("reports");
        s.application_name = Some("billing".into());
        let row = NewWorkflow::tick(&s, t, Some("v2".into()), LIMIT).unwrap();
        assert_eq!(row.queue_name.as_deref(), Some("reports"));
        assert_eq!(row.app_name.as_deref(), Some("billing"));
        assert_eq!(row.app_version.as_deref(), Some("v2"));
    }
}
