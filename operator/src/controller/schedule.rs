//! The Schedule controller: fires each cron tick by enqueuing the workflow under the tick's
//! deterministic ID.
//!
//! Exactly once per tick: the workflow ID `sched-{namespace}/{name}-{tick}` is the idempotency
//! key (namespaced, so Schedules of one name in two namespaces on one database never collide), and
//! `status.lastScheduleTime` is only a cursor. If the operator dies after enqueuing and before
//! writing status, or two replicas race, the next reconcile enqueues the same IDs again and
//! the database keeps the first. Missed ticks are caught up within the starting deadline (see
//! [`crate::ticks`]); the concurrency policy applies per tick.
//!
//! After firing, the schedule's runs are shown as WorkflowRun objects it owns (see
//! [`crate::schedule_runs`]): created after the enqueue, never instead of it, and pruned to the
//! history limits. Deleting the Schedule deletes them (garbage collection), not the workflows.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, CustomResourceExt as _, Resource, ResourceExt};
use mainstay::{Status, WorkflowFilter, WorkflowOptions, INTERNAL_QUEUE};
use mainstay_crds::{Schedule, ScheduleStatus, WorkflowRun, WorkflowRunSpec};

use super::{
    error_policy, forget_deleted, is_paused, kube_err, log_outcome, object_key, primary, reconciled, refusal, write_status, Context, Error,
};
use crate::conditions::{is_true, set};
use crate::metrics::ObjectLabels;
use crate::names::{
    condition, event, reason, ANNOTATION_PAUSED, ANNOTATION_SCHEDULED_TIME, ANNOTATION_TRIGGER, LABEL_MANAGED_BY, LABEL_SCHEDULE,
    MANAGED_BY,
};
use crate::policy::{self, TickAction};
use crate::runnable::Start;
use crate::schedule_runs::{self, Outcome, Run, MAX_UNFINISHED_SHOWN};
use crate::stores::scoped_api;
use crate::ticks::{parse_time, rfc3339_offset, tick_workflow_id, Plan};
use crate::validate;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "schedule";

/// How long after a tick the reconcile runs (clocks and timers are not exact).
const AFTER_TICK: Duration = Duration::from_millis(20);
/// Longest wait between reconciles when the next tick is further away (a safety net against
/// clock jumps: a run of the schedule that starts or ends brings its Schedule back at once,
/// through the watch of its WorkflowRuns).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most active run IDs shown in status.
const MAX_ACTIVE_SHOWN: usize = 10;

/// Runs the controller until the stream ends (the caller drops it to stop).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let schedules = scoped_api::<Schedule>(&ctx.kube, namespace.as_deref());
    let (reader, trigger) = primary(schedules);
    let controller = Controller::for_stream(trigger, reader);
    let sweeper = {
        let ctx = ctx.clone();
        tokio::spawn(forget_deleted(controller.store(), move |live| {
            ctx.sweep_schedules(&live);
            std::future::ready(())
        }))
    };
    // The schedule's runs, as WorkflowRuns it owns: a change of phase (a run started or ended)
    // updates its window of runs and its status; their other status changes (steps) do not.
    let runs = scoped_api::<WorkflowRun>(&ctx.kube, namespace.as_deref());
    let phases = watcher(runs, watcher::Config::default().labels(LABEL_SCHEDULE))
        .default_backoff()
        .applied_objects()
        .predicate_filter(run_phase, Default::default());
    controller
        .owns_stream(phases)
        // Every Schedule says whether the installed CRD is outdated.
        .reconcile_all_on(ctx.crd_drift.changes(Schedule::crd_name()))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(CONTROLLER, r))
        .await;
    sweeper.abort();
}

/// What a Schedule acts on in one of its runs: its phase.
fn run_phase(run: &WorkflowRun) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run.status.as_ref().and_then(|s| s.phase.as_ref()).map(|p| format!("{p:?}")).hash(&mut h);
    Some(h.finish())
}

async fn reconcile(s: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconciled(CONTROLLER, s, &ctx, |s| apply(s, &ctx), |s| cleanup(s, &ctx)).await
}

/// Nothing fires for a Schedule being deleted; its past runs stay in the database.
async fn cleanup(s: Arc<Schedule>, ctx: &Context) -> Result<Action, Error> {
    let labels = ObjectLabels { namespace: s.namespace().unwrap_or_default(), name: s.name_any() };
    ctx.metrics.schedule_fires.remove(&labels);
    ctx.metrics.schedule_missed.remove(&labels);
    Ok(Action::await_change())
}

/// Most ticks one backfill runs.
const MAX_BACKFILL: usize = 10_000;

/// How a backfill range is recorded as done.
fn backfill_key(b: &mainstay_crds::BackfillSpec) -> String {
    format!("{}/{}", b.start, b.end)
}

fn not_ready(status: &mut ScheduleStatus, generation: Option<i64>, now: DateTime<Utc>, why: &str, msg: &str, degraded: bool) {
    set(&mut status.conditions, condition::READY, false, why, msg, generation, now);
    set(
        &mut status.conditions,
        condition::DEGRADED,
        degraded,
        if degraded { why } else { reason::AS_EXPECTED },
        if degraded { msg } else { "" },
        generation,
        now,
    );
}

async fn apply(s: Arc<Schedule>, ctx: &Context) -> Result<Action, Error> {
    let key = object_key(s.as_ref());
    let now = Utc::now();
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    // In the database a Schedule is `{namespace}/{name}`: Schedules of one name in two
    // namespaces sharing a database never share tick IDs.
    let db_name = format!("{ns}/{name}");
    let generation = s.metadata.generation;
    let api = Api::<Schedule>::namespaced(ctx.kube.clone(), &ns);
    let current = s.status.clone();
    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = generation;
    if is_paused(s.as_ref()) {
        let msg = format!("reconciliation is paused by annotation {ANNOTATION_PAUSED}=true: no ticks fire; remove it to resume");
        not_ready(&mut status, generation, now, reason::PAUSED, &msg, false);
        status.next_schedule_time = None;
        write_status(ctx, &api, &s, current.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }

    let valid = match validate::schedule(&s) {
        Ok(v) => v,
        Err(invalid) => {
            let msg = invalid.to_string();
            let known = status.conditions.iter().any(|c| c.type_ == condition::DEGRADED && c.message == msg);
            not_ready(&mut status, generation, now, reason::INVALID_SPEC, &msg, true);
            status.next_schedule_time = None;
            write_status(ctx, &api, &s, current.as_ref(), &status).await?;
            if !known {
                ctx.event(s.as_ref(), true, event::INVALID_SPEC, "Validate", msg).await;
            }
            return Ok(Action::await_change());
        }
    };
    // Runs on demand: a new value of the trigger annotation, a new backfill range. They run
    // even while the schedule is suspended (as a Job made from a suspended CronJob does).
    let trigger = s.annotations().get(ANNOTATION_TRIGGER).cloned().filter(|t| status.last_trigger.as_ref() != Some(t));
    let backfill = s.spec.backfill.clone().filter(|b| status.last_backfill.as_deref() != Some(backfill_key(b).as_str()));
    let found = ctx
        .stores
        .app_or_fetch(&ctx.kube, &ns, &s.spec.app_ref)
        .await
        .map_err(kube_err(format!("read DurableApp {ns}/{}", s.spec.app_ref)))?;
    let Some(app) = found else {
        let msg = format!("DurableApp {ns}/{} does not exist; create it or fix spec.appRef", s.spec.app_ref);
        not_ready(&mut status, generation, now, reason::APP_NOT_FOUND, &msg, true);
        write_status(ctx, &api, &s, current.as_ref(), &status).await?;
        return Ok(Action::requeue(ctx.backoff(&key)));
    };
    // Until the app's database is migrated there is nowhere to enqueue to; wait for it quietly
    // (ticks meanwhile are caught up within the starting deadline) rather than report errors.
    let migrated = app.status.as_ref().is_some_and(|st| is_true(&st.conditions, condition::MIGRATED));
    if !migrated {
        let msg = format!("waiting for DurableApp {ns}/{} to migrate its system database", s.spec.app_ref);
        not_ready(&mut status, generation, now, reason::APP_NOT_MIGRATED, &msg, false);
        write_status(ctx, &api, &s, current.as_ref(), &status).await?;
        return Ok(Action::requeue(ctx.settings.poll_interval));
    }
    let db = match ctx.databases.client(&ctx.kube, &ctx.stores, &app).await {
        Ok(db) => db,
        Err(e) => {
            let why = if e.is_secret_problem() { reason::SECRET_NOT_FOUND } else { reason::DATABASE_UNREACHABLE };
            not_ready(&mut status, generation, now, why, &e.to_string(), true);
            write_status(ctx, &api, &s, current.as_ref(), &status).await?;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };

    // A workflow the app's current version does not register, or does not take (scheduled_at,
    // context), or a queue its workers do not listen to, would wait or fail forever: say so,
    // and fire nothing until it is fixed. Unknown (no worker of that version has launched yet)
    // is not an error.
    let checked = Start {
        workflow: &s.spec.workflow_name,
        arguments: Some((2, "the schedule's call (scheduled_at, context)")),
        queue: s.spec.queue.as_deref().map(|q| (q, "spec.queue")),
    };
    match refusal(ctx, &db, &app, None, &checked).await {
        Ok(Some(r)) => {
            let known = status.conditions.iter().any(|c| c.type_ == condition::DEGRADED && c.message == r.message);
            not_ready(&mut status, generation, now, r.reason, &r.message, true);
            write_status(ctx, &api, &s, current.as_ref(), &status).await?;
            if !known {
                ctx.event(s.as_ref(), true, r.reason, "Validate", r.message).await;
            }
            // Looked at again when the app changes version, or after a while.
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(schedule = %key, error = %e, "cannot read what the app's workers run; firing anyway"),
    }

    let queue = s.spec.queue.clone().unwrap_or_else(|| INTERNAL_QUEUE.to_string());
    let args_for = |tick: DateTime<Utc>| {
        vec![serde_json::Value::String(rfc3339_offset(tick)), s.spec.input.clone().unwrap_or(serde_json::Value::Null)]
    };
    if let Some(token) = trigger {
        // One run per annotation value: its workflow ID is the value's, whatever retries do.
        let id = format!("sched-{db_name}-trigger-{token}");
        let options = WorkflowOptions::new().id(id.clone()).schedule_name(db_name.clone());
        if let Err(e) = db.enqueue(&s.spec.workflow_name, &queue, args_for(now), options).await {
            return enqueue_failed(&api, &s, ctx, current, status, now, &format!("failed to enqueue the triggered run {id}: {e}")).await;
        }
        ctx.event(s.as_ref(), false, event::TRIGGERED, "Trigger", format!("enqueued workflow {id} ({ANNOTATION_TRIGGER}={token})")).await;
        status.last_trigger = Some(token);
    }
    if let Some(b) = backfill {
        let range = match (parse_time(&b.start), parse_time(&b.end)) {
            (Some(start), Some(end)) if start < end => Some((start, end)),
            _ => None,
        };
        let Some((start, end)) = range else {
            let msg = format!(
                "spec.backfill {}..{} is not a range of RFC 3339 times with start before end (e.g. start: 2026-01-31T00:00:00Z)",
                b.start, b.end
            );
            not_ready(&mut status, generation, now, reason::INVALID_SPEC, &msg, true);
            write_status(ctx, &api, &s, current.as_ref(), &status).await?;
            return Ok(Action::await_change());
        };
        // `[start, end)`: ticks after start - 1 ns, up to end - 1 ns; each under its tick's ID.
        // Never past now: a future tick runs when it comes, under the same ID.
        let step = chrono::Duration::nanoseconds(1);
        let ticks = valid.cron.ticks_between(start - step, end.min(now) - step, MAX_BACKFILL + 1);
        if ticks.len() > MAX_BACKFILL {
            let msg = format!(
                "spec.backfill {}..{} holds more than {MAX_BACKFILL} ticks; split it into smaller ranges (nothing of it ran)",
                b.start, b.end
            );
            not_ready(&mut status, generation, now, reason::INVALID_SPEC, &msg, true);
            write_status(ctx, &api, &s, current.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
        for tick in &ticks {
            let id = tick_workflow_id(&db_name, *tick);
            let options = WorkflowOptions::new().id(id.clone()).schedule_name(db_name.clone());
            if let Err(e) = db.enqueue(&s.spec.workflow_name, &queue, args_for(*tick), options).await {
                return enqueue_failed(&api, &s, ctx, current, status, now, &format!("failed to backfill tick {id}: {e}")).await;
            }
        }
        let note = format!("backfilled {} tick(s) in [{}, {}) (each runs at most once)", ticks.len(), b.start, b.end);
        ctx.event(s.as_ref(), false, event::BACKFILLED, "Backfill", note).await;
        status.last_backfill = Some(backfill_key(&b));
    }
    if s.spec.suspend {
        // Runs fired before (or on demand) still finish, and their objects follow them.
        let unfinished = show_runs(ctx, &s, &db, &db_name, &mut status).await;
        not_ready(&mut status, generation, now, reason::SUSPENDED, "suspended: no ticks fire", false);
        status.next_schedule_time = None;
        write_status(ctx, &api, &s, current.as_ref(), &status).await?;
        return Ok(if unfinished { Action::requeue(MAX_WAIT) } else { Action::await_change() });
    }

    let cursor = status
        .last_schedule_time
        .as_deref()
        .and_then(parse_time)
        .or_else(|| s.metadata.creation_timestamp.as_ref().and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.0.as_millisecond())))
        .unwrap_or(now);
    let plan = valid.cron.plan(cursor, now, valid.deadline);
    let labels = ObjectLabels { namespace: ns.clone(), name: name.clone() };
    if let Some(late) = plan.missed_beyond_deadline {
        ctx.metrics.schedule_missed.get_or_create(&labels).inc_by(plan.skipped.max(1) as u64);
        ctx.schedules_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        let note = format!(
            "missed {} tick(s), the latest at {}: more than startingDeadlineSeconds late, not run",
            plan.skipped.max(1),
            rfc3339_offset(late)
        );
        ctx.event(s.as_ref(), true, event::MISSED, "Schedule", note).await;
    }
    if plan.too_many_missed {
        let note = "more than 100 ticks were missed; check the operator's availability and clocks".to_string();
        ctx.event(s.as_ref(), true, event::TOO_MANY_MISSED, "Schedule", note).await;
    }

    let active_filter = WorkflowFilter::active().schedule_name(db_name.clone()).oldest_first(true);
    let mut active: Vec<String> = match db.list_workflows(&active_filter).await {
        Ok(runs) => runs.into_iter().map(|r| r.workflow_id).collect(),
        Err(e) => {
            return enqueue_failed(&api, &s, ctx, current, status, now, &format!("failed to list the runs of schedule {key}: {e}")).await
        }
    };
    for tick in &plan.due {
        let id = tick_workflow_id(&db_name, *tick);
        let others: Vec<String> = active.iter().filter(|a| **a != id).cloned().collect();
        let fire = match policy::decide(s.spec.concurrency_policy, &others) {
            TickAction::Fire => true,
            TickAction::Skip { running } => {
                let note =
                    format!("tick {} skipped: {} still running (concurrencyPolicy Forbid)", rfc3339_offset(*tick), running.join(", "));
                ctx.event(s.as_ref(), false, event::SKIPPED, "Schedule", note).await;
                false
            }
            TickAction::ReplaceThenFire { cancel } => {
                for old in &cancel {
                    if let Err(e) = db.cancel(old).await {
                        tracing::warn!(schedule = %key, workflow = %old, error = %e, "failed to cancel a replaced run");
                    }
                }
                active.retain(|a| !cancel.contains(a));
                let note = format!("cancelled {} to start tick {} (concurrencyPolicy Replace)", cancel.join(", "), rfc3339_offset(*tick));
                ctx.event(s.as_ref(), false, event::REPLACED, "Schedule", note).await;
                true
            }
        };
        if fire {
            let args = args_for(*tick);
            let options = WorkflowOptions::new().id(id.clone()).schedule_name(db_name.clone());
            if let Err(e) = db.enqueue(&s.spec.workflow_name, &queue, args, options).await {
                let msg = format!("failed to enqueue tick {} as workflow {id}: {e}", rfc3339_offset(*tick));
                return enqueue_failed(&api, &s, ctx, current, status, now, &msg).await;
            }
            ctx.metrics.schedule_fires.get_or_create(&labels).inc();
            ctx.schedules_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
            if !active.contains(&id) {
                active.push(id.clone());
            }
            tracing::info!(schedule = %key, workflow = %id, "fired");
            // One message for every fire, so fires fold into one Event series instead of an
            // Event object per tick (a schedule firing every second would flood the namespace).
            let note = "enqueued the workflow of a tick (its ID is in status.lastWorkflowId)".to_string();
            ctx.event(s.as_ref(), false, event::FIRED, "Schedule", note).await;
            status.last_workflow_id = Some(id);
        }
        status.last_schedule_time = Some(rfc3339_offset(*tick));
    }
    if plan.due.is_empty() && plan.missed_beyond_deadline.is_some() {
        // Move the cursor past ticks reported as missed, so they are reported once.
        status.last_schedule_time = plan.missed_beyond_deadline.map(rfc3339_offset);
    }

    show_runs(ctx, &s, &db, &db_name, &mut status).await;
    status.active = active.into_iter().rev().take(MAX_ACTIVE_SHOWN).collect();
    status.next_schedule_time = plan.next.map(rfc3339_offset);
    let msg = match plan.next {
        Some(next) => format!("next tick at {}", rfc3339_offset(next)),
        None => "the schedule has no further ticks".to_string(),
    };
    // The newest finished run says whether runs work: a failing one makes the Schedule not
    // Ready (it still fires), with the error.
    let finished = WorkflowFilter::new()
        .schedule_name(db_name.clone())
        .statuses([Status::Success, Status::Error, Status::MaxRecoveryAttemptsExceeded])
        .limit(1);
    let failing = match db.list_workflows(&finished).await {
        Ok(last) => last.into_iter().next().filter(|w| w.status != Status::Success),
        Err(_) => None,
    };
    match failing {
        Some(w) => {
            let why = crate::run_status::error_of(w.error.as_deref())
                .map(|e| format!("{}: {}", e.name, e.message))
                .unwrap_or_else(|| w.status.to_string());
            let msg = format!("the latest finished run, {}, ended {}: {why}; {msg}", w.workflow_id, w.status);
            let known = status.conditions.iter().any(|c| c.type_ == condition::DEGRADED && c.message == msg);
            not_ready(&mut status, generation, now, reason::RUNS_FAILING, &msg, true);
            if !known {
                ctx.event(s.as_ref(), true, event::RUNS_FAILING, "Schedule", msg).await;
            }
        }
        None => {
            set(&mut status.conditions, condition::READY, true, reason::SCHEDULING, msg, generation, now);
            // It still fires, but a spec field the API server dropped falls back to its default.
            let missing = ctx.crd_drift.missing(Schedule::crd_name());
            if missing.is_empty() {
                set(&mut status.conditions, condition::DEGRADED, false, reason::AS_EXPECTED, "", generation, now);
            } else {
                let msg = crate::crd_drift::outdated_message(Schedule::crd_name(), &missing);
                set(&mut status.conditions, condition::DEGRADED, true, reason::CRD_OUTDATED, msg, generation, now);
            }
        }
    }
    write_status(ctx, &api, &s, current.as_ref(), &status).await?;
    let wait = plan.next.and_then(|next| (next - Utc::now()).to_std().ok()).map(|d| d + AFTER_TICK).unwrap_or(AFTER_TICK).min(MAX_WAIT);
    ctx.succeeded(&key);
    Ok(Action::requeue(wait))
}

async fn enqueue_failed(
    api: &Api<Schedule>,
    s: &Schedule,
    ctx: &Context,
    current: Option<ScheduleStatus>,
    mut status: ScheduleStatus,
    now: DateTime<Utc>,
    msg: &str,
) -> Result<Action, Error> {
    tracing::warn!(schedule = %object_key(s), error = msg, "firing failed; retrying");
    not_ready(&mut status, s.metadata.generation, now, reason::ENQUEUE_FAILED, msg, true);
    write_status(ctx, api, s, current.as_ref(), &status).await?;
    Ok(Action::requeue(ctx.backoff(&object_key(s))))
}

/// Shows the schedule's runs as WorkflowRun objects and notes the last success; whether any
/// run is unfinished. The objects are a view: a failure here is logged and healed next time.
async fn show_runs(ctx: &Context, s: &Schedule, db: &mainstay::Client, db_name: &str, status: &mut ScheduleStatus) -> bool {
    let key = object_key(s);
    match runs_of(db, db_name, s).await {
        Ok(runs) => {
            if let Some(w) = runs.succeeded.first() {
                let at = w.completed_at_ms.unwrap_or(w.updated_at_ms);
                status.last_successful_time = DateTime::<Utc>::from_timestamp_millis(at).map(rfc3339_offset);
            }
            if let Err(e) = sync_runs(ctx, s, db_name, &runs).await {
                tracing::warn!(schedule = %key, error = %e, "cannot bring the schedule's WorkflowRuns up to date");
            }
            !runs.unfinished.is_empty()
        }
        Err(e) => {
            tracing::warn!(schedule = %key, error = %e, "cannot list the schedule's runs");
            true
        }
    }
}

/// The schedule's runs that may be shown: the newest unfinished ones, and the newest
/// succeeded and failed ones within the history limits.
struct Runs {
    unfinished: Vec<mainstay::WorkflowStatus>,
    /// Newest first (at least one, for `status.lastSuccessfulTime`).
    succeeded: Vec<mainstay::WorkflowStatus>,
    failed: Vec<mainstay::WorkflowStatus>,
}

async fn runs_of(db: &mainstay::Client, db_name: &str, s: &Schedule) -> Result<Runs, mainstay::Error> {
    let list = |statuses: Vec<Status>, limit: usize| WorkflowFilter::new().schedule_name(db_name).statuses(statuses).limit(limit as u32);
    let unfinished = db.list_workflows(&list(WorkflowFilter::active().statuses, MAX_UNFINISHED_SHOWN)).await?;
    let succeeded = db.list_workflows(&list(vec![Status::Success], s.spec.successful_runs_history_limit.max(1) as usize)).await?;
    let failed_statuses = vec![Status::Error, Status::Cancelled, Status::MaxRecoveryAttemptsExceeded];
    let failed = match s.spec.failed_runs_history_limit {
        0 => Vec::new(),
        n => db.list_workflows(&list(failed_statuses, n as usize)).await?,
    };
    Ok(Runs { unfinished, succeeded, failed })
}

/// Creates the WorkflowRun objects of runs to show and deletes those of runs no longer shown
/// (see [`crate::schedule_runs`]). Objects are created, never applied: a user's change to one
/// (say `spec.cancel`) is not undone.
async fn sync_runs(ctx: &Context, s: &Schedule, db_name: &str, runs: &Runs) -> Result<(), Error> {
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let uid = s.uid().unwrap_or_default();
    let api = Api::<WorkflowRun>::namespaced(ctx.kube.clone(), &ns);
    // Only objects this Schedule owns: a user's own object with the label is left alone.
    let existing: Vec<String> = ctx
        .stores
        .runs_of_schedule(&ns, &name)
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .map(|r| r.name_any())
        .collect();
    let as_run =
        |w: &mainstay::WorkflowStatus, outcome| Run { workflow_id: w.workflow_id.clone(), outcome, created_at_ms: w.created_at_ms };
    let mut all: Vec<Run> = runs.unfinished.iter().map(|w| as_run(w, Outcome::Unfinished)).collect();
    let successful = s.spec.successful_runs_history_limit.max(0) as usize;
    all.extend(runs.succeeded.iter().take(successful).map(|w| as_run(w, Outcome::Succeeded)));
    all.extend(runs.failed.iter().map(|w| as_run(w, Outcome::Failed)));
    let sync = schedule_runs::plan(&name, db_name, &all, &existing, successful, s.spec.failed_runs_history_limit.max(0) as usize);
    for new in &sync.create {
        let mut run = WorkflowRun::new(
            &new.name,
            WorkflowRunSpec {
                app_ref: s.spec.app_ref.clone(),
                workflow_name: s.spec.workflow_name.clone(),
                input: None,
                queue: s.spec.queue.clone(),
                priority: None,
                deduplication_id: None,
                timeout_seconds: None,
                app_version: None,
                workflow_id: Some(new.workflow_id.clone()),
                cancel: false,
                resume: 0,
                fork_of: None,
                messages: Vec::new(),
                ttl_seconds_after_finished: None,
            },
        );
        run.metadata.namespace = Some(ns.clone());
        run.metadata.labels =
            Some([(LABEL_SCHEDULE.to_string(), name.clone()), (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())].into());
        if let Some(tick) = new.tick {
            run.metadata.annotations = Some([(ANNOTATION_SCHEDULED_TIME.to_string(), rfc3339_offset(tick))].into());
        }
        run.metadata.owner_references = s.controller_owner_ref(&()).map(|o| vec![o]);
        match api.create(&PostParams::default(), &run).await {
            Ok(_) => {}
            // Made by an earlier reconcile whose list did not see it yet.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_err(format!("create WorkflowRun {ns}/{} for workflow {}", new.name, new.workflow_id))(e)),
        }
    }
    for gone in &sync.delete {
        match api.delete(gone, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err(format!("delete WorkflowRun {ns}/{gone} beyond the history limits"))(e)),
        }
    }
    Ok(())
}
