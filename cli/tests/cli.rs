//! The `mainstay` binary against a real Postgres: project files, migrate with the project's
//! commands, workflow/queue/schedule commands in tables and JSON, init, and clear errors.

use std::path::Path;
use std::process::Output;

use mainstay::{Client, Schedule, WorkflowOptions};
use serde_json::Value;

use mainstay_testkit::fresh_database;

fn mainstay(dir: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mainstay"));
    cmd.args(args).current_dir(dir).env_remove("MAINSTAY_DATABASE_URL").env_remove("DATABASE_URL");
    if let Some(url) = url {
        cmd.env("MAINSTAY_DATABASE_URL", url);
    }
    cmd.output().expect("run mainstay")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "mainstay failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

#[tokio::test]
async fn migrate_runs_the_project_commands_and_workflows_are_operated_from_the_cli() {
    let url = fresh_database("cli_ops").await;
    let dir = tempdir("ops");
    std::fs::write(
        dir.join("mainstay.yaml"),
        "name: ops\ndatabase_url: ${TEST_CLI_URL}\nmigrate:\n  - echo \"$DATABASE_URL\" > migrated.txt\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mainstay"));
    let out = cmd
        .arg("migrate")
        .current_dir(&dir)
        .env_remove("MAINSTAY_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("TEST_CLI_URL", &url)
        .output()
        .unwrap();
    assert!(ok(&out).contains("DBOS migration 125"));
    assert_eq!(std::fs::read_to_string(dir.join("migrated.txt")).unwrap().trim(), url, "the migrate command got the database");

    let client = Client::connect(&url).await.unwrap();
    for id in ["w-1", "w-2"] {
        let opts = WorkflowOptions::new().id(id);
        client.enqueue("demo", "jobs", vec![serde_json::json!(1)], opts).await.unwrap();
    }
    let here = Path::new(".");
    let list = json(&mainstay(here, Some(&url), &["workflow", "list", "--json", "--status", "enqueued"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = ok(&mainstay(here, Some(&url), &["workflow", "list", "--queue", "jobs"]));
    assert!(table.contains("ID") && table.contains("w-1") && table.contains("ENQUEUED"), "{table}");
    let got = json(&mainstay(here, Some(&url), &["workflow", "get", "w-1", "--json"]));
    assert_eq!(got["name"], "demo");
    ok(&mainstay(here, Some(&url), &["workflow", "cancel", "w-1"]));
    assert_eq!(json(&mainstay(here, Some(&url), &["workflow", "get", "w-1", "--json"]))["status"], "CANCELLED");
    ok(&mainstay(here, Some(&url), &["workflow", "resume", "w-1"]));
    assert_eq!(json(&mainstay(here, Some(&url), &["workflow", "get", "w-1", "--json"]))["status"], "ENQUEUED");
    let forked = json(&mainstay(here, Some(&url), &["workflow", "fork", "w-2", "--new-id", "w-3", "--json"]));
    assert_eq!(forked["workflow_id"], "w-3");
    assert_eq!(json(&mainstay(here, Some(&url), &["workflow", "steps", "w-3", "--json"])), serde_json::json!([]));
    let queues = ok(&mainstay(here, Some(&url), &["queue", "list"]));
    assert!(queues.contains("jobs"), "{queues}");
    ok(&mainstay(here, Some(&url), &["workflow", "cancel", "w-2"]));
    assert!(fails(&mainstay(here, Some(&url), &["workflow", "prune"])).contains("--older-than"));
    assert!(fails(&mainstay(here, Some(&url), &["workflow", "prune", "--older-than", "soon"])).contains("soon"));
    let pruned = json(&mainstay(here, Some(&url), &["workflow", "prune", "--older-than", "0s", "--keep", "0", "--json"]));
    assert_eq!(pruned["deleted"], 1, "only the cancelled w-2 is finished");
    assert!(fails(&mainstay(here, Some(&url), &["workflow", "get", "w-2"])).contains("no workflow with ID w-2"));
    let deleted = json(&mainstay(here, Some(&url), &["workflow", "delete", "w-3", "--json"]));
    assert_eq!(deleted["deleted"], serde_json::json!(["w-3"]));
    assert_eq!(json(&mainstay(here, Some(&url), &["workflow", "list", "--json"])).as_array().unwrap().len(), 1, "w-1 is left");

    client.create_schedule(&Schedule::new("nightly", "demo", "0 3 * * *").time_zone("Europe/Paris")).await.unwrap();
    let schedules = ok(&mainstay(here, Some(&url), &["schedule", "list"]));
    assert!(schedules.contains("nightly") && schedules.contains("Europe/Paris") && schedules.contains("ACTIVE"), "{schedules}");
    ok(&mainstay(here, Some(&url), &["schedule", "pause", "nightly"]));
    assert_eq!(json(&mainstay(here, Some(&url), &["schedule", "list", "--json"]))[0]["status"], "PAUSED");
    ok(&mainstay(here, Some(&url), &["schedule", "resume", "nightly"]));
    let triggered = json(&mainstay(here, Some(&url), &["schedule", "trigger", "nightly", "--json"]));
    assert!(triggered["workflow_id"].as_str().unwrap().starts_with("sched-nightly-"));
    ok(&mainstay(
        here,
        Some(&url),
        &["schedule", "create", "hourly", "demo", "0 * * * *", "--time-zone", "Asia/Tokyo", "--paused", "--context", r#"{"region": "eu"}"#],
    ));
    let hourly = client.get_schedule("hourly").await.unwrap().expect("created by the CLI");
    assert_eq!((hourly.cron.as_str(), hourly.time_zone.as_deref()), ("0 * * * *", Some("Asia/Tokyo")));
    assert_eq!(hourly.status, mainstay::ScheduleStatus::Paused);
    assert_eq!(hourly.context, serde_json::json!({"region": "eu"}));
    assert!(fails(&mainstay(here, Some(&url), &["schedule", "create", "ctx", "demo", "0 * * * *", "--context", "{region"]))
        .contains("--context"));
    let backfilled = json(&mainstay(
        here,
        Some(&url),
        &["schedule", "backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T03:00:00Z", "--json"],
    ));
    assert_eq!(backfilled["workflow_ids"].as_array().unwrap().len(), 3, "ticks 00:00, 01:00, 02:00: {backfilled}");
    assert!(fails(&mainstay(here, Some(&url), &["schedule", "create", "hourly", "demo", "0 * * * *"])).contains("exists"));
    assert!(fails(&mainstay(here, Some(&url), &["schedule", "create", "bad", "demo", "61 * * * *"])).contains("schedule bad"));
    assert!(fails(&mainstay(here, Some(&url), &["schedule", "backfill", "hourly", "--from", "yesterday", "--to", "2026-01-01T03:00:00Z"]))
        .contains("RFC 3339"));
    ok(&mainstay(here, Some(&url), &["schedule", "delete", "hourly"]));
    assert!(client.get_schedule("hourly").await.unwrap().is_none(), "deleted by the CLI");

    // Errors say what is wrong and how to fix it.
    assert!(fails(&mainstay(here, Some(&url), &["workflow", "get", "nope"])).contains("no workflow with ID nope"));
    assert!(fails(&mainstay(here, Some(&url), &["schedule", "pause", "nope"])).contains("no schedule named nope"));
    assert!(fails(&mainstay(here, Some(&url), &["workflow", "list", "--status", "DONE"])).contains("is not a status"));
    assert!(fails(&mainstay(here, Some(&url), &["reset"])).contains("--yes"));
    let empty = tempdir("nourl");
    assert!(fails(&mainstay(&empty, None, &["workflow", "list"])).contains("no database URL"));
    assert!(fails(&mainstay(&empty, None, &["start"])).contains("mainstay init"));
    std::fs::write(empty.join("mainstay.yaml"), "name: x\ndatabase_url: ${NOT_SET_ANYWHERE}\n").unwrap();
    let err = fails(&mainstay(&empty, None, &["workflow", "list"]));
    assert!(err.contains("database_url: environment variable NOT_SET_ANYWHERE is not set"), "{err}");

    ok(&mainstay(here, Some(&url), &["reset", "--yes"]));
    assert!(client.list_workflows(&Default::default()).await.is_err(), "the schema is gone");
}

#[test]
fn init_scaffolds_an_application_with_a_project_file() {
    let dir = tempdir("init").join("shop");
    let out = mainstay(Path::new("."), None, &["init", dir.to_str().unwrap()]);
    assert!(ok(&out).contains("mainstay migrate"));
    for file in ["Cargo.toml", "mainstay.yaml", "src/main.rs", "migrations/0001_greetings.sql"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let yaml = std::fs::read_to_string(dir.join("mainstay.yaml")).unwrap();
    assert!(yaml.contains("name: shop"));
    assert!(fails(&mainstay(Path::new("."), None, &["init", dir.to_str().unwrap()])).contains("not empty"));
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mainstay-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[mainstay::workflow]
async fn cli_add(a: i64, b: i64) -> mainstay::Result<i64> {
    Ok(a + b)
}

#[mainstay::workflow]
async fn cli_fails(why: String) -> mainstay::Result<()> {
    Err(mainstay::Failure::new("Refused", why).into())
}

#[mainstay::workflow]
async fn cli_approval() -> mainstay::Result<String> {
    let answer: Option<String> = mainstay::recv(Some("approval"), std::time::Duration::from_secs(60)).await?;
    Ok(answer.unwrap_or_else(|| "timed out".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_started_and_signalled_from_the_cli() {
    let url = fresh_database("cli_start").await;
    // A worker in this process runs what the CLI starts.
    let mut config = mainstay::Config::new(&url);
    config.app_version = Some("cli-v1".into());
    config.polling_interval = std::time::Duration::from_millis(200);
    let app = mainstay::Mainstay::builder(config).global(false).launch().await.expect("launch a worker");
    let dir = tempdir("start");
    let u = Some(url.as_str());

    // Positional arguments as a JSON array, waited for, with the output.
    let out = json(&mainstay(&dir, u, &["workflow", "start", "cli_add", "--input", "[2, 40]", "--wait", "--json"]));
    assert_eq!((out["status"].as_str(), out["output"].as_i64()), (Some("SUCCESS"), Some(42)), "{out}");
    // An ID is an idempotency key: starting it again starts nothing new.
    for _ in 0..2 {
        let out = json(&mainstay(&dir, u, &["workflow", "start", "cli_add", "--input", "[1, 1]", "--id", "add-once", "--wait", "--json"]));
        assert_eq!(out["workflow_id"], "add-once");
    }
    let client = Client::connect(&url).await.unwrap();
    let runs = client.list_workflows(&mainstay::WorkflowFilter::new().id_prefix("add-once")).await.unwrap();
    assert_eq!(runs.len(), 1);
    // A single argument needs no array; a failure is shown and exits 1.
    let failed = mainstay(&dir, u, &["workflow", "start", "cli_fails", "--input", "\"no stock\"", "--wait"]);
    assert!(!failed.status.success());
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(text.contains("failed: Refused: no stock"), "{text}");
    // Human in the loop: a waiting workflow gets a message from the CLI.
    let started = json(&mainstay(&dir, u, &["workflow", "start", "cli_approval", "--json"]));
    let id = started["workflow_id"].as_str().unwrap().to_string();
    ok(&mainstay(&dir, u, &["workflow", "send", &id, "approval", "\"yes\"", "--idempotency-key", "k1"]));
    ok(&mainstay(&dir, u, &["workflow", "send", &id, "approval", "\"yes\"", "--idempotency-key", "k1"]));
    let answer: String = tokio::time::timeout(std::time::Duration::from_secs(60), client.get_result(&id)).await.unwrap().unwrap();
    assert_eq!(answer, "yes");
    // Bad input is explained.
    let err = fails(&mainstay(&dir, u, &["workflow", "start", "cli_add", "--input", "[2,"]));
    assert!(err.contains("--input is not JSON"), "{err}");
    let err = fails(&mainstay(&dir, u, &["workflow", "send", &id, "approval", "yes"]));
    assert!(err.contains("not JSON"), "{err}");
    client.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn stuck_reports_stranded_work_and_slow_queues_of_an_application() {
    let url = fresh_database("cli_stuck").await;
    let dir = tempdir("stuck");
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    let shop = client.for_application(Some("shop"));
    shop.reserve_version("v1").await.unwrap();
    shop.set_latest_version("v1").await.unwrap();
    let opts = |id: &str| WorkflowOptions::new().id(id);
    shop.enqueue("charge", "payments", vec![], opts("s-retired").app_version("v0")).await.unwrap();
    shop.enqueue("charge", "payments", vec![], opts("s-ok")).await.unwrap();
    // Another application's stranded work is not shop's.
    client.for_application(Some("other")).enqueue("charge", "payments", vec![], opts("o-1").app_version("v9")).await.unwrap();

    let report = json(&mainstay(&dir, Some(&url), &["stuck", "--app", "shop", "--json"]));
    assert_eq!(report["running_versions"], serde_json::json!(["v1"]));
    let stranded = report["stranded"].as_array().unwrap();
    assert_eq!(stranded.len(), 1, "{report}");
    assert_eq!(stranded[0]["app_version"], "v0");
    assert_eq!(stranded[0]["reason"], "version_not_running");
    assert_eq!(report["slow_queues"], serde_json::json!([]), "under the default 5 minutes nothing is slow");
    assert_eq!((report["stalled_total"].as_i64(), report["parked_total"].as_i64()), (Some(0), Some(0)));

    // Both versions running, no patience: nothing stranded, the queue slow; as a table.
    let text = ok(&mainstay(
        &dir,
        Some(&url),
        &["stuck", "--app", "shop", "--queue-wait", "0s", "--running-version", "v0", "--running-version", "v1"],
    ));
    assert!(text.contains("Running versions: v0, v1"), "{text}");
    assert!(text.contains("Stalled: 0 workflow(s)"), "{text}");
    let slow = text.split("Slow queues").nth(1).unwrap_or_default();
    assert!(slow.lines().any(|l| l.split_whitespace().take(2).eq(["payments", "2"])), "{text}");
    let stranded = text.split("Stranded").nth(1).unwrap_or_default().split("Slow queues").next().unwrap_or_default();
    assert!(stranded.contains("(none)"), "{text}");

    // A threshold that is not a duration is refused with what to write.
    let err = fails(&mainstay(&dir, Some(&url), &["stuck", "--stalled-after", "soon"]));
    assert!(err.contains("--stalled-after"), "{err}");

    // A database never migrated: said once, with what to run.
    let bare = fresh_database("cli_stuck_bare").await;
    let err = fails(&mainstay(&dir, Some(&bare), &["stuck"]));
    assert!(err.contains("does not exist") && err.contains("mainstay migrate"), "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "the cause is said once: {err}");
}
