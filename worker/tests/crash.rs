//! Crash recovery with real processes: a child process runs a workflow and is killed with
//! SIGKILL between steps, inside a step, and inside a durable sleep; a new process with the same
//! executor ID recovers it. Completed steps must have run exactly once and the workflow must
//! finish with the right output. Two processes racing to recover one workflow write its outcome
//! once.
//!
//! The child is this test binary re-executed with `--ignored --exact crash_child` and the
//! scenario in environment variables.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::Child;
use tokio::sync::OnceCell;

const URL_ENV: &str = "MAINSTAY_CRASH_URL";
const MODE_ENV: &str = "MAINSTAY_CRASH_MODE";
const WORKFLOW_ENV: &str = "MAINSTAY_CRASH_WORKFLOW";
const EXECUTOR_ENV: &str = "MAINSTAY_CRASH_EXECUTOR";
const PAUSE_IN_ENV: &str = "MAINSTAY_CRASH_PAUSE_IN";
const PAUSE_AFTER_ENV: &str = "MAINSTAY_CRASH_PAUSE_AFTER";
// Long enough that a recovered process (started, launched, replayed) on a loaded two-core
// machine finishes well within it when it correctly sleeps only what is left.
const SLEEP_MS: u64 = 5000;

static EFFECTS: OnceCell<PgPool> = OnceCell::const_new();

async fn effects() -> &'static PgPool {
    EFFECTS
        .get_or_init(|| async {
            let url = std::env::var(URL_ENV).expect("child has the database URL");
            PgPoolOptions::new().max_connections(2).connect(&url).await.expect("connect for effects")
        })
        .await
}

fn paused(env: &str, label: &str) -> bool {
    std::env::var(env).map(|v| v == label).unwrap_or(false)
}

/// A step with a visible side effect: a row per execution in the test's own table.
#[mainstay::step]
async fn effect(label: String) -> mainstay::Result<u32> {
    sqlx::query("INSERT INTO effects (workflow_id, label, pid) VALUES ($1, $2, $3)")
        .bind(mainstay::workflow_id())
        .bind(&label)
        .bind(std::process::id() as i32)
        .execute(effects().await)
        .await
        .map_err(|e| mainstay::Error::from_std(&e))?;
    if paused(PAUSE_IN_ENV, &label) {
        // Killed here, inside the step, after its side effect.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(1)
}

#[mainstay::workflow]
async fn crash_workflow() -> mainstay::Result<u32> {
    let a = effect("s1".into()).await?;
    if paused(PAUSE_AFTER_ENV, "s1") {
        // Killed here, between two steps.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let b = effect("s2".into()).await?;
    mainstay::sleep(Duration::from_millis(SLEEP_MS)).await?;
    let c = effect("s3".into()).await?;
    Ok(a + b + c)
}

/// The child process's entry point; only runs when the parent test launches it.
#[tokio::test]
#[ignore = "entry point of the child process started by the crash tests"]
async fn crash_child() {
    let url = std::env::var(URL_ENV).expect("run by the crash tests, which set the scenario");
    let mode = std::env::var(MODE_ENV).unwrap();
    let id = std::env::var(WORKFLOW_ENV).unwrap();
    let mut cfg = config(&url, &std::env::var(EXECUTOR_ENV).unwrap());
    cfg.pool_size = 4;
    let app = mainstay::Mainstay::launch(cfg).await.expect("child launches");
    let out = match mode.as_str() {
        "start" => crash_workflow().id(id).await,
        "serve" => {
            crash_workflow().id(id).start().await.expect("start");
            app.run_until_signal().await.expect("signal handlers");
            println!("CHILD STOPPED GRACEFULLY");
            return;
        }
        _ => app.retrieve::<u32>(id).get_result().await,
    };
    println!("CHILD RESULT {out:?}");
    out.expect("the workflow finishes in the child");
    app.shutdown().await;
}

fn child(url: &str, mode: &str, id: &str, executor: &str, pause: Option<(&str, &str)>) -> Child {
    let mut envs = vec![(URL_ENV, url), (MODE_ENV, mode), (WORKFLOW_ENV, id), (EXECUTOR_ENV, executor)];
    envs.extend(pause);
    spawn_self("crash_child", &envs)
}

async fn finish(child: Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("child finished within 60 s")
        .expect("child ran");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "child failed ({}): {stdout}", out.status);
    stdout
}

async fn setup(name: &str) -> String {
    let url = fresh_database(name).await;
    mainstay::migrate(&config(&url, "setup")).await.unwrap();
    let mut c = connect(&url).await;
    sqlx::raw_sql("CREATE TABLE effects (workflow_id text, label text, pid int);").execute(&mut c).await.unwrap();
    count_outcome_writes(&mut c).await;
    url
}

async fn count(url: &str, sql: &str, id: &str) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).bind(id).fetch_one(&mut c).await.unwrap()
}

async fn effect_runs(url: &str, id: &str, label: &str) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE workflow_id = $1 AND label = $2")
        .bind(id)
        .bind(label)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn recorded(url: &str, id: &str, name: &str) -> Option<()> {
    let n =
        count(url, &format!("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_name = '{name}'"), id).await;
    (n > 0).then_some(())
}

async fn assert_finished_once(url: &str, id: &str) {
    let mut c = connect(url).await;
    let (status, output): (String, String) = sqlx::query_as(
        "SELECT s.status, o.output FROM dbos.workflow_status s JOIN dbos.workflow_output o USING (workflow_uuid)
         WHERE workflow_uuid = $1",
    )
    .bind(id)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((status.as_str(), output.as_str()), ("SUCCESS", "3"));
    let writes = count(url, "SELECT count(*) FROM outcome_writes WHERE workflow_uuid = $1", id).await;
    assert_eq!(writes, 1, "the outcome of {id} was written {writes} times");
}

#[tokio::test]
async fn killed_between_steps_resumes_after_the_last_completed_step() {
    let url = setup("crash_between").await;
    let id = "crash-between";
    let c = child(&url, "start", id, "crash-a", Some((PAUSE_AFTER_ENV, "s1")));
    wait_for("step s1 to be recorded", Duration::from_secs(30), || recorded(&url, id, "effect")).await;
    kill_child(c).await;

    finish(child(&url, "recover", id, "crash-a", None)).await;
    assert_eq!(effect_runs(&url, id, "s1").await, 1, "completed step s1 ran again");
    assert_eq!(effect_runs(&url, id, "s2").await, 1);
    assert_eq!(effect_runs(&url, id, "s3").await, 1);
    assert_finished_once(&url, id).await;
}

#[tokio::test]
async fn killed_inside_a_step_reruns_only_that_step() {
    let url = setup("crash_inside_step").await;
    let id = "crash-in-step";
    let c = child(&url, "start", id, "crash-b", Some((PAUSE_IN_ENV, "s2")));
    wait_for("step s2 to start", Duration::from_secs(30), || async { (effect_runs(&url, id, "s2").await == 1).then_some(()) }).await;
    kill_child(c).await;

    finish(child(&url, "recover", id, "crash-b", None)).await;
    assert_eq!(effect_runs(&url, id, "s1").await, 1, "completed step s1 ran again");
    // s2 never completed, so it runs again: at-least-once for the interrupted step.
    assert_eq!(effect_runs(&url, id, "s2").await, 2);
    assert_eq!(effect_runs(&url, id, "s3").await, 1);
    assert_finished_once(&url, id).await;
}

#[tokio::test]
async fn killed_inside_a_durable_sleep_sleeps_only_what_is_left() {
    let url = setup("crash_in_sleep").await;
    let id = "crash-in-sleep";
    let c = child(&url, "start", id, "crash-c", None);
    wait_for("the sleep to be recorded", Duration::from_secs(30), || recorded(&url, id, "DBOS.sleep")).await;
    kill_child(c).await;
    let mut conn = connect(&url).await;
    let wake: String =
        sqlx::query_scalar("SELECT output FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_name = 'DBOS.sleep'")
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let wake = Duration::from_secs_f64(wake.parse::<f64>().unwrap());
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    // Restart only once the recorded wake-up time has passed: a correct recovery then finishes
    // at once, while one that slept the whole duration again would take SLEEP_MS more.
    wait_for("the recorded wake-up time to pass", Duration::from_secs(30), || async { (now() > wake).then_some(()) }).await;
    let restarted = Instant::now();
    finish(child(&url, "recover", id, "crash-c", None)).await;
    let took = restarted.elapsed();
    assert!(took < Duration::from_millis(SLEEP_MS), "recovery slept the whole {SLEEP_MS} ms again (took {took:?})");
    for label in ["s1", "s2", "s3"] {
        assert_eq!(effect_runs(&url, id, label).await, 1, "step {label}");
    }
    assert_finished_once(&url, id).await;
}

#[tokio::test]
async fn two_processes_racing_to_recover_one_workflow_write_its_outcome_once() {
    let url = setup("crash_race").await;
    let id = "crash-race";
    let c = child(&url, "start", id, "crash-d", Some((PAUSE_AFTER_ENV, "s1")));
    wait_for("step s1 to be recorded", Duration::from_secs(30), || recorded(&url, id, "effect")).await;
    kill_child(c).await;

    // Both claim the same executor's work: each launch re-enqueues what it finds PENDING, so
    // the two can take the workflow from each other; the owner token decides who records.
    let first = child(&url, "recover", id, "crash-d", None);
    let second = child(&url, "recover", id, "crash-d", None);
    let (a, b) = tokio::join!(finish(first), finish(second));
    assert!(a.contains("CHILD RESULT Ok(3)") && b.contains("CHILD RESULT Ok(3)"), "{a}\n{b}");
    assert_eq!(effect_runs(&url, id, "s1").await, 1, "completed step s1 ran again");
    assert_finished_once(&url, id).await;
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_leaves_the_workflow_to_recovery() {
    let url = setup("sigterm").await;
    let id = "sigterm-1";
    let c = child(&url, "serve", id, "crash-e", None);
    wait_for("the sleep to be recorded", Duration::from_secs(30), || recorded(&url, id, "DBOS.sleep")).await;
    let pid = c.id().expect("child pid").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let out = finish(c).await;
    assert!(out.contains("CHILD STOPPED GRACEFULLY"), "{out}");
    let mut conn = connect(&url).await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1").bind(id).fetch_one(&mut conn).await.unwrap();
    assert_eq!(status, "PENDING", "an interrupted workflow must stay PENDING for recovery");

    finish(child(&url, "recover", id, "crash-e", None)).await;
    for label in ["s1", "s2", "s3"] {
        assert_eq!(effect_runs(&url, id, label).await, 1, "step {label}");
    }
    assert_finished_once(&url, id).await;
}
