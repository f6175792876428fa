//! `mainstay-operator`: runs the DurableApp and Schedule controllers while this replica holds
//! the leader lease, and serves `/metrics`, `/healthz` and `/readyz`. `mainstay-operator check`
//! asks a running operator whether it is ready: the chart's `helm test` pod runs it, so the
//! test needs no image but the operator's own (whose root filesystem has no shell or `wget`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::Api;
use mainstay_crds::{DurableApp, Schedule};
use mainstay_operator::controller::{durable_app, schedule, workflow_run, Context, Settings};
use mainstay_operator::metrics::Metrics;
use mainstay_operator::names::env;
use mainstay_operator::{endpoints, leader};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The Kubernetes operator of mainstay: DurableApp and Schedule controllers.
#[derive(Parser, Debug)]
#[command(name = "mainstay-operator", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = env::WATCH_NAMESPACE)]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = env::METRICS_ADDR, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so several replicas are safe.
    #[arg(long, env = env::LEADER_ELECT, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the operator pod's namespace).
    #[arg(long, env = env::POD_NAMESPACE, default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease and on Events (default: the pod name, or host and process ID).
    #[arg(long, env = env::POD_NAME)]
    identity: Option<String>,
    /// The operator's Deployment (in the Lease's namespace): the leader makes it the owner of
    /// the Lease, so deleting the Deployment (`helm uninstall`) deletes the Lease too.
    #[arg(long)]
    owner_deployment: Option<String>,
    /// Seconds between looks at each system database (the work of every app on it and the
    /// progress of its unfinished WorkflowRuns): autoscaling and recovery react within this.
    #[arg(long, default_value_t = 2.0)]
    poll_interval_seconds: f64,
    /// Seconds between retention sweeps per DurableApp.
    #[arg(long, default_value_t = 60)]
    retention_interval_seconds: u64,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch http://HOST:PORT/PATH and exit 0 if it answers 2xx (the chart's `helm test`).
    Check {
        /// Host name or IP address (an IPv6 address without brackets, as in `*_SERVICE_HOST`).
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_seconds: u64,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour only on a terminal: in a container, escape codes would end up in `kubectl logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    init_logging(args.log_format);
    let outcome = match args.command.take() {
        Some(Command::Check { host, port, path, timeout_seconds }) => check(&host, port, &path, Duration::from_secs(timeout_seconds)).await,
        None => run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One GET; the answer's status decides.
async fn check(host: &str, port: u16, path: &str, timeout: Duration) -> anyhow::Result<()> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let url = format!("http://{host}:{port}{path}");
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a valid URL; check --host, --port and --path"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let answer = tokio::time::timeout(timeout, client.get(uri))
        .await
        .with_context(|| format!("GET {url}: no answer within {}s", timeout.as_secs()))?
        .with_context(|| format!("GET {url} failed"))?;
    let status = answer.status();
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    println!("GET {url}: {status}");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.poll_interval_seconds > 0.0 && args.poll_interval_seconds <= 3600.0) {
        anyhow::bail!("--poll-interval-seconds must be in (0, 3600], got {}", args.poll_interval_seconds);
    }
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let server = endpoints::serve(args.metrics_addr, metrics.clone(), ready.clone(), stop.clone())
        .await
        .with_context(|| format!("cannot serve metrics on {}; pass a free --metrics-addr", args.metrics_addr))?;
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        let _ = mainstay::wait_for_signal().await;
        tracing::info!("shutting down");
        signal_stop.cancel();
    });

    let config =
        kube::Config::infer().await.context("cannot build a Kubernetes client: run in a pod with a service account, or set KUBECONFIG")?;
    // Every API request is counted (mainstay_operator_api_requests_total).
    let count = mainstay_operator::api_requests::CountRequests { counts: metrics.api_requests.clone() };
    let kube = kube::client::ClientBuilder::try_from(config)
        .context("cannot build a Kubernetes client from the configuration")?
        .with_layer(&count)
        .build();
    if !wait_for_crds(&kube, args.namespace.as_deref(), &stop).await {
        return Ok(());
    }
    ready.store(true, Ordering::Relaxed);
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "operator".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let settings = Settings {
        poll_interval: Duration::from_secs_f64(args.poll_interval_seconds),
        retention_interval: Duration::from_secs(args.retention_interval_seconds.max(1)),
    };
    // The watches run for the whole process, so a standby replica's view is warm when it leads.
    let stores = mainstay_operator::stores::Stores::start(&kube, args.namespace.as_deref(), &stop);
    let ctx = Arc::new(Context::new(kube.clone(), stores, metrics.clone(), settings, Some(identity.clone())));
    mainstay_operator::crd_watch::start(&kube, ctx.crd_drift.clone(), metrics.clone(), stop.clone());
    let ns = args.namespace.clone();
    let controllers = || {
        let (ctx, ns) = (ctx.clone(), ns.clone());
        ctx.begin_term();
        let (app_changes, run_changes) = ctx.observer.begin_term();
        async move {
            // An empty store would read as "nothing exists": act only once every watch listed.
            if ctx.stores.ready().await.is_err() {
                return;
            }
            // The observer lives as long as the term's controllers (it never ends by itself).
            let observer = ctx.observer.clone().run(ctx.settings.poll_interval);
            let controllers = async {
                tokio::join!(
                    durable_app::run(ctx.clone(), ns.clone(), app_changes),
                    schedule::run(ctx.clone(), ns.clone()),
                    workflow_run::run(ctx.clone(), ns, run_changes)
                )
            };
            tokio::select! {
                _ = observer => {}
                _ = controllers => {}
            }
        }
    };
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        leader_elect = args.leader_elect,
        identity,
        "mainstay-operator started"
    );
    if args.leader_elect {
        let owner = args.owner_deployment.as_deref();
        leader::lead(kube, &args.lease_namespace, &identity, owner, &metrics, stop.clone(), controllers).await;
    } else {
        metrics.leader.set(1);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = controllers() => {}
        }
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// Waits until the CRDs are served (logging how to install them), or until shutdown.
async fn wait_for_crds(kube: &kube::Client, namespace: Option<&str>, stop: &CancellationToken) -> bool {
    let mut delays = mainstay_operator::retry::delays();
    loop {
        let probe = async {
            let lp = ListParams::default().limit(1);
            match namespace {
                Some(ns) => {
                    Api::<DurableApp>::namespaced(kube.clone(), ns).list(&lp).await?;
                    Api::<Schedule>::namespaced(kube.clone(), ns).list(&lp).await?;
                }
                None => {
                    Api::<DurableApp>::all(kube.clone()).list(&lp).await?;
                    Api::<Schedule>::all(kube.clone()).list(&lp).await?;
                }
            }
            Ok::<(), kube::Error>(())
        };
        match probe.await {
            Ok(()) => return true,
            Err(e) => tracing::error!(
                error = %e,
                "cannot list DurableApps and Schedules: are the CRDs installed (`kubectl apply --server-side -f charts/mainstay/crds/`, or `helm show crds CHART | kubectl apply --server-side -f -`) and may this service account list them? retrying"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(30))) => {}
        }
    }
}
