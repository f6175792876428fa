//! Queue invariants with four real worker processes on one database. The work records what it
//! observes in a table of the test's own (start and end of each execution, from the database
//! clock); the claims are read from `workflow_status`. Checked: global concurrency, rate limit,
//! priority order, partitions limited independently, limits changed at runtime, and every
//! item completed exactly once while a worker is SIGKILLed.
//!
//! The workers are this test binary re-executed with `--ignored --exact queue_worker_child`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use mainstay::{Client, Queue, WorkflowOptions};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::Child;
use tokio::sync::OnceCell;

const URL_ENV: &str = "MAINSTAY_QW_URL";
const EXECUTOR_ENV: &str = "MAINSTAY_QW_EXECUTOR";
const QUEUES: [&str; 5] = ["limited", "rated", "prio", "parted", "kill"];

static OBSERVATIONS: OnceCell<PgPool> = OnceCell::const_new();

async fn observations() -> &'static PgPool {
    OBSERVATIONS
        .get_or_init(|| async {
            let url = std::env::var(URL_ENV).expect("worker has the database URL");
            PgPoolOptions::new().max_connections(4).connect(&url).await.expect("connect")
        })
        .await
}

#[mainstay::step]
async fn observe(queue: String, part: Option<String>, ms: u64) -> mainstay::Result<()> {
    let pool = observations().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO observations (workflow_id, queue, part, pid, started_at)
         VALUES ($1, $2, $3, $4, clock_timestamp()) RETURNING id",
    )
    .bind(mainstay::workflow_id())
    .bind(&queue)
    .bind(&part)
    .bind(std::process::id() as i32)
    .fetch_one(pool)
    .await
    .map_err(|e| mainstay::Error::from_std(&e))?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    // The kill test's work holds until the test opens the gate, so the victim is certain to
    // still hold claimed work when it is killed.
    if queue == "kill" {
        loop {
            let open: bool =
                sqlx::query_scalar("SELECT open FROM gate").fetch_one(pool).await.map_err(|e| mainstay::Error::from_std(&e))?;
            if open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    sqlx::query("UPDATE observations SET ended_at = clock_timestamp() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(|e| mainstay::Error::from_std(&e))?;
    Ok(())
}

#[mainstay::workflow]
async fn observed(queue: String, part: Option<String>, ms: u64) -> mainstay::Result<()> {
    observe(queue, part, ms).await
}

/// A worker process: listens to every test queue until SIGTERM.
#[tokio::test]
#[ignore = "entry point of the worker processes started by the queue tests"]
async fn queue_worker_child() {
    let url = std::env::var(URL_ENV).expect("run by the queue worker tests");
    let mut cfg = config(&url, &std::env::var(EXECUTOR_ENV).unwrap());
    cfg.pool_size = 4;
    cfg.polling_interval = Duration::from_millis(100);
    let mut b = mainstay::Mainstay::builder(cfg);
    for q in QUEUES {
        b = b.listen_queue(q);
    }
    let app = b.launch().await.expect("worker launches");
    app.run_until_signal().await.unwrap();
}

fn spawn_worker(url: &str, executor: &str) -> Child {
    self_command("queue_worker_child")
        .env(URL_ENV, url)
        .env(EXECUTOR_ENV, executor)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn a worker process")
}

async fn enqueue(client: &Client, queue: &str, part: Option<&str>, ms: u64, priority: Option<i32>) -> String {
    let mut options = WorkflowOptions::new().priority(priority).app_version("test-v1");
    options.partition_key = part.map(str::to_string);
    client.enqueue("observed", queue, vec![json!(queue), json!(part), json!(ms)], options).await.expect("enqueue")
}

async fn wait_all(client: &Client, ids: &[String]) {
    for id in ids {
        tokio::time::timeout(Duration::from_secs(120), client.get_result::<()>(id))
            .await
            .unwrap_or_else(|_| panic!("workflow {id} finished within 120 s"))
            .unwrap_or_else(|e| panic!("workflow {id} failed: {e}"));
    }
}

/// The most executions of `queue` (optionally one partition) that overlapped in time.
async fn max_overlap(url: &str, queue: &str, part: Option<&str>, ids: &[String]) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar(
        "WITH o AS (SELECT started_at, ended_at FROM observations
                    WHERE queue = $1 AND ($2::text IS NULL OR part = $2) AND workflow_id = ANY($3)
                      AND ended_at IS NOT NULL)
         SELECT COALESCE(max(n), 0) FROM (
             SELECT (SELECT count(*) FROM o o2 WHERE o2.started_at <= o1.started_at
                                               AND o2.ended_at > o1.started_at) AS n
             FROM o o1) x",
    )
    .bind(queue)
    .bind(part)
    .bind(ids)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

async fn claim_times(url: &str, ids: &[String]) -> Vec<(i64, i32, i64)> {
    let mut c = connect(url).await;
    sqlx::query_as(
        "SELECT started_at_epoch_ms, priority, created_at FROM dbos.workflow_status
         WHERE workflow_uuid = ANY($1) ORDER BY started_at_epoch_ms, workflow_uuid",
    )
    .bind(ids)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn four_workers_respect_every_queue_limit() {
    let url = fresh_database("queue_workers").await;
    mainstay::migrate(&config(&url, "setup")).await.unwrap();
    let mut c = connect(&url).await;
    sqlx::raw_sql(
        "CREATE TABLE observations (id bigserial PRIMARY KEY, workflow_id text, queue text, part text,
                                    pid int, started_at timestamptz, ended_at timestamptz);
         CREATE TABLE gate (open boolean NOT NULL);
         INSERT INTO gate VALUES (false);",
    )
    .execute(&mut c)
    .await
    .unwrap();
    count_outcome_writes(&mut c).await;
    let client = Client::connect(&url).await.unwrap();
    client.set_queue(&Queue::new("limited").concurrency(2)).await.unwrap();
    client.set_queue(&Queue::new("rated").rate_limit(3, Duration::from_millis(500))).await.unwrap();
    client.set_queue(&Queue::new("prio").concurrency(1).priority_enabled(true)).await.unwrap();
    client.set_queue(&Queue::new("parted").partition_concurrency(1)).await.unwrap();
    // Ten per worker: with the work held at the gate, each of the four holds ten.
    client.set_queue(&Queue::new("kill").worker_concurrency(10)).await.unwrap();

    // Priorities: everything is queued before any worker runs.
    let mut prio = Vec::new();
    for i in 0..12 {
        prio.push(enqueue(&client, "prio", None, 5, Some((i * 7) % 5)).await);
    }

    let mut workers: Vec<Child> = (1..=4).map(|i| spawn_worker(&url, &format!("qw-{i}"))).collect();

    let mut limited = Vec::new();
    for _ in 0..12 {
        limited.push(enqueue(&client, "limited", None, 150, None).await);
    }
    let mut rated = Vec::new();
    for _ in 0..12 {
        rated.push(enqueue(&client, "rated", None, 1, None).await);
    }
    let mut parted = Vec::new();
    for i in 0..12 {
        parted.push(enqueue(&client, "parted", Some(["a", "b", "c"][i % 3]), 120, None).await);
    }
    wait_all(&client, &limited).await;
    wait_all(&client, &rated).await;
    wait_all(&client, &parted).await;
    wait_all(&client, &prio).await;

    // Global concurrency.
    assert!(max_overlap(&url, "limited", None, &limited).await <= 2, "concurrency 2 exceeded");
    // Raised at runtime: takes effect without a restart.
    client.set_queue(&Queue::new("limited").concurrency(4)).await.unwrap();
    let mut raised = Vec::new();
    for _ in 0..16 {
        raised.push(enqueue(&client, "limited", None, 300, None).await);
    }
    wait_all(&client, &raised).await;
    let overlap = max_overlap(&url, "limited", None, &raised).await;
    assert!(overlap <= 4, "concurrency 4 exceeded: {overlap}");
    assert!(overlap > 2, "the raised limit did not take effect (max overlap {overlap})");

    // Rate limit: any 4 consecutive claims span at least the period.
    let times = claim_times(&url, &rated).await;
    for w in times.windows(4) {
        assert!(w[3].0 - w[0].0 >= 499, "more than 3 starts within 500 ms: {:?}", w);
    }

    // Priorities: with concurrency 1 the claims follow (priority, enqueue time).
    let times = claim_times(&url, &prio).await;
    let mut sorted = times.clone();
    sorted.sort_by_key(|(_, p, created)| (*p, *created));
    assert_eq!(
        times.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
        sorted.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
        "claims did not follow priority order"
    );

    // Partitions: each limited to one at a time, independently of the others.
    for part in ["a", "b", "c"] {
        assert_eq!(max_overlap(&url, "parted", Some(part), &parted).await, 1, "partition {part}");
    }
    assert!(max_overlap(&url, "parted", None, &parted).await >= 2, "partitions did not run side by side");

    // Exactly once while a worker dies: SIGKILL one while it holds claimed work (held at the
    // gate); the operator's recovery call hands that work to the others.
    let mut kill = Vec::new();
    for _ in 0..40 {
        kill.push(enqueue(&client, "kill", None, 100, None).await);
    }
    wait_for("worker qw-1 to be running work", Duration::from_secs(60), || async {
        let mut c = connect(&url).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = 'kill' AND executor_id = 'qw-1' AND status = 'PENDING'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        (n > 0).then_some(())
    })
    .await;
    let mut victim = workers.remove(0);
    victim.start_kill().unwrap();
    victim.wait().await.unwrap();
    let recovered = client.recover_executor("qw-1").await.unwrap();
    assert!(!recovered.is_empty(), "the killed worker held no work");
    sqlx::query("UPDATE gate SET open = true").execute(&mut connect(&url).await).await.unwrap();
    wait_all(&client, &kill).await;
    let mut c = connect(&url).await;
    let writes: Vec<(String, i64)> =
        sqlx::query_as("SELECT workflow_uuid, count(*) FROM outcome_writes WHERE workflow_uuid = ANY($1) GROUP BY 1")
            .bind(&kill)
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(writes.len(), 40, "not every item completed");
    assert!(writes.iter().all(|(_, n)| *n == 1), "an outcome was written twice: {writes:?}");

    for mut w in workers {
        let pid = w.id().unwrap().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let status = tokio::time::timeout(Duration::from_secs(30), w.wait()).await.unwrap().unwrap();
        assert!(status.success(), "a worker did not stop cleanly on SIGTERM: {status}");
    }
    client.close().await;
}
