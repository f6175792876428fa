//! Logs that know their workflow: a process that installs `mainstay::init_logging` and runs a
//! workflow whose body, step and child workflow each log a line. Every line names its workflow
//! (and, inside a step, the step) with no such field in the logging call, as text and as JSON
//! (`MAINSTAY_LOG_FORMAT=json`); a child workflow's line names its own workflow inside its
//! parent's. An unknown format is refused with the variable's name.

mod common;

use std::time::Duration;

use common::*;

const URL_ENV: &str = "MAINSTAY_LOGS_TEST_URL";
const PARENT_ID: &str = "logged-parent-1";

#[mainstay::step]
async fn logged_step(n: u32) -> mainstay::Result<u32> {
    tracing::info!("inside the step");
    Ok(n + 1)
}

#[mainstay::workflow]
async fn logged_child(n: u32) -> mainstay::Result<u32> {
    tracing::info!("in the child");
    Ok(n * 2)
}

#[mainstay::workflow]
async fn logged_parent(n: u32) -> mainstay::Result<u32> {
    tracing::info!("in the workflow body");
    let m = logged_step(n).await?;
    logged_child(m).await
}

/// The child process's entry point; only runs when a test below launches it.
#[tokio::test]
#[ignore = "entry point of the child process started by the logging tests"]
async fn logging_child() {
    match mainstay::init_logging() {
        Ok(installed) => assert!(installed, "nothing else installs a subscriber in this process"),
        Err(e) => {
            println!("INIT FAILED: {e}");
            return;
        }
    }
    let url = std::env::var(URL_ENV).expect("run by the logging tests");
    let app = mainstay::Mainstay::launch(config(&url, "logs-executor")).await.expect("launch");
    let out = logged_parent(1).id(PARENT_ID).await.expect("the workflow succeeds");
    assert_eq!(out, 4);
    app.shutdown().await;
}

/// Runs the child with `MAINSTAY_LOG_FORMAT=format`; its stdout.
async fn run_child(url: &str, format: &str) -> String {
    let child = spawn_self("logging_child", &[(URL_ENV, url), ("MAINSTAY_LOG_FORMAT", format), ("RUST_LOG", "info")]);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the child finished within 60 s")
        .expect("the child ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the child failed:\n{stdout}");
    stdout
}

fn line_with<'a>(out: &'a str, message: &str) -> &'a str {
    out.lines().find(|l| l.contains(message)).unwrap_or_else(|| panic!("no line says {message:?}:\n{out}"))
}

#[tokio::test]
async fn text_lines_name_their_workflow_and_step() {
    let url = fresh_database("logs_text").await;
    let out = run_child(&url, "text").await;
    let body = line_with(&out, "in the workflow body");
    assert!(body.contains(&format!("workflow.id={PARENT_ID}")) && body.contains("workflow.name=logged_parent"), "{body}");
    let step = line_with(&out, "inside the step");
    assert!(step.contains(&format!("workflow.id={PARENT_ID}")) && step.contains("step.name=logged_step"), "{step}");
    assert!(step.contains("step.id=1"), "the step's ID: {step}");
    let child = line_with(&out, "in the child");
    assert!(child.contains(&format!("workflow.id={PARENT_ID}-2")), "the child's own ID: {child}");
    assert!(
        child.contains(&format!("workflow.id={PARENT_ID}")) && child.contains("child{"),
        "inside its parent's child operation: {child}"
    );
    assert!(!out.contains('\u{1b}'), "colour codes outside a terminal:\n{out}");
}

#[tokio::test]
async fn json_lines_carry_the_workflow_in_their_spans() {
    let url = fresh_database("logs_json").await;
    let out = run_child(&url, "json").await;
    let events: Vec<serde_json::Value> = out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let event = |message: &str| {
        events.iter().find(|e| e["message"] == message).unwrap_or_else(|| panic!("no event {message:?} in:\n{out}")).clone()
    };
    let step = event("inside the step");
    assert_eq!(step["spans"][0]["workflow.id"], PARENT_ID, "{step}");
    assert_eq!(step["spans"][0]["workflow.replay"], false, "{step}");
    assert_eq!(step["span"]["step.name"], "logged_step", "{step}");
    assert_eq!(step["span"]["name"], "step", "{step}");
    let child = event("in the child");
    let ids: Vec<&serde_json::Value> = child["spans"].as_array().unwrap().iter().filter_map(|s| s.get("workflow.id")).collect();
    assert_eq!(ids, [PARENT_ID, &format!("{PARENT_ID}-2")], "parent, then the child: {child}");
    assert_eq!(child["span"]["workflow.name"], "logged_child", "{child}");
}

#[tokio::test]
async fn an_unknown_log_format_is_refused() {
    let out = run_child("postgres://unused", "xml").await;
    let line = line_with(&out, "INIT FAILED");
    assert!(line.contains("MAINSTAY_LOG_FORMAT=\"xml\" is not a log format: use text or json"), "{line}");
}
