//! The `mainstay` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mainstay::local_postgres::LocalPostgres;

#[derive(Parser)]
#[command(name = "mainstay", version, about = "Durable workflows for Rust: tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A private local Postgres for development, from the system's PostgreSQL binaries.
    Postgres {
        #[command(subcommand)]
        action: PostgresAction,
    },
    /// Create or upgrade the system database schema (MAINSTAY_DATABASE_URL or DATABASE_URL).
    Migrate,
}

#[derive(Subcommand)]
enum PostgresAction {
    /// Initialize (first time) and start it; prints the URL.
    Start,
    /// Stop it.
    Stop,
    /// Print its URL.
    Url,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    match Cli::parse().command {
        Command::Postgres { action } => {
            let pg = LocalPostgres::from_env()?;
            match action {
                PostgresAction::Start => {
                    let url = pg.start().await?;
                    println!("{url}");
                    eprintln!(
                        "Postgres is running (data in {}). Use it with:\n  export MAINSTAY_DATABASE_URL={url}",
                        pg.data_dir.display()
                    );
                }
                PostgresAction::Stop => {
                    pg.stop().await?;
                    eprintln!("Postgres stopped.");
                }
                PostgresAction::Url => println!("{}", pg.url()),
            }
        }
        Command::Migrate => {
            let config = mainstay::Config::from_env()?;
            mainstay::migrate(&config)
                .await
                .with_context(|| format!("migrating {}", mainstay::config::redact(&config.database_url)))?;
            println!(
                "System database is at DBOS migration {} (schema `{}`).",
                mainstay::DBOS_SCHEMA_VERSION,
                config.system_schema
            );
        }
    }
    Ok(())
}
