//! Workflows and steps against a real Postgres: execution, records, idempotency, errors,
//! retries, determinism, sleep, children, cancel/resume, ownership, recovery, config errors.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use mainstay::{Error, Failure, Status};
use sqlx::Row;

static RUNS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// Counts an execution of `what` in the current workflow.
fn ran(what: &str) {
    let key = format!("{}:{what}", mainstay::workflow_id().unwrap_or_default());
    *RUNS.lock().unwrap().get_or_insert_with(HashMap::new).entry(key).or_default() += 1;
}

fn runs(workflow_id: &str, what: &str) -> usize {
    RUNS.lock().unwrap().as_ref().and_then(|m| m.get(&format!("{workflow_id}:{what}")).copied()).unwrap_or(0)
}

#[mainstay::step]
async fn add_one(x: i64) -> mainstay::Result<i64> {
    ran("add_one");
    Ok(x + 1)
}

#[mainstay::step]
async fn double(x: i64) -> mainstay::Result<i64> {
    ran("double");
    Ok(x * 2)
}

#[mainstay::workflow]
async fn two_steps(x: i64) -> mainstay::Result<i64> {
    let a = add_one(x).await?;
    double(a).await
}

#[mainstay::workflow]
async fn other_workflow(x: i64) -> mainstay::Result<i64> {
    Ok(x)
}

#[tokio::test]
async fn a_two_step_workflow_runs_and_is_recorded_in_the_dbos_format() {
    let url = fresh_database("two_step").await;
    let app = launch(&url, "e1").await;
    let out = app.run(two_steps(4).id("wf-two")).await.unwrap();
    assert_eq!(out, 10);

    let mut c = connect(&url).await;
    let row = sqlx::query(
        "SELECT s.status, s.name, s.executor_id, s.application_version, s.serialization,
                s.recovery_attempts, i.inputs, o.output
         FROM dbos.workflow_status s JOIN dbos.workflow_input i USING (workflow_uuid)
         JOIN dbos.workflow_output o USING (workflow_uuid) WHERE workflow_uuid = 'wf-two'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "SUCCESS");
    assert_eq!(row.get::<String, _>(1), "two_steps");
    assert_eq!(row.get::<String, _>(2), "e1");
    assert_eq!(row.get::<String, _>(3), "test-v1");
    assert_eq!(row.get::<String, _>(4), "portable_json");
    assert_eq!(row.get::<i64, _>(5), 1);
    let inputs: serde_json::Value = serde_json::from_str(&row.get::<String, _>(6)).unwrap();
    assert_eq!(inputs["positionalArgs"], serde_json::json!([4]));
    assert_eq!(row.get::<String, _>(7), "10");

    let steps: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT function_id, function_name, output FROM dbos.operation_outputs
         WHERE workflow_uuid = 'wf-two' ORDER BY function_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(steps, vec![(1, "add_one".into(), "5".into()), (2, "double".into(), "10".into())]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_workflow_id_is_an_idempotency_key() {
    let url = fresh_database("idempotent").await;
    let app = launch(&url, "e1").await;
    let first = app.run(two_steps(1).id("same-id")).await.unwrap();
    let second = app.run(two_steps(1).id("same-id")).await.unwrap();
    assert_eq!((first, second), (4, 4));
    assert_eq!(runs("same-id", "add_one"), 1, "the workflow ran twice");
    // Concurrent starts of one ID: still one execution.
    let (a, b) = tokio::join!(app.run(two_steps(7).id("race-id")), app.run(two_steps(7).id("race-id")));
    assert_eq!((a.unwrap(), b.unwrap()), (16, 16));
    assert_eq!(runs("race-id", "double"), 1);

    let err = app.run(other_workflow(1).id("same-id")).await.unwrap_err();
    assert!(matches!(err, Error::WorkflowConflict { .. }), "{err:?}");
    assert!(err.to_string().contains("two_steps"), "{err}");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn declines(amount: i64) -> mainstay::Result<String> {
    Err(Failure::new("PaymentDeclined", format!("card declined for {amount}"))
        .with_code(402)
        .with_data(serde_json::json!({"amount": amount}))
        .into())
}

#[tokio::test]
async fn errors_are_recorded_and_come_back_as_themselves() {
    let url = fresh_database("errors").await;
    let app = launch(&url, "e1").await;
    let expected = Failure::new("PaymentDeclined", "card declined for 12").with_code(402).with_data(serde_json::json!({"amount": 12}));
    let err = app.run(declines(12).id("fail-1")).await.unwrap_err();
    assert_eq!(err.failure(), Some(&expected));
    // Read back from the database by a fresh handle: the same value.
    let again = app.retrieve::<String>("fail-1").get_result().await.unwrap_err();
    assert_eq!(again.failure(), Some(&expected));
    let status = app.status("fail-1").await.unwrap().unwrap();
    assert_eq!(status.status, Status::Error);
    let recorded: serde_json::Value = serde_json::from_str(status.error.as_deref().unwrap()).unwrap();
    assert_eq!(recorded["name"], "PaymentDeclined");
    assert_eq!(recorded["code"], 402);
    app.shutdown().await;
}

#[mainstay::step(max_attempts = 4, interval_ms = 10, backoff_rate = 2.0)]
async fn flaky(succeed_on: usize) -> mainstay::Result<usize> {
    ran("flaky");
    let n = runs(&mainstay::workflow_id().unwrap(), "flaky");
    if n < succeed_on {
        Err(Error::msg(format!("attempt {n} failed")))
    } else {
        Ok(n)
    }
}

#[mainstay::workflow]
async fn retrying(succeed_on: usize) -> mainstay::Result<usize> {
    flaky(succeed_on).await
}

#[tokio::test]
async fn steps_retry_and_record_only_the_final_outcome() {
    let url = fresh_database("retries").await;
    let app = launch(&url, "e1").await;
    assert_eq!(app.run(retrying(3).id("retry-ok")).await.unwrap(), 3);
    let err = app.run(retrying(10).id("retry-fail")).await.unwrap_err();
    assert_eq!(err.failure().unwrap().message, "attempt 4 failed");
    assert_eq!(runs("retry-fail", "flaky"), 4);
    let mut c = connect(&url).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid IN ('retry-ok', 'retry-fail')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2);
    app.shutdown().await;
}

#[mainstay::step]
async fn slow_step(label: String, delay_ms: u64) -> mainstay::Result<String> {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    Ok(label)
}

#[mainstay::workflow]
async fn concurrent_steps() -> mainstay::Result<Vec<String>> {
    let (a, b, c) = tokio::join!(slow_step("a".into(), 60), slow_step("b".into(), 30), slow_step("c".into(), 0));
    Ok(vec![a?, b?, c?])
}

#[tokio::test]
async fn concurrent_steps_get_ids_in_call_order() {
    let url = fresh_database("join_ids").await;
    let app = launch(&url, "e1").await;
    app.run(concurrent_steps().id("join-1")).await.unwrap();
    let mut c = connect(&url).await;
    let outputs: Vec<(i32, String)> =
        sqlx::query_as("SELECT function_id, output FROM dbos.operation_outputs WHERE workflow_uuid = 'join-1' ORDER BY function_id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    // Completion order was c, b, a; IDs follow the call order.
    assert_eq!(outputs, vec![(1, "\"a\"".into()), (2, "\"b\"".into()), (3, "\"c\"".into())]);
    app.shutdown().await;
}

#[mainstay::step(max_attempts = 2, interval_ms = 10)]
async fn outer_step() -> mainstay::Result<String> {
    ran("outer");
    // Inside a step these are plain calls: no operation IDs, no records.
    let inner = add_one(1).await?;
    mainstay::sleep(Duration::from_millis(1)).await?;
    let refused = mainstay::set_event("e", &1).await.unwrap_err().to_string();
    if runs(&mainstay::workflow_id().unwrap(), "outer") < 2 {
        return Err(Error::msg("the first attempt fails"));
    }
    Ok(format!("{inner}: {refused}"))
}

#[mainstay::workflow]
async fn nested_ops() -> mainstay::Result<String> {
    let s = outer_step().await?;
    let d = double(3).await?;
    Ok(format!("{d} {s}"))
}

#[tokio::test]
async fn operations_inside_a_step_take_no_ids_so_replays_line_up() {
    let url = fresh_database("nested_ops").await;
    let app = launch(&url, "e1").await;
    let out = app.run(nested_ops().id("nest-1")).await.unwrap();
    assert!(out.starts_with("6 2: ") && out.contains("set_event(e) was called inside a step"), "{out}");
    assert_eq!(runs("nest-1", "add_one"), 2, "the inner step ran as a plain call on each attempt");
    let steps: Vec<(i32, String)> = app.list_steps("nest-1").await.unwrap().into_iter().map(|s| (s.function_id, s.name)).collect();
    assert_eq!(steps, vec![(1, "outer_step".to_string()), (2, "double".to_string())]);
    // A replay skips the step body, so the operations after it keep their IDs.
    let forked = app.fork::<String>("nest-1", &mainstay::ForkOptions::new().start_step(2).new_id("nest-2")).await.unwrap();
    assert_eq!(forked.get_result().await.unwrap(), out);
    assert_eq!(runs("nest-2", "outer"), 0, "the replayed step did not run");
    assert_eq!(runs("nest-2", "double"), 1);
    app.shutdown().await;
}

/// Inserts a PENDING workflow of `executor` as a crashed process would have left it.
async fn insert_pending(url: &str, id: &str, name: &str, executor: &str, version: &str, inputs: &str, attempts: i64) {
    let mut c = connect(url).await;
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id, application_version,
             owner_xid, recovery_attempts, serialization)
         VALUES ($1, 'PENDING', $2, $3, $4, 'dead-owner', $5, 'portable_json')",
    )
    .bind(id)
    .bind(name)
    .bind(executor)
    .bind(version)
    .bind(attempts)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("INSERT INTO dbos.workflow_input (workflow_uuid, inputs) VALUES ($1, $2)")
        .bind(id)
        .bind(inputs)
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn recovery_replays_recorded_steps_and_detects_non_determinism() {
    let url = fresh_database("recovery_replay").await;
    mainstay::migrate(&config(&url, "x")).await.unwrap();
    let args = r#"{"positionalArgs":[4],"namedArgs":{}}"#;
    // A crash after step 1: recovery must not run add_one again, and must use its record.
    insert_pending(&url, "rec-1", "two_steps", "crashed", "test-v1", args, 1).await;
    // A record that no longer matches the code.
    insert_pending(&url, "nd-1", "two_steps", "crashed", "test-v1", args, 1).await;
    // Another version's workflow is not ours to recover.
    insert_pending(&url, "v2-1", "two_steps", "crashed", "test-v2", args, 1).await;
    let mut c = connect(&url).await;
    sqlx::query(
        "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, serialization)
         VALUES ('rec-1', 1, 'add_one', '100', 'portable_json'),
                ('nd-1', 1, 'renamed_step', '5', 'portable_json')",
    )
    .execute(&mut c)
    .await
    .unwrap();

    let app = launch(&url, "crashed").await;
    let out = app.retrieve::<i64>("rec-1").get_result().await.unwrap();
    assert_eq!(out, 200, "the recorded output of step 1 was not used");
    assert_eq!(runs("rec-1", "add_one"), 0, "a completed step ran again");
    assert_eq!(runs("rec-1", "double"), 1);

    let err = app.retrieve::<i64>("nd-1").get_result().await.unwrap_err();
    assert!(err.to_string().contains("non-deterministic"), "{err}");
    assert!(err.to_string().contains("renamed_step"), "{err}");

    let other = app.status("v2-1").await.unwrap().unwrap();
    assert_eq!(other.status, Status::Pending);
    let attempts: i64 = sqlx::query_scalar("SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = 'rec-1'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn too_many_recoveries_park_the_workflow() {
    let url = fresh_database("max_recovery").await;
    mainstay::migrate(&config(&url, "x")).await.unwrap();
    insert_pending(&url, "mr-1", "two_steps", "crashy", "test-v1", r#"{"positionalArgs":[1]}"#, 3).await;
    let mut cfg = config(&url, "crashy");
    cfg.max_recovery_attempts = 2;
    let app = mainstay::Mainstay::builder(cfg).global(false).launch().await.unwrap();
    let err = app.retrieve::<i64>("mr-1").get_result().await.unwrap_err();
    assert!(matches!(err, Error::MaxRecoveryAttemptsExceeded { .. }), "{err:?}");
    assert_eq!(app.status("mr-1").await.unwrap().unwrap().status, Status::MaxRecoveryAttemptsExceeded);
    assert_eq!(runs("mr-1", "add_one"), 0);
    app.shutdown().await;
}

#[mainstay::workflow]
async fn sleeper(ms: u64) -> mainstay::Result<u64> {
    mainstay::sleep(Duration::from_millis(ms)).await?;
    Ok(ms)
}

#[tokio::test]
async fn durable_sleep_records_its_wake_up_time() {
    let url = fresh_database("sleep").await;
    let app = launch(&url, "e1").await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(app.run(sleeper(150).id("sleep-1")).await.unwrap(), 150);
    let mut c = connect(&url).await;
    let (name, output): (String, String) =
        sqlx::query_as("SELECT function_name, output FROM dbos.operation_outputs WHERE workflow_uuid = 'sleep-1'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(name, "DBOS.sleep");
    let wake: f64 = output.parse().unwrap();
    assert!(wake >= before + 0.15 && wake < before + 5.0, "wake-up time {wake} vs start {before}");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn parent(x: i64) -> mainstay::Result<i64> {
    let child = two_steps(x).await?;
    let handle = two_steps(child).start().await?;
    handle.get_result().await
}

#[tokio::test]
async fn child_workflows_are_recorded_as_steps_of_their_parent() {
    let url = fresh_database("children").await;
    let app = launch(&url, "e1").await;
    assert_eq!(app.run(parent(1).id("par")).await.unwrap(), 10);
    let mut c = connect(&url).await;
    let ops: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT function_id, function_name, child_workflow_id FROM dbos.operation_outputs
         WHERE workflow_uuid = 'par' ORDER BY function_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(ops, vec![(1, "two_steps".into(), Some("par-1".into())), (2, "two_steps".into(), Some("par-2".into()))]);
    let parents: Vec<Option<String>> =
        sqlx::query_scalar("SELECT parent_workflow_id FROM dbos.workflow_status WHERE workflow_uuid IN ('par-1', 'par-2')")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(parents, vec![Some("par".to_string()), Some("par".to_string())]);
    // Running the parent again replays: no child runs twice.
    assert_eq!(app.run(parent(1).id("par")).await.unwrap(), 10);
    assert_eq!(runs("par-1", "add_one"), 1);
    app.shutdown().await;
}

#[mainstay::step]
async fn mark(label: String) -> mainstay::Result<()> {
    ran(&label);
    Ok(())
}

#[mainstay::workflow]
async fn step_sleep_step(ms: u64) -> mainstay::Result<String> {
    mark("first".into()).await?;
    mainstay::sleep(Duration::from_millis(ms)).await?;
    mark("second".into()).await?;
    Ok("done".into())
}

async fn has_step(url: &str, id: &str, name: &str) -> Option<()> {
    let mut c = connect(url).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_name = $2")
        .bind(id)
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    (n > 0).then_some(())
}

#[tokio::test]
async fn a_cancelled_workflow_stops_and_a_resumed_one_continues() {
    let url = fresh_database("cancel_resume").await;
    let app = launch(&url, "e1").await;
    let handle = app.start(step_sleep_step(5000).id("cr-1")).await.unwrap();
    wait_for("the sleep to be recorded", Duration::from_secs(10), || has_step(&url, "cr-1", "DBOS.sleep")).await;
    app.cancel("cr-1").await.unwrap();
    let err = handle.get_result().await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert_eq!(app.status("cr-1").await.unwrap().unwrap().status, Status::Cancelled);
    assert_eq!(runs("cr-1", "second"), 0);

    let resumed = app.resume::<String>("cr-1").await.unwrap();
    assert_eq!(resumed.get_result().await.unwrap(), "done");
    assert_eq!((runs("cr-1", "first"), runs("cr-1", "second")), (1, 1));
    assert!(matches!(app.cancel("no-such").await, Err(Error::NotFound { .. })));
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_workflows_pending_and_a_restart_finishes_them() {
    let url = fresh_database("shutdown").await;
    let app = launch(&url, "e-shut").await;
    let _handle = app.start(step_sleep_step(5000).id("sd-1")).await.unwrap();
    wait_for("the sleep to be recorded", Duration::from_secs(10), || has_step(&url, "sd-1", "DBOS.sleep")).await;
    app.shutdown().await;
    let mut c = connect(&url).await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'sd-1'").fetch_one(&mut c).await.unwrap();
    assert_eq!(status, "PENDING");

    let app = launch(&url, "e-shut").await;
    assert_eq!(app.retrieve::<String>("sd-1").get_result().await.unwrap(), "done");
    assert_eq!((runs("sd-1", "first"), runs("sd-1", "second")), (1, 1));
    app.shutdown().await;
}

static HOLD: AtomicBool = AtomicBool::new(true);

#[mainstay::step]
async fn held_step() -> mainstay::Result<String> {
    ran("held");
    // The first execution blocks until the test releases it; later ones run straight through.
    if runs(&mainstay::workflow_id().unwrap(), "held") == 1 {
        while HOLD.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return Ok("stale".into());
    }
    Ok("fresh".into())
}

#[mainstay::workflow]
async fn held() -> mainstay::Result<String> {
    held_step().await
}

#[tokio::test]
async fn two_executions_racing_on_one_workflow_write_its_outcome_once() {
    let url = fresh_database("owner_race").await;
    let a = launch(&url, "exec-a").await;
    let b = launch(&url, "exec-b").await;
    let mut c = connect(&url).await;
    count_outcome_writes(&mut c).await;

    let stale = a.start(held().id("race-1")).await.unwrap();
    wait_for("the first execution to enter its step", Duration::from_secs(10), || async { (runs("race-1", "held") == 1).then_some(()) })
        .await;
    // exec-a is presumed dead: its workflow is handed to exec-b, which finishes it.
    assert_eq!(b.recover_executor("exec-a").await.unwrap(), vec!["race-1".to_string()]);
    let fresh = b.retrieve::<String>("race-1").get_result().await.unwrap();
    assert_eq!(fresh, "fresh");
    // The stale execution wakes up; its checkpoint must lose.
    HOLD.store(false, Ordering::SeqCst);
    let stale_result = stale.get_result().await.unwrap();
    assert_eq!(stale_result, "fresh", "the stale execution's result replaced the recorded one");
    let writes: Vec<String> =
        sqlx::query_scalar("SELECT status FROM outcome_writes WHERE workflow_uuid = 'race-1'").fetch_all(&mut c).await.unwrap();
    assert_eq!(writes, vec!["SUCCESS".to_string()]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn foreign_serialization_formats_are_reported_by_name() {
    let url = fresh_database("pickle").await;
    let app = launch(&url, "e1").await;
    let mut c = connect(&url).await;
    sqlx::raw_sql(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, serialization) VALUES ('py-1', 'SUCCESS', 'pyfn', 'py_pickle');
         INSERT INTO dbos.workflow_output (workflow_uuid, output) VALUES ('py-1', 'gARLAi4=');",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let err = app.retrieve::<i64>("py-1").get_result().await.unwrap_err();
    assert!(matches!(err, Error::UnsupportedSerialization { .. }), "{err:?}");
    assert!(err.to_string().contains("py_pickle"), "{err}");
    app.shutdown().await;
}

/// Two workflows that differ only in their body: the default application version must tell
/// their code apart (as DBOS hashes workflow source).
mod source_hashes {
    #[mainstay::workflow(name = "versioned")]
    pub async fn before(x: i64) -> mainstay::Result<i64> {
        Ok(x + 1)
    }
}
mod source_hashes_changed {
    #[mainstay::workflow(name = "versioned_changed")]
    pub async fn before(x: i64) -> mainstay::Result<i64> {
        Ok(x + 2)
    }
}

#[test]
fn a_workflow_whose_body_changes_gets_another_source_hash() {
    use mainstay::Workflow;
    let a = <source_hashes::__mainstay_workflow_before as Workflow>::SOURCE_HASH;
    let b = <source_hashes_changed::__mainstay_workflow_before as Workflow>::SOURCE_HASH;
    assert_ne!(a, 0);
    assert_ne!(a, b, "a changed body kept its hash");
    assert_eq!(a, <source_hashes::__mainstay_workflow_before as Workflow>::SOURCE_HASH, "stable");
}

#[tokio::test]
async fn bad_configuration_gets_clear_errors() {
    let err = mainstay::Mainstay::launch(mainstay::Config::new("postgress://localhost/db")).await.err().unwrap();
    assert!(err.to_string().contains("scheme `postgress`"), "{err}");

    let mut unreachable = mainstay::Config::new("postgres://postgres@127.0.0.1:1/nowhere");
    unreachable.connect_timeout = Duration::from_millis(500);
    let err = mainstay::Mainstay::builder(unreachable).global(false).launch().await.err().unwrap();
    assert!(err.to_string().contains("cannot connect to the system database"), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    // A statement the server refuses reads as the server's message and SQLSTATE, not the
    // driver's rendering (which appends a line of the server's own source code).
    let unmigrated = fresh_database("unmigrated").await;
    let client = mainstay::Client::connect(&unmigrated).await.unwrap();
    let e = client.enqueue("w", "q", vec![], mainstay::WorkflowOptions::default()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("does not exist") && msg.contains("SQLSTATE 42P01") && !msg.contains(" at line "), "{msg}");
    client.close().await;
    // A library error: typed, with the cause, and no advice meant for the CLI.
    assert!(matches!(err, Error::Connect { retried: true, .. }), "{err:?}");
    assert!(!err.to_string().contains("mainstay postgres") && !err.to_string().contains("invalid configuration"), "{err}");

    let url = fresh_database("schema_ahead").await;
    mainstay::migrate(&config(&url, "x")).await.unwrap();
    let mut c = connect(&url).await;
    // Binaries released before additive migrations refuse a database whose
    // `mainstay_migrations` goes past 2: later migrations are recorded elsewhere.
    let legacy: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM dbos.mainstay_migrations").fetch_one(&mut c).await.unwrap();
    assert_eq!(legacy, Some(2));
    // A newer Mainstay's additive migration: this binary keeps working (workers built on an
    // older release survive an upgrade of the operator or of other workers).
    sqlx::query("INSERT INTO dbos.mainstay_schema_migrations (version) VALUES (999)").execute(&mut c).await.unwrap();
    let app = mainstay::Mainstay::builder(config(&url, "x")).global(false).launch().await.expect("launch on a newer, compatible schema");
    app.shutdown().await;
    // A breaking one: refused, with what to do.
    sqlx::query("INSERT INTO dbos.mainstay_schema_migrations (version, breaking) VALUES (1000, true)").execute(&mut c).await.unwrap();
    let err = mainstay::Mainstay::builder(config(&url, "x")).global(false).launch().await.err().unwrap();
    assert!(matches!(err, Error::SchemaAhead { found: 1000, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[tokio::test]
async fn concurrent_migrations_are_safe() {
    let url = fresh_database("concurrent_migrate").await;
    let cfg = config(&url, "x");
    let results = futures::future::join_all((0..4).map(|_| mainstay::migrate(&cfg))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let mut c = connect(&url).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM dbos.dbos_migrations").fetch_all(&mut c).await.unwrap();
    assert_eq!(versions, vec![mainstay::DBOS_SCHEMA_VERSION]);
}

#[mainstay::workflow]
async fn typed_arguments(
    items: Vec<String>,
    limit: Option<u32>,
    pair: (i64, String),
    map: std::collections::BTreeMap<String, serde_json::Value>,
) -> mainstay::Result<usize> {
    Ok(items.len() + limit.unwrap_or(0) as usize + pair.1.len() + map.len())
}

/// What workers record for tools to check an input against: the argument types as written.
#[test]
fn argument_types_are_recorded_as_written() {
    let expected: &[&str] = &["Vec<String>", "Option<u32>", "(i64, String)", "std::collections::BTreeMap<String, serde_json::Value>"];
    assert_eq!(<__mainstay_workflow_typed_arguments as mainstay::Workflow>::ARGUMENTS, Some(expected));
}

#[mainstay::step]
async fn read_settings(path: String) -> mainstay::Result<String> {
    // `?` on an ordinary error: recorded as an application failure.
    Ok(std::fs::read_to_string(path)?)
}

#[mainstay::workflow]
async fn configure(path: String) -> mainstay::Result<i64> {
    let text = read_settings(path).await?;
    use mainstay::OrFail;
    text.trim().parse::<i64>().or_fail()
}

#[tokio::test]
async fn ordinary_errors_with_question_mark_are_recorded_and_read_back_as_themselves() {
    let url = fresh_database("ordinary_errors").await;
    let app = launch(&url, "oe").await;
    let missing = app.run(configure("/nonexistent/mainstay-settings".into()).id("oe-missing")).await.unwrap_err();
    let f = missing.failure().cloned().expect("an application failure");
    assert_eq!((f.name.as_str(), f.code.clone()), ("IoError", Some(serde_json::json!("NotFound"))), "{f:?}");
    let dir = std::env::temp_dir().join(format!("mainstay-oe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("settings");
    std::fs::write(&path, "seven").unwrap();
    let bad = app.run(configure(path.display().to_string()).id("oe-bad")).await.unwrap_err();
    assert_eq!(bad.failure().map(|f| f.name.as_str()), Some("ParseIntError"), "{bad}");
    app.shutdown().await;
    // Another process reads back the same failures.
    let client = mainstay::Client::connect(&url).await.unwrap();
    let again = client.get_result::<i64>("oe-missing").await.unwrap_err();
    assert_eq!(again.failure(), Some(&f));
    let _ = std::fs::remove_dir_all(&dir);
}
