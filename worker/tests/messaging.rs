//! Messages, events and streams against a real Postgres: topics, durable timeouts, exactly-once
//! receive across a restart, idempotent sends, events from inside and outside workflows, live
//! and finished streams.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use mainstay::{Client, Error, Status};
use sqlx::Row;

const LONG: Duration = Duration::from_secs(30);

#[mainstay::workflow]
async fn receive_two_topics() -> mainstay::Result<(Option<String>, Option<String>)> {
    let a: Option<String> = mainstay::recv(Some("a"), LONG).await?;
    let b: Option<String> = mainstay::recv(Some("b"), LONG).await?;
    Ok((a, b))
}

#[tokio::test]
async fn messages_are_received_by_topic_oldest_first_and_consumed() {
    let url = fresh_database("msg_topics").await;
    let app = launch(&url, "m1").await;
    let client = Client::connect(&url).await.unwrap();
    let handle = app.start(receive_two_topics().id("rx")).await.unwrap();
    client.send("rx", "b-first", Some("b"), None).await.unwrap();
    client.send("rx", "b-second", Some("b"), None).await.unwrap();
    client.send("rx", "a-only", Some("a"), None).await.unwrap();
    let got = tokio::time::timeout(LONG, handle.get_result()).await.unwrap().unwrap();
    assert_eq!(got, (Some("a-only".to_string()), Some("b-first".to_string())));

    let mut c = connect(&url).await;
    let rows = sqlx::query(
        "SELECT message, consumed, consumed_by_function_id FROM dbos.notifications \
         WHERE destination_uuid = 'rx' ORDER BY created_at_epoch_ms, message",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let seen: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(seen.contains(&("\"b-second\"".into(), false)), "the second b message stays: {seen:?}");
    assert_eq!(seen.iter().filter(|(_, consumed)| *consumed).count(), 2);
    let ops: Vec<(i32, String)> = sqlx::query(
        "SELECT function_id, function_name FROM dbos.operation_outputs WHERE workflow_uuid = 'rx' \
         ORDER BY function_id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(ops, vec![(1, "DBOS.recv".into()), (2, "DBOS.sleep".into()), (3, "DBOS.recv".into()), (4, "DBOS.sleep".into())]);
    app.shutdown().await;
}

#[mainstay::workflow]
async fn receive_with_timeout(ms: u64) -> mainstay::Result<Option<i64>> {
    mainstay::recv(None, Duration::from_millis(ms)).await
}

#[tokio::test]
async fn a_receive_times_out_with_none_and_the_timeout_survives_a_restart() {
    let url = fresh_database("msg_timeout").await;
    let app = launch(&url, "m2").await;
    assert_eq!(app.run(receive_with_timeout(50).id("short")).await.unwrap(), None);

    // A 4 s timeout, interrupted after 2 s: after the restart it waits only what was left.
    app.start(receive_with_timeout(4000).id("long")).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let wake: f64 = wait_for("the timeout to be recorded", LONG, || {
        let c = &pool;
        async move {
            sqlx::query_scalar::<_, String>("SELECT output FROM dbos.operation_outputs WHERE workflow_uuid = 'long' AND function_id = 2")
                .fetch_optional(c)
                .await
                .unwrap()
                .map(|o| o.parse().unwrap())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the interruption point of the scenario
    app.shutdown().await;
    let app = launch(&url, "m2").await;
    let result: Option<i64> = tokio::time::timeout(LONG, app.retrieve::<Option<i64>>("long").get_result()).await.unwrap().unwrap();
    assert_eq!(result, None);
    let status = app.status("long").await.unwrap().unwrap();
    let done = status.completed_at_ms.unwrap_or(status.updated_at_ms) as f64 / 1000.0;
    assert!(done >= wake - 0.05, "finished before the recorded wake-up ({done} < {wake})");
    assert!(done < wake + 1.5, "waited a fresh timeout after the restart ({done} vs wake-up {wake})");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn receive_then_sleep() -> mainstay::Result<Option<String>> {
    let first: Option<String> = mainstay::recv(Some("t"), LONG).await?;
    mainstay::sleep(Duration::from_millis(1500)).await?;
    Ok(first)
}

#[tokio::test]
async fn a_received_message_is_not_received_again_after_a_restart() {
    let url = fresh_database("msg_once").await;
    let client = Client::connect(&url).await.unwrap();
    let app = launch(&url, "m3").await;
    app.start(receive_then_sleep().id("once")).await.unwrap();
    client.send("once", "first", Some("t"), None).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_for("the message to be consumed", LONG, || {
        let c = &pool;
        async move {
            let consumed: Option<bool> = sqlx::query_scalar("SELECT bool_or(consumed) FROM dbos.notifications").fetch_one(c).await.unwrap();
            consumed.unwrap_or(false).then_some(())
        }
    })
    .await;
    client.send("once", "second", Some("t"), None).await.unwrap();
    app.shutdown().await; // inside the sleep
    let app = launch(&url, "m3").await;
    let out = tokio::time::timeout(LONG, app.retrieve::<Option<String>>("once").get_result()).await.unwrap().unwrap();
    assert_eq!(out.as_deref(), Some("first"));
    let unconsumed: Vec<String> =
        sqlx::query_scalar("SELECT message FROM dbos.notifications WHERE NOT consumed").fetch_all(&pool).await.unwrap();
    assert_eq!(unconsumed, vec!["\"second\"".to_string()]);
    app.shutdown().await;
}

#[mainstay::workflow]
async fn forward(to: String) -> mainstay::Result<()> {
    mainstay::send(to, &42, Some("fwd")).await
}

#[mainstay::workflow]
async fn receive_number() -> mainstay::Result<Option<i64>> {
    mainstay::recv(Some("fwd"), LONG).await
}

#[tokio::test]
async fn sends_are_steps_idempotent_and_refuse_missing_destinations() {
    let url = fresh_database("msg_send").await;
    let app = launch(&url, "m4").await;
    let client = Client::connect(&url).await.unwrap();
    let rx = app.start(receive_number().id("dest")).await.unwrap();
    app.run(forward("dest".into()).id("sender")).await.unwrap();
    // The same sender ID again: the recorded run, no second message.
    app.run(forward("dest".into()).id("sender")).await.unwrap();
    assert_eq!(tokio::time::timeout(LONG, rx.get_result()).await.unwrap().unwrap(), Some(42));

    let mut c = connect(&url).await;
    let sends: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'sender' AND function_name = 'DBOS.send'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(sends, 1);
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.notifications").fetch_one(&mut c).await.unwrap();
    assert_eq!(messages, 1);

    // An idempotency key delivers once; DBOS's SQL function delivers too.
    client.send("dest", "x", None, Some("key-1")).await.unwrap();
    client.send("dest", "x", None, Some("key-1")).await.unwrap();
    sqlx::query("SELECT dbos.send_message('dest', '\"y\"'::json, NULL, 'key-2')").execute(&mut c).await.unwrap();
    let null_topic: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.notifications WHERE topic = '__null__topic__'").fetch_one(&mut c).await.unwrap();
    assert_eq!(null_topic, 2);

    let err = client.send("nobody", "x", None, None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = app.run(forward("nobody".into()).id("lost")).await.unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn progress() -> mainstay::Result<String> {
    mainstay::set_event("stage", "started").await?;
    let _: Option<String> = mainstay::recv(Some("go"), LONG).await?;
    mainstay::set_event("stage", "finished").await?;
    Ok("done".into())
}

#[mainstay::workflow]
async fn watch_stage(of: String) -> mainstay::Result<Option<String>> {
    mainstay::get_event(of, "stage", LONG).await
}

#[tokio::test]
async fn events_are_set_by_workflows_and_read_from_anywhere() {
    let url = fresh_database("events").await;
    let app = launch(&url, "m5").await;
    let client = Client::connect(&url).await.unwrap();
    // The reader starts waiting before the event exists.
    let early = {
        let client = client.clone();
        tokio::spawn(async move { client.get_event::<String>("p1", "stage", LONG).await })
    };
    let handle = app.start(progress().id("p1")).await.unwrap();
    assert_eq!(tokio::time::timeout(LONG, early).await.unwrap().unwrap().unwrap().as_deref(), Some("started"));
    let watched = app.run(watch_stage("p1".into()).id("watcher")).await.unwrap();
    assert_eq!(watched.as_deref(), Some("started"));

    app.send("p1", "now", Some("go")).await.unwrap();
    handle.get_result().await.unwrap();
    let last: Option<String> = app.get_event("p1", "stage", Duration::ZERO).await.unwrap();
    assert_eq!(last.as_deref(), Some("finished"));
    let missing: Option<String> = client.get_event("p1", "nothing", Duration::from_millis(100)).await.unwrap();
    assert_eq!(missing, None);

    // A replay of the watcher returns what it recorded, though the event has changed since.
    let again = app.run(watch_stage("p1".into()).id("watcher")).await.unwrap();
    assert_eq!(again.as_deref(), Some("started"));

    let mut c = connect(&url).await;
    let history: Vec<(i32, String)> =
        sqlx::query("SELECT function_id, value FROM dbos.workflow_events_history WHERE workflow_uuid = 'p1' ORDER BY function_id")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(history, vec![(1, "\"started\"".into()), (4, "\"finished\"".into())]);

    let err = mainstay::set_event("k", &1).await.unwrap_err();
    assert!(err.to_string().contains("outside a workflow"), "{err}");
    app.shutdown().await;
}

#[mainstay::workflow]
async fn produce(close: bool) -> mainstay::Result<()> {
    for i in 1..=3 {
        mainstay::write_stream("numbers", &i).await?;
    }
    let _: Option<String> = mainstay::recv(Some("more"), LONG).await?;
    mainstay::write_stream("numbers", &4).await?;
    if close {
        mainstay::close_stream("numbers").await?;
        mainstay::sleep(Duration::from_millis(300)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn streams_are_read_live_and_end_when_closed_or_finished() {
    let url = fresh_database("streams").await;
    let app = launch(&url, "m6").await;
    let client = Client::connect(&url).await.unwrap();
    for (id, close) in [("closes", true), ("finishes", false)] {
        app.start(produce(close).id(id)).await.unwrap();
        let live = client.read_stream::<i64>(id, "numbers").await.unwrap();
        let first: Vec<i64> = tokio::time::timeout(LONG, live.take(3).map(|v| v.unwrap()).collect())
            .await
            .expect("the first three values arrive while the workflow waits");
        assert_eq!(first, vec![1, 2, 3]);
        app.send(id, "go", Some("more")).await.unwrap();
        let all: Vec<i64> = tokio::time::timeout(LONG, app.read_stream::<i64>(id, "numbers").map(|v| v.unwrap()).collect::<Vec<_>>())
            .await
            .expect("the stream ends");
        assert_eq!(all, vec![1, 2, 3, 4], "{id}");
    }
    let status = app.status("finishes").await.unwrap().unwrap();
    assert_eq!(status.status, Status::Success);
    let mut c = connect(&url).await;
    let offsets: Vec<i32> = sqlx::query_scalar("SELECT \"offset\" FROM dbos.streams WHERE workflow_uuid = 'closes' ORDER BY \"offset\"")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4], "four values and the close marker");
    let err = client.read_stream::<i64>("ghost", "numbers").await.unwrap().next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    app.shutdown().await;
}
