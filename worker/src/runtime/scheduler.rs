//! The in-process scheduler: fires the ticks of every active schedule of this application (or
//! of none) whose workflow this process runs.
//!
//! Invariants: every process may fire every tick; the deterministic tick ID makes all but the
//! first enqueue of a tick a no-op, so a tick runs once however many processes race. A process
//! fires only ticks after it first saw the schedule active (or, for schedules with automatic backfill, after the
//! recorded last fire, at most a day back): downtime never silently replays a backlog. A tick
//! whose enqueue failed is tried again on the next round, not skipped. A schedule that cannot
//! fire as stored (a bad cron expression or time zone, a context that is not JSON) is reported
//! once per definition and skipped, never fired with something else.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::error::Result;
use crate::model::schedule::{format_tick, now_utc, parse_tick, CronSchedule, Schedule, ScheduleStatus};
use crate::runtime::app::Runtime;
use crate::sysdb::{NewWorkflow, StartOutcome};

/// Most ticks of one schedule fired in one round.
const MAX_TICKS_PER_ROUND: usize = 100;
/// How far back automatic backfill reaches.
const BACKFILL_HORIZON: chrono::Duration = chrono::Duration::days(1);

pub(crate) fn start(rt: Arc<Runtime>) {
    let tasks = rt.tasks.clone();
    tasks.spawn(run(rt));
}

struct Active {
    schedule: Schedule,
    cron: CronSchedule,
    /// The last tick handled.
    cursor: DateTime<Utc>,
}

async fn run(rt: Arc<Runtime>) {
    let mut active: HashMap<String, Active> = HashMap::new();
    // Per schedule, the last problem reported, so each is logged once, until it changes.
    let mut invalid_reported: HashMap<String, String> = HashMap::new();
    loop {
        match rt.db.schedules_of(rt.config.app_name.as_deref()).await {
            Ok(rows) => refresh(&rt, &mut active, &mut invalid_reported, rows),
            Err(e) => tracing::warn!(error = %e, "cannot read schedules; retrying"),
        }
        let now = now_utc();
        for a in active.values_mut() {
            for tick in a.cron.ticks_between(a.cursor, now, MAX_TICKS_PER_ROUND) {
                match fire(&rt, &a.schedule, tick).await {
                    Ok(()) => a.cursor = tick,
                    Err(e) => {
                        tracing::warn!(schedule = %a.schedule.name, tick = %format_tick(tick), error = %e,
                            "cannot enqueue a scheduled run; retrying");
                        break;
                    }
                }
            }
        }
        // Sleep until the next tick, but look at the schedules again every polling interval.
        let next = active.values().filter_map(|a| a.cron.next_after(a.cursor.max(now))).min();
        let mut wait = rt.config.polling_interval;
        if let Some(next) = next {
            let until = (next - now_utc()).to_std().unwrap_or_default();
            wait = wait.min(until);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rt.shutdown.cancelled() => return,
        }
    }
}

/// Brings the active set in line with the stored schedules of workflows registered here.
fn refresh(rt: &Runtime, active: &mut HashMap<String, Active>, invalid_reported: &mut HashMap<String, String>, rows: Vec<Schedule>) {
    let mut seen = Vec::new();
    for s in rows {
        if s.status != ScheduleStatus::Active || rt.registry.get(&s.workflow_name).is_none() {
            continue;
        }
        let cron = match s.validate() {
            Ok(cron) => cron,
            Err(e) => {
                let problem = e.to_string();
                if invalid_reported.get(&s.name) != Some(&problem) {
                    tracing::error!(schedule = %s.name, error = %problem, "schedule cannot fire; fix or delete it");
                    invalid_reported.insert(s.name.clone(), problem);
                }
                continue;
            }
        };
        seen.push(s.name.clone());
        match active.get_mut(&s.name) {
            Some(a) => {
                a.cron = cron;
                a.schedule = s;
            }
            None => {
                let now = now_utc();
                let cursor = match s.last_fired_at.as_deref().and_then(parse_tick) {
                    Some(last) if s.automatic_backfill => last.max(now - BACKFILL_HORIZON),
                    _ => now,
                };
                active.insert(s.name.clone(), Active { schedule: s, cron, cursor });
            }
        }
    }
    active.retain(|name, _| seen.contains(name));
}

/// Enqueues the run of `tick` (a no-op if any process already did) and records the fire.
async fn fire(rt: &Runtime, schedule: &Schedule, tick: DateTime<Utc>) -> Result<()> {
    // No version: the tick runs on the application's latest version (an old version still
    // draining fires ticks too, and must not pin them to its old code). The schedule's
    // application runs it; one of no application, the application that fires it (as in DBOS).
    let mut row = NewWorkflow::tick(schedule, tick, None, rt.db.payload_limit())?;
    row.app_name = row.app_name.or_else(|| rt.config.app_name.clone());
    let queue = row.queue_name.clone().unwrap_or_default();
    if let StartOutcome::Inserted = rt.committer.start_workflow(row).await? {
        tracing::debug!(schedule = %schedule.name, tick = %format_tick(tick), "scheduled run enqueued");
    }
    rt.announce(&queue);
    rt.db.schedule_fired(&schedule.name, &format_tick(tick)).await
}
