//! The DurableApp controller's pure stages: from what one reconcile observed, what to do
//! ([`decide`]) and what the status says ([`status`]). No client, no clock of their own; the
//! controller observes, calls these, applies the decision and writes the status.
//!
//! Invariants:
//! - the current version's Deployment is never applied while it is blocked (its version name
//!   belongs to another application, or its image changed under work in flight: that work
//!   would finish on other code);
//! - a draining version keeps its own Deployment template and at least one worker until its own
//!   work is done; only its size moves;
//! - only work the current version can run sizes it: its own and work without a version,
//!   minus queued work it does not register;
//! - the status is a function of the observation, the decision and the status before (whose
//!   conditions carry over their transition times).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{CustomResourceExt as _, ResourceExt};
use mainstay::{ExecutorWork, QueueDepth, QueueWait, RegisteredWorkflow, StuckWorkflows, UnrunnableWork, VersionWork};
use mainstay_crds::{DurableApp, DurableAppStatus, QueueStatus, SlowQueueStatus, StuckStatus, VersionWorkflows};

use crate::conditions::set;
use crate::names::{condition, reason};
use crate::recovery::dead_executors;
use crate::workload::{deployed_image, unchanged, with_spec_hash, worker_deployment};
use crate::{rollout, scaling};

/// What one reconcile saw of an app, its database and its objects.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub app: &'a DurableApp,
    /// The validated current version.
    pub version: String,
    /// Why the current version cannot run here (another application owns its name).
    pub version_conflict: Option<String>,
    /// Queues whose settings another application owns.
    pub queue_conflicts: Vec<String>,
    /// The version of the workers' Secret (in the pod template, so a rotation rolls them).
    pub secret_version: Option<String>,
    /// Pending work per executor, outstanding work per version, queue depths: the app's share.
    pub executors: Vec<ExecutorWork>,
    pub by_version: Vec<VersionWork>,
    pub depths: Vec<QueueDepth>,
    /// Queued work the current version does not register.
    pub unrunnable: Vec<UnrunnableWork>,
    /// The app's stalled and parked workflows (`None`: not read this time).
    pub stuck: Option<StuckWorkflows>,
    /// The fields this operator knows that the installed DurableApp CRD lacks (see `crd_drift`).
    pub crd_missing: Vec<String>,
    /// How long the oldest ready workflow of each of the app's queues has waited.
    pub queue_waits: Vec<QueueWait>,
    /// What each deployed version (and the current one) registered.
    pub registered: BTreeMap<String, Vec<RegisteredWorkflow>>,
    /// The app's worker Deployments by version.
    pub deployments: BTreeMap<String, Deployment>,
    /// Worker pods that are not gone (see `recovery::is_gone`).
    pub live_pods: BTreeSet<String>,
    /// Whether any worker pod is terminating.
    pub terminating: bool,
    pub now: DateTime<Utc>,
}

/// A change of a draining version's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescale {
    pub deployment: String,
    pub replicas: i32,
}

/// What to do.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Executors with pending work and no live pod: their workflows are re-enqueued.
    pub dead: Vec<String>,
    pub plan: rollout::Rollout,
    /// Work the current version can run, queued or running.
    pub depth: i64,
    /// What scaling recommends for that depth, before stabilization.
    pub recommended: i32,
    pub current_replicas: i32,
    pub desired: i32,
    /// Work waiting for versions no Deployment runs.
    pub stranded: Vec<(String, i64)>,
    /// The image of the current version's Deployment, when the spec changed it under work in
    /// flight (`in_flight` workflows).
    pub reimaged: Option<String>,
    pub in_flight: i64,
    /// The current version's Deployment is left alone (see the module's invariants).
    pub blocked: bool,
    /// The current version's Deployment to apply, when it differs from the live one.
    pub apply: Option<Deployment>,
    /// Draining versions to resize.
    pub rescale: Vec<Rescale>,
    /// Deployments of drained versions to delete, with their version.
    pub remove: Vec<(String, String)>,
}

impl Decision {
    /// Whether applying it stops worker pods (of what `o` observed): a drained version's
    /// Deployment removed, or a Deployment scaled down.
    pub fn stops_workers(&self, o: &Observed) -> bool {
        let replicas = |name: &str| o.deployments.values().find(|d| d.name_any() == name).and_then(|d| d.spec.as_ref()?.replicas);
        let scales_down = !self.blocked && self.desired < self.current_replicas;
        let rescales_down = self.rescale.iter().any(|r| replicas(&r.deployment).is_some_and(|now| r.replicas < now));
        !self.remove.is_empty() || scales_down || rescales_down
    }

    /// Whether the current version may be made the latest (given a ready worker).
    pub fn may_take_latest(&self) -> bool {
        !self.blocked
    }
}

/// What applying a decision reported back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Making the current version the latest failed (retried).
    pub latest_failed: bool,
}

/// Decides recovery, scaling and the roll-out. `history` is the app's scaling memory.
pub fn decide(o: &Observed<'_>, history: &mut scaling::History) -> Decision {
    let app = o.app;
    let name = app.name_any();
    let dead = dead_executors(&name, &o.executors, &o.live_pods).into_iter().map(|w| w.executor_id.clone()).collect();
    let deployed: Vec<String> = o.deployments.keys().cloned().collect();
    let outstanding = outstanding(o);
    let plan = rollout::decide(&o.version, &deployed, &outstanding);
    let depth: i64 = o
        .by_version
        .iter()
        .filter(|w| w.app_version.is_none() || w.app_version.as_deref() == Some(o.version.as_str()))
        .map(|w| w.pending + w.enqueued)
        .sum::<i64>()
        - o.unrunnable.iter().map(|u| u.queued).sum::<i64>();
    let stranded = rollout::stranded(&o.version, &deployed, &outstanding);
    let in_flight = outstanding.get(&o.version).copied().unwrap_or(0);
    let reimaged =
        o.deployments.get(&o.version).and_then(deployed_image).filter(|old| *old != app.spec.image && in_flight > 0).map(str::to_string);
    let blocked = o.version_conflict.is_some() || reimaged.is_some();
    let replicas_of = |v: &str| o.deployments.get(v).and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    let current_replicas = replicas_of(&o.version);
    let s = &app.spec.scaling;
    let recommended = scaling::recommend(depth, s);
    let keep = chrono::Duration::seconds(i64::from(s.scale_up_stabilization_seconds.max(s.scale_down_stabilization_seconds)) + 60);
    history.seed(o.now, current_replicas);
    history.record(o.now, recommended, keep);
    let desired = scaling::desired(&app.spec, current_replicas, history, o.now);

    let mut apply = None;
    let mut rescale = Vec::new();
    for v in &plan.keep {
        if *v == o.version {
            let d = with_spec_hash(worker_deployment(app, v, desired, o.secret_version.as_deref()));
            if !blocked && !unchanged(o.deployments.get(v), &d) {
                apply = Some(d);
            }
            continue;
        }
        let left = outstanding.get(v).copied().unwrap_or(0);
        let replicas = match app.spec.replicas {
            Some(fixed) => fixed.max(1),
            None => scaling::recommend(left, &app.spec.scaling).max(1),
        };
        if let Some(d) = o.deployments.get(v) {
            if d.spec.as_ref().and_then(|s| s.replicas) != Some(replicas) {
                rescale.push(Rescale { deployment: d.name_any(), replicas });
            }
        }
    }
    let remove = plan.remove.iter().filter_map(|v| o.deployments.get(v).map(|d| (v.clone(), d.name_any()))).collect();
    Decision { dead, plan, depth, recommended, current_replicas, desired, stranded, reimaged, in_flight, blocked, apply, rescale, remove }
}

/// Outstanding (queued or running) workflows per version.
fn outstanding(o: &Observed<'_>) -> rollout::Outstanding {
    o.by_version.iter().filter_map(|w| w.app_version.clone().map(|v| (v, w.outstanding()))).collect()
}

fn ready_of(o: &Observed<'_>, v: &str) -> i32 {
    o.deployments.get(v).and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// Ready workers of the current version.
pub fn ready_current(o: &Observed<'_>) -> i32 {
    ready_of(o, &o.version)
}

/// The status after this reconcile, from the one before it (its conditions carry over).
pub fn status(o: &Observed<'_>, d: &Decision, before: DurableAppStatus) -> DurableAppStatus {
    let app = o.app;
    let (generation, now) = (app.metadata.generation, o.now);
    let mut status = before;
    status.current_version = Some(o.version.clone());
    let ready_current = ready_current(o);
    status.ready_workers = d.plan.keep.iter().map(|v| ready_of(o, v)).sum();
    status.replicas = o.deployments.values().filter_map(|d| d.status.as_ref().and_then(|s| s.replicas)).sum();
    status.desired_workers = d.desired;
    status.queued_workflows = o.by_version.iter().map(|w| w.enqueued).sum();
    status.pending_workflows = o.by_version.iter().map(|w| w.pending).sum();
    let mut queues: BTreeMap<String, QueueStatus> =
        app.spec.queues.iter().map(|q| (q.name.clone(), QueueStatus { name: q.name.clone(), ..Default::default() })).collect();
    for depth in &o.depths {
        let q = queues.entry(depth.queue.clone()).or_insert_with(|| QueueStatus { name: depth.queue.clone(), ..Default::default() });
        q.enqueued = depth.enqueued;
        q.pending = depth.pending;
    }
    status.queues = queues.into_values().collect();
    status.versions = d.plan.keep.clone();
    status.workflows = d
        .plan
        .keep
        .iter()
        .filter_map(|v| {
            let registered = o.registered.get(v).filter(|r| !r.is_empty())?;
            let schedules = registered.iter().filter_map(|w| Some(format!("{}: {}", w.name, w.schedule.as_deref()?))).collect();
            let workflows = registered.iter().map(|w| w.name.clone()).collect();
            Some(VersionWorkflows { version: v.clone(), workflows, schedules })
        })
        .collect();

    status.stuck = stuck(o, d, status.stuck.take());
    match problems(o, d, status.stuck.as_ref()).into_iter().next() {
        // The controller publishes it as an Event when its message is new.
        Some((why, msg)) => set(&mut status.conditions, condition::DEGRADED, true, why, &msg, generation, now),
        None => set(&mut status.conditions, condition::DEGRADED, false, reason::AS_EXPECTED, "", generation, now),
    }
    let outstanding = outstanding(o);
    let draining: Vec<String> = d.plan.keep.iter().filter(|v| **v != o.version).cloned().collect();
    let desired = d.desired;
    if !draining.is_empty() {
        let left: i64 = draining.iter().map(|v| outstanding.get(v).copied().unwrap_or(0)).sum();
        let msg = format!("version {} is current; draining {} ({left} workflows left)", o.version, draining.join(", "));
        set(&mut status.conditions, condition::PROGRESSING, true, reason::ROLLING_OUT, msg, generation, now);
    } else if ready_current != desired {
        let msg = format!("{ready_current} of {desired} workers ready");
        set(&mut status.conditions, condition::PROGRESSING, true, reason::SCALING, msg, generation, now);
    } else {
        set(&mut status.conditions, condition::PROGRESSING, false, reason::STABLE, format!("{desired} workers"), generation, now);
    }
    if let Some(msg) = &o.version_conflict {
        set(&mut status.conditions, condition::READY, false, reason::VERSION_CONFLICT, msg, generation, now);
    } else if desired == 0 && ready_current == 0 {
        set(&mut status.conditions, condition::READY, true, reason::SCALED_TO_ZERO, "no work queued; scaled to zero", generation, now);
    } else if ready_current > 0 {
        let msg = format!("{ready_current} of {desired} workers of version {} ready", o.version);
        set(&mut status.conditions, condition::READY, true, reason::AVAILABLE, msg, generation, now);
    } else {
        let msg = format!("no worker of version {} is ready yet ({desired} wanted)", o.version);
        set(&mut status.conditions, condition::READY, false, reason::WORKERS_NOT_READY, msg, generation, now);
    }
    status
}

/// How long a queue's oldest workflow may wait before the queue is slow (`spec.stuck`).
fn queue_wait(o: &Observed<'_>) -> std::time::Duration {
    std::time::Duration::from_secs(o.app.spec.stuck.queue_wait_seconds.max(0) as u64)
}

/// Workflow IDs listed in `status.stuck`.
const STUCK_LISTED: usize = 5;

/// The app's stuck and stranded work (`None`: there is none). Stalled workflows count only on
/// live workers (a dead one's are recovery's); what was not read this time stays as it was.
pub fn stuck(o: &Observed<'_>, d: &Decision, before: Option<StuckStatus>) -> Option<StuckStatus> {
    let before = before.unwrap_or_default();
    let (stalled_workflows, stalled, parked_workflows, parked) = match &o.stuck {
        Some(w) => {
            // A dead worker's are recovery's to move, not stuck: counted on live workers only.
            let on_live_pod = |executor: &Option<String>| executor.as_ref().is_some_and(|e| o.live_pods.contains(e));
            let count = w.stalled_per_executor.iter().filter(|e| on_live_pod(&e.executor_id)).map(|e| e.stalled).sum();
            let live = w.stalled.iter().filter(|s| on_live_pod(&s.executor_id)).take(STUCK_LISTED).map(|s| s.workflow_id.clone()).collect();
            let parked = w.parked.iter().take(STUCK_LISTED).map(|p| p.workflow_id.clone()).collect();
            (count, live, w.parked_total, parked)
        }
        None => (before.stalled_workflows, before.stalled, before.parked_workflows, before.parked),
    };
    let slow_queues = o
        .queue_waits
        .iter()
        .filter(|w| w.waited(queue_wait(o)))
        .map(|w| SlowQueueStatus {
            name: w.queue.clone(),
            enqueued: w.enqueued,
            waiting_since: DateTime::from_timestamp_millis(w.oldest_ready_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
        })
        .collect();
    let stranded_workflows = d.stranded.iter().map(|(_, n)| n).sum::<i64>() + o.unrunnable.iter().map(|u| u.own).sum::<i64>();
    let status = StuckStatus { stalled_workflows, stalled, stranded_workflows, parked_workflows, parked, slow_queues };
    (status != StuckStatus::default()).then_some(status)
}

/// When to judge stuck work again if nothing else asks: now (the caller's next poll) while
/// something is stuck, so its figures and gauges follow it and its end is seen (a stalled
/// workflow moving on changes no count); otherwise when the next workflow stalls or the next
/// queue turns slow, if nothing moves.
pub fn next_judgement(o: &Observed<'_>) -> Option<DateTime<Utc>> {
    let stalled = o.stuck.as_ref().is_some_and(|s| s.stalled_total > 0);
    if stalled || o.queue_waits.iter().any(|w| w.waited(queue_wait(o))) {
        return Some(o.now);
    }
    let threshold_ms = i64::try_from(queue_wait(o).as_millis()).unwrap_or(i64::MAX);
    let queues = o.queue_waits.iter().map(|w| w.oldest_ready_ms.saturating_add(threshold_ms));
    let stall = o.stuck.as_ref().and_then(|s| s.next_stall_at_ms);
    queues.chain(stall).min().and_then(DateTime::from_timestamp_millis)
}

/// What needs fixing, most pressing first; the first is the Degraded condition. `stuck`: the
/// stuck work the status reports (see [`stuck`]).
fn problems(o: &Observed<'_>, d: &Decision, stuck: Option<&StuckStatus>) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some(msg) = &o.version_conflict {
        problems.push((reason::VERSION_CONFLICT, msg.clone()));
    }
    if let Some(old) = &d.reimaged {
        problems.push((
            reason::IMAGE_CHANGED,
            format!(
                "spec.image changed from {old} to {} but the application version is still {}, which has {} \
                 workflow(s) in flight: they would finish on other code. Give the new image a new version \
                 (spec.appVersion, or an image tag that differs), or restore spec.image",
                o.app.spec.image, o.version, d.in_flight
            ),
        ));
    }
    let own_unrunnable: Vec<String> =
        o.unrunnable.iter().filter(|u| u.own > 0).map(|u| format!("{} ({} queued)", u.workflow_name, u.own)).collect();
    if !own_unrunnable.is_empty() {
        problems.push((
            reason::UNRUNNABLE_WORK,
            format!(
                "queued workflows that version {} does not register wait forever: {}. Fix the workflow name where \
                 they are enqueued, or deploy a version that has them; cancel the queued ones",
                o.version,
                own_unrunnable.join(", ")
            ),
        ));
    }
    if !o.queue_conflicts.is_empty() {
        problems.push((reason::QUEUE_CONFLICT, o.queue_conflicts.join("; ")));
    }
    if !d.stranded.is_empty() {
        let list = d.stranded.iter().map(|(v, n)| format!("{n} of version {v}")).collect::<Vec<_>>().join(", ");
        problems.push((
            reason::STRANDED_WORK,
            format!(
                "workflows wait for versions no worker runs: {list}. Deploy that version again, or fork them \
                 onto the current one (`mainstay workflow fork ID --app-version {}`) and cancel the originals",
                o.version
            ),
        ));
    }
    let spec = &o.app.spec.stuck;
    // The examples named may be none: the workflows listed are the oldest stalled of all
    // executors, dead ones' included, while the count is of live ones' only.
    let examples = |ids: &[String]| if ids.is_empty() { String::new() } else { format!(" (e.g. {})", ids.join(", ")) };
    if let Some(stuck) = stuck {
        if stuck.stalled_workflows > 0 {
            problems.push((
                reason::STALLED_WORKFLOWS,
                format!(
                    "{} workflow(s) running on live workers without a new checkpoint for {}s or more{}: a step may \
                     hang (a call without a timeout, a deadlock); `mainstay stuck` lists them, `mainstay workflow \
                     steps ID` shows how far each got",
                    stuck.stalled_workflows,
                    spec.stalled_after_seconds,
                    examples(&stuck.stalled)
                ),
            ));
        }
        if stuck.parked_workflows > 0 {
            problems.push((
                reason::PARKED_WORKFLOWS,
                format!(
                    "{} workflow(s) parked after too many recovery attempts{}: fix what kills their workers, then \
                     `mainstay workflow resume ID`",
                    stuck.parked_workflows,
                    examples(&stuck.parked)
                ),
            ));
        }
        if !stuck.slow_queues.is_empty() {
            let list = stuck
                .slow_queues
                .iter()
                .map(|q| format!("{} ({} waiting since {})", q.name, q.enqueued, q.waiting_since))
                .collect::<Vec<_>>();
            problems.push((
                reason::SLOW_QUEUES,
                format!(
                    "queues whose oldest workflow has waited {}s or more: {}. Raise spec.scaling.maxReplicas or the \
                     queue's concurrency, or look for what holds its workers",
                    spec.queue_wait_seconds,
                    list.join(", ")
                ),
            ));
        }
    }
    // Last: it hides no other problem (nor its Event) for as long as nobody applies the CRDs;
    // the operator's log and metrics say it regardless.
    if !o.crd_missing.is_empty() {
        problems.push((reason::CRD_OUTDATED, crate::crd_drift::outdated_message(DurableApp::crd_name(), &o.crd_missing)));
    }
    problems
}

/// Whether something is on its way (a scaling decision waiting out its window, workers
/// starting, a version draining, a recovery, a terminating pod that counts as gone only past
/// its deadline) or retried until it goes through (a version or queue conflict, a failed
/// promotion to latest): the app is then reconciled every poll interval, not only on change.
pub fn settling(o: &Observed<'_>, d: &Decision, applied: &Applied) -> bool {
    !d.dead.is_empty()
        || o.terminating
        || o.version_conflict.is_some()
        || !o.queue_conflicts.is_empty()
        || applied.latest_failed
        || d.plan.keep.len() > 1
        || !d.plan.remove.is_empty()
        || d.desired != d.current_replicas
        || ready_current(o) != d.desired
        || (o.app.spec.replicas.is_none() && d.recommended != d.desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::deployment_name;
    use chrono::TimeZone;

    const APP: &str = r#"
apiVersion: mainstay.dev/v1alpha1
kind: DurableApp
metadata: {name: shop, namespace: prod, generation: 4, uid: uid-1}
spec:
  image: shop-worker:2
  appVersion: v2
  database: {urlSecret: {name: shop-db, key: url}}
  queues: [{name: orders}]
  scaling: {minReplicas: 0, maxReplicas: 5, workflowsPerWorker: 10, scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 300}
"#;

    fn app(yaml: &str) -> DurableApp {
        yaml_serde::from_str(yaml).expect("fixture parses")
    }

    /// The Deployment of `version` as the cluster would show it: `replicas` wanted, `ready` ready.
    fn deployment(app: &DurableApp, version: &str, image: &str, replicas: i32, ready: i32) -> Deployment {
        let mut d: Deployment = yaml_serde::from_str(&format!(
            r#"
metadata:
  name: {name}
  namespace: prod
  annotations: {{mainstay.dev/version: {version}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: x}}}}
  template: {{spec: {{containers: [{{name: worker, image: "{image}"}}]}}}}
status: {{replicas: {replicas}, readyReplicas: {ready}}}
"#,
            name = deployment_name(&app.name_any(), version)
        ))
        .expect("fixture parses");
        d.metadata.uid = Some(format!("uid-{version}"));
        d
    }

    fn work(version: Option<&str>, pending: i64, enqueued: i64) -> VersionWork {
        VersionWork { app_version: version.map(str::to_string), pending, enqueued, delayed: 0 }
    }

    fn observed<'a>(app: &'a DurableApp, deployments: Vec<Deployment>, by_version: Vec<VersionWork>) -> Observed<'a> {
        Observed {
            app,
            version: app.spec.app_version.clone().unwrap(),
            version_conflict: None,
            queue_conflicts: Vec::new(),
            secret_version: Some("7".into()),
            executors: Vec::new(),
            by_version,
            depths: vec![QueueDepth { queue: "orders".into(), enqueued: 25, pending: 0 }],
            unrunnable: Vec::new(),
            stuck: None,
            crd_missing: Vec::new(),
            queue_waits: Vec::new(),
            registered: BTreeMap::new(),
            deployments: deployments.into_iter().map(|d| (d.annotations()["mainstay.dev/version"].clone(), d)).collect(),
            live_pods: BTreeSet::new(),
            terminating: false,
            now: Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap(),
        }
    }

    fn condition<'s>(s: &'s DurableAppStatus, type_: &str) -> (&'s str, &'s str, &'s str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn queued_work_scales_a_version_up_from_zero() {
        let app = app(APP);
        let o = observed(&app, vec![deployment(&app, "v2", "shop-worker:2", 0, 0)], vec![work(None, 0, 25)]);
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!((d.depth, d.current_replicas, d.desired), (25, 0, 3));
        let applied = d.apply.as_ref().expect("the Deployment is resized");
        assert_eq!(applied.spec.as_ref().unwrap().replicas, Some(3));
        assert!(d.rescale.is_empty() && d.remove.is_empty() && d.dead.is_empty());
        assert!(!d.stops_workers(&o), "scaling up stops no worker");
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!((s.desired_workers, s.queued_workflows), (3, 25));
        assert_eq!(s.queues.len(), 1);
        assert_eq!(s.queues[0].enqueued, 25);
        assert_eq!(condition(&s, "Ready"), ("False", reason::WORKERS_NOT_READY, "no worker of version v2 is ready yet (3 wanted)"));
        assert_eq!(condition(&s, "Progressing"), ("True", reason::SCALING, "0 of 3 workers ready"));
        assert_eq!(condition(&s, "Degraded").0, "False");
        assert!(settling(&o, &d, &Applied::default()));
    }

    #[test]
    fn an_app_at_rest_applies_nothing_and_is_not_settling() {
        let app = app(APP);
        let mut o = observed(&app, vec![], vec![]);
        o.depths.clear();
        // The live Deployment is exactly what the operator would apply.
        let live = with_spec_hash(worker_deployment(&app, "v2", 0, Some("7")));
        o.deployments.insert("v2".into(), live);
        let d = decide(&o, &mut scaling::History::default());
        assert!(d.apply.is_none(), "{:?}", d.apply);
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!(condition(&s, "Ready"), ("True", reason::SCALED_TO_ZERO, "no work queued; scaled to zero"));
        assert_eq!(condition(&s, "Progressing"), ("False", reason::STABLE, "0 workers"));
        assert!(!settling(&o, &d, &Applied::default()));
        assert!(settling(&o, &d, &Applied { latest_failed: true }), "a failed promotion is retried");
    }

    #[test]
    fn an_old_version_drains_on_its_own_template_then_goes() {
        let app = app(APP);
        let old = deployment(&app, "v1", "shop-worker:1", 3, 3);
        let o = observed(
            &app,
            vec![old.clone(), deployment(&app, "v2", "shop-worker:2", 1, 1)],
            vec![work(Some("v1"), 4, 0), work(Some("v2"), 1, 0)],
        );
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(d.plan.keep, vec!["v2".to_string(), "v1".to_string()]);
        assert_eq!(d.rescale, vec![Rescale { deployment: old.name_any(), replicas: 1 }], "4 left: one worker");
        assert!(d.stops_workers(&o), "3 draining workers down to 1: decided again on a reading of now");
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!(condition(&s, "Progressing"), ("True", reason::ROLLING_OUT, "version v2 is current; draining v1 (4 workflows left)"));
        assert_eq!(s.ready_workers, 4);

        let o = observed(&app, vec![old.clone(), deployment(&app, "v2", "shop-worker:2", 1, 1)], vec![work(Some("v2"), 1, 0)]);
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(d.remove, vec![("v1".to_string(), old.name_any())]);
        assert!(d.stops_workers(&o), "a drained version's removal is decided again on a reading of now");
        assert_eq!(status(&o, &d, DurableAppStatus::default()).versions, vec!["v2".to_string()]);
    }

    #[test]
    fn a_new_image_under_work_in_flight_is_refused() {
        let app = app(APP);
        let o = observed(&app, vec![deployment(&app, "v2", "shop-worker:1", 1, 1)], vec![work(Some("v2"), 2, 0)]);
        let d = decide(&o, &mut scaling::History::default());
        assert!(d.blocked && d.apply.is_none());
        assert_eq!(d.reimaged.as_deref(), Some("shop-worker:1"));
        let s = status(&o, &d, DurableAppStatus::default());
        let (state, why, msg) = condition(&s, "Degraded");
        assert_eq!((state, why), ("True", reason::IMAGE_CHANGED));
        assert!(
            msg.starts_with("spec.image changed from shop-worker:1 to shop-worker:2 but the application version is still v2, which has 2"),
            "{msg}"
        );
        assert!(!d.may_take_latest());
    }

    #[test]
    fn problems_are_reported_most_pressing_first() {
        let app = app(APP);
        let mut o = observed(&app, vec![deployment(&app, "v2", "shop-worker:2", 1, 1)], vec![work(Some("v0"), 0, 3)]);
        o.queue_conflicts = vec!["queue orders belongs to application billing".into()];
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(d.stranded, vec![("v0".to_string(), 3)]);
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!(condition(&s, "Degraded").1, reason::QUEUE_CONFLICT, "a queue conflict comes before stranded work");
        o.version_conflict = Some("version v2 belongs to application billing".into());
        let d = decide(&o, &mut scaling::History::default());
        assert!(d.blocked && d.apply.is_none());
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!(condition(&s, "Degraded"), ("True", reason::VERSION_CONFLICT, "version v2 belongs to application billing"));
        assert_eq!(condition(&s, "Ready"), ("False", reason::VERSION_CONFLICT, "version v2 belongs to application billing"));
        o.version_conflict = None;
        o.queue_conflicts.clear();
        let s = status(&o, &decide(&o, &mut scaling::History::default()), DurableAppStatus::default());
        let (_, why, msg) = condition(&s, "Degraded");
        assert_eq!(why, reason::STRANDED_WORK);
        assert!(msg.starts_with("workflows wait for versions no worker runs: 3 of version v0."), "{msg}");
    }

    #[test]
    fn dead_workers_are_recovered_and_unrunnable_work_does_not_scale() {
        let app = app(APP);
        let dname = deployment_name("shop", "v2");
        let mut o = observed(&app, vec![deployment(&app, "v2", "shop-worker:2", 1, 1)], vec![work(Some("v2"), 1, 4)]);
        o.executors = vec![
            ExecutorWork { executor_id: format!("{dname}-abc"), app_version: Some("v2".into()), pending: 1 },
            ExecutorWork { executor_id: format!("{dname}-live"), app_version: Some("v2".into()), pending: 1 },
        ];
        o.live_pods = [format!("{dname}-live")].into();
        o.unrunnable = vec![UnrunnableWork { workflow_name: "refund".into(), queued: 4, own: 4 }];
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(d.dead, vec![format!("{dname}-abc")]);
        assert_eq!(d.depth, 1, "the 4 queued refunds are not the current version's to run");
        let s = status(&o, &d, DurableAppStatus::default());
        assert_eq!(condition(&s, "Degraded").1, reason::UNRUNNABLE_WORK);
    }

    #[test]
    fn stuck_work_is_reported_with_stalled_workflows_only_on_live_workers() {
        let app = app(&format!("{APP}  stuck: {{stalledAfterSeconds: 60, queueWaitSeconds: 120}}\n"));
        let live = format!("{}-live", deployment_name("shop", "v2"));
        let mut o = observed(&app, vec![deployment(&app, "v2", "shop-worker:2", 1, 1)], vec![work(Some("v2"), 3, 2)]);
        o.live_pods = [live.clone()].into();
        let now = o.now.timestamp_millis();
        let stalled = |id: &str, executor: &str| mainstay::StalledWorkflow {
            workflow_id: id.into(),
            name: Some("charge".into()),
            executor_id: Some(executor.into()),
            app_version: Some("v2".into()),
            queue_name: None,
            active_at_ms: now - 90_000,
            last_step: None,
        };
        o.stuck = Some(StuckWorkflows {
            stalled: vec![stalled("w-1", &live), stalled("w-gone", "shop-v2-dead")],
            stalled_total: 2,
            stalled_per_executor: vec![
                mainstay::StalledOnExecutor { executor_id: Some(live.clone()), stalled: 1 },
                mainstay::StalledOnExecutor { executor_id: Some("shop-v2-dead".into()), stalled: 1 },
            ],
            next_stall_at_ms: Some(now + 30_000),
            parked: Vec::new(),
            parked_total: 0,
        });
        let wait = |queue: &str, ago_ms: i64| QueueWait {
            queue: queue.into(),
            enqueued: 2,
            oldest_ready_ms: now - ago_ms,
            oldest_wait_ms: ago_ms,
        };
        o.queue_waits = vec![wait("orders", 150_000), wait("mail", 100_000)];
        let d = decide(&o, &mut scaling::History::default());
        let s = status(&o, &d, DurableAppStatus::default());
        let report = s.stuck.clone().expect("stuck work reported");
        assert_eq!((report.stalled_workflows, report.stalled.clone()), (1, vec!["w-1".to_string()]), "a dead worker's are recovery's");
        assert_eq!(report.slow_queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), vec!["orders"]);
        assert_eq!(report.slow_queues[0].waiting_since, "2026-12-02T09:57:30+00:00");
        let (state, why, msg) = condition(&s, "Degraded");
        assert_eq!((state, why), ("True", reason::STALLED_WORKFLOWS));
        assert!(msg.contains("w-1") && msg.contains("60s"), "{msg}");
        // While something is stuck, judged again at the next poll; otherwise when the next
        // workflow stalls (30 s) or queue mail turns slow (20 s).
        assert_eq!(next_judgement(&o), Some(o.now));
        let (stuck_before, waits_before) = (o.stuck.clone(), o.queue_waits.clone());
        o.stuck.as_mut().unwrap().stalled_total = 0;
        o.queue_waits.retain(|w| w.queue == "mail");
        assert_eq!(next_judgement(&o), Some(o.now + chrono::Duration::seconds(20)));
        (o.stuck, o.queue_waits) = (stuck_before, waits_before);

        // More stalled on the live worker than listed (the listed are all a dead one's): counted
        // whole, none named.
        let mut many = o.stuck.clone().unwrap();
        many.stalled.retain(|s| s.workflow_id == "w-gone");
        many.stalled_per_executor[0].stalled = 7;
        let before = o.stuck.replace(many);
        let s = status(&o, &d, DurableAppStatus::default());
        let report = s.stuck.clone().expect("stuck work reported");
        assert_eq!((report.stalled_workflows, report.stalled.len()), (7, 0));
        let (_, why, msg) = condition(&s, "Degraded");
        assert!(why == reason::STALLED_WORKFLOWS && msg.starts_with("7 workflow(s)") && !msg.contains("e.g."), "{msg}");
        o.stuck = before;
        let report = status(&o, &d, DurableAppStatus::default()).stuck.expect("stuck work reported");

        // Not read this time: the figures stay as they were; nothing stuck at all: no report.
        o.stuck = None;
        o.queue_waits.clear();
        assert_eq!(stuck(&o, &d, Some(report.clone())).map(|s| s.stalled_workflows), Some(1));
        o.stuck = Some(StuckWorkflows::default());
        assert_eq!(stuck(&o, &d, Some(report)), None);
    }

    #[test]
    fn an_outdated_crd_is_the_last_problem() {
        let app = app(APP);
        let mut o = observed(&app, vec![deployment(&app, "v2", "shop-worker:2", 1, 1)], vec![work(Some("v2"), 0, 0)]);
        o.version_conflict = Some("version v2 belongs to another application".into());
        o.crd_missing = vec!["spec.stuck".into(), "status.stuck".into()];
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(condition(&status(&o, &d, DurableAppStatus::default()), "Degraded").1, reason::VERSION_CONFLICT);
        o.version_conflict = None;
        let d = decide(&o, &mut scaling::History::default());
        let s = status(&o, &d, DurableAppStatus::default());
        let (state, why, msg) = condition(&s, "Degraded");
        assert_eq!((state, why), ("True", reason::CRD_OUTDATED));
        assert!(
            msg.contains("durableapps.mainstay.dev") && msg.contains("spec.stuck, status.stuck") && msg.contains("charts/mainstay/crds/"),
            "{msg}"
        );
        o.crd_missing.clear();
        let d = decide(&o, &mut scaling::History::default());
        assert_eq!(condition(&status(&o, &d, DurableAppStatus::default()), "Degraded").1, reason::AS_EXPECTED);
    }
}
