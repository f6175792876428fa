//! Scheduled workflows against a real Postgres: a schedule declared in code fired by two
//! runtimes racing (one run per tick, none missed), schedules stored in the database (create,
//! pause, resume, trigger, backfill, delete), no silent replay after downtime unless automatic
//! backfill is on, and clear errors for bad cron expressions and time zones. One contract,
//! `(scheduled_at, context)`, for every path (code, stored, triggered, backfilled, enqueued as a
//! Kubernetes `Schedule` does); a stored context that is not JSON never fires; code schedules
//! of applications sharing a database are named `{app}.{workflow}`, renamed from their old
//! name on upgrade, and never take over another application's schedule.

mod common;

use std::time::Duration;

use common::*;
use mainstay::chrono::{DateTime, Utc};
use mainstay::{Client, Config, Error, Mainstay, Schedule, ScheduleStatus, Status, WorkflowFilter, WorkflowOptions};
use serde_json::{json, Value};

#[mainstay::scheduled("* * * * * *")]
async fn every_second(scheduled_at: DateTime<Utc>, context: Value) -> mainstay::Result<(String, Value)> {
    Ok((scheduled_at.to_rfc3339(), context))
}

#[mainstay::workflow]
async fn on_schedule(scheduled_at: DateTime<Utc>, _context: ()) -> mainstay::Result<String> {
    Ok(scheduled_at.to_rfc3339())
}

/// One workflow for every way a schedule runs: it returns the tick as written in tick IDs, and
/// the context.
#[mainstay::workflow]
async fn report(scheduled_at: DateTime<Utc>, context: Value) -> mainstay::Result<(String, Value)> {
    Ok((mainstay::format_tick(scheduled_at), context))
}

async fn runs(client: &Client, schedule: &str) -> Vec<mainstay::WorkflowStatus> {
    client.list_workflows(&WorkflowFilter::new().schedule_name(schedule).oldest_first(true)).await.unwrap()
}

fn tick_of(id: &str, schedule: &str) -> DateTime<Utc> {
    let text = id.strip_prefix(&format!("sched-{schedule}-")).unwrap_or_else(|| panic!("tick ID {id}"));
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

async fn wait_for_runs(client: &Client, schedule: &str, n: usize) -> Vec<mainstay::WorkflowStatus> {
    wait_for(&format!("{n} finished runs of {schedule}"), Duration::from_secs(30), || async {
        let r = runs(client, schedule).await;
        (r.iter().filter(|s| s.status == Status::Success).count() >= n).then_some(r)
    })
    .await
}

#[tokio::test]
async fn a_schedule_in_code_fires_each_tick_once_across_racing_runtimes() {
    let url = fresh_database("sched_race").await;
    let a = launch(&url, "sched-a").await;
    let b = launch(&url, "sched-b").await;
    let mut c = connect(&url).await;
    count_outcome_writes(&mut c).await;
    let client = Client::connect(&url).await.unwrap();
    let listed = client.get_schedule("every_second").await.unwrap().expect("declared at launch");
    assert_eq!((listed.workflow_name.as_str(), listed.cron.as_str()), ("every_second", "* * * * * *"));

    wait_for_runs(&client, "every_second", 4).await;
    a.shutdown().await;
    b.shutdown().await;
    // Every run, finished or not (a shutdown may interrupt a tick mid-run), in tick order.
    let all = runs(&client, "every_second").await;
    let mut ticks: Vec<DateTime<Utc>> = all.iter().map(|s| tick_of(&s.workflow_id, "every_second")).collect();
    ticks.sort();
    let done: Vec<_> = all.into_iter().filter(|s| s.status.is_terminal()).collect();
    for pair in ticks.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "a tick was missed or doubled: {ticks:?}");
    }
    for s in &done {
        assert_eq!(s.status, Status::Success, "{}", s.workflow_id);
        let (scheduled, context): (String, Value) = serde_json::from_str(s.output.as_deref().unwrap()).unwrap();
        assert_eq!(DateTime::parse_from_rfc3339(&scheduled).unwrap(), tick_of(&s.workflow_id, "every_second"));
        assert_eq!(context, Value::Null, "a code schedule has no context");
    }
    let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM outcome_writes").fetch_one(&mut c).await.unwrap();
    assert_eq!(writes as usize, done.len(), "an outcome was written twice");
}

#[tokio::test]
async fn stored_schedules_are_paused_resumed_triggered_backfilled_and_deleted() {
    let url = fresh_database("sched_db").await;
    let app = launch(&url, "sched-db").await;
    let client = Client::connect(&url).await.unwrap();
    client.create_schedule(&Schedule::new("tick", "on_schedule", "* * * * * *")).await.unwrap();
    let dup = client.create_schedule(&Schedule::new("tick", "on_schedule", "* * * * * *")).await.unwrap_err();
    assert!(dup.to_string().contains("exists"), "{dup}");
    wait_for_runs(&client, "tick", 2).await;

    client.pause_schedule("tick").await.unwrap();
    assert_eq!(client.get_schedule("tick").await.unwrap().unwrap().status, ScheduleStatus::Paused);
    let paused_at = Utc::now();
    // Settle: a tick already enqueued when the pause landed may still finish.
    tokio::time::sleep(Duration::from_millis(2500)).await; // the paused interval of the scenario
    let before = runs(&client, "tick").await;
    let fired_while_paused: Vec<_> = before
        .iter()
        .map(|s| tick_of(&s.workflow_id, "tick"))
        .filter(|t| *t > paused_at + mainstay::chrono::Duration::milliseconds(1500))
        .collect();
    assert!(fired_while_paused.is_empty(), "fired while paused: {fired_while_paused:?}");
    client.resume_schedule("tick").await.unwrap();
    let resumed = wait_for_runs(&client, "tick", before.len() + 1).await;
    let gap: Vec<_> = resumed
        .iter()
        .map(|s| tick_of(&s.workflow_id, "tick"))
        .filter(|t| {
            *t > paused_at + mainstay::chrono::Duration::milliseconds(1500)
                && *t < paused_at + mainstay::chrono::Duration::milliseconds(2400)
        })
        .collect();
    assert!(gap.is_empty(), "paused ticks were replayed on resume: {gap:?}");
    client.delete_schedule("tick").await.unwrap();
    assert!(matches!(client.pause_schedule("tick").await, Err(mainstay::Error::ScheduleNotFound { .. })));

    // Trigger and backfill on a schedule that never fires by itself.
    client.create_schedule(&Schedule::new("yearly", "on_schedule", "0 0 1 1 *").time_zone("Europe/Paris")).await.unwrap();
    let id = client.trigger_schedule("yearly").await.unwrap();
    assert!(id.starts_with("sched-yearly-"), "{id}");
    let start = DateTime::parse_from_rfc3339("2020-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let end = DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let ids = client.backfill_schedule("yearly", start, end).await.unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], "sched-yearly-2020-12-31T23:00:00+00:00", "midnight in Paris, in UTC");
    assert_eq!(client.backfill_schedule("yearly", start, end).await.unwrap(), ids, "deterministic IDs");
    let finished = wait_for_runs(&client, "yearly", 5).await;
    assert_eq!(finished.len(), 5, "a backfilled tick ran twice");
    let out: String = client.get_result(&ids[0]).await.unwrap();
    assert_eq!(DateTime::parse_from_rfc3339(&out).unwrap(), tick_of(&ids[0], "yearly"));

    let bad = client.create_schedule(&Schedule::new("bad", "on_schedule", "61 * * * *")).await.unwrap_err();
    assert!(bad.to_string().contains("schedule bad") && bad.to_string().contains("the minute field \"61\" is not valid"), "{bad}");
    let bad = client.create_schedule(&Schedule::new("bad", "on_schedule", "* * * * *").time_zone("Mars/Base")).await.unwrap_err();
    assert!(bad.to_string().contains("IANA"), "{bad}");
    app.shutdown().await;
}

#[tokio::test]
async fn downtime_is_not_replayed_unless_automatic_backfill_is_on() {
    let url = fresh_database("sched_down").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    client.create_schedule(&Schedule::new("plain", "on_schedule", "* * * * * *")).await.unwrap();
    let mut backfilled = Schedule::new("catchup", "on_schedule", "* * * * * *");
    backfilled.automatic_backfill = true;
    client.create_schedule(&backfilled).await.unwrap();

    let app = launch(&url, "sched-down").await;
    wait_for_runs(&client, "plain", 1).await;
    wait_for_runs(&client, "catchup", 1).await;
    app.shutdown().await;
    let down_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await; // the downtime of the scenario
    let up_at = Utc::now();
    let app = launch(&url, "sched-down").await;
    let plain = wait_for_runs(&client, "plain", 2).await;
    let catchup = wait_for("the missed ticks to be backfilled", Duration::from_secs(30), || async {
        let r = runs(&client, "catchup").await;
        let during = r.iter().filter(|s| {
            let t = tick_of(&s.workflow_id, "catchup");
            t > down_at + mainstay::chrono::Duration::seconds(1) && t < up_at
        });
        (during.count() >= 1).then_some(r)
    })
    .await;
    let replayed: Vec<_> = plain
        .iter()
        .map(|s| tick_of(&s.workflow_id, "plain"))
        .filter(|t| *t > down_at + mainstay::chrono::Duration::seconds(1) && *t < up_at - mainstay::chrono::Duration::milliseconds(500))
        .collect();
    assert!(replayed.is_empty(), "ticks of the downtime were replayed: {replayed:?}");
    assert!(!catchup.is_empty());
    app.shutdown().await;
}

/// The tick text of a tick ID.
fn tick_text<'a>(id: &'a str, schedule: &str) -> &'a str {
    id.strip_prefix(&format!("sched-{schedule}-")).unwrap_or_else(|| panic!("tick ID {id}"))
}

/// The `(tick, context)` a run of `report` received.
async fn received(client: &Client, id: &str) -> (String, Value) {
    client.get_result(id).await.unwrap_or_else(|e| panic!("run {id}: {e}"))
}

#[tokio::test]
async fn one_workflow_serves_stored_triggered_backfilled_and_enqueued_runs_with_their_context() {
    let url = fresh_database("sched_context").await;
    let app = launch(&url, "sched-context").await;
    let client = Client::connect(&url).await.unwrap();
    let context = json!({"region": "eu", "recipients": ["ops@example.com"], "limit": 3});
    client.create_schedule(&Schedule::new("reports", "report", "* * * * * *").context(context.clone())).await.unwrap();
    let stored = client.get_schedule("reports").await.unwrap().unwrap();
    assert_eq!((&stored.context, &stored.unreadable_context), (&context, &None));
    let mut c = connect(&url).await;
    let column: String =
        sqlx::query_scalar("SELECT context FROM dbos.workflow_schedules WHERE schedule_name = 'reports'").fetch_one(&mut c).await.unwrap();
    assert_eq!(column, r#"{"limit":3,"recipients":["ops@example.com"],"region":"eu"}"#, "compact JSON");

    for run in wait_for_runs(&client, "reports", 2).await.iter().filter(|s| s.status == Status::Success) {
        let (tick, got) = received(&client, &run.workflow_id).await;
        assert_eq!(tick, tick_text(&run.workflow_id, "reports"), "the tick as in the ID");
        assert_eq!(got, context);
    }
    client.pause_schedule("reports").await.unwrap();

    // Triggered and backfilled runs get the same arguments.
    let yearly = json!("yearly context");
    client.create_schedule(&Schedule::new("yearly-report", "report", "0 0 1 1 *").context(yearly.clone())).await.unwrap();
    let triggered = client.trigger_schedule("yearly-report").await.unwrap();
    let start = DateTime::parse_from_rfc3339("2023-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let end = DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let backfilled = client.backfill_schedule("yearly-report", start, end).await.unwrap();
    assert_eq!(backfilled, ["sched-yearly-report-2024-01-01T00:00:00+00:00", "sched-yearly-report-2025-01-01T00:00:00+00:00"]);
    for id in std::iter::once(&triggered).chain(&backfilled) {
        let (tick, got) = received(&client, id).await;
        assert_eq!(tick, tick_text(id, "yearly-report"), "{id}");
        assert_eq!(got, yearly, "{id}");
    }

    // As a Kubernetes `Schedule` enqueues it: the tick as text, then its input.
    let tick = "2026-01-31T23:00:00+00:00";
    let id = client
        .enqueue("report", mainstay::INTERNAL_QUEUE, vec![json!(tick), json!({"from": "kubernetes"})], WorkflowOptions::default())
        .await
        .unwrap();
    assert_eq!(received(&client, &id).await, (tick.to_string(), json!({"from": "kubernetes"})));
    app.shutdown().await;
}

#[tokio::test]
async fn a_context_that_is_not_json_is_reported_and_never_fired() {
    init_tracing();
    let url = fresh_database("sched_pickle").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    // As DBOS Python stores a context without portable serialization: a base64 pickle (None).
    let mut c = connect(&url).await;
    sqlx::query(
        "INSERT INTO dbos.workflow_schedules (schedule_id, schedule_name, workflow_name, schedule, context)
         VALUES ('py-1', 'pickled', 'report', '* * * * * *', 'gAVOLg==')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    client.create_schedule(&Schedule::new("readable", "report", "* * * * * *").context(json!(1))).await.unwrap();
    let pickled = client.get_schedule("pickled").await.unwrap().unwrap();
    assert_eq!((pickled.context, pickled.unreadable_context.as_deref()), (Value::Null, Some("gAVOLg==")));
    for e in [
        client.trigger_schedule("pickled").await.unwrap_err(),
        client.backfill_schedule("pickled", Utc::now() - mainstay::chrono::Duration::seconds(5), Utc::now()).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::UnsupportedSerialization { .. }), "{e}");
        assert!(e.to_string().contains("the context of schedule pickled"), "{e}");
    }

    // The scheduler fires both in the same rounds: the readable one's runs prove rounds ran.
    let app = launch(&url, "sched-pickle").await;
    wait_for_runs(&client, "readable", 3).await;
    app.shutdown().await;
    assert!(runs(&client, "pickled").await.is_empty(), "a schedule whose context is not JSON fired");
}

fn app_config(url: &str, app: Option<&str>, executor: &str) -> Config {
    let mut c = config(url, executor);
    c.app_name = app.map(str::to_string);
    // Version names are unique across applications.
    c.app_version = Some(format!("{}-v1", app.unwrap_or("none")));
    c
}

async fn launch_app(url: &str, app: Option<&str>, executor: &str) -> mainstay::Result<Mainstay> {
    Mainstay::builder(app_config(url, app, executor)).global(false).launch().await
}

/// `(schedule_name, workflow_name, application_name, status, last_fired_at)` of every stored
/// schedule, by name.
async fn schedule_rows(url: &str) -> Vec<(String, String, Option<String>, String, Option<String>)> {
    let mut c = connect(url).await;
    sqlx::query_as(
        "SELECT schedule_name, workflow_name, application_name, status, last_fired_at
         FROM dbos.workflow_schedules ORDER BY schedule_name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn code_schedules_of_two_applications_on_one_database_are_two_schedules() {
    let url = fresh_database("sched_two_apps").await;
    let a = launch_app(&url, Some("A"), "a-exec").await.unwrap();
    let b = launch_app(&url, Some("B"), "b-exec").await.unwrap();
    let rows = schedule_rows(&url).await;
    let names: Vec<_> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref())).collect();
    assert_eq!(names, [("A.every_second", "every_second", Some("A")), ("B.every_second", "every_second", Some("B"))]);
    // Each version records which of its workflows run on a schedule (what the operator lists).
    let mut config_a = Config::new(&url);
    config_a.app_name = Some("A".into());
    let as_a = Client::connect_with(&config_a).await.unwrap();
    let recorded = as_a.registered_workflows(a.app_version()).await.unwrap();
    let every = recorded.iter().find(|w| w.name == "every_second").expect("every_second recorded");
    assert_eq!(every.schedule.as_deref(), Some("* * * * * *"));
    assert_eq!(every.arguments, Some(vec!["DateTime<Utc>".to_string(), "Value".to_string()]));
    assert!(recorded.iter().find(|w| w.name == "on_schedule").is_some_and(|w| w.schedule.is_none()));
    as_a.close().await;

    let client = Client::connect(&url).await.unwrap();
    let of_a = wait_for_runs(&client, "A.every_second", 3).await;
    let of_b = wait_for_runs(&client, "B.every_second", 3).await;
    a.shutdown().await;
    b.shutdown().await;
    let mut c = connect(&url).await;
    for (runs, app, executor) in [(&of_a, "A", "a-exec"), (&of_b, "B", "b-exec")] {
        for run in runs.iter().filter(|s| s.status == Status::Success) {
            assert!(run.workflow_id.starts_with(&format!("sched-{app}.every_second-")), "{}", run.workflow_id);
            let owner: Option<String> = sqlx::query_scalar("SELECT application_name FROM dbos.workflow_status WHERE workflow_uuid = $1")
                .bind(&run.workflow_id)
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!((owner.as_deref(), run.executor_id.as_deref()), (Some(app), Some(executor)), "{}", run.workflow_id);
        }
    }
    let all = runs(&client, "A.every_second").await.len() + runs(&client, "B.every_second").await.len();
    let ticks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid LIKE 'sched-%'").fetch_one(&mut c).await.unwrap();
    assert_eq!(ticks as usize, all, "every tick belongs to one of the two schedules");
}

#[tokio::test]
async fn an_upgrade_renames_its_code_schedule_and_never_takes_over_another_applications() {
    let url = fresh_database("sched_rename").await;
    let client = Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    let mut c = connect(&url).await;
    let insert = |name: &'static str, app: Option<&'static str>, status: &'static str, last: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO dbos.workflow_schedules (schedule_id, schedule_name, workflow_name, schedule, status,
                 last_fired_at, context, application_name)
             VALUES (gen_random_uuid()::text, $1, 'every_second', '* * * * * *', $3, $4, 'null', $2)",
        )
        .bind(name)
        .bind(app)
        .bind(status)
        .bind(last)
        .persistent(false)
    };

    // A release before `{app}.{workflow}` left app A's schedule paused, under the bare name.
    insert("every_second", Some("A"), "PAUSED", Some("2026-01-31T23:00:00+00:00")).execute(&mut c).await.unwrap();
    let a = launch_app(&url, Some("A"), "a-exec").await.unwrap();
    a.shutdown().await;
    assert_eq!(
        schedule_rows(&url).await,
        [("A.every_second".into(), "every_second".into(), Some("A".into()), "PAUSED".into(), Some("2026-01-31T23:00:00+00:00".into()))],
        "renamed, keeping its status and last fire"
    );

    // An old version declared the bare name again: the next launch leaves one schedule.
    insert("every_second", Some("A"), "ACTIVE", None).execute(&mut c).await.unwrap();
    let a = launch_app(&url, Some("A"), "a-exec").await.unwrap();
    a.shutdown().await;
    let rows = schedule_rows(&url).await;
    assert_eq!(rows.iter().map(|r| (r.0.as_str(), r.3.as_str())).collect::<Vec<_>>(), [("A.every_second", "PAUSED")]);

    // Another application's row of the old name is not A's to rename.
    insert("every_second", Some("B"), "ACTIVE", None).execute(&mut c).await.unwrap();
    let a = launch_app(&url, Some("A"), "a-exec").await.unwrap();
    a.shutdown().await;
    let names: Vec<_> = schedule_rows(&url).await.into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(names, [("A.every_second".into(), Some("A".into())), ("every_second".into(), Some("B".into()))]);

    // A name held by another application's row refuses the launch, saying whose and what to do.
    sqlx::query("UPDATE dbos.workflow_schedules SET application_name = 'C' WHERE schedule_name = 'A.every_second'")
        .execute(&mut c)
        .await
        .unwrap();
    let conflict = |e: Error, owner: Option<&str>, schedule: &str| {
        let msg = e.to_string();
        match e {
            Error::ScheduleConflict { owner: found, .. } => assert_eq!(found.as_deref(), owner, "{msg}"),
            other => panic!("expected a schedule conflict, got {other}"),
        }
        assert!(msg.contains(&format!("schedule {schedule} of #[scheduled] workflow every_second")), "{msg}");
        assert!(msg.contains("#[scheduled(name = ") && msg.contains("MAINSTAY_APP_NAME"), "{msg}");
        msg
    };
    let Err(e) = launch_app(&url, Some("A"), "a-exec").await else { panic!("A launched over C's schedule") };
    let msg = conflict(e, Some("C"), "A.every_second");
    assert!(msg.contains("belongs to application C"), "{msg}");
    // An application without a name declares the bare name, which B holds.
    let Err(e) = launch_app(&url, None, "none-exec").await else { panic!("launched over B's schedule") };
    conflict(e, Some("B"), "every_second");
    let rows = schedule_rows(&url).await;
    assert_eq!(rows.iter().map(|r| r.2.as_deref()).collect::<Vec<_>>(), [Some("C"), Some("B")], "nothing taken over");
}
