//! A serialization failure that Postgres reports at COMMIT (not at a statement) is retried like
//! any other, and logs nothing that looks like a problem: sqlx would otherwise send a ROLLBACK
//! after the refused commit and log the server's "there is no transaction in progress" warning.
//! Alone in its test binary: the transactions run outside workflows, on the one launched
//! runtime, with every log line captured.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use mainstay::sqlx::PgConnection;
use tokio::sync::Barrier;

/// Runs of `skew` so far: the first two wait for each other.
static ARRIVALS: AtomicUsize = AtomicUsize::new(0);

fn gate() -> &'static Barrier {
    static GATE: OnceLock<Barrier> = OnceLock::new();
    GATE.get_or_init(|| Barrier::new(2))
}

/// Write skew: reads the other's key, writes its own. Two of them, each on its first run held
/// until the other has read and written too, cannot both commit, and nothing is left for them
/// to do but COMMIT: Postgres refuses the second commit (SQLSTATE 40001), and it runs again.
async fn skew(mine: &'static str, other: &'static str) -> mainstay::Result<i64> {
    mainstay::transaction("skew", move |conn: &mut PgConnection| {
        Box::pin(async move {
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM skew WHERE k = $1").bind(other).fetch_one(&mut *conn).await?;
            sqlx::query("INSERT INTO skew (k) VALUES ($1)").bind(mine).execute(&mut *conn).await?;
            if ARRIVALS.fetch_add(1, Ordering::SeqCst) < 2 {
                gate().wait().await;
            }
            Ok(seen)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_refused_at_commit_is_retried_without_a_warning() {
    capture_logs();
    let url = fresh_database("txn_commit_conflict").await;
    mainstay::migrate(&config(&url, "setup")).await.unwrap();
    let mut c = connect(&url).await;
    sqlx::raw_sql("CREATE TABLE skew (k text)").execute(&mut c).await.unwrap();
    // The global runtime: transactions outside workflows run on its application database.
    let app = mainstay::Mainstay::builder(config(&url, "t-skew")).launch().await.unwrap();
    let within = Duration::from_secs(60);
    let (a, b) = tokio::join!(tokio::time::timeout(within, skew("a", "b")), tokio::time::timeout(within, skew("b", "a")));
    let mut seen = vec![a.unwrap().unwrap(), b.unwrap().unwrap()];
    seen.sort();
    assert_eq!(seen, vec![0, 1], "as if one ran after the other");
    app.shutdown().await;
    let log = logged();
    let retried: Vec<&str> = log.lines().filter(|l| l.contains("transaction conflicted; running it again")).collect();
    assert!(retried.iter().any(|l| l.contains("commit transaction skew")), "no conflict was refused at commit:\n{}", retried.join("\n"));
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "a retried conflict must not look like a problem:\n{}", warnings.join("\n"));
}
