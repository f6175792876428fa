//! The toolbox server: `/workflow`, `/queue` and `/transaction` each run a durable workflow
//! and answer with its result; a workflow runs every minute. `toolbox migrate` applies the
//! migrations in `migrations/` to the application database (`mainstay migrate` runs it).

use std::path::Path;

use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use mainstay::{Config, Mainstay};

const INDEX: &str = r#"<!doctype html>
<title>Mainstay toolbox</title>
<h1>Mainstay toolbox</h1>
<ul>
  <li><a href="/workflow">/workflow</a>: a workflow of two steps</li>
  <li><a href="/queue">/queue</a>: a workflow that runs ten five-second tasks on a queue</li>
  <li><a href="/transaction">/transaction</a>: a workflow of two transactions; the row count goes up on each visit</li>
</ul>
<p>A scheduled workflow prints a line every minute. Stop the server at any time (Ctrl-C or
kill -9) and start it again: unfinished workflows resume from their last completed step.</p>
"#;

/// Turns a workflow's result into a response: interrupted by shutdown is 503 (the workflow
/// resumes at the next start), any other error 500.
fn respond<T>(result: mainstay::Result<T>, ok: impl FnOnce(T) -> String) -> (StatusCode, String) {
    match result {
        Ok(value) => (StatusCode::OK, ok(value) + "\n"),
        Err(e @ mainstay::Error::Shutdown { .. }) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/workflow", get(|| async { respond(toolbox::example_workflow().await, |()| "Workflow completed".into()) }))
        .route(
            "/queue",
            get(|| async { respond(toolbox::queue_workflow().await, |done| format!("Successfully completed {} tasks", done.len())) }),
        )
        .route("/transaction", get(|| async { respond(toolbox::transaction_workflow().await, |n| format!("Row count: {n}")) }))
}

/// Applies `migrations/` to the application database.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.app_database_url.as_deref().unwrap_or(&config.database_url);
    let pool = sqlx::PgPool::connect(url).await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    sqlx::migrate::Migrator::new(dir.as_path()).await?.run(&pool).await?;
    pool.close().await;
    println!("application migrations in {} applied", dir.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Lines name the workflow and step they come from; MAINSTAY_LOG_FORMAT=json for collectors.
    mainstay::init_logging()?;
    let config = mainstay_dev::development_config("toolbox").await?;
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => return migrate(&config).await,
        None => {}
        Some(other) => anyhow::bail!("unknown command {other:?}; run `toolbox` to serve or `toolbox migrate`"),
    }

    let app = Mainstay::builder(config).queue(toolbox::example_queue()).launch().await?;
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8000);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    // PORT=0 picks a free port; print the one bound.
    println!("Listening on http://localhost:{}/", listener.local_addr()?.port());
    let stopping = app.clone();
    axum::serve(listener, routes())
        .with_graceful_shutdown(async move {
            let _ = mainstay::wait_for_signal().await;
            stopping.shutdown().await;
        })
        .await?;
    Ok(())
}
