//! Bounded payloads against a real Postgres: an input too large is refused before anything is
//! written (start, enqueue, child, client); an output too large ends its workflow `ERROR` with
//! the reason recorded, also when a queue worker runs it (which goes on working); a step's or
//! transaction's output, an event, a message and a stream value too large fail without being
//! written; a failure too large is recorded cut down, the same for every reader.

mod common;

use std::time::Duration;

use common::*;
use mainstay::sqlx::PgConnection;
use mainstay::{Client, Error, Failure, Mainstay, Queue, Schedule, Status, WorkflowOptions};

/// A small limit, so the tests move kilobytes rather than megabytes.
const LIMIT: usize = 4096;
const LONG: Duration = Duration::from_secs(20);

fn limited(url: &str, executor: &str) -> mainstay::Config {
    let mut c = config(url, executor);
    c.max_payload_bytes = LIMIT;
    c
}

async fn launch_limited(url: &str, executor: &str, queue: Option<&Queue>) -> Mainstay {
    let mut b = Mainstay::builder(limited(url, executor)).global(false);
    if let Some(q) = queue {
        b = b.queue(q.clone());
    }
    b.launch().await.expect("launch mainstay")
}

fn big() -> String {
    "x".repeat(LIMIT * 2)
}

#[mainstay::workflow]
async fn echo(text: String) -> mainstay::Result<usize> {
    Ok(text.len())
}

#[mainstay::workflow]
async fn grow(bytes: usize) -> mainstay::Result<String> {
    Ok("y".repeat(bytes))
}

#[mainstay::workflow]
async fn starts_a_big_child() -> mainstay::Result<usize> {
    echo(big()).id("big-child").await
}

/// Rows of `table` about workflow `id` (messages: sent to it).
async fn rows(url: &str, table: &str, id: &str) -> i64 {
    let column = if table == "notifications" { "destination_uuid" } else { "workflow_uuid" };
    let mut c = connect(url).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM dbos.{table} WHERE {column} = $1")))
        .bind(id)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

fn assert_too_large(err: &Error, what: &str) {
    match err {
        Error::PayloadTooLarge { what: w, size, limit } => {
            assert_eq!((w.as_str(), *limit), (what, LIMIT), "{err}");
            assert!(*size > LIMIT, "{err}");
            let text = err.to_string();
            assert!(text.contains("MAINSTAY_MAX_PAYLOAD_BYTES") && text.contains("reference"), "{text}");
        }
        other => panic!("expected PayloadTooLarge for {what}, got {other:?}"),
    }
}

#[tokio::test]
async fn inputs_too_large_are_refused_before_anything_is_written() {
    let url = fresh_database("payload_inputs").await;
    let q = Queue::new("big");
    let app = launch_limited(&url, "p1", Some(&q)).await;

    let err = app.start(echo(big()).id("big-start")).await.unwrap_err();
    assert_too_large(&err, "the inputs of workflow big-start");
    let err = app.enqueue(echo(big()).id("big-enqueue"), &q).await.unwrap_err();
    assert_too_large(&err, "the inputs of workflow big-enqueue");
    for id in ["big-start", "big-enqueue"] {
        assert_eq!(rows(&url, "workflow_status", id).await, 0, "{id} was written");
    }
    // Exactly at the limit is allowed: the limit counts the whole stored inputs.
    let wrapping = r#"{"namedArgs":{},"positionalArgs":[""]}"#.len();
    let fits = "z".repeat(LIMIT - wrapping);
    assert_eq!(app.run(echo(fits.clone()).id("fits")).await.unwrap(), fits.len());

    // A child's inputs are refused to its parent, which fails with the reason recorded.
    let err = app.run(starts_a_big_child().id("parent")).await.unwrap_err();
    let failure = err.failure().unwrap_or_else(|| panic!("a recorded failure, got {err:?}"));
    assert_eq!(failure.name, "PayloadTooLarge");
    assert!(failure.message.contains("the inputs of workflow big-child"), "{failure}");
    assert_eq!(rows(&url, "workflow_status", "big-child").await, 0);

    // The client: enqueue, send and a schedule's context.
    let client = Client::connect_with(&limited(&url, "client")).await.unwrap();
    let options = WorkflowOptions::new().id("big-client");
    let err = client.enqueue("echo", "big", vec![serde_json::json!(big())], options).await.unwrap_err();
    assert_too_large(&err, "the inputs of workflow big-client");
    assert_eq!(rows(&url, "workflow_status", "big-client").await, 0);
    let err = client.send("fits", &big(), None, None).await.unwrap_err();
    assert_too_large(&err, "a message to workflow fits");
    let err = app.send("fits", &big(), None).await.unwrap_err();
    assert_too_large(&err, "a message to workflow fits");
    assert_eq!(rows(&url, "notifications", "fits").await, 0, "no message was stored");
    let schedule = Schedule::new("huge", "echo", "0 * * * *").context(serde_json::json!(big()));
    let err = client.create_schedule(&schedule).await.unwrap_err();
    assert_too_large(&err, "the context of schedule huge");
    assert!(client.get_schedule("huge").await.unwrap().is_none());
    client.close().await;
    app.shutdown().await;
}

/// Reads the recorded error of a finished workflow.
async fn recorded_error(app: &Mainstay, id: &str) -> serde_json::Value {
    let status = app.status(id).await.unwrap().expect("the workflow exists");
    assert_eq!(status.status, Status::Error, "{id}: {status:?}");
    assert_eq!(status.output, None);
    serde_json::from_str(status.error.as_deref().expect("an error is recorded")).unwrap()
}

#[tokio::test]
async fn an_output_too_large_ends_the_workflow_in_error_with_the_reason() {
    let url = fresh_database("payload_outputs").await;
    let q = Queue::new("grow");
    let app = launch_limited(&url, "p2", Some(&q)).await;

    let err = app.run(grow(LIMIT * 3).id("big-out")).await.unwrap_err();
    let failure = err.failure().unwrap_or_else(|| panic!("a recorded failure, got {err:?}"));
    assert_eq!(failure.name, "PayloadTooLarge");
    assert!(failure.message.contains("the output of workflow big-out is 12290 bytes"), "{failure}");
    let recorded = recorded_error(&app, "big-out").await;
    assert_eq!(recorded["name"], "PayloadTooLarge");
    assert_eq!(recorded["data"], serde_json::json!({"what": "the output of workflow big-out", "size": 12290, "limit": LIMIT}));

    // Run by a queue worker: it ends ERROR once (not retried), and the worker goes on.
    let handle = app.enqueue(grow(LIMIT * 3).id("big-queued"), &q).await.unwrap();
    let err = tokio::time::timeout(LONG, handle.get_result()).await.expect("the queued run ends").unwrap_err();
    assert_eq!(err.failure().map(|f| f.name.as_str()), Some("PayloadTooLarge"), "{err:?}");
    assert_eq!(recorded_error(&app, "big-queued").await["name"], "PayloadTooLarge");
    assert_eq!(app.status("big-queued").await.unwrap().unwrap().recovery_attempts, 1, "run once");
    let small = app.enqueue(grow(10).id("small-queued"), &q).await.unwrap();
    assert_eq!(tokio::time::timeout(LONG, small.get_result()).await.expect("the worker goes on").unwrap(), "y".repeat(10));

    // Another process reads the same failure.
    let client = Client::connect(&url).await.unwrap();
    let err = client.get_result::<String>("big-out").await.unwrap_err();
    assert_eq!(err.failure(), Some(failure));
    client.close().await;
    app.shutdown().await;
}

#[mainstay::step]
async fn big_step() -> mainstay::Result<String> {
    Ok("s".repeat(LIMIT * 2))
}

#[mainstay::workflow]
async fn uses_big_step() -> mainstay::Result<String> {
    big_step().await
}

#[mainstay::transaction]
async fn big_transaction(conn: &mut PgConnection) -> mainstay::Result<String> {
    sqlx::query("INSERT INTO written (note) VALUES ('by big_transaction')").execute(&mut *conn).await?;
    Ok("t".repeat(LIMIT * 2))
}

#[mainstay::workflow]
async fn uses_big_transaction() -> mainstay::Result<String> {
    big_transaction().await
}

/// Tries each operation with a value too large; returns what each one's error named.
#[mainstay::workflow]
async fn oversized_operations(peer: String) -> mainstay::Result<Vec<String>> {
    let value = big();
    let outcomes =
        [mainstay::set_event("big", &value).await, mainstay::send(peer, &value, None).await, mainstay::write_stream("big", &value).await];
    Ok(outcomes
        .into_iter()
        .map(|r| match r {
            Err(Error::PayloadTooLarge { what, limit, .. }) if limit == LIMIT => what,
            other => format!("unexpected: {other:?}"),
        })
        .collect())
}

#[mainstay::workflow]
async fn fails_hugely() -> mainstay::Result<()> {
    Err(Failure::new("Verbose", "e".repeat(LIMIT * 2)).with_data(vec![7; 2000]).into())
}

#[tokio::test]
async fn steps_transactions_events_messages_and_streams_are_bounded_too() {
    let url = fresh_database("payload_operations").await;
    let mut c = connect(&url).await;
    sqlx::raw_sql("CREATE TABLE written (note text)").execute(&mut c).await.unwrap();
    let app = launch_limited(&url, "p3", None).await;

    // A step's output: the step is recorded as failed, and the workflow with it.
    let err = app.run(uses_big_step().id("big-step")).await.unwrap_err();
    assert_eq!(err.failure().map(|f| f.name.as_str()), Some("PayloadTooLarge"), "{err:?}");
    let (output, error): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT output, error FROM dbos.operation_outputs WHERE workflow_uuid = 'big-step' AND function_id = 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(output, None);
    assert!(error.unwrap().contains("the output of step big_step is 8194 bytes"));
    assert_eq!(recorded_error(&app, "big-step").await["name"], "PayloadTooLarge");

    // A transaction's output: it rolls back, and fails.
    let err = app.run(uses_big_transaction().id("big-txn")).await.unwrap_err();
    assert_eq!(err.failure().map(|f| f.name.as_str()), Some("PayloadTooLarge"), "{err:?}");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM written").fetch_one(&mut c).await.unwrap();
    assert_eq!(written, 0, "the transaction's writes were rolled back");

    // Events, messages and stream values: refused to the workflow, nothing stored.
    app.run(echo("peer".into()).id("peer")).await.unwrap();
    let outcomes = app.run(oversized_operations("peer".into()).id("ops")).await.unwrap();
    assert_eq!(outcomes, ["the value of event big", "a message to workflow peer", "a value of stream big"]);
    for table in ["workflow_events", "streams"] {
        assert_eq!(rows(&url, table, "ops").await, 0, "{table}");
    }
    assert_eq!(rows(&url, "notifications", "peer").await, 0);

    // A failure too large is recorded cut down to the limit, and read back as recorded.
    let err = app.run(fails_hugely().id("verbose")).await.unwrap_err();
    let failure = err.failure().unwrap().clone();
    assert_eq!((failure.name.as_str(), failure.data.is_none()), ("Verbose", true));
    assert!(failure.message.starts_with("eee") && failure.message.contains("payload limit"), "{failure}");
    let status = app.status("verbose").await.unwrap().unwrap();
    assert!(status.error.as_ref().unwrap().len() <= LIMIT);
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.get_result::<()>("verbose").await.unwrap_err().failure(), Some(&failure));
    client.close().await;
    app.shutdown().await;
}
