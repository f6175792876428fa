//! Several applications and versions on one system database, as DBOS 3.4 shares one: two
//! Mainstay applications (one of them in two versions) and a real DBOS Transact 3.4.0 Python
//! worker. Checked: each application claims only its own work (and work of no application
//! whose workflow it has); nobody fails or takes work it cannot run; the latest version is per
//! application, so a later launch of another application starves nobody; making an older
//! version the latest (a rollback) sends it the work enqueued without a version; recovery,
//! retention and schedules stay within their application; a version name owned by another
//! application is refused with a clear error.
//!
//! Needs `MAINSTAY_DBOS_PYTHON` (a Python with `dbos==3.4.0`); `.ci/run` provides it.

mod common;

use std::time::Duration;

use common::*;
use mainstay::{Client, Config, Error, Mainstay, Queue, WorkflowOptions};
use serde_json::json;

const QUEUE: &str = "shared";

#[mainstay::workflow]
async fn shared_task(n: u64) -> mainstay::Result<String> {
    Ok(format!("{}:{n}", mainstay::workflow_id().unwrap_or_default()))
}

#[mainstay::workflow]
async fn shared_tick(_scheduled_at: chrono::DateTime<chrono::Utc>, _context: serde_json::Value) -> mainstay::Result<()> {
    Ok(())
}

/// A DBOS worker of application `py-app`, version `py-v1`, serving `py_task` on the shared
/// queue, left unowned (`never_update`) so every application may use it.
const PY_WORKER: &str = r#"
import os, signal, sys, threading
from dbos import DBOS
DBOS(config={"name": "py-app", "system_database_url": sys.argv[1],
              "application_version": "py-v1", "executor_id": "py-exec"})
@DBOS.workflow(name="py_task")
def py_task(x):
    return "py:" + str(x)
DBOS.launch()
DBOS.register_queue("shared", on_conflict="never_update")
print("READY", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
DBOS.destroy()
"#;

fn python() -> Option<String> {
    match std::env::var("MAINSTAY_DBOS_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("MAINSTAY_DBOS_PYTHON is not set: create a venv with dbos==3.4.0 and point it at its python")
        }
        Err(_) => {
            eprintln!("NOTICE: skipping the shared-database test (MAINSTAY_DBOS_PYTHON unset)");
            None
        }
    }
}

fn app_config(url: &str, app: &str, version: &str, executor: &str) -> Config {
    let mut c = config(url, executor);
    c.app_name = Some(app.to_string());
    c.app_version = Some(version.to_string());
    c
}

async fn launch_app(url: &str, app: &str, version: &str, executor: &str) -> Mainstay {
    Mainstay::builder(app_config(url, app, version, executor))
        .queue(Queue::new(QUEUE))
        .global(false)
        .launch()
        .await
        .unwrap_or_else(|e| panic!("launch {app} {version}: {e}"))
}

async fn client_of(url: &str, app: Option<&str>) -> Client {
    let mut c = Config::new(url);
    c.pool_size = 4;
    c.app_name = app.map(str::to_string);
    Client::connect_with(&c).await.expect("connect a client")
}

async fn enqueue(client: &Client, name: &str, arg: serde_json::Value, version: Option<&str>) -> String {
    let mut options = WorkflowOptions::new();
    options.app_version = version.map(str::to_string);
    client.enqueue(name, QUEUE, vec![arg], options).await.expect("enqueue")
}

/// `(status, executor, application, version)` of a workflow.
async fn row(url: &str, id: &str) -> (String, Option<String>, Option<String>, Option<String>) {
    let mut c = connect(url).await;
    sqlx::query_as("SELECT status, executor_id, application_name, application_version FROM dbos.workflow_status WHERE workflow_uuid = $1")
        .bind(id)
        .fetch_one(&mut c)
        .await
        .expect("read the workflow row")
}

async fn finished(url: &str, ids: &[String]) -> Vec<(String, Option<String>, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for id in ids {
        let r = wait_for(&format!("workflow {id} to finish"), Duration::from_secs(60), || async {
            let r = row(url, id).await;
            (r.0 == "SUCCESS" || r.0 == "ERROR").then_some(r)
        })
        .await;
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_and_versions_share_one_database() {
    let Some(python) = python() else { return };
    init_tracing();
    let url = fresh_database("shared_database").await;
    let a1 = launch_app(&url, "app-a", "a-v1", "a-v1-exec").await;
    let b1 = launch_app(&url, "app-b", "b-v1", "b-v1-exec").await;
    let mut py = tokio::process::Command::new(&python)
        .args(["-c", PY_WORKER, &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the DBOS worker");
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(py.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = lines.next_line().await.expect("read the DBOS worker") {
                if l.contains("READY") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "the DBOS worker did not start");
    }
    let (ca, cb, cpy, anyone) = (
        client_of(&url, Some("app-a")).await,
        client_of(&url, Some("app-b")).await,
        client_of(&url, Some("py-app")).await,
        client_of(&url, None).await,
    );

    // Each application's work runs on its own workers, with or without a version; the DBOS
    // worker runs its own, and runs `py_task` enqueued for no application (no Mainstay worker
    // has it, so none takes it).
    let mut a_ids = Vec::new();
    let mut b_ids = Vec::new();
    for n in 0..10 {
        a_ids.push(enqueue(&ca, "shared_task", json!(n), None).await);
        a_ids.push(enqueue(&ca, "shared_task", json!(n), Some("a-v1")).await);
        b_ids.push(enqueue(&cb, "shared_task", json!(n), None).await);
    }
    let py_ids = vec![enqueue(&cpy, "py_task", json!("x"), None).await, enqueue(&anyone, "py_task", json!("y"), None).await];
    for r in finished(&url, &a_ids).await {
        assert_eq!(r, ("SUCCESS".into(), Some("a-v1-exec".into()), Some("app-a".into()), Some("a-v1".into())));
    }
    for r in finished(&url, &b_ids).await {
        assert_eq!(r, ("SUCCESS".into(), Some("b-v1-exec".into()), Some("app-b".into()), Some("b-v1".into())));
    }
    for r in finished(&url, &py_ids).await {
        assert_eq!((r.0.as_str(), r.1.as_deref(), r.2.as_deref()), ("SUCCESS", Some("py-exec"), Some("py-app")));
    }

    // Each version records the workflows it registers (what the operator checks a Schedule's
    // workflow name against); a version that never launched records none.
    // Each records what its workflows take (the argument types as written) and the queues its
    // workers listen to, so a start can be refused before it is enqueued.
    let workflows = ca.registered_workflows("a-v1").await.unwrap();
    let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
    assert!(names.contains(&"shared_task") && !names.contains(&"py_task"), "{names:?}");
    let task = workflows.iter().find(|w| w.name == "shared_task").unwrap();
    assert_eq!(task.arguments, Some(vec!["u64".to_string()]));
    assert_eq!(ca.registered_queues("a-v1").await.unwrap(), vec![mainstay::INTERNAL_QUEUE.to_string(), QUEUE.to_string()]);
    assert!(cb.registered_workflows("a-v1").await.unwrap().is_empty(), "app-b sees app-a's registrations");
    // One pool, several applications: a client made for app-b from app-a's speaks for app-b.
    let b_through_a = ca.for_application(Some("app-b"));
    assert!(b_through_a.registered_workflows("a-v1").await.unwrap().is_empty(), "for_application still speaks for app-a");
    assert_eq!(b_through_a.app_name(), Some("app-b"));
    assert!(!ca.for_application(Some("app-a")).registered_workflows("a-v1").await.unwrap().is_empty());
    assert!(cb.registered_queues("a-v1").await.unwrap().is_empty(), "app-b sees app-a's queues");
    assert!(ca.registered_workflows("a-v9").await.unwrap().is_empty());

    // Work nobody can run stays queued, never failed: a workflow app-a's workers do not have
    // (DBOS's worker claims any name, but not another application's), and work of a version
    // nobody runs. Proven by work enqueued after them on the same queue finishing on
    // both Mainstay applications (claims go oldest first).
    let orphan = enqueue(&ca, "nobody_has_this", json!(1), None).await;
    let old = enqueue(&ca, "shared_task", json!(1), Some("a-v0")).await;
    let later = vec![enqueue(&ca, "shared_task", json!(2), None).await, enqueue(&cb, "shared_task", json!(3), None).await];
    finished(&url, &later).await;
    assert_eq!(row(&url, &orphan).await.0, "ENQUEUED");
    assert_eq!(row(&url, &old).await.0, "ENQUEUED");

    // A second version of app-a launched later becomes app-a's latest: it takes app-a's
    // version-less work; app-b, launched before it, is not starved by it.
    let a2 = launch_app(&url, "app-a", "a-v2", "a-v2-exec").await;
    assert_eq!(ca.latest_version().await.unwrap().as_deref(), Some("a-v2"));
    assert_eq!(cb.latest_version().await.unwrap().as_deref(), Some("b-v1"));
    let ids = vec![enqueue(&ca, "shared_task", json!(4), None).await, enqueue(&cb, "shared_task", json!(5), None).await];
    let rows = finished(&url, &ids).await;
    assert_eq!(rows[0].1.as_deref(), Some("a-v2-exec"));
    assert_eq!(rows[1].1.as_deref(), Some("b-v1-exec"));

    // A rollback: making a-v1 the latest again sends it app-a's version-less work at once,
    // while a-v2 still runs.
    ca.set_latest_version("a-v1").await.expect("make a-v1 the latest");
    assert_eq!(ca.latest_version().await.unwrap().as_deref(), Some("a-v1"));
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in 0..5 {
            v.push(enqueue(&ca, "shared_task", json!(n), None).await);
        }
        v
    };
    for r in finished(&url, &ids).await {
        assert_eq!((r.1.as_deref(), r.3.as_deref()), (Some("a-v1-exec"), Some("a-v1")));
    }

    // Another application may not take a version name app-a owns.
    let taken = Mainstay::builder(app_config(&url, "app-c", "a-v1", "c-exec")).global(false).launch().await;
    match taken {
        Err(e @ Error::VersionConflict { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("a-v1") && msg.contains("app-a") && msg.contains("app-c"), "{msg}");
        }
        Err(e) => panic!("expected a version conflict, got {e}"),
        Ok(_) => panic!("app-c launched with app-a's version"),
    }

    // A schedule of app-b fires on app-b's workers only (both applications have the workflow).
    cb.create_schedule(&mainstay::Schedule::new("b-every-second", "shared_tick", "* * * * * *")).await.expect("create a schedule");
    let ticks = wait_for("three ticks of app-b's schedule", Duration::from_secs(30), || async {
        let mut c = connect(&url).await;
        let rows: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT status, executor_id, application_name FROM dbos.workflow_status WHERE schedule_name = 'b-every-second'")
                .fetch_all(&mut c)
                .await
                .unwrap();
        (rows.iter().filter(|r| r.0 == "SUCCESS").count() >= 3).then_some(rows)
    })
    .await;
    cb.pause_schedule("b-every-second").await.unwrap();
    for t in ticks.iter().filter(|r| r.0 == "SUCCESS") {
        assert_eq!((t.1.as_deref(), t.2.as_deref()), (Some("b-v1-exec"), Some("app-b")), "{ticks:?}");
    }

    // Retention of one application deletes only its own finished workflows.
    let before_b: i64 = count(&url, "application_name = 'app-b' AND status = 'SUCCESS'").await;
    let deleted = ca.delete_finished(None, Some(0)).await.expect("retention");
    assert!(deleted >= 25, "deleted {deleted}");
    assert_eq!(count(&url, "application_name = 'app-a' AND status = 'SUCCESS'").await, 0);
    assert!(count(&url, "application_name = 'app-b' AND status = 'SUCCESS'").await >= before_b);
    assert!(count(&url, "application_name = 'py-app' AND status = 'SUCCESS'").await >= 2);

    // Figures of one application leave the others' out, also work of no application pinned
    // to another application's version (a DBOS client without a name enqueues so).
    let options = WorkflowOptions::new().app_version("py-v1").delay(Duration::from_secs(3600));
    anyone.enqueue("py_task", QUEUE, vec![json!("later")], options).await.expect("enqueue for later");
    let of_py = cpy.outstanding_by_version().await.unwrap();
    assert!(of_py.iter().any(|w| w.app_version.as_deref() == Some("py-v1") && w.delayed == 1), "{of_py:?}");
    let of_a = ca.outstanding_by_version().await.unwrap();
    assert!(of_a.iter().all(|w| w.app_version.as_deref() != Some("py-v1")), "{of_a:?}");
    let outstanding = cb.outstanding_by_version().await.unwrap();
    assert!(outstanding.iter().all(|w| w.app_version.as_deref() != Some("a-v0")), "{outstanding:?}");
    let outstanding = ca.outstanding_by_version().await.unwrap();
    assert!(outstanding.iter().any(|w| w.app_version.as_deref() == Some("a-v0") && w.enqueued == 1), "{outstanding:?}");

    for app in [a1, a2, b1] {
        app.shutdown().await;
    }
    let _ = py.start_kill();
    let _ = py.wait().await;
    assert_eq!(row(&url, &orphan).await.0, "ENQUEUED", "work nobody could run was never failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_at_launch_takes_only_its_own_applications_work() {
    init_tracing();
    let url = fresh_database("shared_recovery").await;
    // Both applications' processes call themselves "local", as unconfigured processes do.
    let b = launch_app(&url, "app-b", "b-v1", "local").await;
    b.shutdown().await;
    let mut c = connect(&url).await;
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, name, status, executor_id, application_version, application_name, owner_xid)
         VALUES ('b-running', 'shared_task', 'PENDING', 'local', 'b-v1', 'app-b', 'someone')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dbos.workflow_input (workflow_uuid, inputs) VALUES ('b-running', '{\"positionalArgs\":[7],\"namedArgs\":{}}')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let a = launch_app(&url, "app-a", "b-v1-for-a", "local").await;
    assert_eq!(row(&url, "b-running").await.0, "PENDING", "app-a recovered app-b's workflow");
    a.shutdown().await;
    // app-b's own restart does recover it.
    let b = launch_app(&url, "app-b", "b-v1", "local").await;
    let r = finished(&url, &["b-running".to_string()]).await;
    assert_eq!(r[0], ("SUCCESS".into(), Some("local".into()), Some("app-b".into()), Some("b-v1".into())));
    b.shutdown().await;
}

async fn count(url: &str, predicate: &str) -> i64 {
    let mut c = connect(url).await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM dbos.workflow_status WHERE {predicate}")))
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// One query for every application ([`Client::unfinished_work`]) divides the work exactly as
/// the per-application queries do, over every kind of row a shared database holds: each
/// application's own, rows of no application with no version, with a version an application
/// owns and with one nobody owns; every status; queues and executors or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reading_of_unfinished_work_agrees_with_the_per_application_queries() {
    init_tracing();
    let url = fresh_database("shared_unfinished").await;
    let all = client_of(&url, None).await;
    all.migrate().await.unwrap();
    client_of(&url, Some("app-a")).await.reserve_version("a-v1").await.unwrap();
    client_of(&url, Some("app-b")).await.reserve_version("b-v1").await.unwrap();
    let mut c = connect(&url).await;
    let (mut n, apps, versions) = (0, [Some("app-a"), Some("app-b"), None], [Some("a-v1"), Some("b-v1"), Some("orphan"), None]);
    for app in apps {
        for version in versions {
            for status in ["PENDING", "ENQUEUED", "DELAYED", "SUCCESS"] {
                for (queue, executor, name) in [(Some("q1"), Some("e1"), "f"), (Some("q2"), None, "typo"), (None, Some("e2"), "f")] {
                    n += 1;
                    sqlx::query(
                        "INSERT INTO dbos.workflow_status (workflow_uuid, name, status, executor_id, application_version, application_name, queue_name)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(format!("w{n}"))
                    .bind(name)
                    .bind(status)
                    .bind(executor)
                    .bind(version)
                    .bind(app)
                    .bind(queue)
                    .execute(&mut c)
                    .await
                    .unwrap();
                }
            }
        }
    }
    // A queue holding only delayed work has no depth.
    sqlx::query("INSERT INTO dbos.workflow_status (workflow_uuid, name, status, application_name, queue_name) VALUES ('later', 'f', 'DELAYED', 'app-a', 'q3')")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("INSERT INTO dbos.mainstay_registered_workflows (application_name, application_version, workflow_name) VALUES ('app-a', 'a-v1', 'f')")
        .execute(&mut c)
        .await
        .unwrap();
    let work = all.unfinished_work().await.unwrap();
    assert!(work.groups.iter().map(|g| g.count).sum::<i64>() == n / 4 * 3 + 1, "every unfinished row is counted once");
    assert!(work.queue_depths(Some("app-a")).iter().all(|d| d.queue != "q3"), "{:?}", work.queue_depths(Some("app-a")));
    for app in [Some("app-a"), Some("app-b"), Some("app-c"), None] {
        let client = client_of(&url, app).await;
        let mut executors = client.pending_by_executor().await.unwrap();
        executors.sort_by(|a, b| (&a.executor_id, &a.app_version).cmp(&(&b.executor_id, &b.app_version)));
        assert_eq!(work.pending_by_executor(app), executors, "pending by executor of {app:?}");
        let mut versions = client.outstanding_by_version().await.unwrap();
        versions.sort_by(|a, b| a.app_version.cmp(&b.app_version));
        assert_eq!(work.outstanding_by_version(app), versions, "outstanding by version of {app:?}");
        let mut depths = client.queue_depths().await.unwrap();
        depths.sort_by(|a, b| a.queue.cmp(&b.queue));
        assert_eq!(work.queue_depths(app), depths, "queue depths of {app:?}");
        for version in ["a-v1", "b-v1"] {
            let registered = client.registered_workflows(version).await.unwrap();
            assert_eq!(
                work.unrunnable(app, version, &registered),
                client.unrunnable(version).await.unwrap(),
                "unrunnable for {app:?} {version}"
            );
        }
    }
    assert!(!work
        .unrunnable(Some("app-a"), "a-v1", &client_of(&url, Some("app-a")).await.registered_workflows("a-v1").await.unwrap())
        .is_empty());

    // Registrations: a digest per application version that moves when what it registered does.
    let marks = all.registration_marks().await.unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!((marks[0].application_name.as_str(), marks[0].app_version.as_str()), ("app-a", "a-v1"));
    sqlx::query("UPDATE dbos.mainstay_registered_workflows SET arguments = '[\"i64\"]'").execute(&mut c).await.unwrap();
    assert_ne!(all.registration_marks().await.unwrap()[0].digest, marks[0].digest);

    // Progress: one reading for many workflows; a new step changes it.
    let ids: Vec<String> = vec!["w1".into(), "w2".into(), "missing".into()];
    let before = all.progress(&ids).await.unwrap();
    assert_eq!(before.iter().map(|p| p.workflow_id.as_str()).collect::<std::collections::BTreeSet<_>>(), ["w1", "w2"].into());
    sqlx::query("INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name) VALUES ('w1', 0, 'step')")
        .execute(&mut c)
        .await
        .unwrap();
    let after = all.progress(&ids).await.unwrap();
    let of = |v: &[mainstay::Progress], id: &str| v.iter().find(|p| p.workflow_id == id).cloned().unwrap();
    assert_eq!(of(&after, "w1").steps, of(&before, "w1").steps + 1);
    assert_eq!(of(&after, "w2"), of(&before, "w2"));
}
