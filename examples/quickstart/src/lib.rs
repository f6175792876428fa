//! The workflows of the DBOS tutorial's section 2, shared by the two quickstart programs.

use std::time::Duration;

use mainstay::Mainstay;

#[mainstay::step]
pub async fn step_one() -> mainstay::Result<()> {
    println!("Step one completed!");
    Ok(())
}

#[mainstay::step]
pub async fn step_two() -> mainstay::Result<()> {
    println!("Step two completed!");
    Ok(())
}

/// Two steps: a crash between them resumes at step two.
#[mainstay::workflow]
pub async fn dbos_workflow() -> mainstay::Result<()> {
    step_one().await?;
    step_two().await?;
    Ok(())
}

/// Step one, five durable one-second sleeps, step two: stop the process during the sleeps and
/// start it again, and only what was left runs.
#[mainstay::workflow]
pub async fn sleepy_workflow() -> mainstay::Result<()> {
    step_one().await?;
    for _ in 0..5 {
        println!("Press Control + C to stop the app...");
        mainstay::sleep(Duration::from_secs(1)).await?;
    }
    step_two().await?;
    Ok(())
}

/// Launches mainstay on the configured database, or on a private local Postgres.
pub async fn launch() -> anyhow::Result<Mainstay> {
    // Lines name the workflow and step they come from; MAINSTAY_LOG_FORMAT=json for collectors.
    mainstay::init_logging()?;
    let config = mainstay_dev::development_config("quickstart").await?;
    Ok(Mainstay::launch(config).await?)
}
