//! Operating a fleet against a real Postgres: the health endpoint, listing workflows,
//! outstanding work per version and per executor, recovering a dead executor's workflows, and
//! retention.

mod common;

use std::time::Duration;

use common::*;
use mainstay::{Client, Mainstay, Status, WorkflowFilter, WorkflowOptions};

#[mainstay::workflow]
async fn mg_double(x: i64) -> mainstay::Result<i64> {
    Ok(x * 2)
}

#[mainstay::step]
async fn mg_mark() -> mainstay::Result<()> {
    Ok(())
}

/// Whether `mg_hold` holds: its first execution hangs until its process goes away; once the
/// test clears this, the recovered execution finishes at once.
static HOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[mainstay::workflow]
async fn mg_hold(ms: u64) -> mainstay::Result<u64> {
    mg_mark().await?;
    if HOLD.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(ms)
}

#[tokio::test]
async fn the_health_endpoint_answers_liveness_and_readiness_until_shutdown() {
    let url = fresh_database("mg_health").await;
    let mut c = config(&url, "health-1");
    c.health_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = Mainstay::builder(c).global(false).launch().await.unwrap();
    let addr = app.health_addr().expect("the health endpoint is bound");
    assert_ne!(addr.port(), 0);
    let get = |path: &'static str| async move { http_get(&format!("http://{addr}{path}"), &[]).await.map(|a| a.status) };
    assert_eq!(get("/healthz").await, Some(200));
    assert_eq!(get("/readyz").await, Some(200));
    assert_eq!(get("/nope").await, Some(404));
    app.shutdown().await;
    // After shutdown nothing answers ready: the endpoint is closed or reports shutting down.
    let after = get("/readyz").await;
    assert!(after.is_none() || after == Some(503), "{after:?}");
}

#[tokio::test]
async fn a_taken_health_port_fails_the_launch_with_a_clear_error() {
    let url = fresh_database("mg_health_taken").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(&url, "health-2");
    c.health_addr = Some(taken.local_addr().unwrap());
    let err = Mainstay::builder(c).global(false).launch().await.err().expect("launch fails").to_string();
    assert!(err.contains("health endpoint") && err.contains("MAINSTAY_HEALTH_PORT"), "{err}");
}

#[tokio::test]
async fn outstanding_work_is_reported_per_version_and_executor_and_a_dead_executor_is_recovered() {
    let url = fresh_database("mg_outstanding").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    // Queued work for two versions on a queue nobody listens to.
    for (i, v) in ["v-old", "v-old", "v-new"].iter().enumerate() {
        let opts = WorkflowOptions::new().id(format!("q-{i}")).app_version(v.to_string());
        client.enqueue("mg_double", "unlistened", vec![serde_json::json!(i)], opts).await.unwrap();
    }
    // A running workflow on executor "dead-1", which then goes away without finishing it.
    let app = Mainstay::builder(config(&url, "dead-1")).global(false).launch().await.unwrap();
    let h = app.start(mg_hold(60_000).id("held")).await.unwrap();
    wait_for("the held workflow's first step", Duration::from_secs(10), || async {
        let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'held'")
            .fetch_one(&mut connect(&url).await)
            .await
            .unwrap();
        (steps == 1).then_some(())
    })
    .await;
    drop(h);
    app.shutdown().await;

    let mut by_version = client.outstanding_by_version().await.unwrap();
    by_version.sort_by(|a, b| a.app_version.cmp(&b.app_version));
    let summary: Vec<(Option<&str>, i64, i64)> = by_version.iter().map(|w| (w.app_version.as_deref(), w.pending, w.enqueued)).collect();
    assert_eq!(summary, vec![(Some("test-v1"), 1, 0), (Some("v-new"), 0, 1), (Some("v-old"), 0, 2)]);
    assert_eq!(by_version[2].outstanding(), 2);

    let executors = client.pending_by_executor().await.unwrap();
    assert_eq!(executors.len(), 1);
    assert_eq!((executors[0].executor_id.as_str(), executors[0].pending), ("dead-1", 1));

    // Recovery puts it back on a queue, and a live worker of its version finishes it.
    assert_eq!(client.recover_executor("dead-1").await.unwrap(), vec!["held".to_string()]);
    assert!(client.pending_by_executor().await.unwrap().is_empty());
    HOLD.store(false, std::sync::atomic::Ordering::SeqCst);
    let live = Mainstay::builder(config(&url, "live-1")).global(false).launch().await.unwrap();
    let st = wait_for("the recovered workflow to finish", Duration::from_secs(30), || async {
        client.status("held").await.unwrap().filter(|s| s.status.is_terminal())
    })
    .await;
    assert_eq!((st.status, st.executor_id.as_deref()), (Status::Success, Some("live-1")));
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'held'")
        .fetch_one(&mut connect(&url).await)
        .await
        .unwrap();
    assert_eq!(steps, 1, "the completed step was not run again");
    live.shutdown().await;
}

#[tokio::test]
async fn workflows_are_listed_by_filter_and_schedule_runs_carry_their_schedule() {
    let url = fresh_database("mg_list").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    for tick in ["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00"] {
        let opts = WorkflowOptions::new().id(format!("sched-nightly-{tick}")).schedule_name("nightly");
        client.enqueue("mg_double", "unlistened", vec![serde_json::json!(tick), serde_json::Value::Null], opts).await.unwrap();
    }
    client.enqueue("mg_double", "unlistened", vec![serde_json::json!(1)], WorkflowOptions::new().id("sched-nightly-x")).await.unwrap();
    let by_schedule = client.list_workflows(&WorkflowFilter::new().schedule_name("nightly").oldest_first(true)).await.unwrap();
    let ids: Vec<&str> = by_schedule.iter().map(|s| s.workflow_id.as_str()).collect();
    assert_eq!(ids, ["sched-nightly-2026-01-01T00:00:00+00:00", "sched-nightly-2026-01-01T00:00:01+00:00"]);
    let by_prefix = client.list_workflows(&WorkflowFilter::active().id_prefix("sched-nightly-")).await.unwrap();
    assert_eq!(by_prefix.len(), 3);
    let limited = client.list_workflows(&WorkflowFilter::new().limit(1).statuses([Status::Success])).await.unwrap();
    assert!(limited.is_empty());
    let one = client.list_workflows(&WorkflowFilter::new().limit(1)).await.unwrap();
    assert_eq!(one.len(), 1);
}

#[tokio::test]
async fn retention_deletes_only_finished_workflows_by_age_and_count() {
    let url = fresh_database("mg_retention").await;
    let app = Mainstay::builder(config(&url, "ret-1")).global(false).launch().await.unwrap();
    for i in 0..10 {
        app.run(mg_double(i).id(format!("done-{i}"))).await.unwrap();
    }
    let client = Client::connect(&url).await.unwrap();
    client.enqueue("mg_double", "unlistened", vec![serde_json::json!(0)], WorkflowOptions::new().id("waiting")).await.unwrap();
    // Distinct, old creation times: done-i is i hours old plus two days; `waiting` is oldest.
    let mut c = connect(&url).await;
    sqlx::raw_sql(
        "UPDATE dbos.workflow_status SET created_at = (EXTRACT(epoch FROM now()) * 1000)::bigint \
           - 172800000 - 3600000 * substr(workflow_uuid, 6)::int WHERE workflow_uuid LIKE 'done-%';
         UPDATE dbos.workflow_status SET created_at = 0 WHERE workflow_uuid = 'waiting';",
    )
    .execute(&mut c)
    .await
    .unwrap();

    // Keep the newest 5 records: done-0..done-4 stay, done-5..done-9 go; `waiting` is never
    // deleted although it is the oldest.
    assert_eq!(client.delete_finished(None, Some(5)).await.unwrap(), 5);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT workflow_uuid FROM dbos.workflow_status ORDER BY workflow_uuid").fetch_all(&mut c).await.unwrap();
    assert_eq!(left, ["done-0", "done-1", "done-2", "done-3", "done-4", "waiting"]);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM dbos.workflow_input WHERE workflow_uuid LIKE 'done-%') + \
                (SELECT count(*) FROM dbos.workflow_output WHERE workflow_uuid LIKE 'done-%')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(orphans, 10, "inputs and outputs of the 5 kept workflows only");

    // By age: older than 2 days and 2.5 hours: done-3 and done-4.
    let age = Duration::from_secs(48 * 3600 + 150 * 60);
    assert_eq!(client.delete_finished(Some(age), None).await.unwrap(), 2);
    assert_eq!(client.delete_finished(Some(age), None).await.unwrap(), 0, "idempotent");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status").fetch_one(&mut c).await.unwrap();
    assert_eq!(n, 4);
    app.shutdown().await;
}

static FORK_RUNS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[mainstay::step]
async fn mg_record(label: String) -> mainstay::Result<String> {
    FORK_RUNS.lock().unwrap().push(format!("{}:{label}", mainstay::workflow_id().unwrap_or_default()));
    Ok(label)
}

#[mainstay::workflow]
async fn mg_child(x: i64) -> mainstay::Result<i64> {
    Ok(x + 1)
}

#[mainstay::workflow]
async fn mg_three(x: i64) -> mainstay::Result<String> {
    let a = mg_record("a".into()).await?;
    mainstay::set_event("seen", &a).await?;
    let child = mg_child(x).await?;
    let b = mg_record(format!("b{child}")).await?;
    Ok(format!("{a}{b}"))
}

fn runs_of(id: &str) -> Vec<String> {
    FORK_RUNS.lock().unwrap().iter().filter(|r| r.starts_with(&format!("{id}:"))).cloned().collect()
}

#[tokio::test]
async fn steps_are_listed_and_workflows_forked_from_a_step_and_deleted() {
    let url = fresh_database("mg_fork").await;
    let app = launch(&url, "mg-fork").await;
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(app.run(mg_three(1).id("orig")).await.unwrap(), "ab2");
    let steps = client.list_steps("orig").await.unwrap();
    let names: Vec<(i32, &str)> = steps.iter().map(|s| (s.function_id, s.name.as_str())).collect();
    assert_eq!(names, [(1, "mg_record"), (2, "DBOS.setEvent"), (3, "mg_child"), (4, "mg_record")]);
    assert_eq!(steps[0].output, Some(serde_json::json!("a")));
    assert_eq!(steps[2].child_workflow_id.as_deref(), Some("orig-3"));
    assert_eq!(client.count_steps("orig").await.unwrap(), 4, "the count agrees with the list");

    // Forked from step 4: steps 1-3 are replayed from the copy, step 4 runs again.
    let fork = app.fork::<String>("orig", &mainstay::ForkOptions::new().start_step(4).new_id("fork-1")).await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(30), fork.get_result()).await.unwrap().unwrap(), "ab2");
    assert_eq!(runs_of("fork-1"), ["fork-1:b2"], "only the step from the fork point on ran again");
    let event: Option<String> = client.get_event("fork-1", "seen", Duration::ZERO).await.unwrap();
    assert_eq!(event.as_deref(), Some("a"), "events from before the fork point are copied");
    let mut c = connect(&url).await;
    let (forked_from, was_forked): (Option<String>, bool) = sqlx::query_as(
        "SELECT f.forked_from, o.was_forked_from FROM dbos.workflow_status f, dbos.workflow_status o \
         WHERE f.workflow_uuid = 'fork-1' AND o.workflow_uuid = 'orig'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((forked_from.as_deref(), was_forked), (Some("orig"), true));

    // From step 1 on another version: nothing is copied; no worker of that version runs it.
    let id = client.fork("orig", &mainstay::ForkOptions::new().start_step(1).app_version("v-next")).await.unwrap();
    let status = client.status(&id).await.unwrap().unwrap();
    assert_eq!((status.status, status.app_version.as_deref()), (Status::Enqueued, Some("v-next")));
    assert!(client.list_steps(&id).await.unwrap().is_empty());
    assert_eq!(client.count_steps(&id).await.unwrap(), 0);
    let taken = client.fork("orig", &mainstay::ForkOptions::new().new_id("fork-1")).await;
    assert!(taken.unwrap_err().to_string().contains("exists"));
    assert!(matches!(client.fork("ghost", &Default::default()).await, Err(mainstay::Error::NotFound { .. })));

    // Deleting with children removes the child run too, and everything recorded.
    let deleted = client.delete_workflow("orig", true).await.unwrap();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(client.status("orig-3").await.unwrap().is_none());
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'orig') + \
                (SELECT count(*) FROM dbos.workflow_events WHERE workflow_uuid = 'orig') + \
                (SELECT count(*) FROM dbos.workflow_input WHERE workflow_uuid = 'orig')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert!(matches!(client.delete_workflow("orig", false).await, Err(mainstay::Error::NotFound { .. })));
    app.shutdown().await;
}

#[mainstay::workflow]
async fn mg_slow_child() -> mainstay::Result<()> {
    mainstay::sleep(Duration::from_secs(30)).await
}

#[mainstay::workflow]
async fn mg_parent_with_deadline() -> mainstay::Result<()> {
    mg_slow_child().id("slow-child").start().await?;
    mainstay::sleep(Duration::from_secs(30)).await
}

#[tokio::test]
async fn a_child_inherits_its_parents_deadline_and_both_are_cancelled_at_it() {
    let url = fresh_database("mg_deadline").await;
    let app = launch(&url, "mg-deadline").await;
    let parent = app.start(mg_parent_with_deadline().id("parent").timeout(Duration::from_millis(800))).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), parent.get_result()).await.unwrap().unwrap_err();
    assert!(matches!(err, mainstay::Error::Cancelled { .. }), "{err:?}");
    let child = app.retrieve::<()>("slow-child");
    let err = tokio::time::timeout(Duration::from_secs(20), child.get_result()).await.unwrap().unwrap_err();
    assert!(matches!(err, mainstay::Error::Cancelled { .. }), "{err:?}");
    let (p, c) = (
        app.status("parent").await.unwrap().unwrap().deadline_epoch_ms,
        app.status("slow-child").await.unwrap().unwrap().deadline_epoch_ms,
    );
    assert!(p.is_some() && p == c, "the child's deadline {c:?} is the parent's {p:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn workflows_are_filtered_by_name_queue_version_and_time_and_paged() {
    let url = fresh_database("mg_filters").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    let enqueue = |id: &str, name: &str, queue: &str, version: &str| {
        let (client, id, name, queue, version) = (client.clone(), id.to_string(), name.to_string(), queue.to_string(), version.to_string());
        async move {
            let opts = WorkflowOptions::new().id(id).app_version(version);
            client.enqueue(&name, &queue, vec![], opts).await.unwrap();
        }
    };
    enqueue("f1", "alpha", "q1", "v1").await;
    enqueue("f2", "alpha", "q2", "v1").await;
    let created_f2 = client.status("f2").await.unwrap().unwrap().created_at_ms;
    wait_for("the clock to move on", Duration::from_secs(5), || async {
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 > created_f2 + 2).then_some(())
    })
    .await;
    enqueue("f3", "beta", "q1", "v2").await;
    let ids = |list: Vec<mainstay::WorkflowStatus>| list.into_iter().map(|s| s.workflow_id).collect::<Vec<_>>();
    let f = |filter: WorkflowFilter| {
        let client = client.clone();
        async move { ids(client.list_workflows(&filter).await.unwrap()) }
    };
    assert_eq!(f(WorkflowFilter::new().name("alpha").oldest_first(true)).await, ["f1", "f2"]);
    assert_eq!(f(WorkflowFilter::new().queue("q1").oldest_first(true)).await, ["f1", "f3"]);
    assert_eq!(f(WorkflowFilter::new().app_version("v2")).await, ["f3"]);
    assert_eq!(f(WorkflowFilter::new().created_from_ms(created_f2 + 1)).await, ["f3"]);
    assert_eq!(f(WorkflowFilter::new().created_before_ms(created_f2 + 1).oldest_first(true)).await, ["f1", "f2"]);
    assert_eq!(f(WorkflowFilter::new().limit(2).offset(1).oldest_first(true)).await, ["f2", "f3"]);
    assert_eq!(f(WorkflowFilter::new().statuses([Status::Enqueued]).limit(1)).await, ["f3"]);
}
