//! The real-pod tier: DurableApp workers as real containers on a real kubelet and containerd
//! (`tests/cluster/node-up.sh`), from an image built from this repository
//! (`tests/cluster/images.sh`), with the operator's pod spec unchanged. The kubelet calls the
//! probes, the root filesystem is read-only, the user is not root, the limits hold, and a
//! killed container is a real SIGKILL. The operator runs in the cluster too, installed by
//! `helm install` from the chart, reaching the apiserver through the `kubernetes` Service.
//!
//! `.ci/run` adds the node where it can (Linux, as root) and sets `MAINSTAY_E2E_NODE_ENV`;
//! where it cannot it sets `MAINSTAY_E2E_NODE_SKIP` to the reason, which this test prints.
//! Neither set is a failure in CI.

// The end-to-end suite's harness; this tier uses part of it.
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use harness::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use mainstay::{Client, Status, WorkflowFilter, WorkflowOptions};
use mainstay_crds::DurableApp;
use mainstay_operator::names::LABEL_APP;
use serde_json::json;

const NODE_ENV: &str = "MAINSTAY_E2E_NODE_ENV";
const NODE_SKIP: &str = "MAINSTAY_E2E_NODE_SKIP";
const WORKER_IMAGE: &str = "mainstay.test/mainstay-example-worker:dev";
/// The same image under another tag: the next version.
const WORKER_IMAGE_V2: &str = "mainstay.test/mainstay-example-worker:v2";
const MINUTE: Duration = Duration::from_secs(60);
/// The operator image `tests/cluster/images.sh` builds, tag `dev`.
const OPERATOR_REPOSITORY: &str = "mainstay.test/mainstay-operator";
const OPERATOR_IMAGE: &str = "mainstay.test/mainstay-operator:dev";

/// The real node, as `node-up.sh` describes it in its env file.
struct Node {
    /// The test cluster's state directory.
    state: std::path::PathBuf,
    name: String,
    socket: String,
    bin: String,
    /// `host:port` on the node's bridge forwarding to the test Postgres.
    postgres: String,
}

fn node() -> Result<Option<Node>> {
    let path = match (std::env::var(NODE_ENV), std::env::var(NODE_SKIP)) {
        (Ok(path), _) => path,
        (Err(_), Ok(why)) => {
            eprintln!("SKIPPED: the real-pod tier cannot run here: {why}");
            return Ok(None);
        }
        (Err(_), Err(_)) if std::env::var("CI").as_deref() == Ok("true") => {
            bail!("neither {NODE_ENV} nor {NODE_SKIP} is set: .ci/run must add a real node or say why it cannot")
        }
        (Err(_), Err(_)) => {
            eprintln!(
                "NOTICE: skipping the real-pod tier: {NODE_ENV} is not set (run tests/cluster/node-up.sh as root \
                 and point it at the node's env file, or run bash .ci/run)"
            );
            return Ok(None);
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let vars: BTreeMap<&str, &str> = text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).collect();
    let var = |k: &str| vars.get(k).map(|v| v.to_string()).ok_or_else(|| anyhow!("{path} has no {k}"));
    let state = std::path::Path::new(&path).parent().and_then(|p| p.parent()).context("the node env file's cluster directory")?;
    Ok(Some(Node {
        state: state.to_path_buf(),
        name: var("MAINSTAY_NODE_NAME")?,
        socket: var("MAINSTAY_NODE_SOCKET")?,
        bin: var("MAINSTAY_NODE_BIN")?,
        postgres: var("MAINSTAY_NODE_POSTGRES")?,
    }))
}

impl Node {
    /// `crictl` against the node's containerd.
    fn crictl(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(format!("{}/crictl", self.bin))
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.socket))
            .args(args)
            .output()
            .context("run crictl")?;
        ensure!(out.status.success(), "crictl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops or restarts the node's forward `name` (`tests/cluster/node-forward.sh`).
    fn forward(&self, cluster: &Cluster, name: &str, action: &str) -> Result<()> {
        let script = cluster.repo.join("tests/cluster/node-forward.sh");
        let out = std::process::Command::new("bash").arg(script).arg(&self.state).args([name, action]).output()?;
        ensure!(out.status.success(), "node-forward.sh {name} {action} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Takes the node away (`off`: every process of it SIGKILLed, a machine losing its power)
    /// or brings it back (`on`), with `tests/cluster/node-power.sh`.
    fn power(&self, cluster: &Cluster, action: &str) -> Result<()> {
        let script = cluster.repo.join("tests/cluster/node-power.sh");
        let out = std::process::Command::new("bash").arg(script).arg(&self.state).arg(action).output()?;
        ensure!(out.status.success(), "node-power.sh {action} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// The host PID of the running container `container` of pod `pod`.
    fn container_pid(&self, pod: &str, container: &str) -> Result<u32> {
        let id = self.crictl(&["ps", "--quiet", "--state", "running", "--pod", &self.pod_id(pod)?, "--name", container])?;
        let id = id.lines().next().ok_or_else(|| anyhow!("no running container {container} in pod {pod}"))?.to_string();
        let info: serde_json::Value = serde_json::from_str(&self.crictl(&["inspect", &id])?)?;
        info["info"]["pid"].as_u64().map(|p| p as u32).ok_or_else(|| anyhow!("no pid for container {id}"))
    }

    /// SIGKILL for the running container `container` of pod `pod`, as the OOM killer sends.
    fn kill_container(&self, pod: &str, container: &str) -> Result<()> {
        let pid = self.container_pid(pod, container)?;
        let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
        ensure!(killed.success(), "kill -KILL {pid} failed");
        Ok(())
    }

    fn pod_id(&self, pod: &str) -> Result<String> {
        let id = self.crictl(&["pods", "--quiet", "--name", pod, "--state", "ready"])?;
        id.lines().next().map(str::to_string).ok_or_else(|| anyhow!("no ready sandbox for pod {pod}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_run_as_real_containers() -> Result<()> {
    let Some(node) = node()? else { return Ok(()) };
    let cluster = Cluster::from_env().await?;
    cluster.kubectl(&["apply", "--server-side", "-f", "charts/mainstay/crds/"])?;
    let ns = format!("real-{:x}", std::process::id());
    cluster.kubectl(&["create", "namespace", &ns])?;

    // The operator reaches the database from the host, the workers from the pod network
    // (the node's forward): the same database under two addresses.
    let db = mainstay_testkit::database_name(&ns);
    let host_url = cluster.fresh_database(&ns).await?;
    let (credentials, _) = host_url.split_once('@').ok_or_else(|| anyhow!("no user in {host_url}"))?;
    let pod_url = format!("{credentials}@{}/{db}", node.postgres);
    cluster.kubectl(&["-n", &ns, "create", "secret", "generic", "shop-db", &format!("--from-literal=url={pod_url}")])?;

    let outcome = async {
        images_match_their_dockerfiles(&cluster, &node).context("the images and tests/kind's Dockerfiles")?;
        let operator = install_operator(&cluster, &node, &ns).await.context("the operator from the chart, in the cluster")?;
        let app = serde_json::json!({
            "apiVersion": "mainstay.dev/v1alpha1",
            "kind": "DurableApp",
            "metadata": {"name": "shop", "namespace": ns},
            "spec": {
                "image": WORKER_IMAGE,
                "imagePullPolicy": "Never",
                "database": {"urlSecret": {"name": "shop-db", "key": "url"}},
                "queues": [{"name": "orders", "concurrency": 50, "workerConcurrency": 10}],
                "scaling": {"minReplicas": 0, "maxReplicas": 1, "targetQueueDepth": 100, "scaleDownStabilizationSeconds": 600},
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                "podTemplate": {
                    "nodeSelector": {"mainstay.dev/node": "real"},
                    // How long a pod stays bound to a lost node before it is evicted: the
                    // cluster's default is 300 s; the node-loss scenario waits for it.
                    "tolerations": [
                        {"key": "mainstay.dev/node", "value": "real", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
                    ],
                },
            },
        });
        cluster.kubectl_stdin(&["apply", "-f", "-"], &app.to_string())?;
        let apps = Api::<DurableApp>::namespaced(cluster.client.clone(), &ns);
        wait_for("the system database to be migrated", MINUTE, || async {
            let app = apps.get("shop").await?;
            let migrated = app.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Migrated" && c.status == "True");
            Ok(migrated.then_some(()))
        })
        .await?;
        let mut conn = mainstay_testkit::connect(&host_url).await;
        mainstay_testkit::count_outcome_writes(&mut conn).await;
        let client = Client::connect(&host_url).await?;

        scales_from_zero_and_finishes_work(&cluster, &node, &ns, &client).await.context("scenario: scale from zero on a real node")?;
        a_killed_container_restarts_and_finishes_its_work_once(&cluster, &node, &ns, &client, &host_url)
            .await
            .context("scenario: a worker container killed")?;
        a_deleted_pod_stops_on_sigterm_and_its_work_moves(&cluster, &ns, &client, &host_url)
            .await
            .context("scenario: a worker pod deleted mid-workflow")?;
        a_new_version_rolls_out_while_the_old_one_drains(&cluster, &node, &ns, &client).await.context("scenario: a roll-out")?;
        a_killed_operator_loses_no_tick(&cluster, &node, &ns, &client, &host_url, &operator)
            .await
            .context("scenario: the operator killed during a schedule")?;
        probes_follow_the_database(&cluster, &node, &ns).await.context("scenario: the database unreachable")?;
        a_lost_nodes_work_is_recovered(&cluster, &node, &ns, &client, &host_url).await.context("scenario: the node lost")?;
        client.close().await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if outcome.is_err() {
        // What the operator saw, from the kubelet (the previous container's too, if it restarted).
        for previous in ["--previous=false", "--previous=true"] {
            if let Ok(log) = cluster.kubectl(&["-n", &ns, "logs", "deployment/mainstay", previous, "--tail=200"]) {
                eprintln!("==> operator log ({previous}) <==\n{log}");
            }
        }
    }
    // The apps first, while the operator still runs to release them; then everything else.
    let _ = cluster.kubectl(&["-n", &ns, "delete", "schedules,durableapps", "--all", "--timeout=60s"]);
    let _ = cluster.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    outcome
}

/// The images `tests/cluster/images.sh` built (and the node runs) have the user and entrypoint
/// that the Dockerfiles for people with Docker (`tests/kind/*.Dockerfile`) give theirs.
fn images_match_their_dockerfiles(cluster: &Cluster, node: &Node) -> Result<()> {
    for (image, dockerfile) in [(OPERATOR_IMAGE, "tests/kind/operator.Dockerfile"), (WORKER_IMAGE, "tests/kind/worker.Dockerfile")] {
        let text = std::fs::read_to_string(cluster.repo.join(dockerfile))?;
        let last = |instruction: &str| text.lines().rev().find_map(|l| l.strip_prefix(instruction)).map(str::trim).map(str::to_string);
        let user = last("USER ").with_context(|| format!("{dockerfile} has no USER"))?;
        let entrypoint: Vec<String> =
            serde_json::from_str(&last("ENTRYPOINT ").with_context(|| format!("{dockerfile} has no ENTRYPOINT"))?)
                .with_context(|| format!("{dockerfile}'s ENTRYPOINT is not in exec form"))?;
        let info: serde_json::Value = serde_json::from_str(&node.crictl(&["inspecti", image])?)?;
        let config = &info["info"]["imageSpec"]["config"];
        ensure!(config["User"] == json!(user), "{image} runs as {}, {dockerfile} as {user}", config["User"]);
        ensure!(
            config["Entrypoint"] == json!(entrypoint),
            "{image}'s entrypoint is {}, {dockerfile}'s {entrypoint:?}",
            config["Entrypoint"]
        );
    }
    Ok(())
}

/// The operator's pod, from the chart.
struct InCluster {
    pod: String,
}

/// `helm install` of the chart with the operator image built from this repository, on the real
/// node: its ServiceAccount and RBAC (the namespace only), leader election, probes, security
/// context and resource limits as the chart has them. Then `helm test`, whose pod reaches the
/// operator through its metrics Service (kube-proxy on the node).
async fn install_operator(cluster: &Cluster, node: &Node, ns: &str) -> Result<InCluster> {
    let values = cluster.work_dir.join(format!("values-{ns}.yaml"));
    std::fs::write(
        &values,
        format!(
            "image: {{repository: {OPERATOR_REPOSITORY}, tag: dev, pullPolicy: Never}}\nwatchNamespace: {ns}\n\
             nodeSelector: {{mainstay.dev/node: real}}\n\
             tolerations: [{{key: mainstay.dev/node, value: real, effect: NoSchedule}}]\n"
        ),
    )?;
    let values = values.to_string_lossy();
    cluster.helm(&["install", "mainstay", "charts/mainstay", "-n", ns, "-f", &values, "--wait", "--timeout", "3m"])?;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    let selector = "app.kubernetes.io/name=mainstay,app.kubernetes.io/instance=mainstay";
    let pod = wait_for("the operator pod Ready on the real node", 2 * MINUTE, || async {
        Ok(pods.list(&ListParams::default().labels(selector)).await?.items.into_iter().find(is_ready))
    })
    .await?;
    let name = pod.name_any();
    let spec = pod.spec.as_ref().context("operator pod spec")?;
    ensure!(spec.node_name.as_deref() == Some(node.name.as_str()), "the operator ran on {:?}, not the real node", spec.node_name);
    let container = &spec.containers[0];
    let security = container.security_context.as_ref().context("no container security context")?;
    ensure!(security.read_only_root_filesystem == Some(true) && security.run_as_non_root == Some(true), "{security:?}");
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref()).context("no resource limits")?;
    ensure!(limits.contains_key("memory"), "the operator has no memory limit: {limits:?}");
    // What the chart asks for is what the kernel enforces (256Mi, no CPU limit).
    let held = confinement(node.container_pid(&pod.name_any(), "operator")?)?;
    let expected = Confinement::locked_down(Some(256 << 20), None);
    ensure!(held == expected, "operator: {held:?}, expected {expected:?}");
    // It talks to the apiserver as its ServiceAccount, through the `kubernetes` Service, and
    // leads: the Lease names it.
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client.clone(), ns);
    wait_for("the operator pod to hold the leader Lease", MINUTE, || async {
        let lease = leases.get_opt(mainstay_operator::names::LEASE_NAME).await?;
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        Ok((holder.as_deref() == Some(name.as_str())).then_some(()))
    })
    .await?;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).context("the operator has no pod IP")?;
    let metrics = http_get(&format!("http://{ip}:8080/metrics"), &[]).await.context("no answer on the operator's metrics port")?;
    ensure!(metrics.status == 200 && metrics.body.contains("mainstay_operator_leader 1"), "the operator's /metrics: {metrics:?}");
    cluster.helm(&["test", "mainstay", "-n", ns, "--timeout", "2m"]).context("helm test")?;
    // Its liveness probe has been called all along, never failing.
    ensure!(restarts(&pods.get(&name).await?) == 0, "the operator restarted before any test touched it");
    Ok(InCluster { pod: name })
}

/// The worker pods of the app in `ns`.
async fn worker_pods(cluster: &Cluster, ns: &str) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    Ok(pods.list(&ListParams::default().labels(&format!("{LABEL_APP}=shop"))).await?.items)
}

fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn enqueue(client: &Client, workflow: &str, input: serde_json::Value, id: &str) -> Result<()> {
    client.enqueue(workflow, "orders", vec![input], WorkflowOptions::new().id(id).app_version("dev")).await?;
    Ok(())
}

/// Enqueues `n` holds of `ms` (IDs `{prefix}0`…) and waits until they all run; returns a Ready
/// worker pod.
async fn held_on_a_worker(cluster: &Cluster, ns: &str, client: &Client, prefix: &str, n: usize, ms: u64) -> Result<Pod> {
    for i in 0..n {
        enqueue(client, "hold", json!(ms), &format!("{prefix}{i}")).await?;
    }
    wait_for("the held workflows to be running on one worker", MINUTE, || async {
        let running = statuses(client, prefix).await?.iter().filter(|w| w.status == Status::Pending).count();
        if running < n {
            return Ok(None);
        }
        Ok(worker_pods(cluster, ns).await?.into_iter().find(is_ready))
    })
    .await
}

async fn statuses(client: &Client, prefix: &str) -> Result<Vec<mainstay::WorkflowStatus>> {
    Ok(client.list_workflows(&WorkflowFilter::new().id_prefix(prefix)).await?)
}

/// Queued work brings a worker up from zero on the real node; its readiness probe passes (the
/// kubelet calls it), and the work finishes.
async fn scales_from_zero_and_finishes_work(cluster: &Cluster, node: &Node, ns: &str, client: &Client) -> Result<()> {
    ensure!(worker_pods(cluster, ns).await?.is_empty(), "a worker runs before any work was queued");
    for i in 0..20 {
        enqueue(client, "process_order", json!(i), &format!("order-{i}")).await?;
    }
    let pod = wait_for("a worker pod Ready on the real node", 2 * MINUTE, || async {
        Ok(worker_pods(cluster, ns).await?.into_iter().find(is_ready))
    })
    .await?;
    let spec = pod.spec.as_ref().context("pod spec")?;
    ensure!(spec.node_name.as_deref() == Some(node.name.as_str()), "the worker ran on {:?}, not the real node", spec.node_name);
    let container = &spec.containers[0];
    ensure!(container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).is_some(), "the worker has no HTTP readiness probe");
    let security = container.security_context.as_ref().context("no container security context")?;
    ensure!(security.read_only_root_filesystem == Some(true) && security.run_as_non_root == Some(true), "{security:?}");
    // The app's limits (256Mi, 500m) and the operator's security defaults, as the kernel holds them.
    let held = confinement(node.container_pid(&pod.name_any(), "worker")?)?;
    let expected = Confinement::locked_down(Some(256 << 20), Some(50_000));
    ensure!(held == expected, "worker: {held:?}, expected {expected:?}");
    // The kubelet serves the container's log (the apiserver reaches it with its client
    // certificate): plain text, no terminal escape codes.
    let log = cluster.kubectl(&["-n", ns, "logs", &pod.name_any()])?;
    ensure!(log.contains("mainstay launched"), "the worker's log lacks its launch line:\n{log}");
    ensure!(!log.contains('\u{1b}'), "the worker's log holds terminal escape codes:\n{log}");
    wait_for("the 20 orders to succeed", 2 * MINUTE, || async {
        let done = statuses(client, "order-").await?.iter().filter(|w| w.status == Status::Success).count();
        Ok((done == 20).then_some(()))
    })
    .await?;
    Ok(())
}

/// SIGKILL of the worker's container (not a pod deletion): the kubelet restarts it in the same
/// pod, the restarted worker recovers its own workflows, and each finishes exactly once.
async fn a_killed_container_restarts_and_finishes_its_work_once(
    cluster: &Cluster,
    node: &Node,
    ns: &str,
    client: &Client,
    host_url: &str,
) -> Result<()> {
    let pod = held_on_a_worker(cluster, ns, client, "hold-", 4, 15_000).await?;
    let name = pod.name_any();
    let restarts_before = restarts(&pod);
    node.kill_container(&name, "worker")?;
    wait_for("the killed container to be restarted in the same pod", 2 * MINUTE, || async {
        let pods = worker_pods(cluster, ns).await?;
        Ok(pods.into_iter().find(|p| p.name_any() == name && restarts(p) > restarts_before && is_ready(p)).map(|_| ()))
    })
    .await?;
    wait_for("the held workflows to succeed after the restart", 2 * MINUTE, || async {
        let done = statuses(client, "hold-").await?.iter().filter(|w| w.status == Status::Success).count();
        Ok((done == 4).then_some(()))
    })
    .await?;
    let mut conn = mainstay_testkit::connect(host_url).await;
    for i in 0..4 {
        let id = format!("hold-{i}");
        let writes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outcome_writes WHERE workflow_uuid = $1").bind(&id).fetch_one(&mut conn).await?;
        ensure!(writes == 1, "the outcome of {id} was written {writes} times");
    }
    Ok(())
}

/// A worker pod deleted while its workflows run: the kubelet sends SIGTERM, the worker stops
/// at once (well inside the 30 s grace period), its Deployment starts another pod, the operator
/// re-enqueues the gone worker's workflows, and each finishes exactly once on the new pod.
async fn a_deleted_pod_stops_on_sigterm_and_its_work_moves(cluster: &Cluster, ns: &str, client: &Client, host_url: &str) -> Result<()> {
    let old = held_on_a_worker(cluster, ns, client, "moved-", 3, 10_000).await?.name_any();
    cluster.kubectl(&["-n", ns, "delete", "pod", &old, "--wait=false"])?;
    // The default grace period is 30 s: a worker that ignored SIGTERM would be SIGKILLed then.
    wait_for("the deleted pod to stop on SIGTERM, inside its grace period", Duration::from_secs(25), || async {
        Ok((!worker_pods(cluster, ns).await?.iter().any(|p| p.name_any() == old)).then_some(()))
    })
    .await?;
    let new = wait_for("a new worker pod Ready", 2 * MINUTE, || async {
        Ok(worker_pods(cluster, ns).await?.into_iter().find(|p| p.name_any() != old && is_ready(p)).map(|p| p.name_any()))
    })
    .await?;
    let finished = wait_for("the moved workflows to succeed", 2 * MINUTE, || async {
        let all = statuses(client, "moved-").await?;
        Ok((all.iter().filter(|w| w.status == Status::Success).count() == 3).then_some(all))
    })
    .await?;
    for w in &finished {
        ensure!(w.executor_id.as_deref() == Some(new.as_str()), "{} finished on {:?}, not the new pod {new}", w.workflow_id, w.executor_id);
    }
    let mut conn = mainstay_testkit::connect(host_url).await;
    let writes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outcome_writes WHERE workflow_uuid LIKE 'moved-%'").fetch_one(&mut conn).await?;
    ensure!(writes == 3, "3 moved workflows wrote {writes} outcomes");
    Ok(())
}

/// A new image (its tag is the new version) rolls out on the real node while the old version's
/// worker finishes its own work, after which the old Deployment goes; new work then brings the
/// new version up from zero.
async fn a_new_version_rolls_out_while_the_old_one_drains(cluster: &Cluster, node: &Node, ns: &str, client: &Client) -> Result<()> {
    // The same binary under a second tag: a second version to the operator.
    let tagged = std::process::Command::new("ctr")
        .args(["--address", &node.socket, "--namespace", "k8s.io", "images", "tag", "--force", WORKER_IMAGE, WORKER_IMAGE_V2])
        .output()?;
    ensure!(tagged.status.success(), "ctr images tag failed: {}", String::from_utf8_lossy(&tagged.stderr));
    // Held until released, so they are still running whatever the roll-out's pace.
    for i in 0..2 {
        enqueue(client, "hold", json!(600_000), &format!("drain-{i}")).await?;
    }
    wait_for("the old version's work to be running", MINUTE, || async {
        let running = statuses(client, "drain-").await?.iter().filter(|w| w.status == Status::Pending).count();
        Ok((running == 2).then_some(()))
    })
    .await?;
    let patch = json!({"spec": {"image": WORKER_IMAGE_V2}}).to_string();
    cluster.kubectl(&["-n", ns, "patch", "durableapp", "shop", "--type=merge", "-p", &patch])?;
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cluster.client.clone(), ns);
    let worker_deployments = || async {
        let list = deployments.list(&ListParams::default().labels(&format!("{LABEL_APP}=shop"))).await?;
        Ok::<Vec<String>, anyhow::Error>(list.items.iter().map(|d| d.name_any()).collect())
    };
    // v2 has no work yet, so it stays at zero workers; dev keeps its worker for its own work.
    wait_for("v2 deployed next to the draining dev version", 2 * MINUTE, || async {
        let names = worker_deployments().await?;
        let dev_ready = worker_pods(cluster, ns).await?.iter().any(|p| p.name_any().starts_with("shop-dev-") && is_ready(p));
        Ok((names.contains(&"shop-dev".to_string()) && names.contains(&"shop-v2".to_string()) && dev_ready).then_some(()))
    })
    .await?;
    for i in 0..2 {
        client.send(&format!("drain-{i}"), "go", Some("release"), None).await?;
    }
    let finished = wait_for("the old version's work to succeed", 2 * MINUTE, || async {
        let all = statuses(client, "drain-").await?;
        Ok((all.iter().filter(|w| w.status == Status::Success).count() == 2).then_some(all))
    })
    .await?;
    for w in &finished {
        let executor = w.executor_id.clone().unwrap_or_default();
        ensure!(executor.starts_with("shop-dev-"), "{} of version dev finished on {executor}", w.workflow_id);
    }
    wait_for("the drained dev Deployment to be removed", 2 * MINUTE, || async {
        Ok((worker_deployments().await? == ["shop-v2"]).then_some(()))
    })
    .await?;
    // Without a version: v2 (current) scales from zero for it, becomes the latest once it has
    // a ready worker, and runs it.
    client.enqueue("process_order", "orders", vec![json!(99)], WorkflowOptions::new().id("order-after-rollout")).await?;
    wait_for("an order to succeed on v2", 2 * MINUTE, || async {
        let w = statuses(client, "order-after-rollout").await?;
        Ok(w.first().filter(|w| w.status == Status::Success).and_then(|w| w.executor_id.clone()).filter(|e| e.starts_with("shop-v2-")))
    })
    .await?;
    Ok(())
}

/// The operator's container killed (SIGKILL, as the OOM killer does) while a Schedule fires every
/// second: the kubelet restarts it, it leads again, catches up the ticks it missed (within the
/// starting deadline), and no tick runs twice or goes missing.
async fn a_killed_operator_loses_no_tick(
    cluster: &Cluster,
    node: &Node,
    ns: &str,
    client: &Client,
    host_url: &str,
    operator: &InCluster,
) -> Result<()> {
    let name = format!("{ns}/every-second");
    let schedule = |suspend: bool| {
        json!({
            "apiVersion": "mainstay.dev/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "every-second", "namespace": ns},
            "spec": {"appRef": "shop", "workflowName": "nightly_report", "schedule": "* * * * * *",
                     "input": {"n": 1}, "startingDeadlineSeconds": 60, "suspend": suspend},
        })
        .to_string()
    };
    cluster.kubectl_stdin(&["apply", "-f", "-"], &schedule(false))?;
    let ticks = || async {
        let ids: Vec<String> =
            client.list_workflows(&WorkflowFilter::new().schedule_name(name.clone())).await?.into_iter().map(|w| w.workflow_id).collect();
        harness::ticks(&ids, &name)
    };
    let first = wait_for("the first tick", MINUTE, || async { Ok(ticks().await?.first().copied()) }).await?;
    wait_for("5 s of ticks", MINUTE, || async {
        Ok(ticks().await?.last().filter(|t| **t >= first + chrono::Duration::seconds(5)).map(|_| ()))
    })
    .await?;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    let before = restarts(&pods.get(&operator.pod).await?);
    node.kill_container(&operator.pod, "operator")?;
    let killed_at = chrono::Utc::now();
    wait_for("the operator container to be restarted and Ready", 2 * MINUTE, || async {
        let p = pods.get(&operator.pod).await?;
        Ok((restarts(&p) > before && is_ready(&p)).then_some(()))
    })
    .await?;
    wait_for("ticks 10 s past the kill", MINUTE, || async {
        Ok(ticks().await?.last().filter(|t| **t >= killed_at + chrono::Duration::seconds(10)).map(|_| ()))
    })
    .await?;
    cluster.kubectl_stdin(&["apply", "-f", "-"], &schedule(true))?;
    let schedules = Api::<mainstay_crds::Schedule>::namespaced(cluster.client.clone(), ns);
    wait_for("the schedule to report Suspended", MINUTE, || async {
        let s = schedules.get("every-second").await?;
        Ok(s.status.and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "Suspended")).map(|_| ()))
    })
    .await?;
    let fired = ticks().await?;
    let (first, last) = (fired[0], *fired.last().context("no tick")?);
    let expected = (last - first).num_seconds() as usize + 1;
    ensure!(fired.len() == expected, "ticks missing between {first} and {last}: {} fired, {expected} expected", fired.len());
    wait_for("every tick's run to succeed", 2 * MINUTE, || async {
        let done = client.list_workflows(&WorkflowFilter::new().schedule_name(name.clone()).statuses([Status::Success])).await?.len();
        Ok((done == fired.len()).then_some(()))
    })
    .await?;
    let mut conn = mainstay_testkit::connect(host_url).await;
    let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM outcome_writes WHERE workflow_uuid LIKE $1")
        .bind(format!("sched-{name}-%"))
        .fetch_one(&mut conn)
        .await?;
    ensure!(writes as usize == fired.len(), "{} ticks wrote {writes} outcomes", fired.len());
    Ok(())
}

/// The database cut off from the pods (the node's Postgres forward stopped): the worker's
/// readiness probe fails, so the kubelet marks it not Ready, while its liveness endpoint still
/// answers 200 (a restart would not bring the database back, and a crash loop would only add
/// load); with the database back, it is Ready again, never restarted.
async fn probes_follow_the_database(cluster: &Cluster, node: &Node, ns: &str) -> Result<()> {
    let pod = wait_for("a Ready worker", 2 * MINUTE, || async { Ok(worker_pods(cluster, ns).await?.into_iter().find(is_ready)) }).await?;
    let name = pod.name_any();
    let before = restarts(&pod);
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).context("the worker has no pod IP")?;
    let port = pod.spec.as_ref().context("pod spec")?.containers[0]
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("health"))
        .map(|p| p.container_port)
        .context("the worker has no health port")?;
    node.forward(cluster, "postgres", "stop")?;
    let outcome = async {
        wait_for("the kubelet to mark the worker not Ready", MINUTE, || async {
            let pods = worker_pods(cluster, ns).await?;
            Ok(pods.iter().find(|p| p.name_any() == name).filter(|p| !is_ready(p)).map(|_| ()))
        })
        .await?;
        let ready = http_get(&format!("http://{ip}:{port}/readyz"), &[]).await;
        ensure!(ready.as_ref().is_some_and(|a| a.status == 503), "/readyz with the database gone: {ready:?}");
        let live = http_get(&format!("http://{ip}:{port}/healthz"), &[]).await;
        ensure!(live.as_ref().is_some_and(|a| a.status == 200), "/healthz with the database gone: {live:?}");
        Ok(())
    }
    .await;
    node.forward(cluster, "postgres", "start")?;
    outcome?;
    wait_for("the worker to be Ready again", MINUTE, || async {
        let pods = worker_pods(cluster, ns).await?;
        Ok(pods.into_iter().find(|p| p.name_any() == name && is_ready(p)))
    })
    .await
    .and_then(|p| {
        ensure!(restarts(&p) == before, "the worker was restarted while the database was away");
        Ok(())
    })
}

/// The node lost with work on it: kubelet, runtime and containers gone at once. The control
/// plane marks the node NotReady, evicts its pods (after their 5 s toleration), which then stay
/// Terminating since no kubelet confirms; the operator recovers their workflows once a pod is
/// past its deletion deadline. With the node back, a new worker finishes each workflow once,
/// from its last completed step.
///
/// The operator must outlive the node, and this cluster has one real node, so for this scenario
/// the operator runs on the host (another machine, as far as the node is concerned) and the
/// chart's replica is scaled to zero.
async fn a_lost_nodes_work_is_recovered(cluster: &Cluster, node: &Node, ns: &str, client: &Client, host_url: &str) -> Result<()> {
    cluster.kubectl(&["-n", ns, "scale", "deployment/mainstay", "--replicas=0"])?;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    wait_for("the in-cluster operator to stop", MINUTE, || async {
        let left = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=mainstay")).await?.items;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    let args: Vec<String> = ["--namespace", ns, "--leader-elect=false"].iter().map(|s| s.to_string()).collect();
    let operator = Operator::start_with(cluster, &cluster.kubeconfig, "real-pods-operator", &args).await?;
    let outcome = async {
        let ids: Vec<String> = (0..3).map(|i| format!("lost-{i}")).collect();
        for id in &ids {
            // Held until released, at most 10 minutes.
            client.enqueue("hold", "orders", vec![json!(600_000)], WorkflowOptions::new().id(id)).await?;
        }
        let pod = wait_for("the held workflows to be running on one worker", 2 * MINUTE, || async {
            let running: Vec<_> = statuses(client, "lost-").await?.into_iter().filter(|w| w.status == Status::Pending).collect();
            let Some(executor) = running.first().and_then(|w| w.executor_id.clone()) else { return Ok(None) };
            Ok((running.len() == 3 && running.iter().all(|w| w.executor_id.as_deref() == Some(&executor))).then_some(executor))
        })
        .await?;
        node.power(cluster, "off")?;
        let lost = std::time::Instant::now();
        let recovered = async {
            wait_for("the node to be NotReady", MINUTE, || async {
                let n = Api::<k8s_openapi::api::core::v1::Node>::all(cluster.client.clone()).get(&node.name).await?;
                let ready = n.status.and_then(|s| s.conditions).into_iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status);
                Ok((ready.as_deref() != Some("True")).then_some(()))
            })
            .await?;
            let not_ready = lost.elapsed();
            wait_for("the lost worker's workflows to be re-enqueued", 3 * MINUTE, || async {
                let all = statuses(client, "lost-").await?;
                Ok(all.iter().all(|w| w.status == Status::Enqueued).then_some(()))
            })
            .await?;
            eprintln!(
                "node lost: NotReady after {:.0} s, its worker's workflows re-enqueued after {:.0} s",
                not_ready.as_secs_f64(),
                lost.elapsed().as_secs_f64()
            );
            // Recovered while its pod is still there, Terminating, its kubelet gone.
            let stuck = pods.get_opt(&pod).await?.context("the lost worker's pod was removed before its work was recovered")?;
            ensure!(stuck.metadata.deletion_timestamp.is_some(), "the lost worker's pod is not terminating");
            Ok::<_, anyhow::Error>(())
        }
        .await;
        node.power(cluster, "on")?;
        recovered?;
        let moved = wait_for("the recovered workflows to be running on a new worker", 3 * MINUTE, || async {
            let all = statuses(client, "lost-").await?;
            let on_new = all.iter().all(|w| w.status == Status::Pending && w.executor_id.as_deref().is_some_and(|e| e != pod));
            Ok(on_new.then(|| all[0].executor_id.clone().unwrap_or_default()))
        })
        .await?;
        for id in &ids {
            client.send(id, "go", Some("release"), None).await?;
        }
        let finished = wait_for("the recovered workflows to succeed", 2 * MINUTE, || async {
            let all = statuses(client, "lost-").await?;
            Ok(all.iter().all(|w| w.status == Status::Success).then_some(all))
        })
        .await?;
        let mut conn = mainstay_testkit::connect(host_url).await;
        for w in &finished {
            let out: String = client.get_result(&w.workflow_id).await?;
            ensure!(out == format!("released on {moved}"), "{}: {out}", w.workflow_id);
            let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM outcome_writes WHERE workflow_uuid = $1")
                .bind(&w.workflow_id)
                .fetch_one(&mut conn)
                .await?;
            ensure!(writes == 1, "the outcome of {} was written {writes} times", w.workflow_id);
            // Its first step ran on the lost node and was not run again.
            let started: Vec<String> =
                sqlx::query_scalar("SELECT output FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND output LIKE '%started%'")
                    .bind(&w.workflow_id)
                    .fetch_all(&mut conn)
                    .await?;
            ensure!(started.len() == 1, "{}: first step outputs {started:?}", w.workflow_id);
        }
        Ok(())
    }
    .await;
    let stopped = operator.stop().await;
    cluster.kubectl(&["-n", ns, "scale", "deployment/mainstay", "--replicas=1"])?;
    outcome?;
    stopped
}

/// What the kernel holds a container's process to: its user, whether its root filesystem is
/// read-only, its memory limit in bytes and its CPU quota in microseconds per 100 ms period
/// (cgroup v1 or v2), its seccomp mode (2: a filter, `RuntimeDefault`), whether it may gain
/// privileges (`allowPrivilegeEscalation: false` sets no_new_privs) and its effective
/// capabilities (none, once `drop: [ALL]`).
#[derive(Debug, PartialEq)]
struct Confinement {
    uid: u32,
    read_only_root: bool,
    memory_limit: Option<u64>,
    cpu_quota: Option<u64>,
    seccomp: u8,
    no_new_privs: bool,
    capabilities: u64,
}

impl Confinement {
    /// A non-root (65532), read-only, filtered, unprivileged process with these limits.
    fn locked_down(memory_limit: Option<u64>, cpu_quota: Option<u64>) -> Confinement {
        Confinement { uid: 65532, read_only_root: true, memory_limit, cpu_quota, seccomp: 2, no_new_privs: true, capabilities: 0 }
    }
}

fn confinement(pid: u32) -> Result<Confinement> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).with_context(|| format!("no {name}"));
    let uid = field("Uid:")?.split_whitespace().nth(1).context("no effective uid")?.parse()?;
    let seccomp = field("Seccomp:")?.parse()?;
    let no_new_privs = field("NoNewPrivs:")? == "1";
    let capabilities = u64::from_str_radix(field("CapEff:")?, 16)?;
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root = mounts.lines().map(|l| l.split(' ').collect::<Vec<_>>()).find(|f| f.len() > 5 && f[4] == "/").context("no root mount")?;
    let read_only_root = root[5].split(',').any(|o| o == "ro");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            if list.is_empty() {
                Some(format!("/sys/fs/cgroup{path}"))
            } else {
                list.split(',').any(|c| c == controller).then(|| format!("/sys/fs/cgroup/{controller}{path}"))
            }
        })
    };
    let read = |controller: &str, v1: &str, v2: &str| -> Option<String> {
        let dir = path_of(controller)?;
        std::fs::read_to_string(format!("{dir}/{v1}")).or_else(|_| std::fs::read_to_string(format!("{dir}/{v2}"))).ok()
    };
    let memory_limit = read("memory", "memory.limit_in_bytes", "memory.max").and_then(|v| v.trim().parse().ok());
    let cpu_quota = read("cpu", "cpu.cfs_quota_us", "cpu.max").and_then(|v| v.split_whitespace().next().and_then(|q| q.parse().ok()));
    Ok(Confinement { uid, read_only_root, memory_limit, cpu_quota, seccomp, no_new_privs, capabilities })
}

fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first()).map_or(0, |c| c.restart_count)
}
