//! Tutorial section 2, part one: run a two-step durable workflow and exit.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = quickstart::launch().await?;
    quickstart::dbos_workflow().await?;
    app.shutdown().await;
    Ok(())
}
