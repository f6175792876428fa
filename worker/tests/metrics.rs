//! The worker's Prometheus metrics on its health port, against a real Postgres: after a known
//! amount of work (workflows started directly and from a queue, one that fails, a step that is
//! retried, one that waited in its queue for a known time), `/metrics` counts exactly that work, with no workflow ID among its labels: in the
//! OpenMetrics text format to a scraper that asks for it, in the classic text format otherwise,
//! which Prometheus's `promtool check metrics` accepts without a finding.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use mainstay::{Client, Failure, Mainstay, Queue, WorkflowOptions};

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[mainstay::step]
async fn mx_add(x: u32) -> mainstay::Result<u32> {
    Ok(x + 1)
}

/// Fails twice, then succeeds.
#[mainstay::step(max_attempts = 3, interval_ms = 1)]
async fn mx_flaky() -> mainstay::Result<u32> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(Failure::new("NotYet", "try again").into());
    }
    Ok(7)
}

#[mainstay::workflow]
async fn mx_ok(x: u32) -> mainstay::Result<u32> {
    mx_add(x).await
}

#[mainstay::workflow]
async fn mx_fails() -> mainstay::Result<u32> {
    Err(Failure::new("Declined", "always").into())
}

#[mainstay::workflow]
async fn mx_retries() -> mainstay::Result<u32> {
    mx_flaky().await
}

/// A GET of `/metrics` with `accept` (none when empty).
async fn scrape(addr: std::net::SocketAddr, accept: &str) -> HttpAnswer {
    let headers: &[(&str, &str)] = if accept.is_empty() { &[] } else { &[("Accept", accept)] };
    http_get(&format!("http://{addr}/metrics"), headers).await.expect("the health port answers")
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_the_work_done() {
    let url = fresh_database("mx_metrics").await;
    let mut c = config(&url, "metrics-1");
    c.health_addr = Some("127.0.0.1:0".parse().unwrap());
    let q = Queue::new("mx_q");
    // Queued before any worker listens: it waits at least as long as the pause below.
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    client.enqueue("mx_ok", "mx_q", vec![serde_json::json!(41)], WorkflowOptions::new().id("mx-early")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = Mainstay::builder(c).global(false).queue(q.clone()).launch().await.unwrap();
    assert_eq!(app.retrieve::<u32>("mx-early").get_result().await.unwrap(), 42);
    let addr = app.health_addr().unwrap();
    let mut ids = vec!["mx-early".to_string()];
    for i in 0..3 {
        let id = format!("mx-direct-{i}");
        assert_eq!(app.start(mx_ok(i).id(&id)).await.unwrap().get_result().await.unwrap(), i + 1);
        ids.push(id);
    }
    for i in 0..4 {
        let id = format!("mx-queued-{i}");
        assert_eq!(app.enqueue(mx_ok(i).id(&id), &q).await.unwrap().get_result().await.unwrap(), i + 1);
        ids.push(id);
    }
    assert!(app.start(mx_fails().id("mx-fails")).await.unwrap().get_result().await.is_err());
    assert_eq!(app.start(mx_retries().id("mx-retries")).await.unwrap().get_result().await.unwrap(), 7);
    ids.extend(["mx-fails".to_string(), "mx-retries".to_string()]);

    // A workflow's result is published a moment before its execution's counters move on.
    // What Prometheus asks for.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let text = wait_for("the metrics to count every execution", Duration::from_secs(10), || async {
        let answer = scrape(addr, PROMETHEUS_ACCEPT).await;
        assert_eq!(answer.status, 200);
        let content_type = answer.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/openmetrics-text"), "{}", answer.head);
        let text = answer.body;
        let done = text.contains("mainstay_workflows_finished_total{workflow=\"mx_retries\",outcome=\"success\"} 1");
        done.then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "mainstay_workflows_started_total{workflow=\"mx_ok\"}"), 8.0);
    assert_eq!(sample(&text, "mainstay_workflows_finished_total{workflow=\"mx_ok\",outcome=\"success\"}"), 8.0);
    assert_eq!(sample(&text, "mainstay_workflows_finished_total{workflow=\"mx_fails\",outcome=\"error\"}"), 1.0);
    assert_eq!(sample(&text, "mainstay_workflow_duration_seconds_count{workflow=\"mx_ok\"}"), 8.0);
    assert_eq!(sample(&text, "mainstay_step_duration_seconds_count{step=\"mx_add\"}"), 8.0);
    assert_eq!(sample(&text, "mainstay_step_retries_total{step=\"mx_flaky\"}"), 2.0);
    assert_eq!(sample(&text, "mainstay_queue_claims_total{queue=\"mx_q\"}"), 5.0);
    // Every claim's wait is observed; the early one waited the pause at least.
    assert_eq!(sample(&text, "mainstay_queue_wait_seconds_count{queue=\"mx_q\"}"), 5.0);
    let waited = sample(&text, "mainstay_queue_wait_seconds_sum{queue=\"mx_q\"}");
    assert!(waited >= 0.3, "queue wait {waited}s, the early workflow alone waited at least 0.3s");
    assert!(sample(&text, "mainstay_db_pool_connections") >= 1.0);
    // Every start, checkpoint and outcome went through a group commit: at least 3 writes per
    // workflow that ran a step (start, step, outcome) went into the batches counted.
    assert!(sample(&text, "mainstay_commit_batch_size_sum") >= 3.0 * 8.0, "{text}");
    assert!(sample(&text, "mainstay_commit_batch_size_count") >= 1.0);
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF:\n{text}");
    for id in &ids {
        assert!(!text.contains(id.as_str()), "workflow ID {id} in the metrics:\n{text}");
    }
    // Without an Accept header (curl, promtool): the classic format, the same samples.
    let answer = scrape(addr, "").await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"), "{}", answer.head);
    let classic = answer.body;
    assert!(classic.contains("# TYPE mainstay_workflows_started_total counter") && !classic.contains("# EOF"), "{classic}");
    assert_eq!(sample(&classic, "mainstay_workflows_started_total{workflow=\"mx_ok\"}"), 8.0);
    check_metrics(&classic);
    app.shutdown().await;
}
