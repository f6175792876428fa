//! Transactions against a real Postgres: output recorded in the transaction, exactly once
//! under a real SIGKILL between the commit and the system-database checkpoint, serialization
//! failures retried, SQL errors recorded as failures, isolation levels, a separate application
//! database, and plain transactions outside workflows.

mod common;

use std::time::Duration;

use common::*;
use mainstay::sqlx::PgConnection;
use mainstay::{Error, Isolation, TransactionOptions};
use sqlx::Row;

const URL_ENV: &str = "MAINSTAY_TXN_URL";
const WORKFLOW_ENV: &str = "MAINSTAY_TXN_WORKFLOW";
/// Advisory lock the crash test holds to stop the body mid-way.
const GATE: i64 = 4242;

#[mainstay::transaction]
async fn add_greeting(conn: &mut PgConnection, name: String) -> mainstay::Result<i64> {
    sqlx::query("INSERT INTO greetings (name) VALUES ($1)").bind(&name).execute(&mut *conn).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM greetings").fetch_one(&mut *conn).await?;
    Ok(n)
}

#[mainstay::workflow]
async fn greet(name: String) -> mainstay::Result<i64> {
    add_greeting(name).await
}

async fn setup(name: &str) -> String {
    let url = fresh_database(name).await;
    mainstay::migrate(&config(&url, "setup")).await.unwrap();
    let mut c = connect(&url).await;
    sqlx::raw_sql(
        "CREATE TABLE greetings (id serial PRIMARY KEY, name text UNIQUE);
         CREATE TABLE counters (n int PRIMARY KEY);",
    )
    .execute(&mut c)
    .await
    .unwrap();
    url
}

async fn greetings(url: &str, name: &str) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar("SELECT count(*) FROM greetings WHERE name = $1").bind(name).fetch_one(&mut c).await.unwrap()
}

#[tokio::test]
async fn a_transaction_records_its_output_in_its_own_transaction() {
    let url = setup("txn_basic").await;
    let app = launch(&url, "t1").await;
    assert_eq!(app.run(greet("ann".into()).id("g1")).await.unwrap(), 1);
    assert_eq!(app.run(greet("ann".into()).id("g1")).await.unwrap(), 1, "the same ID returns the record");
    assert_eq!(greetings(&url, "ann").await, 1);

    let mut c = connect(&url).await;
    let app_row = sqlx::query("SELECT output, serialization FROM dbos.datasource_outputs WHERE workflow_id = 'g1' AND step_id = 1")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(app_row.get::<String, _>(0), "1");
    assert_eq!(app_row.get::<String, _>(1), "portable_json");
    let step: (String, String) =
        sqlx::query_as("SELECT function_name, output FROM dbos.operation_outputs WHERE workflow_uuid = 'g1' AND function_id = 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(step, ("add_greeting".into(), "1".into()));

    // A committed transaction whose checkpoint never made it: the record is returned and the
    // body does not run again.
    sqlx::query(
        "INSERT INTO dbos.datasource_outputs (workflow_id, step_id, output, serialization) VALUES ('g2', 1, '77', 'portable_json')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    assert_eq!(app.run(greet("bob".into()).id("g2")).await.unwrap(), 77);
    assert_eq!(greetings(&url, "bob").await, 0, "the body ran although its commit was recorded");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn greet_gated(name: String) -> mainstay::Result<i64> {
    gated_greeting(name).await
}

#[mainstay::transaction]
async fn gated_greeting(conn: &mut PgConnection, name: String) -> mainstay::Result<i64> {
    sqlx::query("INSERT INTO greetings (name) VALUES ($1)").bind(&name).execute(&mut *conn).await?;
    // The test holds this lock to decide when the body may finish.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(GATE).execute(&mut *conn).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM greetings").fetch_one(&mut *conn).await?;
    Ok(n)
}

#[tokio::test]
#[ignore = "entry point of the child process started by the transaction crash test"]
async fn txn_child() {
    let url = std::env::var(URL_ENV).expect("run by the crash test");
    let id = std::env::var(WORKFLOW_ENV).unwrap();
    let mut cfg = config(&url, "txn-crash");
    cfg.pool_size = 4;
    let app = mainstay::Mainstay::launch(cfg).await.expect("child launches");
    let out = greet_gated("carol".into()).id(id).await;
    println!("CHILD RESULT {out:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn killed_between_the_commit_and_the_checkpoint_the_transaction_runs_once() {
    let url = setup("txn_crash").await;
    let id = "txn-crash-1";
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut gate = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(GATE).execute(&mut *gate).await.unwrap();

    let child = spawn_self("txn_child", &[(URL_ENV, &url), (WORKFLOW_ENV, id)]);
    wait_for("the body to wait at the gate", Duration::from_secs(30), || async {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted")
            .bind(GATE as i32)
            .fetch_one(&pool)
            .await
            .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    // Block step checkpoints, then let the body finish: the transaction commits and the
    // checkpoint that follows waits on the table lock.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE dbos.operation_outputs IN EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(GATE).execute(&mut *gate).await.unwrap();
    wait_for("the transaction to commit and its checkpoint to block", Duration::from_secs(30), || async {
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.datasource_outputs WHERE workflow_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'operation_outputs' AND NOT l.granted",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (committed == 1 && blocked > 0).then_some(())
    })
    .await;
    kill_child(child).await;
    blocker.rollback().await.unwrap();
    drop(gate);
    let steps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = $1").bind(id).fetch_one(&pool).await.unwrap();
    assert_eq!(steps, 0, "the checkpoint must not have been written before the kill");

    // The same executor restarts and recovers the workflow.
    let app = launch(&url, "txn-crash").await;
    let out = tokio::time::timeout(Duration::from_secs(30), app.retrieve::<i64>(id).get_result()).await.unwrap().unwrap();
    assert_eq!(out, 1);
    assert_eq!(greetings(&url, "carol").await, 1, "the transaction's effect happened twice");
    app.shutdown().await;
}

#[mainstay::transaction]
async fn take_next(conn: &mut PgConnection) -> mainstay::Result<i32> {
    let n: i32 = sqlx::query_scalar("SELECT COALESCE(max(n), 0) + 1 FROM counters").fetch_one(&mut *conn).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    sqlx::query("INSERT INTO counters (n) VALUES ($1) ON CONFLICT DO NOTHING").bind(n).execute(&mut *conn).await?;
    Ok(n)
}

#[mainstay::workflow]
async fn counter() -> mainstay::Result<i32> {
    take_next().await
}

#[tokio::test]
async fn serialization_failures_are_retried_until_the_transactions_serialize() {
    let url = setup("txn_conflicts").await;
    let app = launch(&url, "t2").await;
    let handles = futures::future::join_all((0..10).map(|i| app.start(counter().id(format!("c{i}"))))).await;
    let mut got = Vec::new();
    for h in handles {
        got.push(tokio::time::timeout(Duration::from_secs(60), h.unwrap().get_result()).await.unwrap().unwrap());
    }
    got.sort();
    assert_eq!(got, (1..=10).collect::<Vec<i32>>(), "each transaction saw the others as if serial");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn greet_twice(name: String) -> mainstay::Result<i64> {
    add_greeting(name.clone()).await?;
    add_greeting(name).await
}

#[mainstay::transaction(isolation = "read_committed")]
async fn isolation_seen(conn: &mut PgConnection) -> mainstay::Result<String> {
    Ok(sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&mut *conn).await?)
}

#[mainstay::workflow]
async fn isolations() -> mainstay::Result<(String, String)> {
    let configured = isolation_seen().await?;
    let default = mainstay::transaction("default_isolation", |conn| {
        Box::pin(async move { Ok(sqlx::query_scalar::<_, String>("SHOW transaction_isolation").fetch_one(conn).await?) })
    })
    .await?;
    Ok((configured, default))
}

#[tokio::test]
async fn sql_errors_are_recorded_failures_and_isolation_is_configurable() {
    let url = setup("txn_errors").await;
    let app = launch(&url, "t3").await;
    let err = app.run(greet_twice("dup".into()).id("dup")).await.unwrap_err();
    let failure = err.failure().unwrap_or_else(|| panic!("a recorded failure, got {err:?}")).clone();
    assert_eq!(failure.name, "DatabaseError");
    assert_eq!(failure.code, Some(serde_json::json!("23505")));
    assert_eq!(greetings(&url, "dup").await, 1, "the failed transaction rolled back");
    let again = app.retrieve::<i64>("dup").get_result().await.unwrap_err();
    assert_eq!(again.failure(), Some(&failure), "the failure comes back as itself");

    let (configured, default) = app.run(isolations()).await.unwrap();
    assert_eq!(configured, "read committed");
    assert_eq!(default, "serializable");
    app.shutdown().await;
}

#[tokio::test]
async fn transactions_run_on_a_separate_application_database_and_outside_workflows() {
    let sys_url = fresh_database("txn_sys").await;
    let app_url = setup("txn_app").await;
    let mut cfg = config(&sys_url, "t4");
    cfg.app_database_url = Some(app_url.clone());
    let app = mainstay::Mainstay::builder(cfg).launch().await.unwrap();
    assert_eq!(greet("dan".into()).id("sep").await.unwrap(), 1);
    assert_eq!(greetings(&app_url, "dan").await, 1);
    let mut sys = connect(&sys_url).await;
    let in_sys: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('dbos.datasource_outputs')::text").fetch_one(&mut sys).await.unwrap();
    assert_eq!(in_sys, None, "the outputs table belongs to the application database");
    let mut appc = connect(&app_url).await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.datasource_outputs WHERE workflow_id = 'sep'").fetch_one(&mut appc).await.unwrap();
    assert_eq!(recorded, 1);

    // Outside a workflow: a plain transaction, nothing recorded.
    let n = mainstay::transaction_with("outside", TransactionOptions::default().isolation(Isolation::RepeatableRead), |conn| {
        Box::pin(async move { Ok(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM greetings").fetch_one(conn).await?) })
    })
    .await
    .unwrap();
    assert_eq!(n, 1);
    let err = mainstay::transaction("broken", |conn| {
        Box::pin(async move { Ok(sqlx::query_scalar::<_, i64>("SELECT no_such_column FROM greetings").fetch_one(conn).await?) })
    })
    .await
    .unwrap_err();
    assert!(matches!(&err, Error::Failed(f) if f.code == Some(serde_json::json!("42703"))), "{err:?}");
    app.shutdown().await;
}
