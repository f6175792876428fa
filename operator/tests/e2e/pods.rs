//! The pod runner: kwok marks pods Running but runs no containers, so for each worker pod that
//! is Running this starts the example worker binary as a local process with the pod's
//! environment (Secrets and the downward API resolved, so its executor ID is the pod name),
//! and SIGKILLs it when the pod is deleted. Worker pods are recognized by the operator's app
//! label.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::harness::free_port;

pub struct PodRunner {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Processes by `namespace/pod`.
    running: BTreeMap<String, Child>,
    errors: Vec<String>,
}

impl PodRunner {
    pub fn start(client: kube::Client, worker_bin: PathBuf, log_dir: PathBuf, extra_env: Vec<(String, String)>) -> PodRunner {
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(State::default()));
        let (s, st) = (stop.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = sync(&client, &worker_bin, &log_dir, &extra_env, &st).await {
                    st.lock().unwrap().errors.push(format!("{e:#}"));
                }
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                }
            }
            let mut state = st.lock().unwrap();
            for (_, child) in state.running.iter_mut() {
                let _ = child.start_kill();
            }
        });
        PodRunner { stop, task, state }
    }

    /// Pods whose worker process is running (`namespace/name`).
    pub fn running(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().running.keys().cloned().collect()
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn sync(
    client: &kube::Client,
    worker_bin: &std::path::Path,
    log_dir: &std::path::Path,
    extra_env: &[(String, String)],
    state: &Arc<Mutex<State>>,
) -> Result<()> {
    let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default().labels(mainstay_operator::names::LABEL_APP)).await?;
    let mut wanted = BTreeMap::new();
    for pod in pods.items {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if running && pod.metadata.deletion_timestamp.is_none() {
            wanted.insert(format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), pod);
        }
    }
    // Kill the processes of pods that are gone or going, as a node would on a hard stop.
    {
        let mut st = state.lock().unwrap();
        let gone: Vec<String> = st.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for k in gone {
            if let Some(mut child) = st.running.remove(&k) {
                let _ = child.start_kill();
            }
        }
    }
    for (key, pod) in wanted {
        if state.lock().unwrap().running.contains_key(&key) {
            continue;
        }
        let env = pod_env(client, &pod).await?;
        let log = std::fs::File::create(log_dir.join(format!("{}.log", key.replace('/', "_"))))?;
        let mut cmd = tokio::process::Command::new(worker_bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Every process shares this host: give each its own health port.
        cmd.env(mainstay::config::env::HEALTH_PORT, free_port().to_string());
        let child = cmd.spawn().map_err(|e| anyhow!("start the worker of pod {key}: {e}"))?;
        let mut st = state.lock().unwrap();
        st.running.insert(key, child);
    }
    Ok(())
}

/// The environment of a pod's first container, resolved as a kubelet would.
async fn pod_env(client: &kube::Client, pod: &Pod) -> Result<Vec<(String, String)>> {
    let ns = pod.namespace().unwrap_or_default();
    let container = &pod.spec.as_ref().ok_or_else(|| anyhow!("pod without spec"))?.containers[0];
    let mut out = Vec::new();
    for e in container.env.clone().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(s) = &from.secret_key_ref {
                    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get(&s.name).await?;
                    let data = secret.data.unwrap_or_default();
                    let bytes = data.get(&s.key).ok_or_else(|| anyhow!("secret {} has no key {}", s.name, s.key))?;
                    String::from_utf8(bytes.0.clone())?
                } else if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => pod.name_any(),
                        "metadata.namespace" => ns.clone(),
                        other => return Err(anyhow!("unsupported fieldRef {other}")),
                    }
                } else {
                    return Err(anyhow!("unsupported valueFrom in env {}", e.name));
                }
            }
            (None, None) => String::new(),
        };
        out.push((e.name, value));
    }
    Ok(out)
}
