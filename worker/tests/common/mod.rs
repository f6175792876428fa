//! Shared setup for the integration tests: a fresh database per test on the Postgres that
//! `MAINSTAY_TEST_DATABASE_URL` points at (`.ci/run` starts one and sets it).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub const TEST_URL_ENV: &str = "MAINSTAY_TEST_DATABASE_URL";

pub fn admin_url() -> String {
    std::env::var(TEST_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{TEST_URL_ENV} is not set: point it at a Postgres superuser URL, e.g. \
             postgres://postgres@127.0.0.1:5432/postgres (bash .ci/run starts one and sets it)"
        )
    })
}

/// Replaces the database name in a URL.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("test database URL parses");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Creates an empty database named after the test and returns its URL.
pub async fn fresh_database(name: &str) -> String {
    let db = format!("t_{}", name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let mut conn = PgConnection::connect(&admin_url()).await.expect("connect to the test Postgres");
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .expect("drop old test database");
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut conn).await.expect("create test database");
    with_database(&admin_url(), &db)
}

pub fn config(url: &str, executor: &str) -> mainstay::Config {
    let mut c = mainstay::Config::new(url);
    c.executor_id = executor.to_string();
    c.app_version = Some("test-v1".to_string());
    c.polling_interval = Duration::from_millis(200);
    c.pool_size = 8;
    c
}

/// Launches a non-global instance for a test.
pub async fn launch(url: &str, executor: &str) -> mainstay::Mainstay {
    mainstay::Mainstay::builder(config(url, executor)).global(false).launch().await.expect("launch mainstay")
}

pub async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("connect")
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything logged by this test binary at TRACE level, from any thread or task, every
/// crate's (sqlx's included). The first call installs the subscriber; call it before anything
/// logs (`init_tracing` in the same binary would otherwise win, and `logged()` says so).
pub fn capture_logs() {
    captured();
}

/// What was captured so far; panics when another subscriber was installed first (a test that
/// asserts on captured logs must never pass because nothing was captured).
pub fn logged() -> String {
    let (installed, log) = captured();
    assert!(*installed, "another tracing subscriber was installed before capture_logs()");
    String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
}

fn captured() -> &'static (bool, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    static LOG: std::sync::OnceLock<(bool, std::sync::Arc<std::sync::Mutex<Vec<u8>>>)> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .is_ok();
        (installed, log)
    })
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Installs a trigger that logs every outcome write (status set to SUCCESS or ERROR) into
/// table `outcome_writes`, so tests can assert that an outcome was written exactly once.
pub async fn count_outcome_writes(c: &mut PgConnection) {
    sqlx::raw_sql(
        "CREATE TABLE outcome_writes (workflow_uuid text, status text);
         CREATE FUNCTION count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO outcome_writes VALUES (NEW.workflow_uuid, NEW.status); RETURN NEW; END $$;
         CREATE TRIGGER count_outcome AFTER UPDATE OF status ON dbos.workflow_status
         FOR EACH ROW WHEN (NEW.status IN ('SUCCESS', 'ERROR')) EXECUTE FUNCTION count_outcome();",
    )
    .execute(c)
    .await
    .expect("install the outcome-write counter");
}

/// Re-executes this test binary as a child process running only the ignored test `entry`,
/// with `envs` set; killed when dropped.
pub fn spawn_self(entry: &str, envs: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--ignored", "--exact", entry, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn the child process")
}

/// SIGKILLs a child process and reaps it.
pub async fn kill_child(mut child: tokio::process::Child) {
    child.start_kill().expect("SIGKILL the child");
    child.wait().await.expect("reap the child");
}
