//! The end-to-end harness: the test cluster (started by `tests/cluster/up.sh`), its tools
//! (kubectl, helm), a Postgres, and the operator binary run as a local process authenticated
//! as the chart's ServiceAccount.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Api;

pub use mainstay_testkit::{free_port, http_get};

/// Variables `.ci/run` sets for the suite.
pub const KUBECONFIG_ENV: &str = "MAINSTAY_E2E_KUBECONFIG";
pub const BIN_DIR_ENV: &str = "MAINSTAY_E2E_BIN_DIR";
pub const WORKER_BIN_ENV: &str = "MAINSTAY_E2E_WORKER_BIN";
pub const DATABASE_ENV: &str = "MAINSTAY_TEST_DATABASE_URL";

/// Namespace and release of the chart.
pub const RELEASE: &str = "mainstay";
pub const RELEASE_NAMESPACE: &str = "mainstay-system";

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub worker_bin: PathBuf,
    pub database_url: String,
    pub client: kube::Client,
    /// Scratch space: kubeconfigs, process logs.
    pub work_dir: PathBuf,
    pub repo: PathBuf,
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow!(
            "{name} is not set: the end-to-end suite needs a test cluster, its tools, a Postgres \
             and the example worker; `bash .ci/run` provides them all"
        )
    })
}

pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

impl Cluster {
    pub async fn from_env() -> Result<Cluster> {
        let kubeconfig = PathBuf::from(env(KUBECONFIG_ENV)?);
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let work_dir = std::env::temp_dir().join(format!("mainstay-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)?;
        Ok(Cluster {
            client: client_for(&kubeconfig).await?,
            kubeconfig,
            bin_dir: PathBuf::from(env(BIN_DIR_ENV)?),
            worker_bin: PathBuf::from(env(WORKER_BIN_ENV)?),
            database_url: env(DATABASE_ENV)?,
            work_dir,
            repo,
        })
    }

    fn tool(&self, name: &str, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
        use std::io::Write;
        let mut child = std::process::Command::new(self.bin_dir.join(name))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.work_dir.join("helm-cache"))
            .env("HELM_CONFIG_HOME", self.work_dir.join("helm-config"))
            .env("HELM_DATA_HOME", self.work_dir.join("helm-data"))
            .current_dir(&self.repo)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {name}"))?;
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Runs kubectl; fails with its output unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        ok(self.tool("kubectl", args, None)?, "kubectl", args)
    }

    /// Runs kubectl with `yaml` on stdin and returns the whole output, successful or not.
    pub fn kubectl_stdin(&self, args: &[&str], yaml: &str) -> Result<std::process::Output> {
        self.tool("kubectl", args, Some(yaml))
    }

    pub fn helm(&self, args: &[&str]) -> Result<String> {
        ok(self.tool("helm", args, None)?, "helm", args)
    }

    /// A new empty database on the test Postgres (`t_<name>`); returns its URL.
    pub async fn fresh_database(&self, name: &str) -> Result<String> {
        Ok(mainstay_testkit::fresh_database_on(&self.database_url, name).await?)
    }

    /// A kubeconfig that authenticates as a ServiceAccount with a fresh token.
    pub fn service_account_kubeconfig(&self, namespace: &str, sa: &str) -> Result<PathBuf> {
        let token = self.kubectl(&["create", "token", sa, "-n", namespace, "--duration=4h"])?;
        let admin: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(&self.kubeconfig)?)?;
        let mut cluster = admin["clusters"][0]["cluster"].clone();
        // Relative CA paths in the admin kubeconfig are relative to its directory.
        if let Some(path) = cluster.get("certificate-authority").and_then(|v| v.as_str()).map(str::to_string) {
            let abs = self.kubeconfig.parent().unwrap().join(path);
            cluster["certificate-authority"] = yaml_serde::Value::String(abs.display().to_string());
        }
        let kc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": serde_json::to_value(&cluster)?}],
            "users": [{"name": sa, "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "test", "user": sa}}],
            "current-context": "sa",
        });
        let path = self.work_dir.join(format!("kubeconfig-{namespace}-{sa}"));
        std::fs::write(&path, yaml_serde::to_string(&kc)?)?;
        Ok(path)
    }
}

fn ok(out: std::process::Output, tool: &str, args: &[&str]) -> Result<String> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    bail!(
        "{tool} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `check` until it yields a value; fails after `timeout` naming what it waited for and
/// the last error the check saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    mainstay_testkit::poll_until(timeout, Duration::from_millis(200), check).await.map_err(|t| {
        let why = t.last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
        anyhow::anyhow!("timed out after {timeout:?} waiting for {what}{why}")
    })
}

/// The operator binary, run as a local process with the chart's arguments.
pub struct Operator {
    child: tokio::process::Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator with the arguments of the chart's Deployment (the metrics address
    /// moved to a free local port), authenticated by `kubeconfig`.
    pub async fn start(cluster: &Cluster, kubeconfig: &Path, identity: &str) -> Result<Operator> {
        let deploy = Api::<Deployment>::namespaced(cluster.client.clone(), RELEASE_NAMESPACE).get(RELEASE).await?;
        let container = deploy.spec.unwrap().template.spec.unwrap().containers.remove(0);
        let args: Vec<String> = container.args.unwrap_or_default().into_iter().filter(|a| !a.starts_with("--metrics-addr=")).collect();
        Operator::start_with(cluster, kubeconfig, identity, &args).await
    }

    /// Starts the operator with `args` (and a metrics address on a free local port).
    pub async fn start_with(cluster: &Cluster, kubeconfig: &Path, identity: &str, args: &[String]) -> Result<Operator> {
        let port = free_port();
        let mut args = args.to_vec();
        args.push(format!("--metrics-addr=127.0.0.1:{port}"));
        let log = cluster.work_dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mainstay-operator"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", RELEASE_NAMESPACE)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("start the operator")?;
        let op = Operator { child, metrics_port: port, log };
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_for("the operator to be ready", Duration::from_secs(60), || async {
            Ok(http_get(&url, &[]).await.filter(|a| a.status == 200).map(|_| ()))
        })
        .await?;
        Ok(op)
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> Option<String> {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port), &[]).await.map(|a| a.body)
    }

    /// SIGTERM, then waits for a graceful exit (it releases its lease).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the operator exited with {status}; log: {}", self.log.display());
                }
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the operator did not stop within 30 s of SIGTERM; log: {}", self.log.display())
            }
        }
    }
}

/// Ticks (from workflow IDs `sched-{name}-{tick}`) of a schedule's runs.
pub fn ticks(ids: &[String], name: &str) -> Result<Vec<chrono::DateTime<chrono::Utc>>> {
    let prefix = format!("sched-{name}-");
    let mut out = Vec::new();
    for id in ids {
        let t = id.strip_prefix(&prefix).with_context(|| format!("unexpected ID {id}"))?;
        out.push(chrono::DateTime::parse_from_rfc3339(t)?.with_timezone(&chrono::Utc));
    }
    out.sort();
    Ok(out)
}
