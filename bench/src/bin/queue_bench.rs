//! Queue benchmarks: drain throughput of 10,000 queued no-op workflows on an unlimited queue and
//! on a concurrency-10 queue, and enqueue-to-start latency on an idle worker (enqueued by a
//! `Client` on its own connection, so the worker is woken by the database's notification).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use mainstay::{Client, Config, Mainstay, Queue, WorkflowOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(about = "mainstay queue benchmarks")]
struct Args {
    /// Superuser URL of the server; database `mainstay_queue_bench` is dropped and recreated.
    #[arg(long, env = "MAINSTAY_BENCH_DATABASE_URL")]
    database_url: String,
    /// Queued workflows per drain scenario.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Skip the unlimited-queue drain.
    #[arg(long)]
    skip_unlimited: bool,
    /// Enqueue-to-start samples (0 skips the scenario).
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
}

static STARTS: OnceLock<mpsc::UnboundedSender<(String, u128)>> = OnceLock::new();

#[mainstay::workflow]
async fn noop() -> mainstay::Result<()> {
    Ok(())
}

#[mainstay::workflow]
async fn stamp() -> mainstay::Result<()> {
    tracing::trace!("workflow body started");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
    if let (Some(tx), Some(id)) = (STARTS.get(), mainstay::workflow_id()) {
        let _ = tx.send((id, now));
    }
    Ok(())
}

fn config(url: &str, executor: &str) -> Config {
    let mut c = Config::new(url);
    c.executor_id = executor.into();
    c.app_version = Some("bench".into());
    c.pool_size = 20;
    c
}

async fn recreate(admin_url: &str) -> Result<String> {
    let mut conn = PgConnection::connect(admin_url).await.context("connect to the server")?;
    sqlx::raw_sql("DROP DATABASE IF EXISTS mainstay_queue_bench WITH (FORCE)").execute(&mut conn).await?;
    sqlx::raw_sql("CREATE DATABASE mainstay_queue_bench").execute(&mut conn).await?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path("/mainstay_queue_bench");
    Ok(url.to_string())
}

/// Workflows of `queue` not finished yet (an index-only count, cheap enough to poll often).
async fn remaining(conn: &mut PgConnection, queue: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(AssertSqlSafe(
        "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = $1 AND status IN ('ENQUEUED', 'PENDING')".to_string(),
    ))
    .bind(queue)
    .fetch_one(conn)
    .await?)
}

/// Enqueues `count` no-op workflows with no worker listening, then starts one and times the drain.
async fn drain(url: &str, queue: Queue, count: usize) -> Result<f64> {
    let enqueuer = Mainstay::builder(config(url, "enqueuer")).global(false).launch().await?;
    futures::stream::iter(0..count)
        .map(|_| enqueuer.enqueue(noop(), &queue))
        .buffer_unordered(64)
        .for_each(|r| async move {
            r.expect("enqueue");
        })
        .await;
    let mut conn = PgConnection::connect(url).await?;
    let start = Instant::now();
    let worker = Mainstay::builder(config(url, "worker")).queue(queue.clone()).global(false).launch().await?;
    loop {
        if remaining(&mut conn, &queue.name).await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    worker.shutdown().await;
    enqueuer.shutdown().await;
    Ok(count as f64 / took.as_secs_f64())
}

async fn latency(url: &str, samples: usize) -> Result<Histogram<u64>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    STARTS.set(tx).ok();
    let queue = Queue::new("bench-latency");
    let worker = Mainstay::builder(config(url, "worker")).queue(queue.clone()).global(false).launch().await?;
    let client = Client::connect(url).await?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..samples + 20 {
        let id = client.enqueue("stamp", &queue.name, vec![], WorkflowOptions::new().app_version("bench")).await?;
        let enqueued = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros();
        let (started_id, started) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("the workflow started within 10 s")?
            .context("start channel")?;
        anyhow::ensure!(started_id == id, "unexpected workflow {started_id}");
        client.get_result::<()>(&id).await?;
        if i >= 20 {
            h.record(started.saturating_sub(enqueued).max(1) as u64)?;
        }
    }
    worker.shutdown().await;
    client.close().await;
    Ok(h)
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    let args = Args::parse();
    // Each scenario starts from a fresh database, so none pays for another's dead rows.
    let fresh = || async {
        let url = recreate(&args.database_url).await?;
        mainstay::migrate(&Config::new(&url)).await?;
        anyhow::Ok(url)
    };
    if !args.skip_unlimited {
        let unlimited = drain(&fresh().await?, Queue::new("bench-unlimited"), args.count).await?;
        println!("unlimited queue: {} queued no-op workflows drained at {unlimited:.0} workflows/s", args.count);
    }
    let limited = drain(&fresh().await?, Queue::new("bench-c10").concurrency(10), args.count).await?;
    println!("concurrency-10 queue: {} queued no-op workflows drained at {limited:.0} workflows/s", args.count);
    let url = fresh().await?;
    if args.latency_samples == 0 {
        return Ok(());
    }
    let h = latency(&url, args.latency_samples).await?;
    println!(
        "enqueue-to-start on an idle worker ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    Ok(())
}
