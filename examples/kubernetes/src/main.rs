//! The worker of the Kubernetes example (`examples/kubernetes/*.yaml`): it processes orders from
//! the `orders` queue and runs the `nightly_report` workflow a Schedule fires.
//!
//! Everything it needs comes from the environment the operator gives each worker pod: the
//! database URL (from the DurableApp's Secret), the executor ID (the pod name), the application
//! version and the health port. `WORK_MS` (default 200) sets how long each order's work takes.

use std::time::Duration;

use mainstay::chrono::{DateTime, Utc};
use mainstay::{Config, Failure, Mainstay, Queue};

/// The queue the DurableApp declares.
pub const ORDERS: &str = "orders";

fn work_time() -> Duration {
    let ms = std::env::var("WORK_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    Duration::from_millis(ms)
}

#[mainstay::step]
async fn reserve_stock(order: i64) -> mainstay::Result<String> {
    Ok(format!("stock reserved for order {order}"))
}

/// A negative order number stands for a card that is declined: the workflow fails with
/// `PaymentDeclined`, which a WorkflowRun's status shows.
#[mainstay::step]
async fn charge_card(order: i64) -> mainstay::Result<String> {
    tokio::time::sleep(work_time()).await;
    if order < 0 {
        return Err(Failure::new("PaymentDeclined", format!("the card for order {order} was declined")).into());
    }
    Ok(format!("order {order} charged"))
}

#[mainstay::step]
async fn ship(order: i64) -> mainstay::Result<String> {
    Ok(format!("order {order} shipped"))
}

/// Enqueue it by name (`process_order`) on the `orders` queue with one argument, the order ID;
/// its event `stage` says how far it got.
#[mainstay::workflow]
async fn process_order(order: i64) -> mainstay::Result<String> {
    reserve_stock(order).await?;
    charge_card(order).await?;
    // Progress anyone can read (`get_event`, and a WorkflowRun's status.events).
    mainstay::set_event("stage", &"charged").await?;
    let shipped = ship(order).await?;
    mainstay::set_event("stage", &"shipped").await?;
    Ok(shipped)
}

#[mainstay::step]
async fn note(what: String) -> mainstay::Result<String> {
    Ok(what)
}

/// Holds a worker between two steps until released (any message on topic `release`) or for
/// at most `ms` milliseconds: work that is in flight when a worker dies, to show it finishing
/// elsewhere. The wait is durable, so a recovered hold waits only for what was left.
#[mainstay::workflow]
async fn hold(ms: u64) -> mainstay::Result<String> {
    note("started".into()).await?;
    let released: Option<String> = mainstay::recv(Some("release"), Duration::from_millis(ms)).await?;
    let how = if released.is_some() { "released".to_string() } else { format!("held {ms} ms") };
    note(format!("{how} on {}", std::env::var(mainstay::config::env::EXECUTOR_ID).unwrap_or_default())).await
}

#[mainstay::step]
async fn build_report(scheduled_at: DateTime<Utc>, context: serde_json::Value) -> mainstay::Result<String> {
    if context.get("fail") == Some(&serde_json::Value::Bool(true)) {
        return Err(Failure::new("ReportFailed", format!("the report for {scheduled_at} failed (context {context})")).into());
    }
    Ok(format!("report for {scheduled_at}"))
}

/// Fired by the example Schedule. Like every scheduled workflow it takes the tick's time and the
/// schedule's context (the Schedule's `spec.input`); `{fail: true}` makes it fail.
#[mainstay::workflow]
async fn nightly_report(scheduled_at: DateTime<Utc>, context: serde_json::Value) -> mainstay::Result<String> {
    let report = build_report(scheduled_at, context.clone()).await?;
    Ok(format!("{report} ({context})"))
}

/// A schedule in code (a `Schedule` resource is the other way): every scheduled workflow takes
/// the tick's time and the schedule's context (none here). The DurableApp's
/// `status.workflows[].schedules` lists it.
#[mainstay::scheduled("0 0 1 1 *")]
async fn yearly_report(scheduled_at: DateTime<Utc>, _context: ()) -> mainstay::Result<String> {
    build_report(scheduled_at, serde_json::json!({"period": "year"})).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Lines name the workflow and step they come from; MAINSTAY_LOG_FORMAT=json for collectors.
    mainstay::init_logging()?;
    let config = Config::from_env()?;
    let app = Mainstay::builder(config).queue(Queue::new(ORDERS)).launch().await?;
    app.run_until_signal().await?;
    Ok(())
}
