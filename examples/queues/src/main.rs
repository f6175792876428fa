//! Tutorial section 3: an HTTP endpoint whose workflow enqueues ten tasks on a queue, task n
//! sleeping n seconds, then waits for all of them. Kill the process after about five seconds
//! and start it again: tasks 0 to 4 do not run again, 5 to 9 complete, the workflow finishes.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use mainstay::{Mainstay, Queue};

fn example_queue() -> Queue {
    Queue::new("example-queue")
}

/// A step that can also be enqueued: enqueued, it runs as a workflow of its own, so each task
/// is recovered on its own.
#[mainstay::step(enqueue)]
async fn dbos_step(n: u64) -> mainstay::Result<u64> {
    tokio::time::sleep(Duration::from_secs(n)).await;
    println!("Step {n} completed!");
    Ok(n)
}

#[mainstay::workflow]
async fn dbos_workflow() -> mainstay::Result<usize> {
    println!("Enqueueing steps");
    let queue = example_queue();
    let mut handles = Vec::new();
    for i in 0..10 {
        // Recorded as a step of this workflow: after a restart the same tasks are awaited and
        // none is enqueued twice.
        handles.push(queue.enqueue(dbos_step(i)).await?);
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.get_result().await?);
    }
    println!("Successfully completed {} steps", results.len());
    Ok(results.len())
}

async fn start_workflow() -> (StatusCode, String) {
    match dbos_workflow().await {
        Ok(n) => (StatusCode::OK, format!("Successfully completed {n} steps\n")),
        Err(e @ mainstay::Error::Shutdown { .. }) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Lines name the workflow and step they come from; MAINSTAY_LOG_FORMAT=json for collectors.
    mainstay::init_logging()?;
    let config = mainstay_dev::development_config("queues").await?;
    let app = Mainstay::builder(config).queue(example_queue()).launch().await?;

    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8000);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("Listening on http://localhost:{port}/ — open it to start the workflow");
    let stopping = app.clone();
    axum::serve(listener, Router::new().route("/", get(start_workflow)))
        .with_graceful_shutdown(async move {
            let _ = mainstay::wait_for_signal().await;
            stopping.shutdown().await;
        })
        .await?;
    Ok(())
}
