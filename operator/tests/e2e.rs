//! End-to-end: the Helm chart installed into a real control plane (kube-apiserver, etcd,
//! controller-manager, scheduler, kwok nodes), the operator binary running as the chart's
//! ServiceAccount, worker pods run as local processes by the pod runner, and a real Postgres.
//!
//! `bash .ci/run` starts the cluster and sets the variables this reads (see `harness`).

#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/pods.rs"]
mod pods;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use chrono::{DateTime, Utc};
use harness::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, CustomResourceExt as _, ResourceExt};
use mainstay::{Client, Status, WorkflowFilter, WorkflowOptions};
use mainstay_crds::{DurableApp, Schedule, WorkflowRun};
use mainstay_operator::names::LABEL_APP;
use pods::PodRunner;

const MINUTE: Duration = Duration::from_secs(60);

/// A namespace name unique to this run, so reruns against one cluster never meet old state.
fn namespace(base: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| format!("{:x}", std::process::id()));
    format!("{base}-{run}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_end_to_end() -> Result<()> {
    let cluster = Cluster::from_env().await?;
    install_chart(&cluster).await?;
    let sa = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, RELEASE)?;
    let operator = Operator::start(&cluster, &sa, "e2e-operator-1").await?;
    let runner = PodRunner::start(cluster.client.clone(), cluster.worker_bin.clone(), cluster.work_dir.clone(), vec![]);
    let outcome = async {
        invalid_resources_are_rejected(&cluster).await.context("scenario: invalid resources")?;
        // Alone: it swaps the served DurableApp CRD for an older one, which the other
        // scenarios would feel.
        outdated_crd_is_reported(&cluster, &operator).await.context("scenario: an outdated CRD")?;
        tokio::try_join!(
            async { scale_drain_and_recover(&cluster, &runner).await.context("scenario: scaling and recovery") },
            async { new_version_rolls_out(&cluster, &runner).await.context("scenario: roll-out") },
            async { stuck_work_is_reported(&cluster, &operator).await.context("scenario: stuck work") },
        )?;
        expect_metrics(
            &operator,
            &[
                "reconciles_total",
                "reconcile_duration_seconds",
                "recovered_workflows_total",
                "queue_depth",
                "leader 1",
                "api_requests_total{verb=\"watch\",resource=\"durableapps\"}",
            ],
        )
        .await?;
        workflow_runs_from_manifests(&cluster).await.context("scenario: workflow runs")?;
        let shared = apps_share_a_database(&cluster).await.context("scenario: two apps on one database")?;
        // The schedule scenario restarts the operator in its middle.
        let operator = schedule_fires_once_per_tick(&cluster, &sa, operator).await.context("scenario: schedule")?;
        expect_metrics(&operator, &["schedule_fires_total", "leader 1"]).await?;
        scale_down_window_survives_the_restart(&cluster, &shared).await.context("scenario: restart during a scale-down window")?;
        leader_steps_down_before_its_lease_expires(&cluster, &operator).await.context("scenario: lease renewal fails")?;
        operator.stop().await.context("the operator stops gracefully")?;
        // Alone again, with no other operator running: it swaps a CRD for an older one.
        status_is_written_where_the_crds_cannot_be_read(&cluster).await.context("scenario: CRDs the operator may not read")?;
        uninstall_keeps_the_database(&cluster).await.context("scenario: helm uninstall")
    }
    .await;
    runner.shutdown().await;
    if let Err(e) = &outcome {
        eprintln!("logs of the operator and the workers are in {}", cluster.work_dir.display());
        return Err(anyhow::anyhow!("{e:#}"));
    }
    Ok(())
}

async fn expect_metrics(operator: &Operator, names: &[&str]) -> Result<()> {
    let metrics = operator.metrics().await.unwrap_or_default();
    for name in names {
        ensure!(metrics.contains(&format!("mainstay_operator_{name}")), "/metrics lacks mainstay_operator_{name}:\n{metrics}");
    }
    // Asked without an Accept header, as promtool's users do: the classic format, which
    // Prometheus's own checker accepts without a finding.
    mainstay_testkit::check_metrics(&metrics);
    Ok(())
}

/// `helm lint`, a server-side dry run of the rendered chart, then `helm install`.
async fn install_chart(cluster: &Cluster) -> Result<()> {
    cluster.helm(&["lint", "charts/mainstay"])?;
    // Two replicas without leader election would fight over every object: refused.
    let two = cluster.helm(&["template", RELEASE, "charts/mainstay", "--set", "replicaCount=2", "--set", "leaderElection.enabled=false"]);
    ensure!(
        two.as_ref().err().is_some_and(|e| format!("{e:#}").contains("replicaCount")),
        "two replicas without leader election were accepted: {two:?}"
    );
    let _ = cluster.helm(&["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait"]);
    cluster.kubectl(&["apply", "--server-side", "-f", "charts/mainstay/crds/"])?;
    crds_established(cluster, &[DurableApp::crd_name(), Schedule::crd_name(), WorkflowRun::crd_name()]).await?;
    apply(cluster, &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {RELEASE_NAMESPACE}}}\n"))?;
    // The `helm test` pod runs the operator's own image (a mirror's too), nothing else.
    let mirrored = cluster.helm(&["template", RELEASE, "charts/mainstay", "--set", "image.repository=mirror.example/mainstay-operator"])?;
    let images: Vec<&str> = mirrored.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    ensure!(
        images.len() == 2 && images.iter().all(|i| i.starts_with("\"mirror.example/mainstay-operator:")),
        "the operator and its test pod should both run the operator's image: {images:?}"
    );
    monitors_are_accepted(cluster).await.context("the chart's Prometheus Operator monitors")?;
    let rendered = cluster.helm(&["template", RELEASE, "charts/mainstay", "-n", RELEASE_NAMESPACE])?;
    let dry = cluster.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered)?;
    ensure!(dry.status.success(), "the rendered chart is refused by the apiserver: {}", String::from_utf8_lossy(&dry.stderr));
    cluster.helm(&["install", RELEASE, "charts/mainstay", "-n", RELEASE_NAMESPACE, "--wait", "--timeout", "2m"])?;
    Ok(())
}

/// The chart's ServiceMonitor and PodMonitor: refused with a clear message where the Prometheus
/// Operator's CRDs are missing; accepted by the apiserver against those CRDs' own schemas
/// (generated from its API module by `tests/cluster/build.sh observability`, named by
/// `MAINSTAY_MONITORING_CRDS`); and the PodMonitor selects the worker pods the operator makes.
async fn monitors_are_accepted(cluster: &Cluster) -> Result<()> {
    let Ok(crds) = std::env::var("MAINSTAY_MONITORING_CRDS") else {
        ensure!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MAINSTAY_MONITORING_CRDS is not set: .ci/run builds them (tests/cluster/build.sh observability)"
        );
        eprintln!("NOTICE: MAINSTAY_MONITORING_CRDS is not set; the chart's monitors were not checked against their CRDs");
        return Ok(());
    };
    let on = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "workers.podMonitor.enabled=true"];
    let without = cluster.helm(&[&["template", RELEASE, "charts/mainstay"][..], &on[..]].concat());
    ensure!(
        without.as_ref().err().is_some_and(|e| format!("{e:#}").contains("needs the Prometheus Operator's CRDs")),
        "monitors rendered without their CRDs: {without:?}"
    );
    cluster.kubectl(&["apply", "--server-side", "-f", &crds])?;
    crds_established(cluster, &["servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com"]).await?;
    let args =
        [&["template", RELEASE, "charts/mainstay", "-n", RELEASE_NAMESPACE, "--api-versions", "monitoring.coreos.com/v1"][..], &on[..]]
            .concat();
    let rendered = cluster.helm(&args)?;
    ensure!(rendered.contains("kind: ServiceMonitor") && rendered.contains("kind: PodMonitor"), "{rendered}");
    for wanted in [
        format!("port: {}", mainstay_operator::names::HEALTH_PORT_NAME),
        format!("{}: {}", mainstay_operator::names::LABEL_COMPONENT, mainstay_operator::names::COMPONENT_WORKER),
        format!("{}: {}", mainstay_operator::names::LABEL_MANAGED_BY, mainstay_operator::names::MANAGED_BY),
    ] {
        ensure!(rendered.contains(&wanted), "the PodMonitor does not select the workers the operator makes ({wanted}):\n{rendered}");
    }
    let dry = cluster.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered)?;
    ensure!(dry.status.success(), "the monitors are refused by their CRDs: {}", String::from_utf8_lossy(&dry.stderr));
    Ok(())
}

/// Waits until the apiserver serves each named CRD. Watched through the API (kube's own
/// condition) rather than with `kubectl wait --for=condition=Established`, which fails outright,
/// instead of waiting, when it reads a CRD whose status has no conditions yet, as a just-created
/// one's may not.
async fn crds_established(cluster: &Cluster, names: &[&str]) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions::is_crd_established};
    let crds = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    for name in names {
        tokio::time::timeout(Duration::from_secs(60), await_condition(crds.clone(), name, is_crd_established()))
            .await
            .with_context(|| format!("CRD {name} was not established within 60 s"))?
            .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

fn apply(cluster: &Cluster, yaml: &str) -> Result<()> {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    ensure!(out.status.success(), "kubectl apply failed: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A namespace with a database Secret pointing at a fresh database; returns the database URL.
async fn namespace_with_database(cluster: &Cluster, ns: &str) -> Result<String> {
    let url = cluster.fresh_database(&ns.replace('-', "_")).await?;
    apply(
        cluster,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-db, namespace: {ns}}}\nstringData: {{url: \"{url}\"}}\n"
        ),
    )?;
    Ok(url)
}

async fn app(cluster: &Cluster, ns: &str, name: &str) -> Result<DurableApp> {
    Ok(Api::<DurableApp>::namespaced(cluster.client.clone(), ns).get(name).await?)
}

fn condition(app: &DurableApp, type_: &str) -> Option<(String, String, String)> {
    app.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Worker Deployments of an app by version annotation: `(version, replicas)`.
async fn worker_deployments(cluster: &Cluster, ns: &str, app: &str) -> Result<Vec<(String, i32)>> {
    let list = Api::<Deployment>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_APP}={app}")))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|d| {
            let v = d.metadata.annotations.as_ref().and_then(|a| a.get("mainstay.dev/version")).cloned().unwrap_or_default();
            (v, d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        })
        .collect())
}

async fn count(client: &Client, filter: WorkflowFilter) -> Result<usize> {
    Ok(client.list_workflows(&filter).await?.len())
}

/// The DurableApp and Schedule CRDs of an older release (before `spec.stuck`, `status.stuck`
/// and `spec.backfill`) are applied over the current ones (what `helm upgrade` leaves, as it
/// never upgrades CRDs). The operator, which may read exactly its own CRDs (the chart's RBAC),
/// keeps writing statuses the old schema cannot hold (the API server drops `status.stuck`), says
/// on the app and the Schedule which fields are dropped, and in its metrics; once the current
/// CRDs are applied, it says so no more.
async fn outdated_crd_is_reported(cluster: &Cluster, operator: &Operator) -> Result<()> {
    let ns = namespace("e2e-crd");
    let url = namespace_with_database(cluster, &ns).await?;
    apply(
        cluster,
        &format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:1.0.0\n  database: {{urlSecret: {{name: shop-db}}}}\n  replicas: 0\n---\n\
             apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: yearly, namespace: {ns}}}\nspec:\n  \
             appRef: shop\n  workflowName: nightly_report\n  schedule: \"0 0 1 1 *\"\n"
        ),
    )?;
    // The app (once migrated) and its Schedule, when their Degraded reasons are those wanted:
    // the app, and the two messages.
    let degraded = |app_wants: &'static str, schedule_wants: &'static str| {
        let ns = ns.clone();
        move || {
            let ns = ns.clone();
            async move {
                let a = app(cluster, &ns, "shop").await?;
                let migrated = condition(&a, "Migrated").is_some_and(|c| c.0 == "True");
                let of_app = condition(&a, "Degraded").filter(|c| migrated && c.1 == app_wants).map(|c| c.2);
                let s = Api::<Schedule>::namespaced(cluster.client.clone(), &ns).get("yearly").await?;
                let of_schedule = s.status.and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Degraded"));
                let of_schedule = of_schedule.filter(|c| c.reason == schedule_wants).map(|c| c.message);
                Ok(of_app.zip(of_schedule).map(|(m, n)| (a, m, n)))
            }
        }
    };
    wait_for("shop and its Schedule to run with nothing degraded", MINUTE, degraded("AsExpected", "AsExpected")).await?;

    apply_older_crd(cluster, "durableapps.yaml", &[("spec", "stuck"), ("status", "stuck")])?;
    apply_older_crd(cluster, "schedules.yaml", &[("spec", "backfill")])?;
    // Work of a version that runs nowhere: a status with `stuck` in it, which the old schema
    // drops, is still written (its Degraded condition).
    let client = Client::connect(&url).await?.for_application(Some("shop"));
    let opts = WorkflowOptions::new().id("crd-stranded").app_version("0.9.0");
    client.enqueue("process_order", "orders", vec![serde_json::json!(1)], opts).await?;
    let (a, _, of_schedule) =
        wait_for("shop to report stranded work, its Schedule the outdated CRD", MINUTE, degraded("StrandedWork", "CRDOutdated")).await?;
    ensure!(a.status.and_then(|s| s.stuck).is_none(), "the old CRD kept status.stuck: nothing was dropped");
    let fix = "kubectl apply --server-side -f charts/mainstay/crds/";
    ensure!(
        of_schedule.contains("schedules.mainstay.dev") && of_schedule.contains("lacks spec.backfill,") && of_schedule.contains(fix),
        "{of_schedule}"
    );
    client.cancel("crd-stranded").await?;
    let (_, of_app, _) = wait_for("shop to report the outdated CRD", MINUTE, degraded("CRDOutdated", "CRDOutdated")).await?;
    ensure!(
        of_app.contains("durableapps.mainstay.dev") && of_app.contains("lacks spec.stuck, status.stuck,") && of_app.contains(fix),
        "{of_app}"
    );
    let gauge = |crd: &str, n: usize| format!("mainstay_operator_crd_missing_fields{{crd=\"{crd}\"}} {n}");
    let metrics = operator.metrics().await.context("reading the operator's /metrics")?;
    for want in [gauge("durableapps.mainstay.dev", 2), gauge("schedules.mainstay.dev", 1), gauge("workflowruns.mainstay.dev", 0)] {
        ensure!(metrics.contains(&want), "/metrics lacks {want}:\n{metrics}");
    }

    cluster.kubectl(&["apply", "--server-side", "-f", mainstay_crds::CHART_CRD_DIR])?;
    wait_for("shop and its Schedule to stop reporting the CRDs once current", MINUTE, degraded("AsExpected", "AsExpected")).await?;
    let metrics = operator.metrics().await.context("reading the operator's /metrics")?;
    ensure!(metrics.contains(&gauge("durableapps.mainstay.dev", 0)), "/metrics still counts missing fields:\n{metrics}");
    cluster.kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

/// Applies the chart's CRD `file` without the fields `drop` names (`(spec|status, field)`), as
/// an older release's would be.
fn apply_older_crd(cluster: &Cluster, file: &str, drop: &[(&str, &str)]) -> Result<()> {
    let path = format!("{}/../{}/{file}", env!("CARGO_MANIFEST_DIR"), mainstay_crds::CHART_CRD_DIR);
    let current = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut old: serde_json::Value = yaml_serde::from_str(&current)?;
    for version in old["spec"]["versions"].as_array_mut().context("the CRD's versions")? {
        for (part, field) in drop {
            let fields = version["schema"]["openAPIV3Schema"]["properties"][part]["properties"].as_object_mut().context("a schema")?;
            ensure!(fields.remove(*field).is_some(), "{file}: {part} has no {field} to take away");
        }
    }
    let out = cluster.kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &serde_json::to_string(&old)?)?;
    ensure!(out.status.success(), "applying an older {file} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// With the main operator stopped: an operator installed with `crdCheck.enabled=false` (it may
/// not read its CRDs, so it cannot know one is old) still writes the status of an app with
/// stuck work under an older CRD: the API server refuses `status.stuck`, the operator leaves it
/// out and says so once, and the conditions show.
async fn status_is_written_where_the_crds_cannot_be_read(cluster: &Cluster) -> Result<()> {
    let ns = namespace("e2e-nocrd");
    let url = namespace_with_database(cluster, &ns).await?;
    let watch_ns = format!("watchNamespace={ns}");
    let rbac = cluster.helm(&[
        "template",
        "nocrd",
        "charts/mainstay",
        "-n",
        &ns,
        "--set",
        "crdCheck.enabled=false",
        "--set",
        &watch_ns,
        "--set",
        "leaderElection.enabled=false",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/serviceaccount.yaml",
    ])?;
    ensure!(!rbac.contains("customresourcedefinitions"), "crdCheck.enabled=false still grants reading the CRDs:\n{rbac}");
    apply(cluster, &rbac)?;
    let kubeconfig = cluster.service_account_kubeconfig(&ns, "nocrd-mainstay")?;
    apply_older_crd(cluster, "durableapps.yaml", &[("spec", "stuck"), ("status", "stuck")])?;
    apply(
        cluster,
        &format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:1.0.0\n  database: {{urlSecret: {{name: shop-db}}}}\n  replicas: 0\n"
        ),
    )?;
    let args = ["--leader-elect=false".to_string(), format!("--namespace={ns}")];
    let operator = Operator::start_with(cluster, &kubeconfig, "e2e-nocrd", &args).await?;
    let outcome = async {
        wait_for("shop to migrate", MINUTE, || async {
            Ok(condition(&app(cluster, &ns, "shop").await?, "Migrated").filter(|c| c.0 == "True").map(|_| ()))
        })
        .await?;
        let client = Client::connect(&url).await?.for_application(Some("shop"));
        client.enqueue("process_order", "orders", vec![serde_json::json!(1)], WorkflowOptions::new().app_version("0.9.0")).await?;
        let a = wait_for("shop to report stranded work", MINUTE, || async {
            let a = app(cluster, &ns, "shop").await?;
            Ok(condition(&a, "Degraded").filter(|c| c.1 == "StrandedWork").map(|_| a))
        })
        .await?;
        ensure!(a.status.and_then(|s| s.stuck).is_none(), "the old CRD kept status.stuck");
        let log = std::fs::read_to_string(&operator.log)?;
        let said = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        ensure!(said("may not read this CRD") == 3, "not said once per CRD that it may not be read:\n{log}");
        ensure!(said("lacks status fields the operator writes (status.stuck)") == 1, "the refusal not said exactly once:\n{log}");
        Ok(())
    }
    .await;
    cluster.kubectl(&["apply", "--server-side", "-f", mainstay_crds::CHART_CRD_DIR])?;
    operator.stop().await?;
    outcome?;
    cluster.kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}

async fn invalid_resources_are_rejected(cluster: &Cluster) -> Result<()> {
    let ns = &namespace("e2e-invalid");
    let url = namespace_with_database(cluster, ns).await?;
    let refused = |yaml: String, needle: &'static str| {
        let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &yaml).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() || !err.contains(needle) {
            bail!("expected kubectl apply to be refused with {needle:?}, got {}: {err}", out.status);
        }
        Ok(())
    };
    let app_yaml = |spec: &str| {
        format!("apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: bad, namespace: {ns}}}\nspec:\n  database: {{urlSecret: {{name: shop-db}}}}\n{spec}")
    };
    let sched = |spec: &str| {
        format!("apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: bad, namespace: {ns}}}\nspec:\n  appRef: shop\n  workflowName: w\n{spec}")
    };
    refused(app_yaml("  image: w:1\n  scaling: {minReplicas: 5, maxReplicas: 1}\n"), "minReplicas must be <= maxReplicas")?;
    refused(app_yaml("  image: w:1\n  replicas: -1\n"), "spec.replicas")?;
    refused(app_yaml("  image: \"\"\n"), "image must not be empty")?;
    refused(sched("  schedule: \"* * *\"\n"), "schedule must have 5 fields")?;
    refused(sched("  schedule: \"CRON_TZ=UTC * * * * *\"\n"), "put the time zone in spec.timeZone")?;
    let long = format!("apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: {}, namespace: {ns}}}\nspec:\n  appRef: shop\n  workflowName: w\n  schedule: \"@daily\"\n", "s".repeat(53));
    refused(long, "at most 52 characters")?;
    let long_app = format!("apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: {}, namespace: {ns}}}\nspec:\n  image: w:1\n  database: {{urlSecret: {{name: shop-db}}}}\n", "a".repeat(37));
    refused(long_app, "at most 36 characters")?;
    let twice = format!(
        "apiVersion: mainstay.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {{name: twice, namespace: {ns}}}\nspec:\n  appRef: shop\n  workflowName: w\n  \
         messages: [{{name: a, message: 1}}, {{name: a, message: 2}}]\n"
    );
    refused(twice, "Duplicate value")?;
    // What the schema cannot express becomes a Degraded condition with reason InvalidSpec.
    apply(cluster, &app_yaml("  image: w:latest\n"))?;
    apply(cluster, &sched("  schedule: \"61 * * * *\"\n"))?;
    let msg = wait_for("DurableApp bad to be Degraded with InvalidSpec", MINUTE, || async {
        let a = app(cluster, ns, "bad").await?;
        Ok(condition(&a, "Degraded").filter(|(s, r, _)| s == "True" && r == "InvalidSpec").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("latest") && msg.contains("spec.appVersion"), "unclear message: {msg}");
    let msg = wait_for("Schedule bad to be Degraded with InvalidSpec", MINUTE, || async {
        let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get("bad").await?;
        Ok(s.status
            .and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Degraded" && c.reason == "InvalidSpec"))
            .map(|c| c.message))
    })
    .await?;
    ensure!(msg.contains("the minute field \"61\" is not valid"), "unclear message: {msg}");
    // The finalizer earlier releases added is removed, so deletion never waits for an operator.
    for kind in ["durableapp", "schedule"] {
        cluster.kubectl(&[
            "patch",
            kind,
            "bad",
            "-n",
            ns,
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":[\"mainstay.dev/finalizer\"]}}",
        ])?;
    }
    wait_for("the legacy finalizers to be removed", MINUTE, || async {
        let a = app(cluster, ns, "bad").await?.metadata.finalizers.unwrap_or_default();
        let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get("bad").await?.metadata.finalizers.unwrap_or_default();
        Ok((a.is_empty() && s.is_empty()).then_some(()))
    })
    .await?;
    // A missing Secret is reported with the command that creates it, and fixing it recovers.
    apply(cluster, &app_yaml("  image: w:1\n").replace("name: shop-db", "name: later-db").replace("name: bad,", "name: later,"))?;
    let msg = wait_for("DurableApp later to report SecretNotFound", MINUTE, || async {
        let a = app(cluster, ns, "later").await?;
        let migrated = condition(&a, "Migrated").filter(|c| c.0 == "False" && c.1 == "SecretNotFound");
        Ok(condition(&a, "Degraded").filter(|c| c.0 == "True" && c.1 == "SecretNotFound").and(migrated).map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("create secret generic later-db"), "unclear message: {msg}");
    // The problem is also an Event, once.
    wait_for("a SecretNotFound Warning event for DurableApp later", MINUTE, || async {
        let out = cluster.kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.name=later,reason=SecretNotFound,type=Warning",
            "-o",
            "name",
        ])?;
        Ok((!out.trim().is_empty()).then_some(()))
    })
    .await?;
    apply(
        cluster,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: later-db, namespace: {ns}}}\nstringData: {{url: \"{url}\"}}\n"),
    )?;
    wait_for("DurableApp later to migrate once its Secret exists", 2 * MINUTE, || async {
        let a = app(cluster, ns, "later").await?;
        Ok(condition(&a, "Migrated").filter(|c| c.0 == "True").and(condition(&a, "Degraded").filter(|c| c.0 == "False")).map(|_| ()))
    })
    .await?;
    Ok(())
}

async fn scale_drain_and_recover(cluster: &Cluster, runner: &PodRunner) -> Result<()> {
    let ns = &namespace("e2e-scale");
    let url = namespace_with_database(cluster, ns).await?;
    let manifest = |min: i32| {
        format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:1.0.0\n  database: {{urlSecret: {{name: shop-db}}}}\n  \
             queues: [{{name: orders, workerConcurrency: 20}}]\n  env: [{{name: WORK_MS, value: \"100\"}}]\n  \
             scaling: {{minReplicas: {min}, maxReplicas: 4, targetQueueDepth: 50, scaleDownStabilizationSeconds: 5}}\n"
        )
    };
    apply(cluster, &manifest(0))?;
    wait_for("Migrated=True", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Migrated").filter(|c| c.0 == "True").map(|_| ()))
    })
    .await?;
    wait_for("Ready=True (scaled to zero)", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Ready").filter(|c| c.0 == "True" && c.1 == "ScaledToZero").map(|_| ()))
    })
    .await?;
    // Applying the same manifest again changes nothing (no schema defaults inside lists), and
    // `kubectl get` tells an app scaled to zero by its Ready reason.
    let again = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest(0))?;
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    ensure!(again.contains("unchanged"), "re-applying an unchanged DurableApp: {again}");
    let table = cluster.kubectl(&["get", "durableapps", "-n", ns])?;
    let header = table.lines().next().unwrap_or_default();
    ensure!(header.contains("READY") && header.contains("REASON") && table.contains("ScaledToZero"), "kubectl get durableapps:\n{table}");
    // The worker Deployment: the Secret's URL, the pod name as executor ID, probes.
    let deploys =
        Api::<Deployment>::namespaced(cluster.client.clone(), ns).list(&ListParams::default().labels(&format!("{LABEL_APP}=shop"))).await?;
    ensure!(deploys.items.len() == 1, "one worker Deployment, got {}", deploys.items.len());
    let pod = deploys.items[0].spec.clone().unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let env = c.env.clone().unwrap_or_default();
    let by_name = |n: &str| env.iter().find(|e| e.name == n).cloned();
    let url_env = by_name("MAINSTAY_DATABASE_URL").context("MAINSTAY_DATABASE_URL")?;
    ensure!(url_env.value_from.and_then(|f| f.secret_key_ref).map(|s| s.name) == Some("shop-db".into()), "URL not from the Secret");
    let exec = by_name("MAINSTAY_EXECUTOR_ID").context("MAINSTAY_EXECUTOR_ID")?;
    ensure!(
        exec.value_from.and_then(|f| f.field_ref).map(|f| f.field_path) == Some("metadata.name".into()),
        "executor ID not the pod name"
    );
    ensure!(by_name("MAINSTAY_APP_VERSION").and_then(|e| e.value) == Some("1.0.0".into()), "version not the image tag");
    let probe_path =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
    ensure!(
        probe_path(&c.liveness_probe).as_deref() == Some("/healthz") && probe_path(&c.readiness_probe).as_deref() == Some("/readyz"),
        "probes"
    );
    // Hardening: no API token in the workers, and the security defaults in place.
    ensure!(pod.automount_service_account_token == Some(false), "the workers mount an API token");
    let sc = c.security_context.clone().unwrap_or_default();
    ensure!(sc.read_only_root_filesystem == Some(true) && sc.run_as_non_root == Some(true), "security defaults: {sc:?}");

    // 500 orders: the operator scales up from zero, the workers drain the queue, and it scales
    // back to zero. They are enqueued while the app is paused, so the operator sees all 500 at
    // once: enqueued one by one on a loaded machine, a first worker could drain them about as
    // fast as they come, and the depth the scale-up follows would depend on the machine's speed.
    let paused = mainstay_operator::names::ANNOTATION_PAUSED;
    cluster.kubectl(&["annotate", "durableapp", "shop", "-n", ns, &format!("{paused}=true")])?;
    wait_for("the app to be paused", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Ready").filter(|c| c.1 == "Paused").map(|_| ()))
    })
    .await?;
    let client = Client::connect(&url).await?;
    for i in 0..500 {
        let opts = WorkflowOptions::new().id(format!("order-{i}"));
        client.enqueue("process_order", "orders", vec![serde_json::json!(i)], opts).await?;
    }
    cluster.kubectl(&["annotate", "durableapp", "shop", "-n", ns, &format!("{paused}-")])?;
    let most = std::sync::atomic::AtomicI32::new(0);
    wait_for("500 orders to succeed", 3 * MINUTE, || async {
        let d = worker_deployments(cluster, ns, "shop").await?;
        most.fetch_max(d.iter().map(|x| x.1).sum::<i32>(), std::sync::atomic::Ordering::SeqCst);
        let done = count(&client, WorkflowFilter::new().statuses([Status::Success])).await?;
        Ok((done == 500).then_some(()))
    })
    .await?;
    let most = most.into_inner();
    ensure!(most == 4, "expected a scale-up to maxReplicas 4 for 500 queued workflows, saw at most {most}");
    wait_for("scale back to zero", 2 * MINUTE, || async {
        let d = worker_deployments(cluster, ns, "shop").await?;
        let procs = runner.running().iter().filter(|k| k.starts_with(&format!("{ns}/"))).count();
        Ok((d.iter().all(|x| x.1 == 0) && procs == 0).then_some(()))
    })
    .await?;

    // A worker dies mid-workflow: its workflows are re-enqueued and finish on another.
    apply(cluster, &manifest(2))?;
    wait_for("two workers", MINUTE, || async {
        Ok((runner.running().iter().filter(|k| k.starts_with(&format!("{ns}/"))).count() == 2).then_some(()))
    })
    .await?;
    for i in 0..6 {
        let opts = WorkflowOptions::new().id(format!("hold-{i}"));
        // Held until released below (at most ten minutes), so the victim surely holds work.
        client.enqueue("hold", "orders", vec![serde_json::json!(600_000)], opts).await?;
    }
    let victim = wait_for("the held workflows to be running", MINUTE, || async {
        let running = client.list_workflows(&WorkflowFilter::new().id_prefix("hold-").statuses([Status::Pending])).await?;
        Ok((running.len() == 6).then(|| running[0].executor_id.clone()).flatten())
    })
    .await?;
    let held_by_victim = count(&client, WorkflowFilter::new().executor_id(victim.clone()).statuses([Status::Pending])).await?;
    cluster.kubectl(&["delete", "pod", &victim, "-n", ns, "--wait=false"])?;
    wait_for("the victim's process to be killed", MINUTE, || async {
        Ok((!runner.running().iter().any(|k| k.ends_with(&format!("/{victim}")))).then_some(()))
    })
    .await?;
    release(&client, "hold-", 6).await?;
    wait_for("all held workflows to succeed", 2 * MINUTE, || async {
        let done = client.list_workflows(&WorkflowFilter::new().id_prefix("hold-").statuses([Status::Success])).await?;
        Ok((done.len() == 6).then_some(done))
    })
    .await
    .and_then(|done| {
        let on_victim: Vec<_> = done.iter().filter(|w| w.executor_id.as_deref() == Some(victim.as_str())).collect();
        ensure!(on_victim.is_empty(), "workflows finished on the dead worker {victim}: {on_victim:?}");
        Ok(())
    })?;
    let events =
        cluster.kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}"])?;
    ensure!(
        events.lines().any(|l| l.starts_with("RecoveredWorkflows") && l.contains(&victim)),
        "no RecoveredWorkflows event naming {victim} ({held_by_victim} workflows): {events}"
    );
    // Each scaling is its own Event with its own message (not the first one's, repeated).
    let scaled: BTreeSet<&str> = events.lines().filter(|l| l.starts_with("Scaled")).collect();
    ensure!(
        scaled.iter().any(|l| l.contains("to 4 workers"))
            && scaled.iter().any(|l| l.contains("to 0 workers"))
            && scaled.iter().any(|l| l.contains("to 2 workers")),
        "the scalings up to 4, down to 0 and up to 2 are not each an Event: {scaled:?}"
    );
    client.close().await;
    Ok(())
}

/// Each kind of stuck work, produced for real and reported by the operator in `status.stuck`,
/// as Warning Events and as metrics: a workflow hanging in a step (stalled), one queued behind
/// it (a slow queue), one pinned to a version no worker runs (stranded), and the hanging one
/// again after its worker dies, recovered onto a worker that allows no recovery (parked).
async fn stuck_work_is_reported(cluster: &Cluster, operator: &Operator) -> Result<()> {
    const STALLED_AFTER: i64 = 5;
    let ns = &namespace("e2e-stuck");
    let url = namespace_with_database(cluster, ns).await?;
    // One worker, one workflow at a time, each order's work taking ten minutes.
    apply(
        cluster,
        &format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: slow, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:1.0.0\n  database: {{urlSecret: {{name: shop-db}}}}\n  \
             queues: [{{name: orders, workerConcurrency: 1}}]\n  replicas: 1\n  \
             env: [{{name: WORK_MS, value: \"600000\"}}, {{name: MAINSTAY_MAX_RECOVERY_ATTEMPTS, value: \"0\"}}]\n  \
             stuck: {{stalledAfterSeconds: {STALLED_AFTER}, queueWaitSeconds: {STALLED_AFTER}}}\n"
        ),
    )?;
    wait_for("a ready worker", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "slow").await?, "Ready").filter(|c| c.0 == "True" && c.1 == "Available").map(|_| ()))
    })
    .await?;
    let client = Client::connect(&url).await?.for_application(Some("slow"));
    let opts = |id: &str| WorkflowOptions::new().id(id);
    client.enqueue("process_order", "orders", vec![serde_json::json!(1)], opts("stuck-1")).await?;
    client.enqueue("process_order", "orders", vec![serde_json::json!(2)], opts("stuck-2")).await?;
    client.enqueue("process_order", "orders", vec![serde_json::json!(3)], opts("stuck-retired").app_version("0.9.0")).await?;
    // The first order's last progress: its first step, before the ten-minute one.
    let moved_at = wait_for("the first order's first step", MINUTE, || async {
        Ok(client.list_steps("stuck-1").await?.first().and_then(|s| s.completed_at_ms))
    })
    .await?;
    let stuck = wait_for("stuck work in the status", MINUTE, || async {
        let stuck = app(cluster, ns, "slow").await?.status.and_then(|s| s.stuck);
        Ok(stuck.filter(|s| s.stalled_workflows == 1 && !s.slow_queues.is_empty() && s.stranded_workflows == 1))
    })
    .await?;
    // Reported within the threshold of the workflow's stalling.
    let late_ms = Utc::now().timestamp_millis() - (moved_at + STALLED_AFTER * 1000);
    eprintln!("stalled workflow reported {late_ms} ms after it stalled (threshold {STALLED_AFTER} s)");
    ensure!(late_ms < STALLED_AFTER * 1000, "stalled workflow reported {late_ms} ms after it stalled");
    ensure!(stuck.stalled == vec!["stuck-1".to_string()], "{stuck:?}");
    ensure!(stuck.slow_queues.iter().map(|q| (q.name.as_str(), q.enqueued)).eq([("orders", 2)]), "{stuck:?}");
    let degraded = condition(&app(cluster, ns, "slow").await?, "Degraded").context("Degraded")?;
    ensure!(degraded.0 == "True", "{degraded:?}");

    // Its worker dies: the operator re-enqueues it, and the next worker, allowed no recovery,
    // parks it.
    let victim = client.status("stuck-1").await?.and_then(|s| s.executor_id).context("stuck-1's executor")?;
    cluster.kubectl(&["delete", "pod", &victim, "-n", ns, "--wait=false"])?;
    let stuck = wait_for("the recovered workflow parked", 2 * MINUTE, || async {
        let stuck = app(cluster, ns, "slow").await?.status.and_then(|s| s.stuck);
        Ok(stuck.filter(|s| s.parked_workflows == 1))
    })
    .await?;
    ensure!(stuck.parked == vec!["stuck-1".to_string()], "{stuck:?}");
    ensure!(client.status("stuck-1").await?.map(|s| s.status) == Some(Status::MaxRecoveryAttemptsExceeded));

    let events = wait_for("an Event per kind of stuck work", MINUTE, || async {
        let events = cluster.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
        ])?;
        let reasons: BTreeSet<&str> = events.lines().filter_map(|l| l.split(':').next()).collect();
        let all = ["StalledWorkflows", "SlowQueue", "StrandedWork", "ParkedWorkflows"].iter().all(|r| reasons.contains(r));
        Ok(all.then_some(events.clone()))
    })
    .await?;
    ensure!(events.lines().any(|l| l.starts_with("StalledWorkflows") && l.contains("stuck-1")), "{events}");
    let metrics = operator.metrics().await.unwrap_or_default();
    let series = |kind: &str| format!("mainstay_operator_stuck_workflows{{namespace=\"{ns}\",name=\"slow\",kind=\"{kind}\"}} 1");
    ensure!(metrics.contains(&series("parked")) && metrics.contains(&series("stranded")), "stuck workflow metrics:\n{metrics}");
    ensure!(metrics.contains(&format!("mainstay_operator_queue_oldest_wait_seconds{{namespace=\"{ns}\",app=\"slow\",queue=\"orders\"}}")));
    client.close().await;
    Ok(())
}

/// Releases the held workflows `{prefix}0` .. `{prefix}{n-1}` (the example's `hold`).
async fn release(client: &Client, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        client.send(&format!("{prefix}{i}"), "go", Some("release"), Some(&format!("release-{prefix}{i}"))).await?;
    }
    Ok(())
}

/// `(image, pod names)` of the worker Deployment of `version`, if it exists.
async fn version_workers(cluster: &Cluster, ns: &str, app_name: &str, version: &str) -> Result<Option<(String, BTreeSet<String>)>> {
    let list = Api::<Deployment>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_APP}={app_name}")))
        .await?;
    let Some(d) = list
        .items
        .into_iter()
        .find(|d| d.metadata.annotations.as_ref().and_then(|a| a.get("mainstay.dev/version")).map(String::as_str) == Some(version))
    else {
        return Ok(None);
    };
    let image = mainstay_operator::workload::deployed_image(&d).unwrap_or_default().to_string();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_APP}={app_name},mainstay.dev/version={version}")))
        .await?;
    let names = pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.metadata.name.clone()).collect();
    Ok(Some((image, names)))
}

/// A roll-out that changes the image (the version follows the tag), then a rollback.
async fn new_version_rolls_out(cluster: &Cluster, runner: &PodRunner) -> Result<()> {
    let ns = &namespace("e2e-roll");
    let url = namespace_with_database(cluster, ns).await?;
    let manifest = |tag: &str| {
        format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:{tag}\n  \
             scaling: {{minReplicas: 0, maxReplicas: 2, targetQueueDepth: 2, scaleDownStabilizationSeconds: 0}}\n  \
             database: {{urlSecret: {{name: shop-db}}}}\n  queues: [{{name: orders}}]\n"
        )
    };
    apply(cluster, &manifest("v1"))?;
    wait_for("the system database to be migrated", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Migrated").filter(|c| c.0 == "True").map(|_| ()))
    })
    .await?;
    let client = Client::connect(&url).await?;
    for i in 0..3 {
        let opts = WorkflowOptions::new().id(format!("v1-hold-{i}")).app_version("v1");
        client.enqueue("hold", "orders", vec![serde_json::json!(600_000)], opts).await?;
    }
    wait_for("v1 work to be running", 2 * MINUTE, || async {
        Ok((count(&client, WorkflowFilter::new().app_version("v1").statuses([Status::Pending])).await? == 3).then_some(()))
    })
    .await?;
    let (_, v1_pods) = version_workers(cluster, ns, "shop", "v1").await?.context("the v1 Deployment")?;

    // A new image: v2 deploys, v1 drains on its own image and pods, and v1's backlog does
    // not size v2 (nothing v2 can run is queued, so it stays at zero).
    apply(cluster, &manifest("v2"))?;
    wait_for("v2 to deploy while v1 drains", MINUTE, || async {
        let d = worker_deployments(cluster, ns, "shop").await?;
        let versions: BTreeSet<String> = d.iter().map(|x| x.0.clone()).collect();
        let a = app(cluster, ns, "shop").await?;
        let rolling = condition(&a, "Progressing").is_some_and(|c| c.1 == "RollingOut");
        let v2_size = d.iter().find(|x| x.0 == "v2").map(|x| x.1);
        let desired = a.status.as_ref().map(|s| s.desired_workers);
        Ok((versions == BTreeSet::from(["v1".to_string(), "v2".to_string()]) && rolling && v2_size == Some(0) && desired == Some(0))
            .then_some(()))
    })
    .await?;
    let (image, pods) = version_workers(cluster, ns, "shop", "v1").await?.context("the v1 Deployment while draining")?;
    ensure!(image.ends_with(":v1"), "the draining version was re-imaged to {image}");
    ensure!(v1_pods.is_subset(&pods), "the draining version's pods were replaced: {v1_pods:?} -> {pods:?}");
    release(&client, "v1-hold-", 3).await?;
    wait_for("v1 to drain and its Deployment to go", 2 * MINUTE, || async {
        let d = worker_deployments(cluster, ns, "shop").await?;
        let done = client.list_workflows(&WorkflowFilter::new().id_prefix("v1-hold-").statuses([Status::Success])).await?;
        // The status is patched after the Deployment is removed, in the same reconcile: wait
        // for both rather than reading the status at the moment the Deployment is gone.
        let versions = app(cluster, ns, "shop").await?.status.map(|s| s.versions);
        Ok((done.len() == 3 && d.len() == 1 && d[0].0 == "v2" && versions == Some(vec!["v2".to_string()])).then_some(done))
    })
    .await
    .and_then(|done| {
        // Old work finished on old workers: each ran on a pod of the v1 Deployment.
        ensure!(done.iter().all(|w| w.executor_id.as_ref().is_some_and(|e| v1_pods.contains(e))), "v1 work finished elsewhere: {done:?}");
        Ok(())
    })?;
    // New work without a version runs on v2.
    let id = client.enqueue("process_order", "orders", vec![serde_json::json!(1)], WorkflowOptions::default()).await?;
    let out: String = tokio::time::timeout(2 * MINUTE, client.get_result(&id)).await??;
    ensure!(out.contains("shipped"), "{out}");
    ensure!(client.status(&id).await?.and_then(|s| s.app_version) == Some("v2".into()), "new work not on v2");

    // A rollback to v1: it becomes the latest version again, so work enqueued without a
    // version (as any DBOS client does) runs on it instead of waiting for v2 forever.
    apply(cluster, &manifest("v1"))?;
    // v2 had nothing left, so it goes; once its workers are gone, work without a version
    // scales v1 up, and v1 becomes the latest when its worker is ready.
    wait_for("v2 and its workers to go after the rollback", MINUTE, || async {
        let d = worker_deployments(cluster, ns, "shop").await?;
        let v2_running = runner.running().iter().any(|k| k.starts_with(&format!("{ns}/shop-v2-")));
        Ok((d.len() == 1 && d[0].0 == "v1" && !v2_running).then_some(()))
    })
    .await?;
    let id = client.enqueue("process_order", "orders", vec![serde_json::json!(2)], WorkflowOptions::default()).await?;
    let out: String = tokio::time::timeout(2 * MINUTE, client.get_result(&id)).await?.context("version-less work after a rollback")?;
    ensure!(out.contains("shipped"), "{out}");
    ensure!(client.status(&id).await?.and_then(|s| s.app_version) == Some("v1".into()), "work after the rollback not on v1");
    let shop = Client::connect_with(&app_client_config(&url, "shop")).await?;
    ensure!(shop.latest_version().await?.as_deref() == Some("v1"), "v1 is not the latest after the rollback");
    shop.close().await;

    // Deleting the DurableApp removes its workers and leaves the database alone.
    cluster.kubectl(&["delete", "durableapp", "shop", "-n", ns, "--wait=true", "--timeout=60s"])?;
    wait_for("the workers to go with their DurableApp", MINUTE, || async {
        Ok(worker_deployments(cluster, ns, "shop").await?.is_empty().then_some(()))
    })
    .await?;
    ensure!(count(&client, WorkflowFilter::default()).await? == 5, "the database kept its workflows");
    client.close().await;
    Ok(())
}

/// Two apps on one database (set up before the operator restart of the schedule scenario).
struct Shared {
    ns: String,
}

fn app_client_config(url: &str, app: &str) -> mainstay::Config {
    let mut c = mainstay::Config::new(url);
    c.app_name = Some(app.to_string());
    c.pool_size = 2;
    c
}

/// Two DurableApps share one database: each app's work runs on its own workers only, and a
/// third app whose version name the first owns is refused with a clear condition. The second
/// app is left at 3 workers inside a long scale-down window, for the restart check.
async fn apps_share_a_database(cluster: &Cluster) -> Result<Shared> {
    let ns = namespace("e2e-shared");
    let url = namespace_with_database(cluster, &ns).await?;
    let manifest = |name: &str, extra: &str| {
        format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
             image: example.invalid/mainstay-example-worker:1.0.0\n  database: {{urlSecret: {{name: shop-db}}}}\n  \
             queues: [{{name: orders}}]\n{extra}"
        )
    };
    apply(cluster, &manifest("alpha", "  replicas: 1\n"))?;
    wait_for("alpha to migrate and own its queue's settings", MINUTE, || async {
        let a = app(cluster, &ns, "alpha").await?;
        let ok = condition(&a, "Migrated").is_some_and(|c| c.0 == "True") && condition(&a, "Degraded").is_some_and(|c| c.0 == "False");
        Ok(ok.then_some(()))
    })
    .await?;
    // steady uses the same queue name with limits of its own: alpha's settings stay, and
    // steady says why (its workers still run, on alpha's limits).
    apply(cluster, &manifest(
        "steady",
        "  appVersion: steady-1\n  scaling: {minReplicas: 0, maxReplicas: 3, targetQueueDepth: 1, scaleDownStabilizationSeconds: 600}\n",
    ).replace("queues: [{name: orders}]", "queues: [{name: orders, concurrency: 7}]"))?;
    let msg = wait_for("steady to migrate and report its queue conflict", MINUTE, || async {
        let a = app(cluster, &ns, "steady").await?;
        let migrated = condition(&a, "Migrated").is_some_and(|c| c.0 == "True");
        Ok(condition(&a, "Degraded").filter(|c| migrated && c.0 == "True" && c.1 == "QueueConflict").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("orders") && msg.contains("alpha"), "unclear message: {msg}");
    let (alpha, steady) =
        (Client::connect_with(&app_client_config(&url, "alpha")).await?, Client::connect_with(&app_client_config(&url, "steady")).await?);
    // Work without a version, on the same queue name, for each app.
    for i in 0..3 {
        let opts = WorkflowOptions::new().id(format!("steady-hold-{i}"));
        steady.enqueue("hold", "orders", vec![serde_json::json!(600_000)], opts).await?;
    }
    let mut orders = Vec::new();
    for i in 0..4 {
        orders.push(alpha.enqueue("process_order", "orders", vec![serde_json::json!(i)], WorkflowOptions::default()).await?);
    }
    for id in &orders {
        let _: String = tokio::time::timeout(2 * MINUTE, alpha.get_result(id)).await??;
        let w = alpha.status(id).await?.context("an order's status")?;
        ensure!(
            w.executor_id.as_deref().is_some_and(|e| e.starts_with("alpha-")) && w.app_version.as_deref() == Some("1.0.0"),
            "alpha's work ran elsewhere: {w:?}"
        );
    }
    wait_for("steady to run its three held workflows on three workers", 2 * MINUTE, || async {
        let running = steady.list_workflows(&WorkflowFilter::new().id_prefix("steady-hold-").statuses([Status::Pending])).await?;
        let d = worker_deployments(cluster, &ns, "steady").await?;
        Ok((running.len() == 3 && d.iter().map(|x| x.1).sum::<i32>() == 3).then_some(running))
    })
    .await
    .and_then(|running| {
        ensure!(
            running.iter().all(|w| w.executor_id.as_deref().is_some_and(|e| e.starts_with("steady-"))),
            "steady's work ran elsewhere: {running:?}"
        );
        Ok(())
    })?;
    release(&steady, "steady-hold-", 3).await?;
    wait_for("steady's work to finish", 2 * MINUTE, || async {
        let done = count(&steady, WorkflowFilter::new().id_prefix("steady-hold-").statuses([Status::Success])).await?;
        Ok((done == 3).then_some(()))
    })
    .await?;
    // A third app whose version (the same image tag) alpha owns: refused, with the fix.
    apply(cluster, &manifest("clash", "  replicas: 1\n"))?;
    let msg = wait_for("clash to report VersionConflict", MINUTE, || async {
        Ok(condition(&app(cluster, &ns, "clash").await?, "Degraded").filter(|c| c.0 == "True" && c.1 == "VersionConflict").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("1.0.0") && msg.contains("alpha") && msg.contains("appVersion"), "unclear message: {msg}");
    ensure!(worker_deployments(cluster, &ns, "clash").await?.is_empty(), "clash got workers despite the conflict");
    // Still at 3 workers, inside its 600 s scale-down window.
    let a = app(cluster, &ns, "steady").await?;
    ensure!(a.status.as_ref().map(|s| s.desired_workers) == Some(3), "steady left its scale-down window early: {:?}", a.status);
    // A misnamed workflow enqueued for alpha waits forever: said so, not silent.
    let typo = alpha.enqueue("proces_order", "orders", vec![serde_json::json!(1)], WorkflowOptions::default()).await?;
    let msg = wait_for("alpha to report the unrunnable work", MINUTE, || async {
        Ok(condition(&app(cluster, &ns, "alpha").await?, "Degraded").filter(|c| c.0 == "True" && c.1 == "UnrunnableWork").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("proces_order"), "unclear message: {msg}");
    ensure!(alpha.status(&typo).await?.map(|w| w.status) == Some(Status::Enqueued), "the misnamed workflow was not left queued");
    alpha.cancel(&typo).await?;
    wait_for("alpha to be healthy once the misnamed workflow is cancelled", MINUTE, || async {
        Ok(condition(&app(cluster, &ns, "alpha").await?, "Degraded").filter(|c| c.0 == "False").map(|_| ()))
    })
    .await?;
    alpha.close().await;
    steady.close().await;
    Ok(Shared { ns })
}

/// After the operator restart, the new process keeps the scale-down window: steady stays at 3
/// workers instead of dropping to zero on its first look.
async fn scale_down_window_survives_the_restart(cluster: &Cluster, shared: &Shared) -> Result<()> {
    let ns = &shared.ns;
    // A spec change makes the new operator reconcile steady (observedGeneration shows when).
    cluster.kubectl(&[
        "patch",
        "durableapp",
        "steady",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"scaling":{"scaleUpStabilizationSeconds":1}}}"#,
    ])?;
    let generation = app(cluster, ns, "steady").await?.metadata.generation;
    wait_for("the restarted operator to reconcile steady", MINUTE, || async {
        let a = app(cluster, ns, "steady").await?;
        Ok((a.status.as_ref().and_then(|s| s.observed_generation) == generation).then_some(()))
    })
    .await?;
    let a = app(cluster, ns, "steady").await?;
    let replicas: i32 = worker_deployments(cluster, ns, "steady").await?.iter().map(|x| x.1).sum();
    ensure!(
        replicas == 3 && a.status.as_ref().map(|s| s.desired_workers) == Some(3),
        "the restart ended the 600 s scale-down window: {replicas} replicas, status {:?}",
        a.status
    );
    Ok(())
}

/// The leader cannot renew its Lease (its permission is revoked): it stops acting before the
/// Lease could expire, and leads again once renewals go through.
async fn leader_steps_down_before_its_lease_expires(cluster: &Cluster, operator: &Operator) -> Result<()> {
    let binding = "mainstay-leader-election";
    let saved = cluster.kubectl(&["get", "rolebinding", binding, "-n", RELEASE_NAMESPACE, "-o", "yaml"])?;
    cluster.kubectl(&["delete", "rolebinding", binding, "-n", RELEASE_NAMESPACE])?;
    let lease = || async {
        let l = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client.clone(), RELEASE_NAMESPACE)
            .get("mainstay-operator")
            .await?;
        Ok::<_, anyhow::Error>(l.spec.unwrap_or_default())
    };
    wait_for("the operator to stop leading", MINUTE, || async {
        Ok(operator.metrics().await.filter(|m| m.lines().any(|l| l.starts_with("mainstay_operator_leader 0"))).map(|_| ()))
    })
    .await?;
    let stepped_down = Utc::now();
    let spec = lease().await?;
    let renewed = spec.renew_time.context("the Lease's renewTime")?.0.as_millisecond();
    let expires = renewed + 1000 * i64::from(spec.lease_duration_seconds.unwrap_or(15));
    ensure!(
        stepped_down.timestamp_millis() < expires,
        "the leader stopped at {stepped_down}, after its Lease expired (renewed {renewed} ms, expiring {expires} ms)"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &saved)?;
    wait_for("the operator to lead again", MINUTE, || async {
        Ok(operator.metrics().await.filter(|m| m.lines().any(|l| l.starts_with("mainstay_operator_leader 1"))).map(|_| ()))
    })
    .await?;
    Ok(())
}

/// Workflows started, watched and cancelled with manifests, as a kubectl or GitOps user would.
async fn workflow_runs_from_manifests(cluster: &Cluster) -> Result<()> {
    let ns = &namespace("e2e-runs");
    let url = namespace_with_database(cluster, ns).await?;
    apply(
        cluster,
        &format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
         image: example.invalid/mainstay-example-worker:1.0.0\n  replicas: 1\n  database: {{urlSecret: {{name: shop-db}}}}\n"
        ),
    )?;
    wait_for("the app to be ready", 2 * MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Ready").filter(|c| c.0 == "True" && c.1 == "Available").map(|_| ()))
    })
    .await?;
    let run = |name: &str, spec: &str| {
        format!("apiVersion: mainstay.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
    };
    let runs = Api::<mainstay_crds::WorkflowRun>::namespaced(cluster.client.clone(), ns);
    let client = Client::connect(&url).await?;

    // A run succeeds and `kubectl wait` returns; its status carries the output.
    let order = run("order-7", "  appRef: shop\n  workflowName: process_order\n  input: 7\n");
    apply(cluster, &order)?;
    cluster.kubectl(&["wait", "--for=condition=Succeeded", "workflowrun/order-7", "-n", ns, "--timeout=120s"])?;
    let st = runs.get("order-7").await?.status.context("a status")?;
    ensure!(st.output.as_deref().is_some_and(|o| o.contains("shipped")) && st.steps_completed.unwrap_or(0) >= 3, "status: {st:?}");
    ensure!(st.events.get("stage").map(String::as_str) == Some("\"shipped\"") && st.duration.is_some(), "events and duration: {st:?}");
    // The app lists what its version can run (the observer notices the workers' registration).
    let listed = wait_for("the app to list its version's workflows", MINUTE, || async {
        let listed = app(cluster, ns, "shop").await?.status.map(|s| s.workflows).unwrap_or_default();
        Ok(listed.iter().any(|v| v.version == "1.0.0" && v.workflows.contains(&"process_order".to_string())).then_some(listed))
    })
    .await?;
    ensure!(listed.iter().any(|v| v.schedules.contains(&"yearly_report: 0 0 1 1 *".to_string())), "schedules: {listed:?}");
    let id = st.workflow_id.clone().context("a workflow ID")?;
    ensure!(id.starts_with(&format!("{ns}.order-7.")), "the workflow ID is not the object's: {id}");
    // Applying the same file again starts nothing new.
    let again = cluster.kubectl_stdin(&["apply", "-f", "-"], &order)?;
    ensure!(String::from_utf8_lossy(&again.stdout).contains("unchanged"), "re-apply: {}", String::from_utf8_lossy(&again.stdout));
    ensure!(count(&client, WorkflowFilter::new().id_prefix(format!("{ns}.order-7."))).await? == 1, "a second run started");

    // What to run cannot change once the object exists (a second workflow would start).
    let moved = cluster.kubectl_stdin(&["apply", "-f", "-"], &order.replace("appRef: shop", "appRef: other"))?;
    ensure!(
        !moved.status.success() && String::from_utf8_lossy(&moved.stderr).contains("cannot change once a WorkflowRun exists"),
        "appRef changed: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // A failing workflow shows its error.
    apply(cluster, &run("declined", "  appRef: shop\n  workflowName: process_order\n  input: -1\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Failed", "workflowrun/declined", "-n", ns, "--timeout=120s"])?;
    let st = runs.get("declined").await?.status.context("a status")?;
    ensure!(st.error.as_ref().is_some_and(|e| e.name == "PaymentDeclined" && e.message.contains("order -1")), "no error shown: {st:?}");
    // So does an input the workflow's argument cannot take (found by the worker decoding it).
    apply(cluster, &run("bad-input", "  appRef: shop\n  workflowName: process_order\n  input: \"not a number\"\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Failed", "workflowrun/bad-input", "-n", ns, "--timeout=120s"])?;
    let st = runs.get("bad-input").await?.status.context("a status")?;
    ensure!(st.error.as_ref().is_some_and(|e| e.message.contains("not a number")), "no error shown: {st:?}");

    // An unknown workflow and an unknown app are reported, and nothing is enqueued for them.
    apply(cluster, &run("typo", "  appRef: shop\n  workflowName: proces_order\n"))?;
    apply(cluster, &run("no-app", "  appRef: nowhere\n  workflowName: process_order\n"))?;
    // So are an input of the wrong length and a queue no worker listens to, before anything
    // is enqueued (the workers recorded what their workflows take and where they listen).
    apply(cluster, &run("two-args", "  appRef: shop\n  workflowName: process_order\n  input: [1, 2]\n"))?;
    apply(cluster, &run("no-queue", "  appRef: shop\n  workflowName: process_order\n  input: 3\n  queue: order\n"))?;
    for (name, why) in
        [("typo", "WorkflowNotFound"), ("no-app", "AppNotFound"), ("two-args", "InvalidInput"), ("no-queue", "QueueNotFound")]
    {
        wait_for(&format!("{name} to report {why}"), MINUTE, || async {
            let st = runs.get(name).await?.status;
            Ok(st.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Failed" && c.status == "True" && c.reason == why)).map(|_| ()))
        })
        .await?;
    }
    ensure!(count(&client, WorkflowFilter::new().name("proces_order")).await? == 0, "a misnamed run was enqueued");
    for name in ["two-args", "no-queue"] {
        ensure!(count(&client, WorkflowFilter::new().id_prefix(format!("{ns}.{name}."))).await? == 0, "{name} was enqueued");
    }
    let msg = runs
        .get("two-args")
        .await?
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Failed"))
        .map(|c| c.message)
        .unwrap_or_default();
    ensure!(msg.contains("takes 1 argument (i64)") && msg.contains("gives 2 arguments"), "unclear message: {msg}");
    let events = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=no-queue,type=Warning",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    ensure!(events.contains("listens to queue order") && events.contains("orders"), "no Event names the queue: {events}");

    // Cancel from the manifest: a held run stops.
    apply(cluster, &run("held", "  appRef: shop\n  workflowName: hold\n  input: 600000\n"))?;
    wait_for("the held run to be running", MINUTE, || async {
        Ok(runs.get("held").await?.status.and_then(|s| s.phase).filter(|p| *p == mainstay_crds::WorkflowRunPhase::Running).map(|_| ()))
    })
    .await?;
    apply(cluster, &run("held", "  appRef: shop\n  workflowName: hold\n  input: 600000\n  cancel: true\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Failed", "workflowrun/held", "-n", ns, "--timeout=60s"])?;
    let st = runs.get("held").await?.status.context("a status")?;
    ensure!(st.phase == Some(mainstay_crds::WorkflowRunPhase::Cancelled), "status: {st:?}");

    // Resume from the manifest: the cancelled run runs again from its last step, and a
    // message (the example's release) lets it finish.
    apply(cluster, &run("held", "  appRef: shop\n  workflowName: hold\n  input: 600000\n  resume: 1\n"))?;
    wait_for("the resumed run to be running", MINUTE, || async {
        Ok(runs.get("held").await?.status.and_then(|s| s.phase).filter(|p| *p == mainstay_crds::WorkflowRunPhase::Running).map(|_| ()))
    })
    .await?;
    // The message that lets it finish comes from the manifest too (a human's approval).
    let released = "  appRef: shop\n  workflowName: hold\n  input: 600000\n  resume: 1\n  \
                    messages: [{name: release-1, topic: release, message: go}]\n";
    apply(cluster, &run("held", released))?;
    cluster.kubectl(&["wait", "--for=condition=Succeeded", "workflowrun/held", "-n", ns, "--timeout=120s"])?;
    // Applying it again sends nothing more.
    apply(cluster, &run("held", released))?;
    let st = runs.get("held").await?.status.context("a status")?;
    ensure!(st.messages_sent == vec!["release-1".to_string()], "status: {st:?}");

    // Fork from a step: a new run that replays order-7's first two steps from their records.
    apply(cluster, &run("order-7-again", "  appRef: shop\n  workflowName: process_order\n  forkOf: {run: order-7, step: 3}\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Succeeded", "workflowrun/order-7-again", "-n", ns, "--timeout=120s"])?;
    let st = runs.get("order-7-again").await?.status.context("a status")?;
    ensure!(
        st.forked_from.as_deref() == Some(id.as_str()) && st.output.as_deref().is_some_and(|o| o.contains("shipped")),
        "fork status: {st:?}"
    );

    // A finished run whose record the app's retention deleted is not run again: its status
    // stays as last seen, even when the object changes.
    let order7_id = id.clone();
    client.delete_workflow(&order7_id, false).await?;
    cluster.kubectl(&[
        "patch",
        "workflowrun",
        "order-7",
        "-n",
        ns,
        "--type=merge",
        "-p",
        "{\"spec\":{\"ttlSecondsAfterFinished\":3600}}",
    ])?;
    let generation = runs.get("order-7").await?.metadata.generation;
    wait_for("the operator to look at order-7 again", MINUTE, || async {
        let r = runs.get("order-7").await?;
        Ok((r.status.as_ref().and_then(|s| s.observed_generation) == generation).then_some(()))
    })
    .await?;
    ensure!(client.status(&order7_id).await?.is_none(), "the finished run was started again after its record was deleted");
    ensure!(
        runs.get("order-7").await?.status.and_then(|s| s.phase) == Some(mainstay_crds::WorkflowRunPhase::Succeeded),
        "order-7 no longer reads Succeeded"
    );

    // Deleting an unfinished run's object leaves its workflow running (the documented policy);
    // creating the object again under the same name starts a new run (a new uid).
    apply(cluster, &run("orphan", "  appRef: shop\n  workflowName: hold\n  input: 600000\n"))?;
    let orphan_id = wait_for("the orphan run to be running", MINUTE, || async {
        let st = runs.get("orphan").await?.status;
        Ok(st.filter(|s| s.phase == Some(mainstay_crds::WorkflowRunPhase::Running)).and_then(|s| s.workflow_id))
    })
    .await?;
    cluster.kubectl(&["delete", "workflowrun", "orphan", "-n", ns, "--wait=true"])?;
    ensure!(client.status(&orphan_id).await?.is_some_and(|w| w.status == Status::Pending), "deleting the object stopped its workflow");
    client.send(&orphan_id, &"go", Some("release"), None).await?;
    wait_for("the orphaned workflow to finish on its own", MINUTE, || async {
        Ok(client.status(&orphan_id).await?.filter(|w| w.status == Status::Success).map(|_| ()))
    })
    .await?;
    apply(cluster, &run("orphan", "  appRef: shop\n  workflowName: hold\n  input: 1\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Succeeded", "workflowrun/orphan", "-n", ns, "--timeout=120s"])?;
    let again = runs.get("orphan").await?.status.and_then(|s| s.workflow_id).context("a workflow ID")?;
    ensure!(
        again != orphan_id && count(&client, WorkflowFilter::new().id_prefix(format!("{ns}.orphan."))).await? == 2,
        "re-creating the object did not start a new run"
    );

    // A TTL after finish removes the object, not the workflow's records.
    apply(cluster, &run("brief", "  appRef: shop\n  workflowName: process_order\n  input: 9\n  ttlSecondsAfterFinished: 0\n"))?;
    let brief = wait_for("the brief run's object to go after it finished", 2 * MINUTE, || async {
        let found = runs.get_opt("brief").await?;
        let done = client.list_workflows(&WorkflowFilter::new().id_prefix(format!("{ns}.brief.")).statuses([Status::Success])).await?;
        Ok((found.is_none() && done.len() == 1).then_some(done))
    })
    .await?;
    ensure!(brief.len() == 1, "the brief run's record is gone");

    // `kubectl create` with generateName: each create is a new run.
    let generated = format!(
        "apiVersion: mainstay.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {{generateName: order-, namespace: {ns}}}\nspec:\n  \
         appRef: shop\n  workflowName: process_order\n  input: 8\n"
    );
    for _ in 0..2 {
        let out = cluster.kubectl_stdin(&["create", "-f", "-"], &generated)?;
        ensure!(out.status.success(), "kubectl create: {}", String::from_utf8_lossy(&out.stderr));
    }
    wait_for("both generated runs to succeed", 2 * MINUTE, || async {
        let all = runs.list(&ListParams::default()).await?;
        let done = all
            .items
            .iter()
            .filter(|r| r.metadata.generate_name.is_some())
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(mainstay_crds::WorkflowRunPhase::Succeeded))
            .count();
        Ok((done == 2).then_some(()))
    })
    .await?;

    let table = cluster.kubectl(&["get", "workflowruns", "-n", ns])?;
    ensure!(
        table.contains("order-7") && table.contains("Succeeded") && table.contains("process_order"),
        "kubectl get workflowruns:\n{table}"
    );

    // A rotated database Secret rolls the workers onto it: the pod template records the
    // Secret's version, and work runs on the new pods.
    let template_secret = || async {
        let list = Api::<Deployment>::namespaced(cluster.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{LABEL_APP}=shop")))
            .await?;
        let annotations =
            list.items.first().and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.annotations.clone()).unwrap_or_default();
        Ok::<_, anyhow::Error>(annotations.get("mainstay.dev/database-secret-version").cloned())
    };
    let before = template_secret().await?.context("the pod template records the Secret's version")?;
    let rotated = format!("{url}?application_name=rotated");
    apply(
        cluster,
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-db, namespace: {ns}}}\nstringData: {{url: \"{rotated}\"}}\n"),
    )?;
    wait_for("the rotated Secret to reach the pod template", MINUTE, || async { Ok(template_secret().await?.filter(|v| *v != before)) })
        .await?;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    wait_for("a worker started after the rotation", 2 * MINUTE, || async {
        let list = pods.list(&ListParams::default().labels(&format!("{LABEL_APP}=shop"))).await?;
        let fresh = list.items.iter().any(|p| {
            let annotations = p.metadata.annotations.clone().unwrap_or_default();
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            annotations.get("mainstay.dev/database-secret-version") != Some(&before) && ready
        });
        Ok(fresh.then_some(()))
    })
    .await?;
    apply(cluster, &run("after-rotation", "  appRef: shop\n  workflowName: process_order\n  input: 11\n"))?;
    cluster.kubectl(&["wait", "--for=condition=Succeeded", "workflowrun/after-rotation", "-n", ns, "--timeout=120s"])?;
    client.close().await;
    Ok(())
}

/// The WorkflowRuns of a Schedule: (name, workflow ID, phase).
async fn schedule_runs(cluster: &Cluster, ns: &str, schedule: &str) -> Result<Vec<(String, Option<String>, Option<String>)>> {
    let list = Api::<WorkflowRun>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("mainstay.dev/schedule={schedule}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|r| {
            let phase = r.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"));
            (r.name_any(), r.spec.workflow_id.clone(), phase)
        })
        .collect())
}

async fn schedule_fires_once_per_tick(cluster: &Cluster, sa: &std::path::Path, operator: Operator) -> Result<Operator> {
    let ns = &namespace("e2e-sched");
    let url = namespace_with_database(cluster, ns).await?;
    let schedule = |suspend: bool| {
        format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: every-second, namespace: {ns}}}\nspec:\n  \
             appRef: shop\n  workflowName: nightly_report\n  schedule: \"* * * * * *\"\n  input: {{n: 1}}\n  \
             startingDeadlineSeconds: 60\n  suspend: {suspend}\n"
        )
    };
    // The app and its Schedule arrive together: the Schedule waits for the app's migration
    // instead of failing to enqueue into tables that do not exist yet.
    apply(
        cluster,
        &format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  \
         image: example.invalid/mainstay-example-worker:1.0.0\n  replicas: 1\n  database: {{urlSecret: {{name: shop-db}}}}\n"
        ),
    )?;
    apply(cluster, &schedule(false))?;
    wait_for("the app's database to be migrated", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Migrated").filter(|c| c.0 == "True").map(|_| ()))
    })
    .await?;
    let client = Client::connect(&url).await?;
    let runs = || async {
        let all = client.list_workflows(&WorkflowFilter::new().schedule_name(format!("{ns}/every-second"))).await?;
        Ok::<Vec<String>, anyhow::Error>(all.into_iter().map(|w| w.workflow_id).collect())
    };
    let first =
        wait_for("the first tick", MINUTE, || async { Ok(ticks(&runs().await?, &format!("{ns}/every-second"))?.first().copied()) }).await?;
    let table = cluster.kubectl(&["get", "schedules", "-n", ns])?;
    ensure!(table.contains("Scheduling") && !table.contains("<invalid>"), "kubectl get schedules:\n{table}");
    // Restart the operator in the middle: stopped for a few ticks, then a new process.
    wait_for("8 s of ticks", MINUTE, || async { Ok((Utc::now() >= first + chrono::Duration::seconds(8)).then_some(())) }).await?;
    operator.stop().await?;
    let stopped = Utc::now();
    wait_for("3 s without an operator", MINUTE, || async { Ok((Utc::now() >= stopped + chrono::Duration::seconds(3)).then_some(())) })
        .await?;
    let operator = Operator::start(cluster, sa, "e2e-operator-2").await?;
    wait_for("20 s of ticks", 2 * MINUTE, || async {
        Ok(ticks(&runs().await?, &format!("{ns}/every-second"))?
            .last()
            .is_some_and(|t| *t >= first + chrono::Duration::seconds(20))
            .then_some(()))
    })
    .await?;
    apply(cluster, &schedule(true))?;
    wait_for("the schedule to report Suspended", MINUTE, || async {
        let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get("every-second").await?;
        Ok(s.status.and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "Suspended")).map(|_| ()))
    })
    .await?;
    let ids = runs().await?;
    let fired = ticks(&ids, &format!("{ns}/every-second"))?;
    let unique: BTreeSet<_> = fired.iter().collect();
    ensure!(unique.len() == fired.len(), "a tick fired twice: {ids:?}");
    let (first, last) = (fired[0], *fired.last().unwrap());
    let expected = (last - first).num_seconds() as usize + 1;
    ensure!(fired.len() == expected, "ticks missing between {first} and {last}: {} fired, {expected} expected", fired.len());
    wait_for("every run to succeed", 2 * MINUTE, || async {
        Ok((count(&client, WorkflowFilter::new().schedule_name(format!("{ns}/every-second")).statuses([Status::Success])).await?
            == fired.len())
        .then_some(()))
    })
    .await?;
    let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get("every-second").await?;
    let st = s.status.context("schedule status")?;
    ensure!(st.last_workflow_id.is_some() && st.last_schedule_time.is_some(), "status: {st:?}");
    // The runs appear as WorkflowRuns of the Schedule: the newest three that succeeded (the
    // default history limit), each named after its tick and mirroring its workflow.
    let newest: Vec<String> = fired.iter().rev().take(3).map(|t| format!("every-second-{}", t.timestamp())).collect();
    wait_for("the schedule's WorkflowRuns to be its three newest runs, succeeded", MINUTE, || async {
        let shown = schedule_runs(cluster, ns, "every-second").await?;
        let names: BTreeSet<String> = shown.iter().map(|r| r.0.clone()).collect();
        let all_done = shown.iter().all(|r| r.2.as_deref() == Some("Succeeded"));
        Ok((names == newest.iter().cloned().collect() && all_done).then_some(()))
    })
    .await?;
    for (name, id, _) in schedule_runs(cluster, ns, "every-second").await? {
        let tick = fired.iter().find(|t| name == format!("every-second-{}", t.timestamp())).context("tick of the run")?;
        ensure!(id.as_deref() == Some(mainstay::tick_workflow_id(&format!("{ns}/every-second"), *tick).as_str()), "{name} mirrors {id:?}");
    }
    let table = cluster.kubectl(&["get", "workflowruns", "-n", ns, "-l", "mainstay.dev/schedule=every-second"])?;
    ensure!(table.matches("Succeeded").count() == 3 && table.contains("nightly_report"), "kubectl get workflowruns -l:\n{table}");
    // On demand, while suspended: a trigger runs the workflow once per annotation value, and a
    // backfill runs each missing tick of its range once (ticks that fired are not run again).
    let before = runs().await?.len();
    for _ in 0..2 {
        cluster.kubectl(&["annotate", "--overwrite", "schedule", "every-second", "-n", ns, "mainstay.dev/trigger=now-1"])?;
    }
    wait_for("the triggered run to succeed", MINUTE, || async {
        let ok = client.status(&format!("sched-{ns}/every-second-trigger-now-1")).await?.is_some_and(|w| w.status == Status::Success);
        Ok(ok.then_some(()))
    })
    .await?;
    ensure!(runs().await?.len() == before + 1, "the trigger ran more than once");
    wait_for("the triggered run's WorkflowRun", MINUTE, || async {
        let trigger_id = format!("sched-{ns}/every-second-trigger-now-1");
        let shown = schedule_runs(cluster, ns, "every-second").await?;
        Ok(shown.iter().any(|r| r.1.as_deref() == Some(trigger_id.as_str()) && r.2.as_deref() == Some("Succeeded")).then_some(()))
    })
    .await?;
    let range = |from: DateTime<Utc>, to: DateTime<Utc>| {
        format!("{}  backfill: {{start: \"{}\", end: \"{}\"}}\n", schedule(true), from.to_rfc3339(), to.to_rfc3339())
    };
    // Five ticks before the first one fired, and three that already fired.
    apply(cluster, &range(first - chrono::Duration::seconds(5), first + chrono::Duration::seconds(3)))?;
    wait_for("the backfill to run five ticks", MINUTE, || async {
        let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get("every-second").await?;
        let done = s.status.and_then(|st| st.last_backfill).is_some();
        Ok((done && runs().await?.len() == before + 1 + 5).then_some(()))
    })
    .await?;
    let backfilled =
        ticks(&runs().await?.into_iter().filter(|id| !id.contains("-trigger-")).collect::<Vec<_>>(), &format!("{ns}/every-second"))?;
    let unique: BTreeSet<_> = backfilled.iter().collect();
    ensure!(unique.len() == backfilled.len(), "a tick ran twice after the backfill");
    ensure!(backfilled.first() == Some(&(first - chrono::Duration::seconds(5))), "the backfill did not start at its range");
    wait_for("the history limit to hold after the backfill", MINUTE, || async {
        let shown = schedule_runs(cluster, ns, "every-second").await?;
        Ok((shown.len() == 3 && shown.iter().all(|r| r.2.as_deref() == Some("Succeeded"))).then_some(()))
    })
    .await?;

    // A Schedule of the same name in another namespace, on the same database: its ticks are its
    // own (the namespace is in their IDs), and its objects show only its runs.
    let ns2 = &namespace("e2e-sched-twin");
    apply(
        cluster,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns2}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-db, namespace: {ns2}}}\nstringData: {{url: \"{url}\"}}\n---\n\
         apiVersion: mainstay.dev/v1alpha1\nkind: DurableApp\nmetadata: {{name: shop, namespace: {ns2}}}\nspec:\n  \
         image: example.invalid/mainstay-example-worker:1.0.0\n  replicas: 0\n  database: {{urlSecret: {{name: shop-db}}}}\n"
        ),
    )?;
    let twin_range =
        range(first, first + chrono::Duration::seconds(3)).replace(&format!("namespace: {ns}}}"), &format!("namespace: {ns2}}}"));
    apply(cluster, &twin_range)?;
    let ours_before = runs().await?;
    let twin_runs = || async {
        let all = client.list_workflows(&WorkflowFilter::new().schedule_name(format!("{ns2}/every-second"))).await?;
        Ok::<Vec<String>, anyhow::Error>(all.into_iter().map(|w| w.workflow_id).collect())
    };
    wait_for("the twin Schedule's three backfilled ticks", MINUTE, || async { Ok((twin_runs().await?.len() == 3).then_some(())) }).await?;
    let twin_ticks = ticks(&twin_runs().await?, &format!("{ns2}/every-second"))?;
    ensure!(twin_ticks == fired[..3].to_vec(), "the twin ran other ticks: {twin_ticks:?}");
    ensure!(runs().await? == ours_before, "the twin's ticks touched the first Schedule's runs");
    wait_for("the twin's WorkflowRuns to show its runs only", MINUTE, || async {
        let shown = schedule_runs(cluster, ns2, "every-second").await?;
        let prefix = format!("sched-{ns2}/every-second-");
        let own = shown.iter().all(|r| r.1.as_deref().is_some_and(|id| id.starts_with(&prefix)));
        Ok((shown.len() == 3 && own).then_some(()))
    })
    .await?;
    cluster.kubectl(&["delete", "namespace", ns2, "--wait=false"])?;

    let failures = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=every-second,type=Warning",
        "-o",
        "jsonpath={.items[*].reason}",
    ])?;
    ensure!(!failures.contains("EnqueueFailed"), "the Schedule failed to enqueue while its app migrated: {failures}");

    // What a reader of `kubectl get schedules` must see: a workflow name the app does not
    // register (nothing fires), and runs that fail.
    let other = |name: &str, workflow: &str| {
        format!(
            "apiVersion: mainstay.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
             appRef: shop\n  workflowName: {workflow}\n  schedule: \"* * * * * *\"\n"
        )
    };
    let reason_of = |name: &'static str| async move {
        let s = Api::<Schedule>::namespaced(cluster.client.clone(), ns).get(name).await?;
        Ok::<_, anyhow::Error>(
            s.status.and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Ready")).map(|c| (c.status, c.reason, c.message)),
        )
    };
    apply(cluster, &other("typo", "nightly_reprot"))?;
    let msg = wait_for("Schedule typo to report WorkflowNotFound", MINUTE, || async {
        Ok(reason_of("typo").await?.filter(|c| c.0 == "False" && c.1 == "WorkflowNotFound").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("nightly_reprot") && msg.contains("nightly_report"), "unclear message: {msg}");
    ensure!(count(&client, WorkflowFilter::new().schedule_name(format!("{ns}/typo"))).await? == 0, "a misnamed schedule fired");
    // A workflow that does not take (scheduled_at, context) is reported, and nothing fires.
    apply(cluster, &other("one-arg", "process_order"))?;
    let msg = wait_for("Schedule one-arg to report InvalidInput", MINUTE, || async {
        Ok(reason_of("one-arg").await?.filter(|c| c.0 == "False" && c.1 == "InvalidInput").map(|c| c.2))
    })
    .await?;
    ensure!(msg.contains("(scheduled_at, context)"), "unclear message: {msg}");
    ensure!(
        count(&client, WorkflowFilter::new().schedule_name(format!("{ns}/one-arg"))).await? == 0,
        "a schedule of the wrong workflow fired"
    );
    // Runs whose workflow fails: the context asks the report to fail.
    apply(cluster, &format!("{}  input: {{fail: true}}\n", other("failing", "nightly_report")))?;
    let msg = wait_for("Schedule failing to report RunsFailing", MINUTE, || async {
        Ok(reason_of("failing").await?.filter(|c| c.0 == "False" && c.1 == "RunsFailing").map(|c| c.2))
    })
    .await?;
    ensure!(
        msg.contains(&format!("sched-{ns}/failing-")) && msg.contains("ReportFailed"),
        "the message does not name the failed run and its error: {msg}"
    );
    // Failed runs are kept to their own limit (the default, 1), and shown with their error.
    wait_for("three failed runs and one failed WorkflowRun", MINUTE, || async {
        let failed = count(&client, WorkflowFilter::new().schedule_name(format!("{ns}/failing")).statuses([Status::Error])).await?;
        let shown = schedule_runs(cluster, ns, "failing").await?;
        let finished: Vec<_> = shown.iter().filter(|r| r.2.as_deref() != Some("Enqueued") && r.2.as_deref() != Some("Running")).collect();
        Ok((failed >= 3 && finished.len() == 1 && finished[0].2.as_deref() == Some("Failed")).then_some(()))
    })
    .await?;
    cluster.kubectl(&["delete", "schedule", "typo", "one-arg", "failing", "-n", ns])?;
    // Deleting a Schedule deletes its WorkflowRuns (garbage collection), not its workflows.
    wait_for("the deleted Schedule's WorkflowRuns to go", MINUTE, || async {
        Ok(schedule_runs(cluster, ns, "failing").await?.is_empty().then_some(()))
    })
    .await?;
    ensure!(
        count(&client, WorkflowFilter::new().schedule_name(format!("{ns}/failing"))).await? >= 3,
        "deleting the Schedule deleted its workflows"
    );

    // A paused app says so instead of showing a stale picture.
    cluster.kubectl(&["annotate", "durableapp", "shop", "-n", ns, "mainstay.dev/paused=true"])?;
    wait_for("the paused app to report Paused", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Ready").filter(|c| c.0 == "Unknown" && c.1 == "Paused").map(|_| ()))
    })
    .await?;
    cluster.kubectl(&["annotate", "durableapp", "shop", "-n", ns, "mainstay.dev/paused-"])?;
    wait_for("the unpaused app to be Ready again", MINUTE, || async {
        Ok(condition(&app(cluster, ns, "shop").await?, "Ready").filter(|c| c.0 == "True").map(|_| ()))
    })
    .await?;
    client.close().await;
    Ok(operator)
}

async fn uninstall_keeps_the_database(cluster: &Cluster) -> Result<()> {
    let url = mainstay_testkit::with_database(&cluster.database_url, &mainstay_testkit::database_name(&namespace("e2e-scale")));
    let client = Client::connect(&url).await?;
    let before = count(&client, WorkflowFilter::default()).await?;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client.clone(), RELEASE_NAMESPACE);
    let lease = leases.get("mainstay-operator").await.context("the leader Lease")?;
    ensure!(
        lease.metadata.owner_references.unwrap_or_default().iter().any(|o| o.kind == "Deployment" && o.name == RELEASE),
        "the Lease is not owned by the operator's Deployment"
    );
    cluster.helm(&["uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait"])?;
    // The Lease goes with the Deployment (garbage collection), not left behind.
    wait_for("the leader Lease to go with the uninstall", MINUTE, || async {
        Ok(leases.get_opt("mainstay-operator").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(count(&client, WorkflowFilter::default()).await? == before, "workflows changed after helm uninstall");
    ensure!(before >= 506, "the scale scenario's workflows are there ({before})");
    // With the operator gone, deleting its resources does not hang (no finalizer to wait on).
    for ns in [namespace("e2e-sched"), namespace("e2e-runs")] {
        cluster.kubectl(&["delete", "durableapps,schedules", "--all", "-n", &ns, "--wait=true", "--timeout=60s"])?;
    }
    cluster.kubectl(&["get", "crd", "durableapps.mainstay.dev"]).context("helm keeps CRDs on uninstall")?;
    client.close().await;
    Ok(())
}
