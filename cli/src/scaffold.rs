//! `mainstay init`: a new application directory with a durable workflow, an HTTP endpoint that
//! starts it, a migration, and `mainstay.yaml`.

use std::path::Path;

use anyhow::{bail, Context};

/// Where the mainstay crate lives when the CLI was built from a checkout; new apps depend on
/// it by path when it is there, and on the published version otherwise.
const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../worker");

pub fn init(dir: &Path, name: &str) -> anyhow::Result<()> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.is_empty() {
        bail!("{name:?} is not a valid application name; use letters, digits, '-' and '_'");
    }
    if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty; choose a new directory", dir.display());
    }
    let dependency = match std::fs::canonicalize(SOURCE_DIR) {
        Ok(path) => format!("mainstay = {{ path = {:?} }}", path.display().to_string()),
        Err(_) => format!("mainstay = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let files = [
        ("Cargo.toml", CARGO_TOML.replace("{name}", name).replace("{mainstay}", &dependency)),
        ("mainstay.yaml", MAINSTAY_YAML.replace("{name}", name)),
        ("src/main.rs", MAIN_RS.to_string()),
        ("migrations/0001_greetings.sql", MIGRATION.to_string()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file path has a parent"))
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[workspace]

[dependencies]
{mainstay}
axum = "0.8"
sqlx = { version = "0.9", default-features = false, features = ["runtime-tokio", "postgres", "migrate"] }
tokio = { version = "1", features = ["full"] }
"#;

const MAINSTAY_YAML: &str = r#"# The mainstay project file: `mainstay migrate` and `mainstay start` read it.
name: {name}
# The system database (workflows, queues, schedules). ${VAR} and ${VAR:-default} read the
# environment; `mainstay postgres start` prints a URL for a local Postgres.
database_url: ${MAINSTAY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
start:
  - cargo run --release
migrate:
  - cargo run --release -- migrate
"#;

const MAIN_RS: &str = r#"//! A durable workflow served over HTTP: GET / starts it.

use std::time::Duration;

use axum::{routing::get, Router};

#[mainstay::transaction]
async fn record_greeting(conn: &mut mainstay::sqlx::PgConnection, name: String) -> mainstay::Result<i64> {
    sqlx::query("INSERT INTO greetings (name) VALUES ($1)").bind(&name).execute(&mut *conn).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM greetings").fetch_one(&mut *conn).await?)
}

#[mainstay::step]
async fn say(text: String) -> mainstay::Result<()> {
    println!("{text}");
    Ok(())
}

#[mainstay::workflow]
async fn greet(name: String) -> mainstay::Result<i64> {
    say(format!("Hello, {name}!")).await?;
    mainstay::sleep(Duration::from_secs(1)).await?;
    record_greeting(name).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = mainstay::Config::from_env()?;
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        let pool = sqlx::PgPool::connect(config.app_database_url.as_deref().unwrap_or(&config.database_url)).await?;
        sqlx::migrate::Migrator::new(std::path::Path::new("migrations")).await?.run(&pool).await?;
        println!("application migrations applied");
        return Ok(());
    }
    let app = mainstay::Mainstay::launch(config).await?;
    let routes = Router::new().route(
        "/",
        get(|| async {
            match greet("world".into()).await {
                Ok(n) => format!("greeted {n} times\n"),
                Err(e) => format!("error: {e}\n"),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("listening on http://127.0.0.1:8000");
    axum::serve(listener, routes).with_graceful_shutdown(async { let _ = mainstay::wait_for_signal().await; }).await?;
    app.shutdown().await;
    Ok(())
}
"#;

const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS greetings (id bigserial PRIMARY KEY, name text NOT NULL);\n";
