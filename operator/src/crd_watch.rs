//! The watch of this operator's own CRDs: what each served one lacks (see `crd_drift`), kept
//! in [`CrdDrift`] for the controllers that report it, in the `crd_missing_fields` metric, and
//! in the log when it changes.
//!
//! Invariants: each CRD is watched by name, so the operator needs to read no other CRD (the
//! chart grants exactly these three); it runs for the whole process, like the stores, so a
//! standby replica knows when it takes over. Not being allowed to read a CRD is logged once
//! and otherwise ignored: the operator works as before without knowing.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

async fn watch(
    api: Api<CustomResourceDefinition>,
    crd: &'static str,
    built: CustomResourceDefinition,
    drift: &CrdDrift,
    metrics: &Metrics,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={crd}"));
    let mut events = std::pin::pin!(crate::stores::watch(api, config).default_backoff());
    let gauge = metrics.crd_missing_fields.get_or_create(&CrdLabels { crd }).clone();
    let mut failing = false;
    while let Some(event) = events.next().await {
        let (missing, before) = match event {
            Ok(Event::Apply(served) | Event::InitApply(served)) => {
                let missing = missing_fields(&served, &built);
                gauge.set(i64::try_from(missing.len()).unwrap_or(i64::MAX));
                (missing.clone(), drift.record(crd, missing))
            }
            Ok(Event::Delete(_)) => {
                gauge.set(0);
                (Vec::new(), drift.forget(crd))
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                let forbidden = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_forbidden());
                if forbidden && !failing {
                    tracing::warn!(
                        crd,
                        "may not read this CRD, so cannot tell whether it is older than the operator (the chart grants get, \
                         list and watch on it, unless crdCheck.enabled is false); an outdated CRD will not be reported"
                    );
                } else {
                    tracing::debug!(crd, error = %e, "watching the CRD failed; retrying");
                }
                failing = forbidden;
                continue;
            }
        };
        failing = false;
        match before {
            Some(_) if !missing.is_empty() => tracing::warn!(crd, "{}", outdated_message(crd, &missing)),
            Some(before) if !before.is_empty() => tracing::info!(crd, "the installed CRD is current again"),
            _ => {}
        }
    }
}
