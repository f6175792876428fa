//! The `mainstay` command-line tool: scaffold, start and migrate an application; inspect and
//! operate its workflows, queues and schedules; run a local Postgres for development.
//!
//! The database comes from `--database-url`, `MAINSTAY_DATABASE_URL`, `DATABASE_URL`, or the
//! `database_url` of `mainstay.yaml` in the current directory, in that order.

mod project;
mod render;
mod scaffold;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use mainstay::{Client, ForkOptions, Status, StuckCriteria, WorkflowFilter};
use mainstay_dev::LocalPostgres;
use project::Project;
use render::{opt, short, time};

#[derive(Parser)]
#[command(name = "mainstay", version, about = "Durable workflows for Rust: tools")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// System database URL (default: MAINSTAY_DATABASE_URL, DATABASE_URL, or mainstay.yaml).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new application in DIR (a workflow, an HTTP endpoint, a migration, mainstay.yaml).
    Init {
        dir: PathBuf,
        /// The application's name (default: the directory's).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the start commands of mainstay.yaml.
    Start,
    /// Migrate the system database, then run the migrate commands of mainstay.yaml.
    Migrate,
    /// Drop the system database schema with every workflow in it (development only).
    Reset {
        /// Confirm: the data cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
    /// Inspect and operate workflows.
    Workflow {
        #[command(subcommand)]
        action: WorkflowAction,
    },
    /// Inspect queues.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Inspect and operate schedules.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Report stuck and stranded work: workflows running without progress, parked ones, queued
    /// work no running version can run, queues whose oldest item waits too long.
    Stuck(StuckArgs),
    /// A private local Postgres for development, from the system's PostgreSQL binaries.
    Postgres {
        #[command(subcommand)]
        action: PostgresAction,
    },
}

#[derive(Args)]
struct StuckArgs {
    /// A PENDING workflow without a new checkpoint for this long is stalled (a durable sleep,
    /// recv or get_event waiting for its timer is not).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    stalled_after: Duration,
    /// A queue whose oldest ready workflow has waited this long is slow.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    queue_wait: Duration,
    /// A version that has workers; repeat for several (default: the application's latest
    /// version). Queued work no such version can run is stranded.
    #[arg(long = "running-version", value_name = "VERSION")]
    running_versions: Vec<String>,
    /// The application whose work to judge (default: MAINSTAY_APP_NAME, else every
    /// application's).
    #[arg(long)]
    app: Option<String>,
    /// Workflows listed per kind (the counts are whole).
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Subcommand)]
enum WorkflowAction {
    /// Start a workflow by name: enqueue it, and with --wait wait for its result.
    Start {
        /// The workflow's registered name.
        name: String,
        /// Its arguments as JSON: an array holds the positional arguments, anything else is the
        /// only argument (e.g. '42', '"text"', '{"order": 7}', '[1, "two"]'). Default: none.
        #[arg(long)]
        input: Option<String>,
        /// The queue (default: the internal queue every worker listens to).
        #[arg(long)]
        queue: Option<String>,
        /// The workflow ID, an idempotency key: starting the same ID again starts nothing new.
        #[arg(long)]
        id: Option<String>,
        /// Run it on this application version (default: the latest).
        #[arg(long)]
        app_version: Option<String>,
        /// Lower runs first (the queue must have priorities enabled).
        #[arg(long)]
        priority: Option<i32>,
        /// Wait for it to finish and print its output; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Send a message to a workflow (what its `recv(topic)` receives).
    Send {
        id: String,
        topic: String,
        /// The message as JSON.
        message: String,
        /// Sending again with the same key delivers nothing more.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List workflows, newest first.
    List(ListArgs),
    /// Show one workflow.
    Get { id: String },
    /// List the recorded steps of a workflow.
    Steps { id: String },
    /// Cancel a workflow (it stops at its next step).
    Cancel { id: String },
    /// Resume a cancelled or failed workflow from its last completed step.
    Resume { id: String },
    /// Delete a workflow's records (status, steps, events, streams, messages).
    Delete {
        id: String,
        /// Also delete the workflows it started, recursively.
        #[arg(long)]
        children: bool,
    },
    /// Delete finished workflows (SUCCESS, ERROR, CANCELLED, ...) past an age or a count;
    /// unfinished workflows are never touched.
    Prune {
        /// Delete those created longer ago than this (e.g. 7d, 12h, 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Keep at most this many finished workflows, the newest.
        #[arg(long)]
        keep: Option<u64>,
    },
    /// Start a new run of a workflow that replays its steps before --step and runs the rest.
    Fork {
        id: String,
        /// The first step to run again.
        #[arg(long, default_value_t = 1)]
        step: i32,
        /// The new run's ID (default: a fresh UUID).
        #[arg(long)]
        new_id: Option<String>,
        /// The application version to run it on (default: the original's).
        #[arg(long)]
        app_version: Option<String>,
    },
}

#[derive(Args)]
struct ListArgs {
    /// Only these statuses (repeatable): PENDING, ENQUEUED, SUCCESS, ERROR, CANCELLED, ...
    #[arg(long)]
    status: Vec<String>,
    /// Only this workflow name.
    #[arg(long)]
    name: Option<String>,
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only this application version.
    #[arg(long)]
    app_version: Option<String>,
    /// Only IDs starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Created at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Created before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u32,
}

#[derive(Subcommand)]
enum QueueAction {
    /// Queues with their limits and their waiting and running workflows.
    List,
}

#[derive(Subcommand)]
enum ScheduleAction {
    /// Every schedule.
    List,
    /// Stop a schedule from firing.
    Pause { name: String },
    /// Let a paused schedule fire again from its next tick.
    Resume { name: String },
    /// Run a schedule's workflow now.
    Trigger { name: String },
    /// Create a schedule that runs WORKFLOW at every tick of CRON.
    Create {
        name: String,
        workflow: String,
        /// 5 fields, or 6 with seconds first (quote it: "*/5 * * * *").
        cron: String,
        /// IANA time zone the cron expression is read in (default UTC).
        #[arg(long)]
        time_zone: Option<String>,
        /// Queue the ticks are enqueued on (default: the internal queue).
        #[arg(long)]
        queue: Option<String>,
        /// After downtime, run the ticks missed since the last fire.
        #[arg(long)]
        automatic_backfill: bool,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        /// JSON passed to every run as the workflow's second argument (default null).
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
    },
    /// Delete a schedule (its past runs stay).
    Delete { name: String },
    /// Run every tick of a schedule in [--from, --to), each once.
    Backfill {
        name: String,
        /// RFC 3339 start, inclusive.
        #[arg(long)]
        from: String,
        /// RFC 3339 end, exclusive.
        #[arg(long)]
        to: String,
    },
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
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) if e.downcast_ref::<Reported>().is_some() => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {}", message(&e));
            if e.chain().any(|c| c.downcast_ref::<mainstay::Error>().is_some_and(mainstay::Error::is_schema_missing)) {
                eprintln!("hint: the system database has no Mainstay schema yet: `mainstay migrate` creates it");
            }
            // Advice only the CLI can give: it manages a local Postgres.
            if e.chain().any(|c| matches!(c.downcast_ref::<mainstay::Error>(), Some(mainstay::Error::Connect { retried: true, .. }))) {
                eprintln!("hint: `mainstay postgres start` runs a local Postgres and prints its URL");
            }
            std::process::exit(1);
        }
    }
}

/// The error and its causes, down to the first of the runtime's errors: those already say
/// their cause in their message, so the rest of the chain would repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.downcast_ref::<mainstay::Error>().is_some() {
            break;
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let project = Project::find(&std::env::current_dir()?)?;
    let g = &cli.global;
    match cli.command {
        Command::Init { dir, name } => {
            let name = match name {
                Some(n) => n,
                None => dir.file_name().and_then(|n| n.to_str()).unwrap_or("app").to_string(),
            };
            scaffold::init(&dir, &name)?;
            println!(
                "Created {name} in {}. Next:\n  cd {}\n  mainstay postgres start   # or set MAINSTAY_DATABASE_URL\n  mainstay migrate\n  mainstay start",
                dir.display(),
                dir.display()
            );
        }
        Command::Start => {
            let project = require(project, "start")?;
            if project.start.is_empty() {
                bail!("mainstay.yaml has no start commands; add `start: [\"cargo run --release\"]`");
            }
            // Without a database URL the start commands may still bring their own.
            let config = config(g, Some(&project)).ok();
            return run_commands(&project, &project.start, config.as_ref());
        }
        Command::Migrate => {
            let config = config(g, project.as_ref())?;
            mainstay::migrate(&config).await.with_context(|| format!("migrating {}", mainstay::config::redact(&config.database_url)))?;
            println!("System database is at DBOS migration {} (schema `{}`).", mainstay::DBOS_SCHEMA_VERSION, config.system_schema);
            if let Some(project) = &project {
                let code = run_commands(project, &project.migrate, Some(&config))?;
                if code != 0 {
                    return Ok(code);
                }
            }
        }
        Command::Reset { yes } => {
            let config = config(g, project.as_ref())?;
            if !yes {
                bail!(
                    "reset drops schema `{}` of {} with every workflow in it; run again with --yes to confirm",
                    config.system_schema,
                    mainstay::config::redact(&config.database_url)
                );
            }
            let client = Client::connect_with(&config).await?;
            client.reset().await?;
            println!("Dropped schema `{}`; `mainstay migrate` recreates it.", config.system_schema);
        }
        Command::Workflow { action } => workflow(&client(g, project.as_ref()).await?, action, g.json).await?,
        Command::Stuck(args) => stuck(&client(g, project.as_ref()).await?, args, g.json).await?,
        Command::Queue { action: QueueAction::List } => queues(&client(g, project.as_ref()).await?, g.json).await?,
        Command::Schedule { action } => schedule(&client(g, project.as_ref()).await?, action, g.json).await?,
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
    }
    Ok(0)
}

fn require(project: Option<Project>, command: &str) -> anyhow::Result<Project> {
    project.ok_or_else(|| {
        anyhow::anyhow!("`mainstay {command}` needs a {} in the current directory; create one with `mainstay init DIR`", project::FILE_NAME)
    })
}

/// The runtime configuration: the database from the flag, the environment or the project.
fn config(g: &Global, project: Option<&Project>) -> anyhow::Result<mainstay::Config> {
    let url = g
        .database_url
        .clone()
        .or_else(|| std::env::var(mainstay::config::env::DATABASE_URL).ok())
        .or_else(|| std::env::var(mainstay::config::env::DATABASE_URL_FALLBACK).ok())
        .or_else(|| project.and_then(|p| p.database_url.clone()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no database URL: pass --database-url, set {}, or set database_url in {} \
                 (`mainstay postgres start` runs a local Postgres and prints its URL)",
                mainstay::config::env::DATABASE_URL,
                project::FILE_NAME
            )
        })?;
    let mut config = mainstay::Config::new(url);
    config.apply_env()?;
    if let Some(p) = project {
        if let Some(schema) = &p.system_schema {
            config.system_schema = schema.clone();
        }
        if config.app_database_url.is_none() {
            config.app_database_url = p.app_database_url.clone();
        }
    }
    config.pool_size = 4;
    config.connect_timeout = Duration::from_secs(5);
    Ok(config)
}

async fn client(g: &Global, project: Option<&Project>) -> anyhow::Result<Client> {
    Ok(Client::connect_with(&config(g, project)?).await?)
}

/// Runs `commands` in the project's directory, one after the other, with the project's
/// databases (`config`) in the environment; stops at the first that fails and returns its exit
/// code.
fn run_commands(project: &Project, commands: &[project::ProjectCommand], config: Option<&mainstay::Config>) -> anyhow::Result<i32> {
    use mainstay::config::env;
    for command in commands {
        // As written: the substituted line may hold a password.
        let shown = &command.written;
        eprintln!("$ {shown}");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(&command.line).current_dir(&project.dir).env(env::APP_NAME, &project.name);
        if let Some(c) = config {
            cmd.env(env::DATABASE_URL, &c.database_url).env(env::SYSTEM_SCHEMA, &c.system_schema);
            // Migration tools (sqlx-cli among them) read DATABASE_URL: the application database.
            cmd.env(env::DATABASE_URL_FALLBACK, c.app_database_url.as_ref().unwrap_or(&c.database_url));
            if let Some(app) = &c.app_database_url {
                cmd.env(env::APP_DATABASE_URL, app);
            }
        }
        let status = cmd.status().with_context(|| format!("running `{shown}`"))?;
        if !status.success() {
            eprintln!("`{shown}` failed ({status})");
            return Ok(status.code().unwrap_or(1));
        }
    }
    Ok(0)
}

fn parse_time(what: &str, text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|d| d.to_utc())
        .map_err(|e| anyhow::anyhow!("--{what} {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-01-31T00:00:00Z"))
}

fn parse_millis(what: &str, text: &Option<String>) -> anyhow::Result<Option<i64>> {
    text.as_deref().map(|t| parse_time(what, t).map(|d| d.timestamp_millis())).transpose()
}

const STATUSES: [&str; 7] = [
    Status::PENDING,
    Status::ENQUEUED,
    Status::DELAYED,
    Status::SUCCESS,
    Status::ERROR,
    Status::CANCELLED,
    Status::MAX_RECOVERY_ATTEMPTS_EXCEEDED,
];

/// A failure already reported on stdout (a workflow that failed under `start --wait`): exit 1
/// without an error line.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for Reported {}

async fn workflow(client: &Client, action: WorkflowAction, json: bool) -> anyhow::Result<()> {
    match action {
        WorkflowAction::List(a) => {
            let mut statuses = Vec::new();
            for s in &a.status {
                let upper = s.to_ascii_uppercase();
                if !STATUSES.contains(&upper.as_str()) {
                    bail!("--status {s:?} is not a status; use one of {}", STATUSES.join(", "));
                }
                statuses.push(Status::parse(&upper));
            }
            let mut filter = WorkflowFilter::new().statuses(statuses).limit(a.limit).offset(a.offset);
            filter.id_prefix = a.prefix;
            filter.name = a.name;
            filter.app_version = a.app_version;
            filter.queue = a.queue;
            filter.created_from_ms = parse_millis("since", &a.since)?;
            filter.created_before_ms = parse_millis("until", &a.until)?;
            let list = client.list_workflows(&filter).await?;
            let rows = list
                .iter()
                .map(|s| {
                    vec![
                        s.workflow_id.clone(),
                        opt(&s.name),
                        s.status.as_str().to_string(),
                        opt(&s.queue_name),
                        opt(&s.executor_id),
                        opt(&s.app_version),
                        time(Some(s.created_at_ms)),
                    ]
                })
                .collect();
            render::print(json, &list, &["ID", "NAME", "STATUS", "QUEUE", "EXECUTOR", "VERSION", "CREATED"], rows)
        }
        WorkflowAction::Get { id } => {
            let s = client.status(&id).await?.ok_or(mainstay::Error::NotFound { workflow_id: id.clone() })?;
            let fields = vec![
                vec!["ID".into(), s.workflow_id.clone()],
                vec!["NAME".into(), opt(&s.name)],
                vec!["STATUS".into(), s.status.as_str().to_string()],
                vec!["QUEUE".into(), opt(&s.queue_name)],
                vec!["EXECUTOR".into(), opt(&s.executor_id)],
                vec!["VERSION".into(), opt(&s.app_version)],
                vec!["PARENT".into(), opt(&s.parent_workflow_id)],
                vec!["RECOVERY ATTEMPTS".into(), s.recovery_attempts.to_string()],
                vec!["CREATED".into(), time(Some(s.created_at_ms))],
                vec!["STARTED".into(), time(s.started_at_ms)],
                vec!["COMPLETED".into(), time(s.completed_at_ms)],
                vec!["DEADLINE".into(), time(s.deadline_epoch_ms)],
                vec!["OUTPUT".into(), opt(&s.output)],
                vec!["ERROR".into(), opt(&s.error)],
            ];
            render::print(json, &s, &["FIELD", "VALUE"], fields)
        }
        WorkflowAction::Steps { id } => {
            if client.status(&id).await?.is_none() {
                return Err(mainstay::Error::NotFound { workflow_id: id }.into());
            }
            let steps = client.list_steps(&id).await?;
            let rows = steps
                .iter()
                .map(|s| {
                    vec![
                        s.function_id.to_string(),
                        s.name.clone(),
                        short(&s.output),
                        short(&s.error),
                        opt(&s.child_workflow_id),
                        time(s.completed_at_ms),
                    ]
                })
                .collect();
            render::print(json, &steps, &["STEP", "NAME", "OUTPUT", "ERROR", "CHILD", "COMPLETED"], rows)
        }
        WorkflowAction::Start { name, input, queue, id, app_version, priority, wait } => {
            let args = match input.as_deref() {
                None => Vec::new(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Array(items)) => items,
                    Ok(one) => vec![one],
                    Err(e) => bail!("--input is not JSON ({e}): give the arguments as JSON, e.g. --input '42' or --input '[1, \"two\"]'"),
                },
            };
            let queue = queue.unwrap_or_else(|| mainstay::INTERNAL_QUEUE.to_string());
            let mut options = mainstay::WorkflowOptions::new().priority(priority);
            options.id = id;
            options.app_version = app_version;
            let id = client.enqueue(&name, &queue, args, options).await?;
            if !wait {
                if json {
                    println!("{}", serde_json::json!({ "workflow_id": id }));
                } else {
                    println!("Started {name} as {id} (on queue {queue}).");
                }
                return Ok(());
            }
            match client.get_result::<serde_json::Value>(&id).await {
                Ok(output) => {
                    if json {
                        println!("{}", serde_json::json!({ "workflow_id": id, "status": "SUCCESS", "output": output }));
                    } else {
                        println!("{id} succeeded: {output}");
                    }
                    Ok(())
                }
                Err(mainstay::Error::Failed(f)) => {
                    if json {
                        println!("{}", serde_json::json!({ "workflow_id": id, "status": "ERROR", "error": f }));
                    } else {
                        println!("{id} failed: {}: {}", f.name, f.message);
                    }
                    Err(Reported.into())
                }
                Err(e) => Err(e.into()),
            }
        }
        WorkflowAction::Send { id, topic, message, idempotency_key } => {
            let value: serde_json::Value = serde_json::from_str(&message).map_err(|e| {
                anyhow::anyhow!("the message is not JSON ({e}): give it as JSON, e.g. '\"approved\"' or '{{\"ok\": true}}'")
            })?;
            client.send(&id, &value, Some(&topic), idempotency_key.as_deref()).await?;
            if json {
                println!("{}", serde_json::json!({ "sent": true, "workflow_id": id, "topic": topic }));
            } else {
                println!("Sent to {id} on topic {topic}.");
            }
            Ok(())
        }
        WorkflowAction::Cancel { id } => {
            client.cancel(&id).await?;
            println!("Cancelled {id} (it stops at its next step).");
            Ok(())
        }
        WorkflowAction::Resume { id } => {
            client.resume(&id).await?;
            println!("Resumed {id}: enqueued to run from its last completed step.");
            Ok(())
        }
        WorkflowAction::Delete { id, children } => {
            let deleted = client.delete_workflow(&id, children).await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": deleted }));
            } else {
                println!("Deleted {}.", deleted.join(", "));
            }
            Ok(())
        }
        WorkflowAction::Prune { older_than, keep } => {
            if older_than.is_none() && keep.is_none() {
                bail!("say what to delete: --older-than AGE (e.g. 7d), --keep N, or both");
            }
            let n = client.delete_finished(older_than, keep).await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": n }));
            } else {
                println!("Deleted {n} finished workflows.");
            }
            Ok(())
        }
        WorkflowAction::Fork { id, step, new_id, app_version } => {
            if step < 1 {
                bail!("--step must be at least 1 (the first step)");
            }
            let mut opts = ForkOptions::new().start_step(step);
            opts.new_id = new_id;
            opts.app_version = app_version;
            let new = client.fork(&id, &opts).await?;
            if json {
                println!("{}", serde_json::json!({ "workflow_id": new }));
            } else {
                println!("Forked {id} from step {step} as {new}.");
            }
            Ok(())
        }
    }
}

async fn stuck(client: &Client, args: StuckArgs, json: bool) -> anyhow::Result<()> {
    let client = match &args.app {
        Some(app) => client.for_application(Some(app)),
        None => client.clone(),
    };
    let criteria = StuckCriteria {
        stalled_after: args.stalled_after,
        queue_wait: args.queue_wait,
        running_versions: (!args.running_versions.is_empty()).then_some(args.running_versions),
        limit: args.limit,
    };
    let report = client.stuck_work(&criteria).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let ago = |ms: i64| humantime::format_duration(Duration::from_secs((now - ms).max(0) as u64 / 1000)).to_string();
    let w = &report.workflows;
    let running = if report.running_versions.is_empty() { "none".to_string() } else { report.running_versions.join(", ") };
    println!("Running versions: {running}\n");
    println!(
        "Stalled: {} workflow(s) running without a checkpoint for {} or more",
        w.stalled_total,
        humantime::format_duration(args.stalled_after)
    );
    let rows = w
        .stalled
        .iter()
        .map(|s| {
            vec![s.workflow_id.clone(), opt(&s.name), opt(&s.executor_id), opt(&s.app_version), opt(&s.last_step), ago(s.active_at_ms)]
        })
        .collect();
    render::print(false, &(), &["WORKFLOW ID", "NAME", "EXECUTOR", "VERSION", "LAST STEP", "IDLE FOR"], rows)?;
    println!("\nParked: {} workflow(s) past their maximum recovery attempts (resume each once the cause is fixed)", w.parked_total);
    let rows = w
        .parked
        .iter()
        .map(|p| vec![p.workflow_id.clone(), opt(&p.name), opt(&p.app_version), p.recovery_attempts.to_string(), time(p.updated_at_ms)])
        .collect();
    render::print(false, &(), &["WORKFLOW ID", "NAME", "VERSION", "ATTEMPTS", "SINCE"], rows)?;
    if report.stranded_judged {
        println!("\nStranded: queued work no running version can run");
    } else {
        println!("\nStranded: not judged: name the application (--app, or MAINSTAY_APP_NAME) or the versions that run (--running-version)");
    }
    let rows = report
        .stranded
        .iter()
        .map(|s| {
            vec![
                s.workflow_name.clone(),
                opt(&s.app_version),
                opt(&s.for_version),
                s.reason.as_str().to_string(),
                s.queued.to_string(),
                s.own.to_string(),
            ]
        })
        .collect();
    render::print(false, &(), &["WORKFLOW", "PINNED TO", "WAITS FOR", "REASON", "QUEUED", "OWN"], rows)?;
    println!("\nSlow queues: the oldest ready workflow waited {} or more", humantime::format_duration(args.queue_wait));
    let rows = report.slow_queues.iter().map(|q| vec![q.queue.clone(), q.enqueued.to_string(), ago(q.oldest_ready_ms)]).collect();
    render::print(false, &(), &["QUEUE", "ENQUEUED", "OLDEST WAIT"], rows)?;
    Ok(())
}

async fn queues(client: &Client, json: bool) -> anyhow::Result<()> {
    let settings = client.list_queues().await?;
    let depths = client.queue_depths().await?;
    let mut names: Vec<String> = settings.iter().map(|q| q.name.clone()).chain(depths.iter().map(|d| d.queue.clone())).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for name in names {
        let q = settings.iter().find(|q| q.name == name);
        let d = depths.iter().find(|d| d.queue == name);
        let (enqueued, pending) = d.map(|d| (d.enqueued, d.pending)).unwrap_or((0, 0));
        let rate = q.and_then(|q| q.rate_limit).map(|r| format!("{}/{:?}", r.max, r.period)).unwrap_or_default();
        rows.push(vec![
            name.clone(),
            enqueued.to_string(),
            pending.to_string(),
            q.map(|q| opt(&q.concurrency)).unwrap_or_default(),
            q.map(|q| opt(&q.worker_concurrency)).unwrap_or_default(),
            rate.clone(),
        ]);
        out.push(serde_json::json!({
            "name": name, "enqueued": enqueued, "pending": pending,
            "concurrency": q.and_then(|q| q.concurrency), "worker_concurrency": q.and_then(|q| q.worker_concurrency),
            "rate_limit": q.and_then(|q| q.rate_limit).map(|r| serde_json::json!({"max": r.max, "period_seconds": r.period.as_secs_f64()})),
        }));
    }
    render::print(json, &out, &["QUEUE", "ENQUEUED", "RUNNING", "CONCURRENCY", "PER WORKER", "RATE LIMIT"], rows)
}

async fn schedule(client: &Client, action: ScheduleAction, json: bool) -> anyhow::Result<()> {
    match action {
        ScheduleAction::List => {
            let list = client.list_schedules().await?;
            let rows = list
                .iter()
                .map(|s| {
                    let next =
                        s.validate().ok().and_then(|c| c.next_after(chrono::Utc::now())).map(mainstay::format_tick).unwrap_or_default();
                    vec![
                        s.name.clone(),
                        s.workflow_name.clone(),
                        s.cron.clone(),
                        s.time_zone.clone().unwrap_or_else(|| "UTC".into()),
                        match s.unreadable_context {
                            // It does not fire: say so where its status is shown.
                            Some(_) => format!("{} (context not JSON)", s.status.as_str()),
                            None => s.status.as_str().to_string(),
                        },
                        opt(&s.last_fired_at),
                        next,
                    ]
                })
                .collect();
            render::print(json, &list, &["NAME", "WORKFLOW", "CRON", "ZONE", "STATUS", "LAST FIRED", "NEXT"], rows)
        }
        ScheduleAction::Pause { name } => {
            client.pause_schedule(&name).await?;
            println!("Paused schedule {name}.");
            Ok(())
        }
        ScheduleAction::Resume { name } => {
            client.resume_schedule(&name).await?;
            println!("Resumed schedule {name}; it fires from its next tick.");
            Ok(())
        }
        ScheduleAction::Trigger { name } => {
            let id = client.trigger_schedule(&name).await?;
            if json {
                println!("{}", serde_json::json!({ "workflow_id": id }));
            } else {
                println!("Triggered {name}: workflow {id}.");
            }
            Ok(())
        }
        ScheduleAction::Create { name, workflow, cron, time_zone, queue, automatic_backfill, paused, context } => {
            let mut schedule = mainstay::Schedule::new(&name, workflow, cron);
            if let Some(text) = context {
                let value = serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("--context {text:?} is not JSON ({e}); quote it, e.g. --context '{{\"region\": \"eu\"}}'")
                })?;
                schedule = schedule.context(value);
            }
            schedule.time_zone = time_zone;
            schedule.queue = queue;
            schedule.automatic_backfill = automatic_backfill;
            if paused {
                schedule.status = mainstay::ScheduleStatus::Paused;
            }
            client.create_schedule(&schedule).await?;
            println!("Created schedule {name}.");
            Ok(())
        }
        ScheduleAction::Delete { name } => {
            client.delete_schedule(&name).await?;
            println!("Deleted schedule {name}.");
            Ok(())
        }
        ScheduleAction::Backfill { name, from, to } => {
            let (start, end) = (parse_time("from", &from)?, parse_time("to", &to)?);
            if start >= end {
                anyhow::bail!("--from {from} is not before --to {to}; the range is [from, to)");
            }
            let ids = client.backfill_schedule(&name, start, end).await?;
            if json {
                println!("{}", serde_json::json!({ "workflow_ids": ids }));
            } else {
                println!("Backfilled {name}: {} ticks enqueued (ticks already run are not run again).", ids.len());
            }
            Ok(())
        }
    }
}
