//! Stuck and stranded work, each kind produced for real against Postgres and found by
//! `Client::stuck_workflows` / `Client::stuck_work`: a workflow hanging in a step (stalled,
//! and only past the threshold), one in a durable sleep and one waiting on its hanging child
//! (waiting by design: not stalled), a workflow parked by the runtime's own recovery after its
//! worker went down, queued work of a retired version and of an unknown name (stranded), and a
//! queue nobody serves (slow, and only past the threshold). The `mainstay stuck` command's
//! report of the same database is checked in the CLI's tests.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mainstay::{Client, Mainstay, Queue, Status, StrandedReason, StuckCriteria, WorkflowOptions};

static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[mainstay::step]
async fn st_block() -> mainstay::Result<u32> {
    RELEASE.notified().await;
    Ok(1)
}

#[mainstay::workflow]
async fn st_hang() -> mainstay::Result<u32> {
    st_block().await
}

#[mainstay::workflow]
async fn st_sleeper() -> mainstay::Result<u32> {
    mainstay::sleep(Duration::from_secs(3600)).await?;
    Ok(0)
}

#[mainstay::workflow]
async fn st_parent() -> mainstay::Result<u32> {
    let child = st_hang().id("st-child").start().await?;
    child.get_result().await
}

#[mainstay::step]
async fn st_quick() -> mainstay::Result<u32> {
    Ok(1)
}

#[mainstay::workflow]
async fn st_done() -> mainstay::Result<u32> {
    st_quick().await
}

/// Waits on two children, the second of which finishes at once: still waiting on the first.
#[mainstay::workflow]
async fn st_fanout() -> mainstay::Result<u32> {
    let slow = st_hang().id("st-fan-slow").start().await?;
    let quick = st_done().id("st-fan-quick").start().await?;
    Ok(quick.get_result().await? + slow.get_result().await?)
}

/// Receives its message long before the timeout, then hangs in a step.
#[mainstay::workflow]
async fn st_waiter() -> mainstay::Result<u32> {
    let _: Option<String> = mainstay::recv(Some("go"), Duration::from_secs(3600)).await?;
    st_block().await
}

/// Sleeps for ever.
#[mainstay::workflow]
async fn st_forever() -> mainstay::Result<u32> {
    mainstay::sleep(Duration::MAX).await?;
    Ok(0)
}

fn ids<'a>(it: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
    it.map(String::as_str).collect()
}

#[tokio::test]
async fn stalled_workflows_are_those_without_progress_past_the_threshold_and_not_waiting_by_design() {
    let url = fresh_database("st_stalled").await;
    let mut c = config(&url, "st-live");
    c.app_name = Some("shop".into());
    let app = Mainstay::builder(c).global(false).launch().await.unwrap();
    app.start(st_hang().id("st-hang")).await.unwrap();
    app.start(st_sleeper().id("st-sleep")).await.unwrap();
    app.start(st_parent().id("st-parent")).await.unwrap();
    app.start(st_fanout().id("st-fanout")).await.unwrap();
    app.start(st_waiter().id("st-waiter")).await.unwrap();
    app.start(st_forever().id("st-forever")).await.unwrap();
    let client = Client::connect(&url).await.unwrap().for_application(Some("shop"));
    // Everything has started (the sleeps, the children's starts, the receive's timer recorded)
    // before judging; the waiter gets its message at once.
    wait_for("the sleeps, the children and the receive recorded", Duration::from_secs(20), || async {
        let sleeps = client.count_steps("st-sleep").await.unwrap() + client.count_steps("st-forever").await.unwrap();
        let parent = client.count_steps("st-parent").await.unwrap();
        let fanout = client.count_steps("st-fanout").await.unwrap();
        let waiter = client.count_steps("st-waiter").await.unwrap();
        let quick = client.status("st-fan-quick").await.unwrap().map(|s| s.status);
        (sleeps == 2 && parent == 1 && fanout == 2 && waiter == 1 && quick == Some(Status::Success)).then_some(())
    })
    .await;
    client.send("st-waiter", &"go", Some("go"), None).await.unwrap();
    wait_for("the waiter's message received", Duration::from_secs(20), || async {
        (client.count_steps("st-waiter").await.unwrap() == 2).then_some(())
    })
    .await;

    // Under an hour's threshold nothing is stalled, and the next stall is an hour after the
    // oldest activity.
    let hour = client.stuck_workflows(Duration::from_secs(3600), 10).await.unwrap();
    assert_eq!(hour.stalled_total, 0, "{hour:?}");
    let next = hour.next_stall_at_ms.expect("pending workflows stall some time");
    let now = mainstay_now_ms();
    assert!(next > now + 3_500_000 && next <= now + 3_600_000, "next stall at {next}, now {now}");

    // Past a one-second threshold, the workflows hanging in a step are stalled: the two
    // hanging workflows started as children, the plain one, and the one that got its message
    // (its receive's timer no longer holds it). The sleepers wait for their timers (one for
    // ever), the parents for an unfinished child.
    let stuck = wait_for("four workflows stalled", Duration::from_secs(30), || async {
        let s = client.stuck_workflows(Duration::from_secs(1), 10).await.unwrap();
        (s.stalled_total == 4).then_some(s)
    })
    .await;
    assert_eq!(ids(stuck.stalled.iter().map(|s| &s.workflow_id)), BTreeSet::from(["st-hang", "st-child", "st-fan-slow", "st-waiter"]));
    for s in &stuck.stalled {
        assert_eq!(s.executor_id.as_deref(), Some("st-live"));
        assert!(s.active_at_ms <= mainstay_now_ms() - 1000, "{s:?}");
    }
    // Listing fewer still counts them all, whole per executor (what tells stalled workflows on
    // live workers from a dead one's when there are many).
    let two = client.stuck_workflows(Duration::from_secs(1), 2).await.unwrap();
    assert_eq!((two.stalled.len(), two.stalled_total), (2, 4), "{two:?}");
    assert_eq!(two.stalled_per_executor, [mainstay::StalledOnExecutor { executor_id: Some("st-live".into()), stalled: 4 }]);
    // Another application's view holds none of it.
    let other = Client::connect(&url).await.unwrap().for_application(Some("other"));
    assert_eq!(other.stuck_workflows(Duration::from_secs(1), 10).await.unwrap().stalled_total, 0);

    // A step that completes is progress: released, the workflows finish and nothing is stalled.
    RELEASE.notify_waiters();
    for id in ["st-hang", "st-parent", "st-fanout", "st-waiter"] {
        app.retrieve::<u32>(id).get_result().await.unwrap();
    }
    let after = client.stuck_workflows(Duration::from_secs(1), 10).await.unwrap();
    assert_eq!(after.stalled_total, 0, "{after:?}");
    app.shutdown().await;
}

fn mainstay_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Never released: the worker goes down while it waits.
static NEVER: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[mainstay::step]
async fn st_block_for_good() -> mainstay::Result<u32> {
    NEVER.notified().await;
    Ok(1)
}

#[mainstay::workflow]
async fn st_queued_hang() -> mainstay::Result<u32> {
    st_block_for_good().await
}

#[tokio::test]
async fn parked_stranded_and_slow_queued_work_is_reported() {
    let url = fresh_database("st_parked").await;
    let q = Queue::new("st_work");
    // A worker that tolerates no recovery takes a queued workflow and goes down mid-step.
    let launch = || {
        let mut c = config(&url, "st-crashy");
        c.app_name = Some("shop".into());
        c.max_recovery_attempts = 0;
        Mainstay::builder(c).global(false).queue(q.clone())
    };
    let app = launch().launch().await.unwrap();
    app.enqueue(st_queued_hang().id("st-parked"), &q).await.unwrap();
    let client = Client::connect(&url).await.unwrap().for_application(Some("shop"));
    wait_for("the queued workflow running", Duration::from_secs(20), || async {
        (client.status("st-parked").await.unwrap().map(|s| s.status) == Some(Status::Pending)).then_some(())
    })
    .await;
    app.shutdown().await;
    // Its next launch recovers it, and the claim parks it.
    let app = launch().launch().await.unwrap();
    let parked = wait_for("the workflow parked", Duration::from_secs(20), || async {
        let s = client.stuck_workflows(Duration::from_secs(3600), 10).await.unwrap();
        (s.parked_total == 1).then_some(s)
    })
    .await;
    assert_eq!(parked.parked[0].workflow_id, "st-parked");
    assert_eq!(parked.parked[0].recovery_attempts, 2);
    assert_eq!(client.status("st-parked").await.unwrap().unwrap().status, Status::MaxRecoveryAttemptsExceeded);
    app.shutdown().await;

    // Queued work: one of a retired version, one of a name the running version lacks, one
    // ordinary but in a queue no worker serves.
    let shop = |id: &str| WorkflowOptions::new().id(id);
    client.enqueue("st_queued_hang", "st_work", vec![], shop("st-retired").app_version("test-v0")).await.unwrap();
    client.enqueue("st_typo", "st_work", vec![], shop("st-typo")).await.unwrap();
    client.enqueue("st_queued_hang", "st_nobody", vec![], shop("st-unserved")).await.unwrap();
    let criteria = StuckCriteria {
        stalled_after: Duration::from_secs(3600),
        queue_wait: Duration::from_secs(3600),
        running_versions: Some(vec!["test-v1".into()]),
        limit: 10,
    };
    let report = client.stuck_work(&criteria).await.unwrap();
    let stranded: Vec<_> =
        report.stranded.iter().map(|s| (s.workflow_name.as_str(), s.app_version.as_deref(), s.reason, s.queued, s.own)).collect();
    assert_eq!(
        stranded,
        vec![
            ("st_queued_hang", Some("test-v0"), StrandedReason::VersionNotRunning, 1, 1),
            ("st_typo", None, StrandedReason::UnknownWorkflow, 1, 1),
        ],
        "{report:?}"
    );
    assert_eq!(report.workflows.parked_total, 1);
    // Under an hour nothing queued waits too long; with no patience at all, both queues do.
    assert!(report.slow_queues.is_empty(), "{report:?}");
    let impatient = StuckCriteria { queue_wait: Duration::ZERO, ..criteria.clone() };
    let report = client.stuck_work(&impatient).await.unwrap();
    let slow: Vec<_> = report.slow_queues.iter().map(|w| (w.queue.as_str(), w.enqueued)).collect();
    assert_eq!(slow, vec![("st_nobody", 1), ("st_work", 2)]);
    // By default the running version is the latest: the one the workers registered.
    let default = client.stuck_work(&StuckCriteria::default()).await.unwrap();
    assert_eq!(default.running_versions, vec!["test-v1".to_string()]);
    assert_eq!(default.stranded, report.stranded);
}
