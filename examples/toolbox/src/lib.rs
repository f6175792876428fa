//! The DBOS tutorial's "putting it all together" app, in Rust: a two-step workflow, a workflow
//! that fans ten tasks out on a queue, a workflow of two transactions on the example table, and
//! a workflow scheduled every minute. `main.rs` serves the first three over HTTP.

use std::time::Duration;

use mainstay::chrono::{DateTime, Utc};
use mainstay::Queue;

/// The queue the `/queue` workflow fans its tasks out on.
pub fn example_queue() -> Queue {
    Queue::new("example-queue")
}

#[mainstay::step]
async fn step_one() -> mainstay::Result<()> {
    println!("Step one completed!");
    Ok(())
}

#[mainstay::step]
async fn step_two() -> mainstay::Result<()> {
    println!("Step two completed!");
    Ok(())
}

/// `/workflow`: two steps; a crash between them resumes at step two.
#[mainstay::workflow]
pub async fn example_workflow() -> mainstay::Result<()> {
    step_one().await?;
    step_two().await?;
    Ok(())
}

/// One task of the queue workflow. Enqueued, it runs as a workflow of its own, so each task is
/// claimed and recovered on its own.
#[mainstay::step(enqueue)]
async fn queue_task(i: u32) -> mainstay::Result<u32> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("Task {i} completed!");
    Ok(i)
}

/// `/queue`: enqueues ten five-second tasks (they run side by side) and waits for them all.
#[mainstay::workflow]
pub async fn queue_workflow() -> mainstay::Result<Vec<u32>> {
    let queue = example_queue();
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(queue.enqueue(queue_task(i)).await?);
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.get_result().await?);
    }
    println!("Successfully completed {} tasks", results.len());
    Ok(results)
}

#[mainstay::transaction]
async fn insert_row(conn: &mut mainstay::sqlx::PgConnection) -> mainstay::Result<()> {
    sqlx::query("INSERT INTO example_table (name) VALUES ('mainstay')").execute(&mut *conn).await?;
    Ok(())
}

#[mainstay::transaction]
async fn count_rows(conn: &mut mainstay::sqlx::PgConnection) -> mainstay::Result<i64> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM example_table").fetch_one(&mut *conn).await?;
    println!("Row count: {count}");
    Ok(count)
}

/// `/transaction`: inserts a row, then counts the rows; each transaction runs exactly once.
#[mainstay::workflow]
pub async fn transaction_workflow() -> mainstay::Result<i64> {
    insert_row().await?;
    count_rows().await
}

/// Runs at the start of every minute, once per minute however many copies of the app run.
/// Like every scheduled workflow it takes the tick and the schedule's context, which a schedule
/// declared in code does not have (`null`, read here as `()`).
#[mainstay::scheduled("* * * * *")]
pub async fn run_every_minute(scheduled_at: DateTime<Utc>, _context: ()) -> mainstay::Result<()> {
    println!("I am a scheduled workflow. It was scheduled to run at {scheduled_at} and actually ran at {}", Utc::now());
    Ok(())
}
