//! The watch of this operator's own CRDs: what each served one lacks (see `crd_drift`), kept
//! in [`CrdDrift`] for the controllers that report it, in the `crd_missing_fields` metric, and
//! in the log when it changes.
//!
//! Invariants: each CRD is watched by name, so the operator needs to read no other CRD (the
//! chart grants exactly these three); it runs for the whole process, like the stores, so a
//! standby replica knows when it takes over. Not being allowed to read or watch a CRD is logged
//! once and the CRD asked for again only every few minutes: the operator works as before
//! without knowing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, CustomResourceExt};
use mainstay_crds::{DurableApp, Schedule, WorkflowRun};
use tokio_util::sync::CancellationToken;

use crate::crd_drift::{missing_fields, outdated_message, CrdDrift};
use crate::metrics::{CrdLabels, Metrics};

/// Starts watching the three CRDs until `stop`.
pub fn start(kube: &kube::Client, drift: Arc<CrdDrift>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let ours = [
        (DurableApp::crd_name(), DurableApp::crd()),
        (Schedule::crd_name(), Schedule::crd()),
        (WorkflowRun::crd_name(), WorkflowRun::crd()),
    ];
    for (crd, built) in ours {
        let api = Api::<CustomResourceDefinition>::all(kube.clone());
        let (drift, metrics, stop) = (drift.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = watch(api, crd, built, &drift, &metrics) => {}
            }
        });
    }
}

/// How often a CRD the operator may not read is tried again (RBAC granted later, or granted a
/// moment after the operator started).
const RETRY_FORBIDDEN: Duration = Duration::from_secs(300);

/// Whether a watch failed for want of access (on its list, its start, or during it).
fn is_forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.is_forbidden(),
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

/// Watches CRD `crd` for ever. While it may not be read, asks again every
/// [`RETRY_FORBIDDEN`] with the watch's own first request (a list of it by name), saying so
/// once: a watch would retry every few seconds, and kube log a warning each time. One that may
/// be listed but not watched is read that way, every [`RETRY_FORBIDDEN`] (also said once).
async fn watch(
    api: Api<CustomResourceDefinition>,
    crd: &'static str,
    built: CustomResourceDefinition,
    drift: &CrdDrift,
    metrics: &Metrics,
) {
    let gauge = metrics.crd_missing_fields.get_or_create(&CrdLabels { crd }).clone();
    let by_name = format!("metadata.name={crd}");
    let (mut told_list, mut told_watch) = (false, false);
    loop {
        match api.list(&ListParams::default().fields(&by_name)).await {
            Err(kube::Error::Api(s)) if s.is_forbidden() => {
                if !told_list {
                    tracing::warn!(
                        crd,
                        "may not read this CRD, so cannot tell whether it is older than the operator (the chart grants get, \
                         list and watch on it unless crdCheck.enabled is false); an outdated CRD will not be reported"
                    );
                    told_list = true;
                }
                tokio::time::sleep(RETRY_FORBIDDEN).await;
                continue;
            }
            // Listed, or another error: the watch sees it (and retries errors).
            Ok(_) => told_list = false,
            Err(_) => {}
        }
        let mut events = std::pin::pin!(crate::stores::watch(api.clone(), watcher::Config::default().fields(&by_name)).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(served) | Event::InitApply(served)) => {
                    let missing = missing_fields(&served, &built);
                    gauge.set(i64::try_from(missing.len()).unwrap_or(i64::MAX));
                    match drift.record(crd, missing.clone()) {
                        Some(_) if !missing.is_empty() => tracing::warn!(crd, "{}", outdated_message(crd, &missing)),
                        Some(_) => tracing::info!(crd, "the installed CRD is current again"),
                        None => {}
                    }
                }
                Ok(Event::Delete(_)) => {
                    gauge.set(0);
                    drift.forget(crd);
                    tracing::warn!(crd, "the CRD was deleted (and with it every object of its kind)");
                }
                Ok(Event::Init | Event::InitDone) => {}
                // Access withdrawn, or listing allowed and watching not: asked again later.
                Err(e) if is_forbidden(&e) => break,
                Err(e) => tracing::debug!(crd, error = %e, "watching the CRD failed; retrying"),
            }
        }
        if !told_watch {
            tracing::warn!(crd, "may not watch this CRD (any more): it is read again every 5 min instead");
            told_watch = true;
        }
        tokio::time::sleep(RETRY_FORBIDDEN).await;
    }
}
