//! Queues in one process against a real Postgres: enqueue and results, deduplication, priority,
//! delay, timeout, enqueue from a workflow, the client API, settings changed at runtime.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use mainstay::{Client, Error, Mainstay, Queue, Status, WorkflowOptions};

static ORDER: Mutex<Option<HashMap<String, Vec<i64>>>> = Mutex::new(None);

fn record(group: &str, n: i64) {
    ORDER.lock().unwrap().get_or_insert_with(HashMap::new).entry(group.to_string()).or_default().push(n);
}

fn recorded(group: &str) -> Vec<i64> {
    ORDER.lock().unwrap().as_ref().and_then(|m| m.get(group).cloned()).unwrap_or_default()
}

#[mainstay::workflow]
async fn square(x: i64) -> mainstay::Result<i64> {
    Ok(x * x)
}

#[mainstay::workflow]
async fn log_order(group: String, n: i64) -> mainstay::Result<i64> {
    record(&group, n);
    Ok(n)
}

#[mainstay::workflow]
async fn nap(ms: u64) -> mainstay::Result<u64> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

async fn worker(url: &str, executor: &str, queues: &[Queue]) -> Mainstay {
    let mut b = Mainstay::builder(config(url, executor)).global(false);
    for q in queues {
        b = b.queue(q.clone());
    }
    b.launch().await.expect("launch worker")
}

#[tokio::test]
async fn enqueued_workflows_run_and_return_results() {
    let url = fresh_database("queue_basic").await;
    let q = Queue::new("basic");
    let app = worker(&url, "w1", std::slice::from_ref(&q)).await;
    let handles = futures::future::join_all((0..20).map(|i| app.enqueue(square(i), &q))).await;
    let mut sum = 0;
    for h in handles {
        sum += h.unwrap().get_result().await.unwrap();
    }
    assert_eq!(sum, (0..20).map(|i| i * i).sum::<i64>());
    let mut c = connect(&url).await;
    let queued: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT queue_name, executor_id FROM dbos.workflow_status WHERE name = 'square'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(queued, vec![("basic".to_string(), "w1".to_string())]);
    app.shutdown().await;
}

#[tokio::test]
async fn deduplication_refuses_a_second_enqueue_until_the_first_finishes() {
    let url = fresh_database("queue_dedup").await;
    let q = Queue::new("dedup");
    // No worker listens yet: the first enqueue stays ENQUEUED.
    let client_app = worker(&url, "enqueuer", &[]).await;
    let first = client_app.enqueue(nap(10).deduplication_id("order-7"), &q).await.unwrap();
    let err = client_app.enqueue(nap(10).deduplication_id("order-7"), &q).await.unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err:?}");
    assert!(err.to_string().contains("order-7") && err.to_string().contains("dedup"), "{err}");

    let app = worker(&url, "w1", std::slice::from_ref(&q)).await;
    first.get_result().await.unwrap();
    // Finished: the ID is free again.
    let again = client_app.enqueue(nap(1).deduplication_id("order-7"), &q).await.unwrap();
    again.get_result().await.unwrap();
    app.shutdown().await;
    client_app.shutdown().await;
}

#[tokio::test]
async fn lower_priority_numbers_run_first() {
    let url = fresh_database("queue_priority").await;
    let q = Queue::new("prio").concurrency(1).priority_enabled(true);
    let enqueuer = worker(&url, "enqueuer", &[]).await;
    let mut handles = Vec::new();
    for (n, p) in [(1, 5), (2, 1), (3, 9), (4, 1), (5, 3)] {
        handles.push(enqueuer.enqueue(log_order("prio".into(), n).priority(p), &q).await.unwrap());
    }
    let app = worker(&url, "w1", std::slice::from_ref(&q)).await;
    for h in handles {
        h.get_result().await.unwrap();
    }
    assert_eq!(recorded("prio"), vec![2, 4, 5, 1, 3]);
    let err = enqueuer.enqueue(square(1).priority(1), &Queue::new("no-prio")).await.unwrap_err();
    assert!(err.to_string().contains("priorities"), "{err}");
    app.shutdown().await;
    enqueuer.shutdown().await;
}

#[tokio::test]
async fn delayed_workflows_wait_and_timeouts_start_at_dequeue() {
    let url = fresh_database("queue_delay").await;
    let q = Queue::new("later").polling_interval(Duration::from_millis(100));
    let app = worker(&url, "w1", std::slice::from_ref(&q)).await;
    let start = Instant::now();
    let h = app.enqueue(square(3).delay(Duration::from_millis(700)), &q).await.unwrap();
    assert_eq!(h.status().await.unwrap().status, Status::Delayed);
    assert_eq!(h.get_result().await.unwrap(), 9);
    assert!(start.elapsed() >= Duration::from_millis(700), "ran after {:?}", start.elapsed());

    let slow = app.enqueue(nap(10_000).timeout(Duration::from_millis(300)), &q).await.unwrap();
    let err = slow.get_result().await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    let s = slow.status().await.unwrap();
    assert_eq!(s.status, Status::Cancelled);
    let (started, deadline) = (s.started_at_ms.unwrap(), s.deadline_epoch_ms.unwrap());
    assert!((deadline - started - 300).abs() <= 1, "the deadline counts from the dequeue: {started} {deadline}");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn fan_out(n: i64) -> mainstay::Result<i64> {
    let q = Queue::new("fan");
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(square(i).enqueue(&q).await?);
    }
    let mut total = 0;
    for h in handles {
        total += h.get_result().await?;
    }
    Ok(total)
}

#[tokio::test]
async fn enqueues_from_a_workflow_are_steps_and_never_repeat() {
    let url = fresh_database("queue_from_workflow").await;
    let app = worker(&url, "w1", &[Queue::new("fan")]).await;
    assert_eq!(app.run(fan_out(5).id("fan-1")).await.unwrap(), 30);
    // Running it again replays: the same children, nothing enqueued twice.
    assert_eq!(app.run(fan_out(5).id("fan-1")).await.unwrap(), 30);
    let mut c = connect(&url).await;
    let children: Vec<String> =
        sqlx::query_scalar("SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = 'fan-1' ORDER BY workflow_uuid")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(children, (1..=5).map(|i| format!("fan-1-{i}")).collect::<Vec<_>>());
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'fan-1' AND child_workflow_id IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(recorded, 5);
    app.shutdown().await;
}

#[tokio::test]
async fn the_client_enqueues_by_name_and_changes_limits_at_runtime() {
    let url = fresh_database("queue_client").await;
    let app = worker(&url, "w1", &[Queue::new("remote").concurrency(2)]).await;
    let client = Client::connect(&url).await.unwrap();
    let id = client.enqueue("square", "remote", vec![serde_json::json!(12)], WorkflowOptions::default()).await.unwrap();
    assert_eq!(client.get_result::<i64>(&id).await.unwrap(), 144);

    let stored = client.queue("remote").await.unwrap().unwrap();
    assert_eq!(stored.concurrency, Some(2));
    client.set_queue(&Queue::new("remote").concurrency(7).worker_concurrency(3)).await.unwrap();
    let stored = client.queue("remote").await.unwrap().unwrap();
    assert_eq!((stored.concurrency, stored.worker_concurrency), (Some(7), Some(3)));
    let err = client.set_queue(&Queue::new("remote").concurrency(0)).await.unwrap_err();
    assert!(err.to_string().contains("concurrency is 0"), "{err}");

    // Declaring in code does not overwrite settings changed at runtime.
    let again = worker(&url, "w2", &[Queue::new("remote").concurrency(2)]).await;
    assert_eq!(client.queue("remote").await.unwrap().unwrap().concurrency, Some(7));

    again.shutdown().await;
    app.shutdown().await;
    client.close().await;
}

#[mainstay::step(enqueue, max_attempts = 2, interval_ms = 1)]
async fn cube(x: i64) -> mainstay::Result<i64> {
    Ok(x * x * x)
}

#[mainstay::workflow]
async fn cubes(n: i64) -> mainstay::Result<i64> {
    let q = Queue::new("cubes");
    // Enqueued steps run as workflows of their own; an awaited one is an ordinary step.
    let handle = q.enqueue(cube(n)).await?;
    let direct = cube(n + 1).await?;
    Ok(handle.get_result().await? + direct)
}

#[tokio::test]
async fn steps_can_be_enqueued_like_in_the_tutorial() {
    let url = fresh_database("queue_steps").await;
    let q = Queue::new("cubes");
    let app = worker(&url, "w1", std::slice::from_ref(&q)).await;
    let h = app.enqueue(cube(3), &q).await.unwrap();
    assert_eq!(h.get_result().await.unwrap(), 27);
    assert_eq!(h.status().await.unwrap().name.as_deref(), Some("cube"));

    assert_eq!(app.run(cubes(2).id("cubes-1")).await.unwrap(), 8 + 27);
    let mut c = connect(&url).await;
    let ops: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT function_id, function_name, child_workflow_id FROM dbos.operation_outputs
         WHERE workflow_uuid = 'cubes-1' ORDER BY function_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(ops[0], (1, "cube".to_string(), Some("cubes-1-1".to_string())));
    assert_eq!(ops[1], (2, "cube".to_string(), None));
    app.shutdown().await;
}

/// Workers of an earlier release call the claim function of migration 0004, which migration 0007
/// made a wrapper over the new claim: they still claim, with the columns they read.
#[tokio::test]
async fn the_claim_function_of_earlier_releases_still_claims() {
    let url = fresh_database("q_old_claim").await;
    mainstay::migrate(&config(&url, "x")).await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let opts = WorkflowOptions::new().id("old-claim-1").app_version("test-v1");
    client.enqueue("square", "old_q", vec![serde_json::json!(3)], opts).await.unwrap();
    let mut c = connect(&url).await;
    let rows = sqlx::query(
        "SELECT * FROM dbos.mainstay_claim_app('old_q', 'test-v1', 'old-worker', 100, 5, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, false, NULL, ARRAY['square'])",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(sqlx::Row::columns(row).len(), 8, "the columns binaries before migration 7 read");
    assert_eq!(sqlx::Row::get::<String, _>(row, 0), "old-claim-1");
    assert_eq!(sqlx::Row::get::<String, _>(row, 2), "PENDING");
    let status = client.status("old-claim-1").await.unwrap().unwrap();
    assert_eq!((status.status, status.executor_id.as_deref()), (Status::Pending, Some("old-worker")));
}
