//! The toolbox as the README walks through it, against a real Postgres: `toolbox migrate`
//! (what `mainstay migrate` runs) twice, then the server: `/transaction` counts up, `/workflow`
//! completes, the every-minute schedule is declared and runs when triggered, and `/queue`
//! survives a SIGKILL of the server mid-way, finishing after a restart with every task run once.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use mainstay_testkit::{connect, fresh_database, kill_child, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server's stdout, line by line, across its restarts.
type Output = Arc<Mutex<Vec<String>>>;

fn toolbox(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolbox"));
    cmd.env("MAINSTAY_DATABASE_URL", url)
        .env("PORT", "0")
        .env_remove("DATABASE_URL")
        .env_remove("MAINSTAY_APP_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Starts the server on a port of its choosing and returns it with that port.
async fn serve(url: &str, output: &Output) -> (Child, u16) {
    let mut child = toolbox(url).stdout(Stdio::piped()).spawn().expect("start the toolbox server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sink = output.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let port = wait_for("the server's port", Duration::from_secs(60), || {
        let port = output
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("Listening on http://localhost:")?.trim_end_matches('/').parse::<u16>().ok());
        async move { port }
    })
    .await;
    (child, port)
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = http.get(format!("http://127.0.0.1:{port}{path}").parse().unwrap()).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get_ok(port: u16, path: &str) -> String {
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), get(port, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} answered within 60 s"))
        .unwrap_or_else(|| panic!("GET {path} reached the server"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn wait_until_serving(port: u16) {
    wait_for("the toolbox server to answer", Duration::from_secs(60), || async move {
        get(port, "/").await.filter(|(status, body)| *status == 200 && body.contains("/transaction"))
    })
    .await;
}

async fn count_where(url: &str, name: &str, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status WHERE name = $1 AND status = $2")
        .bind(name)
        .bind(status)
        .fetch_one(&mut connect(url).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_walk_through_works_and_survives_a_crash() {
    let url = fresh_database("toolbox").await;
    for _ in 0..2 {
        let status = toolbox(&url).arg("migrate").stdout(Stdio::null()).status().await.unwrap();
        assert!(status.success(), "toolbox migrate failed (run twice: it must be idempotent)");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM example_table").fetch_one(&mut connect(&url).await).await.unwrap();
    assert_eq!(rows, 0, "the migration created the example table");

    let output = Output::default();
    let (server, port) = serve(&url, &output).await;
    wait_until_serving(port).await;

    assert_eq!(get_ok(port, "/transaction").await.trim(), "Row count: 1");
    assert_eq!(get_ok(port, "/transaction").await.trim(), "Row count: 2");
    assert_eq!(get_ok(port, "/workflow").await.trim(), "Workflow completed");

    let client = mainstay::Client::connect(&url).await.unwrap();
    // Named `{app}.{workflow}`: the toolbox's application name is `toolbox`.
    let schedule = client.get_schedule("toolbox.run_every_minute").await.unwrap().expect("the schedule was declared at launch");
    assert_eq!(schedule.cron, "* * * * *");
    let tick = client.trigger_schedule("toolbox.run_every_minute").await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), client.get_result::<()>(&tick))
        .await
        .expect("the triggered tick ran within 60 s")
        .expect("the scheduled workflow succeeded");
    wait_for("the scheduled workflow's line", Duration::from_secs(10), || {
        let found = output.lock().unwrap().iter().any(|l| l.starts_with("I am a scheduled workflow"));
        async move { found.then_some(()) }
    })
    .await;

    // /queue, with the server SIGKILLed while the ten tasks run (each takes five seconds).
    let request = tokio::spawn(get(port, "/queue"));
    wait_for("ten queue tasks running", Duration::from_secs(60), || {
        let url = url.clone();
        async move { (count_where(&url, "queue_task", "PENDING").await == 10).then_some(()) }
    })
    .await;
    kill_child(server).await;
    let _ = request.await;
    assert_eq!(count_where(&url, "queue_workflow", "PENDING").await, 1, "the killed workflow waits for recovery");

    // The restart's "Listening on" line comes after the first run's: clear them to read its port.
    output.lock().unwrap().retain(|l| !l.starts_with("Listening on"));
    let (server, _) = serve(&url, &output).await;
    let id: String = sqlx::query_scalar("SELECT workflow_uuid FROM dbos.workflow_status WHERE name = 'queue_workflow'")
        .fetch_one(&mut connect(&url).await)
        .await
        .unwrap();
    let done: Vec<u32> = tokio::time::timeout(Duration::from_secs(90), client.get_result(&id))
        .await
        .expect("the recovered queue workflow finished within 90 s")
        .unwrap();
    assert_eq!(done, (0..10).collect::<Vec<u32>>());
    // The server prints each task's line before its outcome commits; wait until the reader
    // has them all before counting.
    wait_for("ten task lines on the server's stdout", Duration::from_secs(10), || {
        let n = output.lock().unwrap().iter().filter(|l| l.starts_with("Task ")).count();
        async move { (n >= 10).then_some(()) }
    })
    .await;
    let lines = output.lock().unwrap().clone();
    for i in 0..10 {
        let runs = lines.iter().filter(|l| **l == format!("Task {i} completed!")).count();
        assert_eq!(runs, 1, "task {i} completed {runs} times:\n{}", lines.join("\n"));
    }
    assert_eq!(lines.iter().filter(|l| *l == "Step one completed!").count(), 1, "step one ran once");

    let pid = server.id().unwrap().to_string();
    let mut server = server;
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the server stops cleanly on SIGTERM: {status}");
    client.close().await;
}
