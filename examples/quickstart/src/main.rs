//! Tutorial section 2, part two: an HTTP server whose `GET /` runs a durable workflow of a
//! step, five one-second durable sleeps and another step. Stop it mid-way (Ctrl-C or kill -9)
//! and start it again: the workflow resumes where it was.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

async fn start_workflow() -> (StatusCode, String) {
    match quickstart::sleepy_workflow().await {
        Ok(()) => (StatusCode::OK, "Workflow completed\n".to_string()),
        Err(e @ mainstay::Error::Shutdown { .. }) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = quickstart::launch().await?;
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8000);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("Listening on http://localhost:{port}/ — open it to start a workflow");
    let router = Router::new().route("/", get(start_workflow));
    let stopping = app.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = mainstay::wait_for_signal().await;
            // Interrupt running workflows first (they stay PENDING and resume at the next
            // start), so open requests answer instead of holding the shutdown.
            stopping.shutdown().await;
        })
        .await?;
    Ok(())
}
