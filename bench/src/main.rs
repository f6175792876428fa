//! `mainstay-bench`: throughput, latency and write cost of a two-step no-op workflow.
//!
//! Scenarios (each after an unmeasured warm-up):
//! 1. sequential: N workflows one after another (`app.run`);
//! 2. concurrent: M workflows with a fixed number in flight;
//! 3. writes per workflow: K sequential workflows between two `txid_current()` calls on a
//!    separate connection; every writing transaction consumes one xid, read-only ones none.
//!
//! Without `--database-url` a private Postgres is started in a temporary directory and stopped
//! at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use mainstay::{Config, Mainstay};
use mainstay_dev::LocalPostgres;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const BENCH_DB: &str = "mainstay_bench";
/// Idle time before reading `pg_stat_database` so every backend has flushed its counters.
const STATS_SETTLE: Duration = Duration::from_secs(11);

#[mainstay::step]
async fn noop_one() -> mainstay::Result<()> {
    Ok(())
}

#[mainstay::step]
async fn noop_two() -> mainstay::Result<()> {
    Ok(())
}

/// The workload: a workflow of two no-op steps.
#[mainstay::workflow]
async fn two_noop_steps() -> mainstay::Result<()> {
    noop_one().await?;
    noop_two().await?;
    Ok(())
}

#[derive(Parser, Debug)]
#[command(name = "mainstay-bench", about = "Throughput and latency benchmarks for mainstay")]
struct Args {
    /// Postgres URL of a superuser on the server to benchmark; the database `mainstay_bench` is
    /// dropped and recreated there. Without it a private Postgres is started.
    #[arg(long, env = "MAINSTAY_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Workflows run one after another in the sequential scenario.
    #[arg(long, default_value_t = 3000)]
    sequential: usize,
    /// Workflows run in the concurrent scenario.
    #[arg(long, default_value_t = 20000)]
    concurrent: usize,
    /// Workflows in flight in the concurrent scenario.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Sequential workflows between the two xid readings of the writes scenario (0 skips it;
    /// so does 0 for the other scenarios).
    #[arg(long, default_value_t = 500)]
    writes_sample: usize,
    /// Unmeasured workflows before each scenario.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Connections of mainstay's pool.
    #[arg(long, default_value_t = 20)]
    pool_size: u32,
    /// Checkpoint batches mainstay writes at once (`Config::commit_concurrency`; default: the
    /// runtime's default).
    #[arg(long)]
    commit_concurrency: Option<usize>,
    /// Port of the private Postgres (used when no URL is given; a free one is picked if taken).
    #[arg(long, default_value_t = 55439)]
    private_port: u16,
    /// Print a JSON summary instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone)]
struct Latency {
    count: u64,
    wall: Duration,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn throughput(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.count as f64 / self.wall.as_secs_f64()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "workflows": self.count,
            "seconds": self.wall.as_secs_f64(),
            "workflows_per_second": self.throughput(),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        })
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn summarize(h: &Histogram<u64>, wall: Duration) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency { count: h.len(), wall, p50_ms: ms(h.value_at_quantile(0.50)), p99_ms: ms(h.value_at_quantile(0.99)), max_ms: ms(h.max()) }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

async fn run_one(app: &Mainstay) -> Result<Duration> {
    let t = Instant::now();
    app.run(two_noop_steps()).await.context("a benchmark workflow failed")?;
    Ok(t.elapsed())
}

async fn sequential(app: &Mainstay, n: usize) -> Result<Latency> {
    let mut h = histogram();
    let start = Instant::now();
    for _ in 0..n {
        h.record(micros(run_one(app).await?))?;
    }
    Ok(summarize(&h, start.elapsed()))
}

async fn concurrent(app: &Mainstay, n: usize, in_flight: usize) -> Result<Latency> {
    let mut h = histogram();
    let start = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|_| {
            let app = app.clone();
            // A task per workflow, so the benchmark's own polling is not one task's bottleneck.
            async move { tokio::spawn(async move { run_one(&app).await }).await? }
        })
        .buffer_unordered(in_flight.max(1));
    while let Some(r) = results.next().await {
        h.record(micros(r?))?;
    }
    Ok(summarize(&h, start.elapsed()))
}

async fn warm_up(app: &Mainstay, n: usize, in_flight: usize) -> Result<()> {
    if n > 0 {
        concurrent(app, n, in_flight).await?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Writes {
    workflows: usize,
    xids: i64,
    /// Distinct `xmin` of the live rows of the measured workflows (a cross-check immune to
    /// other databases' activity on the server).
    distinct_row_xmins: Option<i64>,
    /// `pg_stat_database.xact_commit` delta (all transactions, read-only included).
    xact_commits: i64,
    /// Length of the `xact_commit` window (background polling adds about one per second).
    stats_window: Duration,
    /// Transactions of other databases or other clients may have run in the window.
    other_backends_active: bool,
}

impl Writes {
    fn writes_per_workflow(&self) -> f64 {
        self.xids as f64 / self.workflows as f64
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "workflows": self.workflows,
            "writing_transactions": self.xids,
            "writing_transactions_per_workflow": self.writes_per_workflow(),
            "distinct_row_xmins_per_workflow": self.distinct_row_xmins.map(|x| x as f64 / self.workflows as f64),
            "xact_commit_delta": self.xact_commits,
            "xact_commit_window_seconds": self.stats_window.as_secs_f64(),
            "transactions_per_workflow_from_xact_commit": self.xact_commits as f64 / self.workflows as f64,
            "other_backends_active": self.other_backends_active,
        })
    }
}

async fn xact_commit(conn: &mut PgConnection) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT pg_stat_get_db_xact_commit(oid) FROM pg_database WHERE datname = current_database()")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

/// Reads `xact_commit` once the backends have flushed their statistics. Postgres 15 flushes an
/// idle backend's counters about a second after it went idle, and retries a flush that found
/// the shared entry locked only after 10 s (`PGSTAT_IDLE_INTERVAL`), so wait past that.
async fn settled_xact_commit(conn: &mut PgConnection, idle: Duration) -> Result<i64> {
    tokio::time::sleep(idle).await;
    xact_commit(conn).await
}

async fn other_backends(conn: &mut PgConnection) -> Result<bool> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
           AND datname IS DISTINCT FROM current_database() AND state <> 'idle'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

async fn writes_per_workflow(app: &Mainstay, url: &str, k: usize) -> Result<Writes> {
    let mut conn = PgConnection::connect(url).await.context("connect the measuring connection")?;
    let stats_before = settled_xact_commit(&mut conn, STATS_SETTLE).await?;
    let window = Instant::now();
    let mut others = other_backends(&mut conn).await?;
    let (before,): (i64,) = sqlx::query_as("SELECT txid_current()::bigint").fetch_one(&mut conn).await?;
    let (started_ms,): (i64,) =
        sqlx::query_as("SELECT (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint").fetch_one(&mut conn).await?;
    for _ in 0..k {
        run_one(app).await?;
    }
    let (after,): (i64,) = sqlx::query_as("SELECT txid_current()::bigint").fetch_one(&mut conn).await?;
    others |= other_backends(&mut conn).await?;
    let xids = after - before - 1;

    // Cross-check: the live rows of these workflows carry the xids that wrote them.
    let distinct: Option<i64> = sqlx::query_as::<_, (i64,)>(
        "WITH w AS (SELECT workflow_uuid FROM dbos.workflow_status
                    WHERE created_at >= $1 AND name = 'two_noop_steps'),
              x AS (
                SELECT s.xmin::text AS x FROM dbos.workflow_status s JOIN w USING (workflow_uuid)
                UNION ALL SELECT i.xmin::text FROM dbos.workflow_input i JOIN w USING (workflow_uuid)
                UNION ALL SELECT o.xmin::text FROM dbos.workflow_output o JOIN w USING (workflow_uuid)
                UNION ALL SELECT op.xmin::text FROM dbos.operation_outputs op JOIN w USING (workflow_uuid))
         SELECT count(DISTINCT x) FROM x",
    )
    .bind(started_ms)
    .fetch_one(&mut conn)
    .await
    .ok()
    .map(|(n,)| n);

    let stats_after = settled_xact_commit(&mut conn, STATS_SETTLE).await?;
    let xact_commits = stats_after - stats_before;
    let stats_window = window.elapsed();
    conn.close().await.ok();
    Ok(Writes { workflows: k, xids, distinct_row_xmins: distinct, xact_commits, stats_window, other_backends_active: others })
}

/// The URL with its database name replaced (query parameters such as `host=` kept).
fn with_database(url: &str, db: &str) -> Result<String> {
    let scheme_end = url.find("://").context("database URL has no scheme")? + 3;
    let (head, rest) = url.split_at(scheme_end);
    let (before_query, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match before_query.find('/') {
        Some(i) => &before_query[..i],
        None => before_query,
    };
    Ok(format!("{head}{authority}/{db}{query}"))
}

fn redact(url: &str) -> String {
    mainstay::config::redact(url)
}

async fn recreate_database(admin_url: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url).await.with_context(|| format!("connect to {}", redact(admin_url)))?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .context("drop the old benchmark database")?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {BENCH_DB}")))
        .execute(&mut conn)
        .await
        .context("create the benchmark database")?;
    conn.close().await.ok();
    Ok(())
}

struct ServerInfo {
    version: String,
    fsync: String,
    synchronous_commit: String,
    wal_sync_method: String,
}

async fn server_info(url: &str) -> Result<ServerInfo> {
    let mut conn = PgConnection::connect(url).await?;
    let get = |name: &'static str| format!("SELECT current_setting('{name}')");
    let mut v = Vec::new();
    for name in ["server_version", "fsync", "synchronous_commit", "wal_sync_method"] {
        let (s,): (String,) = sqlx::query_as(AssertSqlSafe(get(name))).fetch_one(&mut conn).await?;
        v.push(s);
    }
    conn.close().await.ok();
    let mut v = v.into_iter();
    Ok(ServerInfo {
        version: v.next().unwrap_or_default(),
        fsync: v.next().unwrap_or_default(),
        synchronous_commit: v.next().unwrap_or_default(),
        wal_sync_method: v.next().unwrap_or_default(),
    })
}

fn free_port(preferred: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return preferred;
    }
    std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(preferred)
}

struct Private {
    pg: LocalPostgres,
    dir: PathBuf,
}

impl Private {
    async fn start(port: u16) -> Result<(Private, String)> {
        let dir = std::env::temp_dir().join(format!("mainstay-bench-pg-{}", std::process::id()));
        let pg = LocalPostgres { data_dir: dir.clone(), port: free_port(port) };
        eprintln!("starting a private Postgres in {} on port {}", dir.display(), pg.port);
        let url = pg.start().await.context("start the private Postgres")?;
        Ok((Private { pg, dir }, url))
    }

    async fn stop(self) {
        if let Err(e) = self.pg.stop().await {
            eprintln!("warning: could not stop the private Postgres: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Built with `--features otlp`, the workers' own setup: the spans go out over OTLP when the
    // OTEL_* variables ask (and `RUST_LOG` lets them through, e.g. `info`).
    #[cfg(feature = "otlp")]
    mainstay::init_logging()?;
    #[cfg(not(feature = "otlp"))]
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }

    let (private, admin_url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let (p, url) = Private::start(args.private_port).await?;
            (Some(p), url)
        }
    };
    let result = run(&args, &admin_url).await;
    if let Some(p) = private {
        p.stop().await;
    }
    result
}

async fn run(args: &Args, admin_url: &str) -> Result<()> {
    recreate_database(admin_url).await?;
    let url = with_database(admin_url, BENCH_DB)?;
    let info = server_info(&url).await?;

    let mut config = Config::new(url.clone());
    config.executor_id = "bench".into();
    config.app_version = Some("bench".into());
    config.pool_size = args.pool_size;
    if let Some(c) = args.commit_concurrency {
        config.commit_concurrency = c;
    }
    let commit_concurrency = config.commit_concurrency;
    let app = Mainstay::builder(config).global(false).launch().await.context("launch mainstay")?;

    let outcome = scenarios(args, &app, &url).await;
    app.shutdown().await;
    let (seq, conc, writes) = outcome?;

    if args.json {
        let summary = json!({
            "server": {
                "url": redact(&url),
                "version": info.version,
                "fsync": info.fsync,
                "synchronous_commit": info.synchronous_commit,
                "wal_sync_method": info.wal_sync_method,
            },
            "pool_size": args.pool_size,
            "commit_concurrency": commit_concurrency,
            "sequential": seq.json(),
            "concurrent": { "in_flight": args.in_flight, "result": conc.json() },
            "writes": writes.as_ref().map(Writes::json),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }

    println!();
    println!(
        "mainstay-bench: two no-op steps per workflow; Postgres {} at {} (fsync={}, synchronous_commit={}, wal_sync_method={}), pool {}, commit concurrency {}",
        info.version,
        redact(&url),
        info.fsync,
        info.synchronous_commit,
        info.wal_sync_method,
        args.pool_size,
        commit_concurrency
    );
    println!();
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>9} {:>9} {:>9}",
        "scenario", "workflows", "seconds", "workflows/s", "p50 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, l: &Latency| {
        if l.count == 0 {
            return;
        }
        println!(
            "{:<24} {:>9} {:>9.2} {:>12.0} {:>9.3} {:>9.3} {:>9.3}",
            name,
            l.count,
            l.wall.as_secs_f64(),
            l.throughput(),
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        )
    };
    row("sequential", &seq);
    row(&format!("concurrent ({} in flight)", args.in_flight), &conc);
    println!();
    if let Some(writes) = &writes {
        println!(
            "writing transactions per workflow (xid delta over {} sequential workflows): {:.3}",
            writes.workflows,
            writes.writes_per_workflow()
        );
        if let Some(x) = writes.distinct_row_xmins {
            println!("  cross-check, distinct xmin of the workflows' live rows:                {:.3}", x as f64 / writes.workflows as f64);
        }
        println!(
            "all transactions per workflow, read-only included: {:.3} (pg_stat_database.xact_commit \
             delta {} over a {:.0} s window that also holds mainstay's ~1/s queue poll and the \
             measuring connection's queries: an upper bound)",
            writes.xact_commits as f64 / writes.workflows as f64,
            writes.xact_commits,
            writes.stats_window.as_secs_f64(),
        );
        if writes.other_backends_active {
            println!(
                "  note: other databases' clients were active during the measurement; the xid delta \
                 may include their writes (the xmin cross-check does not)"
            );
        }
    }
    Ok(())
}

type Outcomes = (Latency, Latency, Option<Writes>);

async fn scenarios(args: &Args, app: &Mainstay, url: &str) -> Result<Outcomes> {
    let mut seq = summarize(&histogram(), Duration::ZERO);
    if args.sequential > 0 {
        eprintln!("sequential: warm-up {} then {} workflows", args.warmup, args.sequential);
        warm_up(app, args.warmup, 1).await?;
        seq = sequential(app, args.sequential).await?;
        eprintln!("  {:.0} workflows/s, p50 {:.3} ms, p99 {:.3} ms", seq.throughput(), seq.p50_ms, seq.p99_ms);
    }

    let mut conc = summarize(&histogram(), Duration::ZERO);
    if args.concurrent > 0 {
        eprintln!("concurrent: warm-up {} then {} workflows, {} in flight", args.warmup, args.concurrent, args.in_flight);
        warm_up(app, args.warmup, args.in_flight).await?;
        conc = concurrent(app, args.concurrent, args.in_flight).await?;
        eprintln!("  {:.0} workflows/s, p50 {:.3} ms, p99 {:.3} ms", conc.throughput(), conc.p50_ms, conc.p99_ms);
    }

    let mut writes = None;
    if args.writes_sample > 0 {
        eprintln!("writes: warm-up {} then {} sequential workflows", args.warmup, args.writes_sample);
        warm_up(app, args.warmup, 1).await?;
        let w = writes_per_workflow(app, url, args.writes_sample).await?;
        eprintln!("  {:.3} writing transactions per workflow", w.writes_per_workflow());
        writes = Some(w);
    }
    Ok((seq, conc, writes))
}
