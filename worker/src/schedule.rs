//! Schedules: cron expressions in IANA time zones, their ticks, and the schedules stored in
//! DBOS's `workflow_schedules` table.
//!
//! Invariants: a tick's workflow ID is `sched-{schedule}-{tick}` (the tick in ISO 8601 with its
//! UTC offset, as DBOS writes it), so however many processes fire a tick, one workflow runs;
//! a scheduled workflow receives `(scheduled_at, actual_at)`, both fixed when the tick is
//! enqueued, so a replay sees the same values.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::serialization::encode;
use crate::status::Status;
use crate::sysdb::{NewWorkflow, INTERNAL_QUEUE};

/// A cron expression or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(pub String);

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    zone: Tz,
}

impl CronSchedule {
    /// Parses 5 fields (minute first), 6 fields (seconds first) or a macro (`@hourly`, …), in
    /// an IANA time zone (default UTC).
    pub fn parse(expr: &str, zone: Option<&str>) -> std::result::Result<CronSchedule, InvalidSchedule> {
        let expr = expr.trim();
        if expr.contains("TZ=") {
            return Err(InvalidSchedule(format!(
                "schedule {expr:?} embeds a time zone; give the time zone separately"
            )));
        }
        let fields = expr.split_whitespace().count();
        let full = if expr.starts_with('@') {
            expr.to_string()
        } else {
            match fields {
                5 => format!("0 {expr}"),
                6 => expr.to_string(),
                n => {
                    return Err(InvalidSchedule(format!(
                        "schedule {expr:?} has {n} fields; use 5 (minute hour day-of-month month \
                         day-of-week), 6 (seconds first) or a macro such as @hourly"
                    )))
                }
            }
        };
        let schedule: cron::Schedule = full
            .parse()
            .map_err(|e| InvalidSchedule(format!("schedule {expr:?} is not a valid cron expression: {e}")))?;
        let zone = match zone {
            None | Some("") => Tz::UTC,
            Some(z) => z.parse::<Tz>().map_err(|_| {
                InvalidSchedule(format!(
                    "time zone {z:?} is not an IANA time zone name (for example Europe/Paris or UTC)"
                ))
            })?,
        };
        Ok(CronSchedule { schedule, zone })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t.with_timezone(&self.zone)).next().map(|d| d.with_timezone(&Utc))
    }

    /// The ticks in `(after, until]`, oldest first, at most `cap` (the oldest ones).
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, cap: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut cursor = after;
        while ticks.len() < cap {
            match self.next_after(cursor) {
                Some(t) if t <= until => {
                    ticks.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        ticks
    }

    /// The latest tick in `(floor, now]`, found by widening a window back from `now`, so a
    /// long outage of a frequent schedule costs a handful of steps, not one per missed tick.
    pub fn latest_between(&self, floor: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut width = chrono::Duration::seconds(1);
        loop {
            let start = (now - width).max(floor);
            if let Some(first) = self.next_after(start).filter(|t| *t <= now) {
                let mut latest = first;
                while let Some(t) = self.next_after(latest).filter(|t| *t <= now) {
                    latest = t;
                }
                return Some(latest);
            }
            if start == floor {
                return None;
            }
            width = width * 2;
        }
    }
}

/// A tick as DBOS writes it: `2026-01-31T23:00:15+00:00` (seconds unless it has a fraction).
pub fn format_tick(t: DateTime<Utc>) -> String {
    let fixed = t.with_timezone(&chrono::FixedOffset::east_opt(0).expect("zero is a valid offset"));
    fixed.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The workflow ID of a tick: `sched-{schedule}-{tick}`.
pub fn tick_workflow_id(schedule_name: &str, tick: DateTime<Utc>) -> String {
    format!("sched-{schedule_name}-{}", format_tick(tick))
}

/// Whether a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ScheduleStatus {
    #[default]
    Active,
    Paused,
}

impl ScheduleStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleStatus::Active => "ACTIVE",
            ScheduleStatus::Paused => "PAUSED",
        }
    }

    pub(crate) fn parse(s: &str) -> ScheduleStatus {
        if s.eq_ignore_ascii_case("PAUSED") {
            ScheduleStatus::Paused
        } else {
            ScheduleStatus::Active
        }
    }
}

/// A schedule: run workflow `workflow_name` at every tick of `cron` in `time_zone`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// Unique name; part of every tick's workflow ID.
    pub name: String,
    pub workflow_name: String,
    /// 5 fields, 6 fields (seconds first) or a macro such as `@daily`.
    pub cron: String,
    /// IANA time zone of the cron expression (default UTC).
    pub time_zone: Option<String>,
    /// The queue ticks are enqueued on (default: the internal queue).
    pub queue: Option<String>,
    pub status: ScheduleStatus,
    /// After downtime, fire the ticks missed since the last fire (at most 100). Off by
    /// default: missed ticks are skipped, and [`Client::backfill_schedule`](crate::Client::backfill_schedule)
    /// runs them on request.
    pub automatic_backfill: bool,
    /// The last tick fired (as in its workflow ID).
    pub last_fired_at: Option<String>,
    /// DBOS's free-form context column (not passed to mainstay workflows).
    pub context: serde_json::Value,
}

impl Schedule {
    /// An active schedule of `workflow_name` on `cron`, in UTC, on the internal queue.
    pub fn new(name: impl Into<String>, workflow_name: impl Into<String>, cron: impl Into<String>) -> Schedule {
        Schedule {
            name: name.into(),
            workflow_name: workflow_name.into(),
            cron: cron.into(),
            time_zone: None,
            queue: None,
            status: ScheduleStatus::Active,
            automatic_backfill: false,
            last_fired_at: None,
            context: serde_json::Value::Null,
        }
    }

    pub fn time_zone(mut self, zone: impl Into<String>) -> Schedule {
        self.time_zone = Some(zone.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Schedule {
        self.queue = Some(queue.into());
        self
    }

    /// Checks the schedule and parses its cron expression; errors name the field.
    pub fn validate(&self) -> Result<CronSchedule> {
        if self.name.trim().is_empty() {
            return Err(Error::Config("a schedule needs a name".into()));
        }
        if self.workflow_name.trim().is_empty() {
            return Err(Error::Config(format!("schedule {}: the workflow name is empty", self.name)));
        }
        CronSchedule::parse(&self.cron, self.time_zone.as_deref())
            .map_err(|e| Error::Config(format!("schedule {}: {e}", self.name)))
    }

    /// The workflow row that runs tick `tick`, enqueued at `actual`.
    pub(crate) fn tick_row(&self, tick: DateTime<Utc>, actual: DateTime<Utc>, app_version: Option<String>) -> Result<NewWorkflow> {
        let id = tick_workflow_id(&self.name, tick);
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let inputs = encode(
            &serde_json::json!({"positionalArgs": [stamp(tick), stamp(actual)], "namedArgs": {}}),
            &format!("the inputs of workflow {id}"),
        )?;
        Ok(NewWorkflow {
            id,
            name: self.workflow_name.clone(),
            status: Status::ENQUEUED,
            inputs,
            owner: None,
            executor_id: None,
            app_version,
            app_name: None,
            queue_name: Some(self.queue.clone().unwrap_or_else(|| INTERNAL_QUEUE.to_string())),
            parent_id: None,
            timeout_ms: None,
            deadline_ms: None,
            priority: 0,
            deduplication_id: None,
            partition_key: None,
            delay_until_ms: None,
            recovery_attempts: 0,
            schedule_name: Some(self.name.clone()),
        })
    }
}

/// Parses a tick back from its text (as stored in `last_fired_at`).
pub(crate) fn parse_tick(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// The current time at millisecond precision, the precision ticks and their IDs are written in.
pub(crate) fn now_utc() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(crate::context::now_ms()).single().unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn five_six_fields_and_macros_parse_and_bad_input_is_explained() {
        assert!(CronSchedule::parse("*/5 * * * *", None).is_ok());
        assert!(CronSchedule::parse("*/10 * * * * *", Some("UTC")).is_ok());
        assert!(CronSchedule::parse("@hourly", Some("Europe/Paris")).is_ok());
        let e = CronSchedule::parse("* * *", None).unwrap_err().0;
        assert!(e.contains("3 fields"), "{e}");
        let e = CronSchedule::parse("61 * * * *", None).unwrap_err().0;
        assert!(e.contains("not a valid cron"), "{e}");
        let e = CronSchedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err().0;
        assert!(e.contains("IANA"), "{e}");
        let e = CronSchedule::parse("CRON_TZ=UTC * * * * *", None).unwrap_err().0;
        assert!(e.contains("time zone separately"), "{e}");
    }

    #[test]
    fn ticks_between_are_bounded_and_ordered() {
        let s = CronSchedule::parse("*/10 * * * * *", None).unwrap();
        let ticks = s.ticks_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0), 100);
        assert_eq!(ticks.len(), 6);
        assert_eq!(ticks[0], utc(2026, 1, 1, 0, 0, 10));
        assert_eq!(s.ticks_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 1, 0, 0), 3).len(), 3);
        assert_eq!(s.latest_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 55)), Some(utc(2026, 1, 1, 0, 0, 50)));
    }

    #[test]
    fn tick_ids_are_deterministic_and_dbos_shaped() {
        let t = utc(2026, 1, 31, 23, 0, 15);
        assert_eq!(tick_workflow_id("nightly", t), "sched-nightly-2026-01-31T23:00:15+00:00");
        assert_eq!(parse_tick("2026-01-31T23:00:15+00:00"), Some(t));
        let row = Schedule::new("nightly", "report", "0 3 * * *").tick_row(t, t, None).unwrap();
        assert_eq!(row.inputs, r#"{"namedArgs":{},"positionalArgs":["2026-01-31T23:00:15.000Z","2026-01-31T23:00:15.000Z"]}"#);
        assert_eq!(row.queue_name.as_deref(), Some(INTERNAL_QUEUE));
    }
}
