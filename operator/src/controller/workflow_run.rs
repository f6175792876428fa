//! The WorkflowRun controller: enqueue a run once, then mirror it from the system database.
//!
//! Pipeline per reconcile: find the app (its database migrated) → refuse what cannot run (a
//! workflow the app's current version does not register, an input of the wrong length, a queue
//! its workers do not listen to; see `runnable`) → enqueue under the run's workflow ID
//! (idempotent: a repeated reconcile or apply starts nothing new) → cancel if asked → read the
//! record and its steps → status (see `run_status`). An unfinished run is looked at again when
//! the observer sees its record or steps change (within a poll interval), and every 10 min
//! regardless; a finished one only when the object changes. Deleting a WorkflowRun leaves the
//! workflow and its records as they are (no finalizer): the database is the source of truth.

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::{Api, CustomResourceExt as _, ResourceExt};
use mainstay::{ForkOptions, WorkflowOptions, INTERNAL_QUEUE};
use mainstay_crds::{DurableApp, WorkflowRun, WorkflowRunPhase, WorkflowRunStatus};

use super::{
    acted_on, db_err, error_policy, forget_deleted, is_paused, kube_err, log_outcome, object_key, primary, refusal, write_status, Context,
    Error,
};
use crate::conditions::is_true;
use crate::names::{condition, event, reason};
use crate::run_status::{self, finished};
use crate::runnable::Start;
use crate::stores::scoped_api;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "workflowrun";

/// Runs the controller until the stream ends (the caller drops it to stop).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    changed: impl futures::Stream<Item = ObjectRef<WorkflowRun>> + Send + 'static,
) {
    let runs = scoped_api::<WorkflowRun>(&ctx.kube, namespace.as_deref());
    let (reader, trigger) = primary(runs);
    let controller = Controller::for_stream(trigger, reader);
    let sweeper = {
        let observer = ctx.observer.clone();
        tokio::spawn(forget_deleted(controller.store(), move |live| {
            observer.forget_runs_except(&live);
            async {}
        }))
    };
    controller
        // Runs whose workflow moved on (see `observer`).
        .reconcile_on(changed)
        // Each run's status written whole again once the installed CRD holds all of it.
        .reconcile_all_on(ctx.crd_drift.changes(WorkflowRun::crd_name()))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(CONTROLLER, r))
        .await;
    sweeper.abort();
}

/// How often an unfinished run is looked at when the observer reports no change (a safety
/// net: every change of its record or steps is reported within a poll interval; a resync the
/// observer can vouch for reads nothing).
const RUN_RESYNC: std::time::Duration = std::time::Duration::from_secs(600);

async fn reconcile(run: Arc<WorkflowRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = apply(run, &ctx).await;
    ctx.metrics.observe_reconcile(CONTROLLER, started.elapsed().as_secs_f64(), result.is_err());
    result
}

async fn apply(run: Arc<WorkflowRun>, ctx: &Context) -> Result<Action, Error> {
    let key = object_key(run.as_ref());
    if is_paused(run.as_ref()) {
        return Ok(Action::await_change());
    }
    // A resync of a run nothing changed in (its object, its record, its steps): no query.
    if ctx.observer.run_is_current(&key, acted_on(run.as_ref()), ctx.settings.poll_interval * 2) {
        return Ok(Action::requeue(RUN_RESYNC));
    }
    let now = Utc::now();
    let ns = run.namespace().unwrap_or_default();
    let generation = run.metadata.generation;
    let api = Api::<WorkflowRun>::namespaced(ctx.kube.clone(), &ns);
    let current = run.status.clone();
    let mut status: WorkflowRunStatus = current.clone().unwrap_or_default();
    status.observed_generation = generation;
    let id = run_status::workflow_id(&run);
    // Once started, the status keeps the last state the database showed: an app or database
    // that goes away for a while (or a record deleted by retention) never turns a run back
    // into Pending or Failed, and never starts it again.
    let started = run_status::started(&status);
    status.workflow_id = Some(id.clone());

    let app_ref = &run.spec.app_ref;
    let found = ctx.stores.app_or_fetch(&ctx.kube, &ns, app_ref).await.map_err(kube_err(format!("read DurableApp {ns}/{app_ref}")))?;
    let Some(app) = found else {
        if started {
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
        let msg = format!("DurableApp {ns}/{app_ref} does not exist; create it or fix spec.appRef");
        return refuse(ctx, &api, &run, current.as_ref(), status, reason::APP_NOT_FOUND, msg).await;
    };
    let migrated = app.status.as_ref().is_some_and(|s| is_true(&s.conditions, condition::MIGRATED));
    if !migrated {
        if started {
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
        // Not a failure: the app is on its way.
        status.phase = Some(mainstay_crds::WorkflowRunPhase::Pending);
        write_status(ctx, &api, &run, current.as_ref(), &status).await?;
        return Ok(Action::requeue(ctx.settings.poll_interval));
    }
    let db = match ctx.databases.client(&ctx.kube, &ctx.stores, &app).await {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!(run = %key, error = %e, "cannot reach the app's database");
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };

    // The run's record, once it is started (a repeated reconcile or apply starts nothing new).
    let record = match db.status(&id).await.map_err(db_err(&key))? {
        Some(record) => record,
        None if started => {
            // Started before, and its record is gone (the app's retention deleted it, or the
            // database was replaced): starting it again would run finished work twice.
            tracing::info!(run = %key, workflow = %id, "the run's record is gone from the database; its status stays as last seen");
            ctx.observer.forget_run(&key);
            write_status(ctx, &api, &run, current.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
        None => {
            if let Some(done) = start(ctx, &db, &api, &run, current.as_ref(), &mut status, &app, &id).await? {
                return Ok(done);
            }
            match db.status(&id).await.map_err(db_err(&key))? {
                Some(record) => record,
                None => return Ok(Action::requeue(ctx.settings.poll_interval)),
            }
        }
    };
    let phase = run_status::phase(record.status.clone());
    if run.spec.cancel && !finished(phase) {
        db.cancel(&id).await.map_err(db_err(&key))?;
        ctx.event(run.as_ref(), false, reason::CANCELLED, "Cancel", format!("cancelled workflow {id} (spec.cancel)")).await;
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }
    // Resume: each increase of spec.resume resumes once (a run that did not stop has nothing to
    // resume; the increase is taken as seen).
    let asked = run.spec.resume;
    if !run.spec.cancel && asked > status.resumed.unwrap_or(0) {
        let stopped =
            matches!(phase, WorkflowRunPhase::Failed | WorkflowRunPhase::Cancelled | WorkflowRunPhase::MaxRecoveryAttemptsExceeded);
        if stopped {
            db.resume(&id).await.map_err(db_err(&key))?;
            ctx.event(run.as_ref(), false, event::RESUMED, "Resume", format!("resumed workflow {id} from its last completed step")).await;
        }
        status.resumed = Some(asked);
        write_status(ctx, &api, &run, current.as_ref(), &status).await?;
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }
    // Messages: each item of spec.messages once, its name the idempotency key.
    if !finished(phase) {
        for m in &run.spec.messages {
            if status.messages_sent.contains(&m.name) {
                continue;
            }
            if let Some(msg) = crate::validate::oversized(&format!("spec.messages[{}].message", m.name), Some(&m.message)) {
                ctx.event(run.as_ref(), true, reason::INVALID_INPUT, "Send", format!("not sent: {msg}")).await;
                continue;
            }
            let idempotency = format!("{id}:{}", m.name);
            db.send(&id, &m.message, m.topic.as_deref(), Some(&idempotency)).await.map_err(db_err(&key))?;
            status.messages_sent.push(m.name.clone());
            let note = format!(
                "sent message {} to workflow {id}{}",
                m.name,
                m.topic.as_deref().map(|t| format!(" on topic {t}")).unwrap_or_default()
            );
            ctx.event(run.as_ref(), false, event::MESSAGE_SENT, "Send", note).await;
        }
    }
    let steps = db.count_steps(&id).await.map_err(db_err(&key))?;
    run_status::mirror(&mut status, &record, steps, generation, now);
    match db.list_events(&id, run_status::MAX_EVENTS).await {
        Ok(events) => status.events = run_status::events(events),
        Err(e) => tracing::warn!(run = %key, error = %e, "cannot read the workflow's events"),
    }
    write_status(ctx, &api, &run, current.as_ref(), &status).await?;
    ctx.succeeded(&key);
    if !finished(phase) {
        // What was mirrored, as the observer compares it: any later change of the record or
        // its steps differs from this, and brings the run back here.
        let progress = mainstay::Progress {
            workflow_id: id.clone(),
            status: record.status.clone(),
            updated_at_ms: Some(record.updated_at_ms),
            recovery_attempts: record.recovery_attempts,
            steps,
        };
        let pool = ctx.databases.pool_of(&app).await.unwrap_or_default();
        ctx.observer.watch_run(&pool, &db, &key, progress, acted_on(run.as_ref()), ObjectRef::from_obj(run.as_ref()));
        return Ok(Action::requeue(RUN_RESYNC));
    }
    ctx.observer.forget_run(&key);
    // A finished run's object goes after its TTL, as a Job's does; its records stay.
    match run_status::ttl_left(run.spec.ttl_seconds_after_finished, status.completion_time.as_deref(), now) {
        Some(left) if left.is_zero() => {
            match api.delete(&run.name_any(), &kube::api::DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err(format!("delete finished WorkflowRun {key}"))(e)),
            }
            Ok(Action::await_change())
        }
        Some(left) => Ok(Action::requeue(left)),
        None => Ok(Action::await_change()),
    }
}

/// A run that cannot start: reported (with an Event when the reason is new). What the cluster
/// may still fix (the app, a version that registers the workflow or listens to the queue, the
/// fork's source) is looked at again after a while, and the run starts then; what only a new
/// WorkflowRun can fix (an input the workflow cannot take, a duplicate) is final.
async fn refuse(
    ctx: &Context,
    api: &Api<WorkflowRun>,
    run: &WorkflowRun,
    current: Option<&WorkflowRunStatus>,
    mut status: WorkflowRunStatus,
    why: &'static str,
    msg: String,
) -> Result<Action, Error> {
    let known = status.conditions.iter().any(|c| c.type_ == condition::FAILED && c.message == msg);
    run_status::refused(&mut status, why, &msg, run.metadata.generation, Utc::now());
    write_status(ctx, api, run, current, &status).await?;
    if !known {
        ctx.event(run, true, why, "Start", msg).await;
    }
    if why == reason::INVALID_INPUT || why == reason::DUPLICATE || why == reason::ENQUEUE_FAILED {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(std::time::Duration::from_secs(30)))
}

/// Starts the run: refuses a workflow the app's current version does not register, then forks
/// or enqueues it under `id`. `Some(action)` ends the reconcile there (refused, or retried).
#[allow(clippy::too_many_arguments)]
async fn start(
    ctx: &Context,
    db: &mainstay::Client,
    api: &Api<WorkflowRun>,
    run: &WorkflowRun,
    current: Option<&WorkflowRunStatus>,
    status: &mut WorkflowRunStatus,
    app: &DurableApp,
    id: &str,
) -> Result<Option<Action>, Error> {
    let key = object_key(run);
    let ns = run.namespace().unwrap_or_default();
    let too_large = crate::validate::oversized("spec.input", run.spec.input.as_ref()).or_else(|| {
        run.spec.messages.iter().find_map(|m| crate::validate::oversized(&format!("spec.messages[{}].message", m.name), Some(&m.message)))
    });
    if let Some(msg) = too_large {
        return refuse(ctx, api, run, current, status.clone(), reason::INVALID_INPUT, msg).await.map(Some);
    }
    let args = run_status::arguments(run.spec.input.as_ref());
    let checked = Start {
        workflow: &run.spec.workflow_name,
        // A fork replays its source's input.
        arguments: run.spec.fork_of.is_none().then_some((args.len(), "spec.input")),
        queue: run.spec.queue.as_deref().map(|q| (q, "spec.queue")),
    };
    if let Some(r) = refusal(ctx, db, app, run.spec.app_version.as_deref(), &checked).await.map_err(db_err(&key))? {
        return refuse(ctx, api, run, current, status.clone(), r.reason, r.message).await.map(Some);
    }
    let Some(fork) = &run.spec.fork_of else {
        let mut options = WorkflowOptions::new()
            .id(id.to_string())
            .priority(run.spec.priority)
            .timeout(run.spec.timeout_seconds.map(|s| std::time::Duration::from_secs(s.max(1) as u64)));
        options.deduplication_id = run.spec.deduplication_id.clone();
        options.app_version = run.spec.app_version.clone();
        let queue = run.spec.queue.clone().unwrap_or_else(|| INTERNAL_QUEUE.to_string());
        return match db.enqueue(&run.spec.workflow_name, &queue, args, options).await {
            Ok(_) => {
                tracing::info!(run = %key, workflow = %id, "enqueued");
                ctx.event(run, false, event::ENQUEUED, "Start", format!("enqueued workflow {id} on queue {queue}")).await;
                Ok(None)
            }
            Err(e @ mainstay::Error::Duplicate { .. }) => {
                refuse(ctx, api, run, current, status.clone(), reason::DUPLICATE, e.to_string()).await.map(Some)
            }
            Err(e @ mainstay::Error::WorkflowConflict { .. }) => {
                refuse(ctx, api, run, current, status.clone(), reason::ENQUEUE_FAILED, e.to_string()).await.map(Some)
            }
            Err(e) => {
                tracing::warn!(run = %key, error = %e, "cannot enqueue; retrying");
                Ok(Some(Action::requeue(ctx.backoff(&key))))
            }
        };
    };
    // A fork: the source is a workflow ID, or the workflow of a WorkflowRun of the namespace.
    let source = match (&fork.workflow_id, &fork.run) {
        (Some(source), _) => Some(source.clone()),
        (None, Some(name)) => api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("read WorkflowRun {ns}/{name}")))?
            .and_then(|r| r.status.and_then(|s| s.workflow_id)),
        (None, None) => None,
    };
    let Some(source) = source else {
        let msg = "spec.forkOf names no workflow that exists yet: give forkOf.run (a WorkflowRun of this \
                   namespace that has started) or forkOf.workflowId"
            .to_string();
        return refuse(ctx, api, run, current, status.clone(), reason::FORK_SOURCE_NOT_FOUND, msg).await.map(Some);
    };
    let mut opts = ForkOptions::new().start_step(fork.step.max(1)).new_id(id.to_string());
    opts.app_version = run.spec.app_version.clone();
    match db.fork(&source, &opts).await {
        Ok(_) => {
            status.forked_from = Some(source.clone());
            let note = format!("forked workflow {source} from step {} as {id}", opts.start_step);
            ctx.event(run, false, event::ENQUEUED, "Fork", note).await;
            Ok(None)
        }
        Err(e @ mainstay::Error::NotFound { .. }) => {
            refuse(ctx, api, run, current, status.clone(), reason::FORK_SOURCE_NOT_FOUND, e.to_string()).await.map(Some)
        }
        Err(e) => {
            tracing::warn!(run = %key, error = %e, "cannot fork; retrying");
            Ok(Some(Action::requeue(ctx.backoff(&key))))
        }
    }
}
