//! Interoperability with the real DBOS Transact 3.4.0 Python client (`DBOSClient`, from PyPI):
//! it reads Mainstay's workflows, results, errors and steps, and drives Mainstay workflows
//! (enqueue, cancel) through the shared system database, and exchanges messages, events and
//! stream values with them. Schedules the DBOS client creates run on Mainstay with their
//! context, as `(scheduled_at, context)`, when it is portable JSON, and never when it is a pickle.
//!
//! Needs `MAINSTAY_DBOS_PYTHON` (a Python with `dbos==3.4.0`); `.ci/run` provides it.

mod common;

use std::time::Duration;

use common::*;
use mainstay::chrono::{DateTime, Utc};
use mainstay::{Client, Error, Failure, Schedule, Status, WorkflowFilter};
use serde_json::{json, Value};

const CLIENT: &str = r#"
import json, sys
from dbos import DBOSClient
from dbos._serialization import DBOSPortableJSON, WorkflowSerializationFormat
url, command, arg = sys.argv[1], sys.argv[2], sys.argv[3]
c = DBOSClient(system_database_url=url)
out = {}
if command == "inspect":
    h = c.retrieve_workflow(arg)
    s = h.get_status()
    out["status"], out["name"] = s.status, s.name
    try:
        out["result"] = h.get_result()
    except Exception as e:
        out["error"] = {"type": type(e).__name__, "message": str(e),
                        "code": getattr(e, "code", None), "data": getattr(e, "data", None)}
    out["steps"] = [[st["function_id"], st["function_name"], st["output"]] for st in c.list_workflow_steps(arg)]
elif command == "enqueue":
    h = c.enqueue({"workflow_name": "interop_steps", "queue_name": "_dbos_internal_queue",
                   "workflow_id": arg, "app_version": "test-v1",
                   "serialization_type": WorkflowSerializationFormat.PORTABLE}, 20)
    out["result"] = h.get_result()
elif command == "messaging":
    out["stage"] = c.get_event(arg, "stage", 30)
    c.send(arg, "from-python", "go", serialization_type=WorkflowSerializationFormat.PORTABLE)
    out["values"] = list(c.read_stream(arg, "numbers", timeout_seconds=30))
    out["result"] = c.retrieve_workflow(arg).get_result()
elif command == "cancel":
    c.cancel_workflow(arg)
    out["cancelled"] = True
elif command in ("create_schedule", "create_pickled_schedule"):
    if command == "create_schedule":
        c = DBOSClient(system_database_url=url, serializer=DBOSPortableJSON)
    c.create_schedule(schedule_name=arg, workflow_name="interop_report", schedule="* * * * * *",
                      context={"region": "eu", "n": [1, 2]})
    out["created"] = True
elif command == "read_schedule":
    c = DBOSClient(system_database_url=url, serializer=DBOSPortableJSON)
    out["context"] = c.get_schedule(arg)["context"]
c.destroy() if hasattr(c, "destroy") else None
print("RESULT " + json.dumps(out))
"#;

fn python() -> Option<String> {
    match std::env::var("MAINSTAY_DBOS_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "MAINSTAY_DBOS_PYTHON is not set: create a venv with `python3 -m venv DIR && \
             DIR/bin/pip install dbos==3.4.0` and set MAINSTAY_DBOS_PYTHON=DIR/bin/python"
        ),
        Err(_) => {
            eprintln!("NOTICE: skipping the DBOS client interop test (MAINSTAY_DBOS_PYTHON unset)");
            None
        }
    }
}

async fn client(python: &str, url: &str, command: &str, arg: &str) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python).args(["-c", CLIENT, &url.replacen("postgres://", "postgresql://", 1), command, arg]).output(),
    )
    .await
    .expect("the DBOS client finished within 120 s")
    .expect("run the DBOS client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "DBOS client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    serde_json::from_str(line).unwrap()
}

#[mainstay::step]
async fn interop_add(x: i64) -> mainstay::Result<i64> {
    Ok(x + 1)
}

#[mainstay::workflow]
async fn interop_steps(x: i64) -> mainstay::Result<i64> {
    let a = interop_add(x).await?;
    Ok(a * 2)
}

#[mainstay::workflow]
async fn interop_fails() -> mainstay::Result<()> {
    Err(Failure::new("PaymentDeclined", "card declined").with_code(402).with_data(json!({"amount": 12})).into())
}

#[mainstay::workflow]
async fn interop_sleeps() -> mainstay::Result<()> {
    mainstay::sleep(Duration::from_secs(30)).await?;
    interop_add(1).await?;
    Ok(())
}

#[mainstay::workflow]
async fn interop_talks() -> mainstay::Result<String> {
    mainstay::set_event("stage", "ready").await?;
    mainstay::write_stream("numbers", &1).await?;
    mainstay::write_stream("numbers", &2).await?;
    let got: Option<String> = mainstay::recv(Some("go"), Duration::from_secs(60)).await?;
    let got = got.unwrap_or_default();
    mainstay::write_stream("numbers", &got).await?;
    mainstay::close_stream("numbers").await?;
    Ok(got)
}

/// The scheduled workflow of the schedules DBOS's client creates: the tick as in tick IDs, and
/// the context.
#[mainstay::workflow]
async fn interop_report(scheduled_at: DateTime<Utc>, context: Value) -> mainstay::Result<(String, Value)> {
    Ok((mainstay::format_tick(scheduled_at), context))
}

#[tokio::test]
async fn schedules_of_the_dbos_python_client_run_with_their_context_unless_pickled() {
    let Some(python) = python() else { return };
    let url = fresh_database("dbos_interop_sched").await;
    let app = launch(&url, "interop-sched").await;
    let rs = Client::connect(&url).await.unwrap();
    rs.create_schedule(&Schedule::new("rs-yearly", "interop_report", "0 0 1 1 *").context(json!({"from": "rust"}))).await.unwrap();
    assert_eq!(client(&python, &url, "read_schedule", "rs-yearly").await["context"], json!({"from": "rust"}));
    client(&python, &url, "create_pickled_schedule", "py-pickled").await;
    client(&python, &url, "create_schedule", "py-portable").await;

    let runs = |name: &'static str| {
        let rs = &rs;
        async move {
            let filter = WorkflowFilter::new().schedule_name(name);
            rs.list_workflows(&filter).await.unwrap()
        }
    };
    let done = wait_for("two runs of the portable schedule", Duration::from_secs(30), || async {
        let r: Vec<_> = runs("py-portable").await.into_iter().filter(|s| s.status == Status::Success).collect();
        (r.len() >= 2).then_some(r)
    })
    .await;
    for run in done {
        let (tick, context): (String, Value) = rs.get_result(&run.workflow_id).await.unwrap();
        assert_eq!(format!("sched-py-portable-{tick}"), run.workflow_id);
        assert_eq!(context, json!({"region": "eu", "n": [1, 2]}));
    }
    // Both schedules fire every second: the portable one's runs prove the pickled one was seen.
    let pickled = rs.get_schedule("py-pickled").await.unwrap().unwrap();
    assert!(pickled.unreadable_context.as_deref().is_some_and(|c| c.starts_with("gA")), "{pickled:?}");
    assert!(runs("py-pickled").await.is_empty(), "a pickled context was fired");
    let e = rs.trigger_schedule("py-pickled").await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedSerialization { ref format, .. } if format == "py_pickle"), "{e}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_dbos_python_client_exchanges_messages_events_and_streams_with_mainstay() {
    let Some(python) = python() else { return };
    let url = fresh_database("dbos_interop_msg").await;
    let app = launch(&url, "interop-msg").await;
    app.start(interop_talks().id("talks-1")).await.unwrap();
    let seen = client(&python, &url, "messaging", "talks-1").await;
    assert_eq!(seen["stage"], "ready");
    assert_eq!(seen["values"], json!([1, 2, "from-python"]));
    assert_eq!(seen["result"], "from-python");
    app.shutdown().await;
}

#[tokio::test]
async fn the_dbos_python_client_reads_and_drives_mainstay_workflows() {
    let Some(python) = python() else { return };
    let url = fresh_database("dbos_interop").await;
    let app = launch(&url, "interop").await;

    app.run(interop_steps(4).id("ok-1")).await.unwrap();
    let seen = client(&python, &url, "inspect", "ok-1").await;
    assert_eq!(seen["status"], "SUCCESS");
    assert_eq!(seen["name"], "interop_steps");
    assert_eq!(seen["result"], 10);
    assert_eq!(seen["steps"], json!([[1, "interop_add", 5]]));

    app.run(interop_fails().id("err-1")).await.unwrap_err();
    let seen = client(&python, &url, "inspect", "err-1").await;
    assert_eq!(seen["status"], "ERROR");
    assert_eq!(seen["error"]["message"], "card declined");
    assert_eq!(seen["error"]["code"], 402);
    assert_eq!(seen["error"]["data"], json!({"amount": 12}));

    // Enqueued by DBOS's client, run by Mainstay, result read back by the client.
    let seen = client(&python, &url, "enqueue", "from-python").await;
    assert_eq!(seen["result"], 42);
    let status = app.status("from-python").await.unwrap().unwrap();
    assert_eq!(status.executor_id.as_deref(), Some("interop"));

    // Cancelled by DBOS's client while Mainstay sleeps: the workflow stops at its next step.
    let handle = app.start(interop_sleeps().id("sleepy-1")).await.unwrap();
    wait_for("the sleep to start", Duration::from_secs(10), || async {
        let mut c = connect(&url).await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'sleepy-1'")
            .fetch_one(&mut c)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    client(&python, &url, "cancel", "sleepy-1").await;
    let err = tokio::time::timeout(Duration::from_secs(20), handle.get_result()).await;
    // DBOS's cancel does not notify; the handle sees the CANCELLED status when it polls.
    let err = err.expect("the cancellation is observed well before the 30 s sleep ends").unwrap_err();
    assert!(matches!(err, mainstay::Error::Cancelled { .. }), "{err:?}");
    assert_eq!(app.status("sleepy-1").await.unwrap().unwrap().status, Status::Cancelled);
    app.shutdown().await;
}
