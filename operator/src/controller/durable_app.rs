//! The DurableApp controller: migrations, queue settings, worker Deployments per version,
//! autoscaling on queue depth, recovery of dead workers' workflows, retention, status.
//!
//! Pipeline per reconcile: validate the spec → reach the database (migrate once, write queue
//! settings, reserve the version) → observe (the app's share of the database's work, its
//! Deployments and pods, what its versions registered) → decide (`app_decision::decide`:
//! recovery, scaling, roll-out) → apply (recover, sweep retention, Deployments, the Service,
//! the latest version) → status (`app_decision::status`, a function of what was observed and
//! decided). Every stage but apply and the reads of observe takes no client.
//! It runs again when the observer sees its share of the database's work change, at once when a
//! worker pod or Deployment changes, every poll interval while something is settling, when
//! what the installed DurableApp CRD lacks changes (`crd_watch`), and otherwise at its next
//! retention sweep or after 5 min.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::CustomResourceExt as _;
use kube::{Api, ResourceExt};
use mainstay_crds::{DurableApp, DurableAppStatus, StuckStatus};

use super::{
    error_policy, forget_deleted, is_paused, kube_err, log_outcome, object_key, primary, reconciled, write_status, Context, Error,
};
use crate::app_decision::{self, Applied, Decision, Observed};
use crate::conditions::{set, set_unknown};
use crate::database::DatabaseError;
use crate::metrics::{AppQueueLabels, ObjectLabels, QueueLabels, StuckLabels, STUCK_KINDS};
use crate::names::{
    condition, event, reason, ANNOTATION_PAUSED, ANNOTATION_SPEC_HASH, ANNOTATION_VERSION, FIELD_MANAGER, LABEL_APP, LABEL_MANAGED_BY,
    MANAGED_BY,
};
use crate::observer::Reading;
use crate::recovery::pod_is_gone;
use crate::stores::scoped_api;
use crate::validate;
use crate::workload::{app_selector_string, http_service, with_spec_hash};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "durableapp";

/// Stalled and parked workflows listed per reconcile, each (the status names a few of those on
/// live workers, found among these; the counts are whole, per executor).
const STUCK_READ: usize = 100;

/// Runs the controller until the stream ends (the caller drops it to stop).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    changed: impl futures::Stream<Item = ObjectRef<DurableApp>> + Send + 'static,
) {
    let ns = namespace.as_deref();
    let (apps, deployments, pods, secrets) = (
        scoped_api::<DurableApp>(&ctx.kube, ns),
        scoped_api::<Deployment>(&ctx.kube, ns),
        scoped_api::<Pod>(&ctx.kube, ns),
        scoped_api::<PartialObjectMeta<Secret>>(&ctx.kube, ns),
    );
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let (reader, trigger) = primary(apps);
    let controller = Controller::for_stream(trigger, reader);
    // A Secret an app names (created or fixed) is noticed at once, not after the backoff.
    let known = controller.store();
    let sweeper = {
        let ctx = ctx.clone();
        tokio::spawn(forget_deleted(controller.store(), move |live| {
            let ctx = ctx.clone();
            async move { ctx.sweep_apps(&live).await }
        }))
    };
    controller
        .owns(deployments, watcher::Config::default().labels(&managed))
        .watches(pods, watcher::Config::default().labels(LABEL_APP), |pod: Pod| {
            let ns = pod.namespace();
            pod.labels().get(LABEL_APP).map(|app| {
                let r = ObjectRef::<DurableApp>::new(app);
                match ns {
                    Some(ns) => r.within(&ns),
                    None => r,
                }
            })
        })
        // Metadata only (an `Api` of `PartialObjectMeta` asks for no more): the operator never
        // holds Secret data it does not read.
        .watches(secrets, watcher::Config::default(), move |secret: PartialObjectMeta<Secret>| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            known
                .state()
                .into_iter()
                .filter(|a| a.namespace() == ns && references_secret(a, &name))
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        // Apps whose share of their database's work changed (see `observer`).
        .reconcile_on(changed)
        // Every app says whether the installed CRD is outdated.
        .reconcile_all_on(ctx.crd_drift.changes(DurableApp::crd_name()))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(CONTROLLER, r))
        .await;
    sweeper.abort();
}

/// Whether an app reads Secret `name` (its namespace's) for a database URL.
fn references_secret(app: &DurableApp, name: &str) -> bool {
    let db = &app.spec.database;
    db.url_secret.name == name || db.admin_url_secret.as_ref().is_some_and(|s| s.name == name)
}

async fn reconcile(app: Arc<DurableApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconciled(CONTROLLER, app, &ctx, |a| apply(a, &ctx), |a| cleanup(a, &ctx)).await
}

/// Deleting a DurableApp: its Deployments and Service go with it (owner references); its
/// database is left as it is. Only the operator's in-memory state needs forgetting.
async fn cleanup(app: Arc<DurableApp>, ctx: &Context) -> Result<Action, Error> {
    let key = object_key(app.as_ref());
    ctx.databases.forget(&app).await;
    ctx.scaling.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    ctx.queues_written.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    ctx.retention_ran.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    ctx.stuck_reported.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    let queues = app.status.iter().flat_map(|s| &s.queues).map(|q| q.name.as_str());
    ctx.metrics.forget_app(&app.namespace().unwrap_or_default(), &app.name_any(), queues);
    tracing::info!(app = %key, "DurableApp deleted; its workers go, its database stays");
    Ok(Action::await_change())
}

/// The condition reason for a database problem.
fn database_reason(e: &DatabaseError) -> &'static str {
    match e {
        e if e.is_secret_problem() => reason::SECRET_NOT_FOUND,
        DatabaseError::Migration { .. } => reason::MIGRATION_FAILED,
        _ => reason::DATABASE_UNREACHABLE,
    }
}

async fn apply(app: Arc<DurableApp>, ctx: &Context) -> Result<Action, Error> {
    let key = object_key(app.as_ref());
    let now = Utc::now();
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let generation = app.metadata.generation;
    let api = Api::<DurableApp>::namespaced(ctx.kube.clone(), &ns);
    let current = app.status.clone();
    let mut status = current.clone().unwrap_or_default();
    if is_paused(app.as_ref()) {
        // Nothing is observed while paused: say so rather than leave a stale picture.
        tracing::info!(app = %key, "reconciliation paused by annotation");
        let msg = format!("reconciliation is paused by annotation {ANNOTATION_PAUSED}=true; remove it to resume (workers, scaling and status are left as they are)");
        set_unknown(&mut status.conditions, condition::READY, reason::PAUSED, &msg, generation, now);
        set(&mut status.conditions, condition::PROGRESSING, false, reason::PAUSED, &msg, generation, now);
        write_status(ctx, &api, &app, current.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    status.observed_generation = generation;
    status.selector = Some(app_selector_string(&name));

    // 1. Validate.
    let valid = match validate::durable_app(&app) {
        Ok(v) => v,
        Err(invalid) => {
            let msg = invalid.to_string();
            let was_degraded = status.conditions.iter().any(|c| c.type_ == condition::DEGRADED && c.message == msg);
            set(&mut status.conditions, condition::DEGRADED, true, reason::INVALID_SPEC, &msg, generation, now);
            set(&mut status.conditions, condition::READY, false, reason::INVALID_SPEC, "the spec is invalid", generation, now);
            write_status(ctx, &api, &app, current.as_ref(), &status).await?;
            if !was_degraded {
                ctx.event(app.as_ref(), true, event::INVALID_SPEC, "Validate", msg).await;
            }
            return Ok(Action::await_change());
        }
    };
    status.current_version = Some(valid.version.clone());

    // 2. The database: migrate (once), connect, write queue settings.
    let (db, queue_conflicts, secret_version) = match reach_database(&app, ctx, &valid.queues, &mut status, now).await {
        Ok(reached) => reached,
        Err(()) => {
            write_status(ctx, &api, &app, current.as_ref(), &status).await?;
            warn_if_new(ctx, &app, current.as_ref(), &status).await;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };

    // The current version is this app's (reserved, not yet the latest, so work pinned to it
    // counts). Version names are unique in a database: one another application owns cannot run
    // here (its workers would refuse to launch). Reported, and its Deployment left alone; the
    // rest (recovery, draining) goes on.
    // Reserved once per version and process (a reservation, once made, is the app's); a
    // conflict is checked again every time, since it needs fixing.
    let reserved = ctx.reserved.lock().unwrap_or_else(|p| p.into_inner()).get(&key) == Some(&valid.version);
    let reservation = if reserved { Ok(()) } else { db.reserve_version(&valid.version).await };
    let conflict = match reservation {
        Ok(()) => {
            ctx.reserved.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), valid.version.clone());
            None
        }
        Err(e @ mainstay::Error::VersionConflict { .. }) => Some(e.to_string()),
        Err(e) => {
            tracing::warn!(app = %key, error = %e, "cannot check the owner of the current version");
            None
        }
    };

    // 3. Observe: database first, then pods (see `recovery` for why the order matters). The
    // database's unfinished work comes from the observer's reading (one query for every app
    // on the database), read again here only when it is older than the poll interval.
    let app_name = crate::workload::application_name(&app);
    let pool = ctx.databases.pool_of(&app).await.unwrap_or_default();
    let reading = match ctx.observer.unfinished(&pool, &db, ctx.settings.poll_interval).await {
        Ok(reading) => reading,
        Err(e) => {
            if e.is_schema_missing() {
                // The database was replaced since it was migrated: migrate again next time.
                ctx.databases.forget_migrations().await;
                ctx.queues_written.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                ctx.reserved.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                set(&mut status.conditions, condition::MIGRATED, false, reason::MIGRATION_FAILED, e.to_string(), generation, now);
            }
            database_down(&mut status, generation, now, reason::DATABASE_UNREACHABLE, &e.to_string());
            write_status(ctx, &api, &app, current.as_ref(), &status).await?;
            warn_if_new(ctx, &app, current.as_ref(), &status).await;
            return Ok(Action::requeue(ctx.backoff(&key)));
        }
    };
    ctx.observer.watch_app(&pool, &db, &key, Some(app_name.clone()), ObjectRef::from_obj(app.as_ref()), &reading);
    let deployments: BTreeMap<String, Deployment> = ctx
        .stores
        .app_deployments(&ns, &name)
        .into_iter()
        .filter_map(|d| Some((d.annotations().get(ANNOTATION_VERSION).cloned()?, d.as_ref().clone())))
        .collect();
    let mut registered = BTreeMap::new();
    let versions: BTreeSet<&String> = deployments.keys().chain([&valid.version]).collect();
    for v in versions {
        match ctx.registered_workflows(&db, &app, v, false).await {
            Ok(r) => {
                registered.insert(v.clone(), r);
            }
            Err(e) => tracing::warn!(app = %key, version = %v, error = %e, "cannot read the version's workflows"),
        }
    }
    // What the database says (the shared reading) and, after it, the pods (see `recovery`):
    // the parts of the observation a newer reading changes.
    let observe = |o: &mut Observed, reading: &Reading| {
        let pods = ctx.stores.app_pods(&ns, &name);
        // Queued work the current version does not register is never claimed by it: it must
        // not keep workers up, and when it is the app's own (a misnamed workflow) it is reported.
        o.unrunnable = match o.registered.get(&o.version) {
            Some(r) => reading.work.unrunnable(Some(&app_name), &o.version, r),
            None => Vec::new(),
        };
        o.executors = reading.work.pending_by_executor(Some(&app_name));
        o.by_version = reading.work.outstanding_by_version(Some(&app_name));
        o.depths = reading.work.queue_depths(Some(&app_name));
        o.queue_waits = reading.work.queue_waits(Some(&app_name), now.timestamp_millis());
        o.live_pods = pods.iter().filter(|p| !pod_is_gone(p, now)).map(|p| p.name_any()).collect();
        o.terminating = pods.iter().any(|p| p.metadata.deletion_timestamp.is_some());
    };
    // Stalled and parked workflows: a query of the app's own (its threshold is its own), run
    // when the app is reconciled anyway and when the next workflow would stall (see below).
    let stuck = match db.stuck_workflows(Duration::from_secs(app.spec.stuck.stalled_after_seconds.max(1) as u64), STUCK_READ).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(app = %key, error = %e, "cannot look for stalled workflows");
            None
        }
    };
    let decide = |observed: &Observed| {
        let mut histories = ctx.scaling.lock().unwrap_or_else(|p| p.into_inner());
        app_decision::decide(observed, histories.entry(key.clone()).or_default())
    };

    let mut observed = Observed {
        app: &app,
        version: valid.version.clone(),
        version_conflict: conflict,
        queue_conflicts,
        secret_version,
        executors: Vec::new(),
        by_version: Vec::new(),
        depths: Vec::new(),
        unrunnable: Vec::new(),
        stuck,
        crd_missing: ctx.crd_drift.missing(DurableApp::crd_name()),
        queue_waits: Vec::new(),
        registered,
        deployments,
        live_pods: BTreeSet::new(),
        terminating: false,
        now,
    };
    observe(&mut observed, &reading);

    // 4. Decide.
    let mut decision = decide(&observed);
    // The shared reading may be up to a poll interval old. Removing a drained version's
    // Deployment or scaling workers down stops pods, which on an old reading may be running
    // work enqueued since (a drained version's Deployment cannot be brought back: its template
    // is gone). Such a decision is taken again on a reading of now.
    if decision.stops_workers(&observed) {
        match ctx.observer.unfinished(&pool, &db, Duration::ZERO).await {
            Ok(now_reading) => {
                observe(&mut observed, &now_reading);
                decision = decide(&observed);
            }
            Err(e) => {
                tracing::warn!(app = %key, error = %e, "cannot read the database again before stopping workers; retrying");
                return Ok(Action::requeue(ctx.backoff(&key)));
            }
        }
    }

    // 5. Apply.
    let applied = apply_decision(&app, ctx, &db, &observed, &decision).await?;

    // 6. Status.
    let status = app_decision::status(&observed, &decision, status);
    for q in &status.queues {
        for (state, n) in [("enqueued", q.enqueued), ("pending", q.pending)] {
            let labels = QueueLabels { namespace: ns.clone(), app: name.clone(), queue: q.name.clone(), state: state.into() };
            ctx.metrics.queue_depth.get_or_create(&labels).set(n);
        }
        let wait = observed.queue_waits.iter().find(|w| w.queue == q.name).map_or(0, |w| w.oldest_wait_ms);
        let labels = AppQueueLabels { namespace: ns.clone(), app: name.clone(), queue: q.name.clone() };
        ctx.metrics.queue_oldest_wait.get_or_create(&labels).set(wait as f64 / 1000.0);
    }
    // A queue gone from the status (drained, not in the spec) takes its series with it.
    for gone in current.iter().flat_map(|s| &s.queues).filter(|b| !status.queues.iter().any(|q| q.name == b.name)) {
        ctx.metrics.forget_queue(&ns, &name, &gone.name);
    }
    let stuck = status.stuck.clone().unwrap_or_default();
    for (kind, n) in STUCK_KINDS.into_iter().zip([stuck.stalled_workflows, stuck.stranded_workflows, stuck.parked_workflows]) {
        let labels = StuckLabels { namespace: ns.clone(), name: name.clone(), kind };
        ctx.metrics.stuck_workflows.get_or_create(&labels).set(n);
    }
    let labels = ObjectLabels { namespace: ns.clone(), name: name.clone() };
    ctx.metrics.desired_workers.get_or_create(&labels).set(i64::from(decision.desired));
    write_status(ctx, &api, &app, current.as_ref(), &status).await?;
    warn_if_new(ctx, &app, current.as_ref(), &status).await;
    // What was reported last: this process's memory, or after a restart what the status says.
    let reported = ctx
        .stuck_reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), status.stuck.clone().unwrap_or_default())
        .or_else(|| current.as_ref().and_then(|s| s.stuck.clone()));
    warn_of_stuck_work(ctx, &app, reported.as_ref(), status.stuck.as_ref()).await;
    ctx.succeeded(&key);
    // While something is settling, look again every poll interval. At rest, the observer asks
    // for a reconcile when the app's work changes and the watches when its objects do; the
    // resync only refreshes what neither sees (what workers recorded).
    let next = match (app_decision::settling(&observed, &decision, &applied), &app.spec.retention) {
        (true, _) => ctx.settings.poll_interval,
        // The next retention sweep is due then.
        (false, Some(_)) => ctx.settings.retention_interval.min(IDLE_RESYNC),
        (false, None) => IDLE_RESYNC,
    };
    // Stuck work is a matter of time passing, which nothing else reports: judge again when the
    // next workflow would stall or queue turn slow.
    let next = match app_decision::next_judgement(&observed) {
        Some(at) => next.min((at - Utc::now()).to_std().unwrap_or_default().max(ctx.settings.poll_interval)),
        None => next,
    };
    Ok(Action::requeue(next))
}

/// Applies a decision: recovers dead workers' workflows, sweeps retention, applies, resizes
/// and deletes worker Deployments, the Service, and makes the current version the latest once
/// it has a ready worker.
async fn apply_decision(app: &DurableApp, ctx: &Context, db: &mainstay::Client, o: &Observed<'_>, d: &Decision) -> Result<Applied, Error> {
    let key = object_key(app);
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    let pods = Api::<Pod>::namespaced(ctx.kube.clone(), &ns);
    for executor in &d.dead {
        // The pod store can lag the database: a worker that started and claimed work since the
        // watch's last event would look dead. Its workflows are taken only if the API server
        // agrees the pod is gone; when it cannot say, the next reconcile asks again.
        match pods.get_opt(executor).await {
            Ok(Some(pod)) if !pod_is_gone(&pod, Utc::now()) => {
                tracing::info!(app = %key, executor = %executor, "worker pod not yet in the watch's view but alive; its workflows stay");
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(app = %key, executor = %executor, error = %e, "cannot confirm that the worker pod is gone; not recovering yet");
                continue;
            }
        }
        match db.recover_executor(executor).await {
            Ok(ids) if !ids.is_empty() => {
                let labels = ObjectLabels { namespace: ns.clone(), name: name.clone() };
                ctx.metrics.recovered_workflows.get_or_create(&labels).inc_by(ids.len() as u64);
                let note = format!(
                    "re-enqueued {} workflow(s) of worker {executor}, which is gone: {}",
                    ids.len(),
                    ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                );
                tracing::info!(app = %key, executor = %executor, workflows = ids.len(), "recovered workflows of a dead worker");
                ctx.event(app, false, event::RECOVERED, "Recover", note).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(app = %key, executor = %executor, error = %e, "recovery failed; retrying"),
        }
    }
    sweep(app, ctx, db).await;

    if !d.blocked && d.desired != d.current_replicas && o.deployments.contains_key(&o.version) {
        let (from, to, depth) = (d.current_replicas, d.desired, d.depth);
        let note = format!("scaling version {} from {from} to {to} workers ({depth} workflows queued or running)", o.version);
        tracing::info!(app = %key, from, to, depth, "scaling workers");
        ctx.event(app, false, event::SCALED, "Scale", note).await;
    }
    let deployments = Api::<Deployment>::namespaced(ctx.kube.clone(), &ns);
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(wanted) = &d.apply {
        let dname = wanted.metadata.name.clone().unwrap_or_default();
        deployments.patch(&dname, &ssa, &Patch::Apply(wanted)).await.map_err(kube_err(format!("apply worker Deployment {ns}/{dname}")))?;
    }
    for r in &d.rescale {
        let dname = &r.deployment;
        deployments
            .patch_scale(dname, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": r.replicas}})))
            .await
            .map_err(kube_err(format!("scale draining worker Deployment {ns}/{dname}")))?;
    }
    for (v, dname) in &d.remove {
        match deployments.delete(dname, &DeleteParams::background()).await {
            Ok(_) => {
                let note = format!("version {v} has no workflows left; removed its Deployment {dname}");
                ctx.event(app, false, event::DRAINED, "RollOut", note).await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(format!("delete drained Deployment {ns}/{dname}"))(e)),
        }
    }
    // The Service: applied when what it should be changed since this process last applied it
    // (or looked), so an idle app costs no request for it.
    let services = Api::<Service>::namespaced(ctx.kube.clone(), &ns);
    let wanted = http_service(app).map(with_spec_hash);
    let wanted_hash = wanted.as_ref().and_then(|s| s.annotations().get(ANNOTATION_SPEC_HASH).cloned());
    let known = ctx.services_applied.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    if known != Some(wanted_hash.clone()) {
        match &wanted {
            Some(svc) => {
                services.patch(&name, &ssa, &Patch::Apply(svc)).await.map_err(kube_err(format!("apply Service {ns}/{name}")))?;
            }
            None => {
                if let Some(svc) = services.get_opt(&name).await.map_err(kube_err(format!("read Service {ns}/{name}")))? {
                    if svc.labels().get(LABEL_MANAGED_BY).is_some_and(|m| m == MANAGED_BY) {
                        let _ = services.delete(&name, &DeleteParams::default()).await;
                    }
                }
            }
        }
        ctx.services_applied.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), wanted_hash);
    }

    // The current version becomes the one that takes work enqueued without a version (DBOS's
    // latest) once it has a ready worker: a new version whose pods never start does not take
    // that work from the old one, and a rollback's older version gets it back. (A version
    // registered for the first time becomes the latest by itself when its first worker starts.)
    let mut applied = Applied::default();
    if d.may_take_latest() && app_decision::ready_current(o) > 0 {
        match make_latest(db, &o.version).await {
            Ok(false) => {}
            Ok(true) => {
                let note = format!("version {} now takes the work enqueued without a version", o.version);
                ctx.event(app, false, event::LATEST_VERSION, "RollOut", note).await;
            }
            Err(e) => {
                applied.latest_failed = true;
                tracing::warn!(app = %key, error = %e, "cannot make the current version the latest; retrying");
            }
        }
    }
    Ok(applied)
}

/// How often an app at rest is reconciled when nothing asks for it (a safety net: the observer
/// and the watches bring it back on every change they see).
const IDLE_RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// Publishes a Warning Event for each kind of stuck work that grew since the status before
/// (a queue that turned slow; more workflows stalled, stranded or parked).
async fn warn_of_stuck_work(ctx: &Context, app: &DurableApp, before: Option<&StuckStatus>, after: Option<&StuckStatus>) {
    let Some(after) = after else { return };
    let before = before.cloned().unwrap_or_default();
    let spec = &app.spec.stuck;
    if after.stalled_workflows > before.stalled_workflows {
        let msg = format!(
            "{} workflow(s) running without a new checkpoint for {}s or more, e.g. {}",
            after.stalled_workflows,
            spec.stalled_after_seconds,
            after.stalled.join(", ")
        );
        ctx.event(app, true, event::STALLED_WORKFLOWS, "Observe", msg).await;
    }
    if after.stranded_workflows > before.stranded_workflows {
        let msg = format!("{} queued workflow(s) that no running version can run (see the Degraded condition)", after.stranded_workflows);
        ctx.event(app, true, event::STRANDED_WORK, "Observe", msg).await;
    }
    if after.parked_workflows > before.parked_workflows {
        let msg =
            format!("{} workflow(s) parked after too many recovery attempts, e.g. {}", after.parked_workflows, after.parked.join(", "));
        ctx.event(app, true, event::PARKED_WORKFLOWS, "Observe", msg).await;
    }
    for q in &after.slow_queues {
        if !before.slow_queues.iter().any(|b| b.name == q.name) {
            let msg = format!(
                "queue {}: its oldest workflow has waited {}s or more (since {}); {} waiting",
                q.name, spec.queue_wait_seconds, q.waiting_since, q.enqueued
            );
            ctx.event(app, true, event::SLOW_QUEUE, "Observe", msg).await;
        }
    }
}

/// Reasons of the Degraded condition that `warn_of_stuck_work` publishes itself.
const STUCK_REASONS: [&str; 5] =
    [reason::STALLED_WORKFLOWS, reason::PARKED_WORKFLOWS, reason::SLOW_QUEUES, reason::STRANDED_WORK, reason::UNRUNNABLE_WORK];

/// Publishes the Degraded condition as a Warning Event when its message is new, so a problem
/// (the database, a version or queue conflict, stranded work) shows in `kubectl get events` and
/// `kubectl describe` once, not on every reconcile.
async fn warn_if_new(ctx: &Context, app: &DurableApp, before: Option<&DurableAppStatus>, after: &DurableAppStatus) {
    let degraded = |s: &DurableAppStatus| {
        s.conditions.iter().find(|c| c.type_ == condition::DEGRADED && c.status == "True").map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((why, msg)) = degraded(after) {
        if before.and_then(degraded).as_ref().map(|(_, m)| m) != Some(&msg) && !STUCK_REASONS.contains(&why.as_str()) {
            ctx.event(app, true, &why, "Reconcile", msg).await;
        }
    }
}

/// Makes `version` the app's latest unless it is; returns whether it changed.
async fn make_latest(db: &mainstay::Client, version: &str) -> Result<bool, mainstay::Error> {
    if db.latest_version().await?.as_deref() == Some(version) {
        return Ok(false);
    }
    db.set_latest_version(version).await?;
    Ok(true)
}

fn database_down(status: &mut DurableAppStatus, generation: Option<i64>, now: chrono::DateTime<Utc>, why: &str, msg: &str) {
    set(&mut status.conditions, condition::DEGRADED, true, why, msg, generation, now);
    set(&mut status.conditions, condition::READY, false, why, msg, generation, now);
}

/// Migrates, connects and writes queue settings; on failure sets the conditions and returns
/// `Err(())` for the caller to write status and back off. Also returns the queues whose
/// settings another application owns (not a failure: reported as a condition) and the version
/// of the workers' Secret.
async fn reach_database(
    app: &DurableApp,
    ctx: &Context,
    queues: &[mainstay::Queue],
    status: &mut DurableAppStatus,
    now: chrono::DateTime<Utc>,
) -> Result<(mainstay::Client, Vec<String>, Option<String>), ()> {
    let generation = app.metadata.generation;
    let key = object_key(app);
    // The workers' Secret is read once: it is also the admin URL unless another is named.
    let migrated = async {
        let secret = ctx.databases.worker_secret(&ctx.kube, &ctx.stores, app).await?;
        let ran = ctx.databases.migrate(&ctx.kube, &ctx.stores, app, &secret.value).await?;
        Ok::<_, DatabaseError>((secret, ran))
    }
    .await;
    let (url, secret_version) = match migrated {
        Ok((secret, ran)) => {
            let msg = format!("system database schema at DBOS version {}", mainstay::DBOS_SCHEMA_VERSION);
            set(&mut status.conditions, condition::MIGRATED, true, reason::MIGRATED, &msg, generation, now);
            if ran {
                tracing::info!(app = %key, "system database migrated");
                ctx.event(app, false, event::MIGRATED, "Migrate", msg).await;
            }
            (secret.value, secret.version)
        }
        Err(e) => {
            let why = database_reason(&e);
            tracing::warn!(app = %key, error = %e, "cannot migrate the system database");
            set(&mut status.conditions, condition::MIGRATED, false, why, e.to_string(), generation, now);
            database_down(status, generation, now, why, &e.to_string());
            return Err(());
        }
    };
    let db = match ctx.databases.client_at(app, url).await {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!(app = %key, error = %e, "cannot reach the system database");
            database_down(status, generation, now, database_reason(&e), &e.to_string());
            return Err(());
        }
    };
    let unchanged = ctx.queues_written.lock().unwrap_or_else(|p| p.into_inner()).get(&key).is_some_and(|w| w == queues);
    let mut conflicts = Vec::new();
    if !unchanged {
        for q in queues {
            match db.set_queue(q).await {
                Ok(()) => {}
                // Another app's settings stay; reported, and tried again next time.
                Err(e @ mainstay::Error::QueueConflict { .. }) => conflicts.push(e.to_string()),
                Err(e) => {
                    let msg = format!("failed to write the settings of queue {}: {e}", q.name);
                    database_down(status, generation, now, reason::DATABASE_UNREACHABLE, &msg);
                    return Err(());
                }
            }
        }
        if conflicts.is_empty() {
            ctx.queues_written.lock().unwrap_or_else(|p| p.into_inner()).insert(key, queues.to_vec());
        }
    }
    Ok((db, conflicts, secret_version))
}

/// Deletes finished workflows past the retention limits, at most once per retention interval.
async fn sweep(app: &DurableApp, ctx: &Context, db: &mainstay::Client) {
    let Some(r) = &app.spec.retention else { return };
    let key = object_key(app);
    {
        let mut ran = ctx.retention_ran.lock().unwrap_or_else(|p| p.into_inner());
        if ran.get(&key).is_some_and(|t| t.elapsed() < ctx.settings.retention_interval) {
            return;
        }
        ran.insert(key.clone(), Instant::now());
    }
    let max_age = r.max_age_seconds.map(|s| std::time::Duration::from_secs(s.max(0) as u64));
    let keep = r.max_count.map(|n| n.max(0) as u64);
    match db.delete_finished(max_age, keep).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(app = %key, deleted = n, "retention deleted finished workflows");
            ctx.event(app, false, event::RETENTION, "Retention", format!("deleted {n} finished workflow(s) past the retention limits"))
                .await;
        }
        Err(e) => tracing::warn!(app = %key, error = %e, "retention sweep failed; will retry"),
    }
}
