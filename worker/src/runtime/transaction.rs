//! Transactions: a step whose body runs in one Postgres transaction on the application
//! database and records its output in that same transaction, so it takes effect exactly once.
//!
//! Invariants:
//! - the body's changes and the output record (`datasource_outputs`) commit together or not at
//!   all; a re-execution (a crash after the commit but before the system-database checkpoint, or
//!   a commit whose acknowledgement was lost) finds the record and returns it without running
//!   the body again;
//! - serialization failures and deadlocks roll back and run the body again, with backoff;
//! - a database error raised by the body's own SQL (a constraint, a syntax error) is an
//!   application failure, recorded like any step failure; a lost connection is an interruption
//!   (nothing recorded, the workflow stays `PENDING` for recovery).

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use tracing::Instrument;

use crate::model::clock::now_ms;
use crate::model::error::{is_conflict, is_transient};
use crate::model::error::{Error, Failure, Result};
use crate::model::serialization::{decode, decode_failure, encode, encode_failure, fit_failure};
use crate::runtime::context::{self};
use crate::runtime::spans::{self, Operation};
use crate::runtime::step::recorded_result;
use crate::sysdb::{AppDatabase, CheckpointOutcome, TransactionRecord};

/// Isolation level of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
    /// The default: the transaction behaves as if it ran alone.
    #[default]
    Serializable,
}

impl Isolation {
    fn begin(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Isolation::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// Options of a transaction: `TransactionOptions::default().isolation(..).max_attempts(..)
/// .retry_interval(..)`. Non-exhaustive, so new options are not a breaking change: build it
/// with those methods, not with a struct literal.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TransactionOptions {
    pub isolation: Isolation,
    /// Runs allowed in all when serialization failures or deadlocks roll the transaction back.
    pub max_attempts: u32,
    /// First wait before running again after a serialization failure (doubles each time, up
    /// to one second, with jitter).
    pub retry_interval: Duration,
}

impl Default for TransactionOptions {
    fn default() -> Self {
        TransactionOptions { isolation: Isolation::Serializable, max_attempts: 50, retry_interval: Duration::from_millis(5) }
    }
}

impl TransactionOptions {
    /// The isolation level (default: serializable).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Runs allowed in all when conflicts roll the transaction back (at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The first wait before running again after a conflict.
    pub fn retry_interval(mut self, retry_interval: Duration) -> Self {
        self.retry_interval = retry_interval;
        self
    }
}

/// How many times a transaction whose commit may or may not have happened (a lost connection)
/// is re-checked and run again.
const CONNECTION_ATTEMPTS: u32 = 5;

/// Runs `f` as transaction `name` with the default options (serializable). `f` gets the
/// connection of the open transaction; it commits when `f` returns `Ok`.
pub fn transaction<T, F>(name: impl Into<String>, f: F) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send,
{
    transaction_with(name, TransactionOptions::default(), f)
}

/// Runs `f` as transaction `name` with `options`. Inside a workflow it is a step that takes
/// effect exactly once; outside one it is a plain transaction (retried on serialization
/// failures) on the launched runtime's application database.
pub fn transaction_with<T, F>(name: impl Into<String>, options: TransactionOptions, mut f: F) -> impl Future<Output = Result<T>> + Send
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send,
{
    let position = context::position();
    let name = name.into();
    let span = spans::operation(Operation::Transaction, &name, position.as_ref());
    async move {
        let Some((ctx, function_id)) = position else {
            let rt = crate::runtime::app::global()?;
            let app = rt.app_db().await?;
            return match run(&app, None, &name, &options, rt.db.payload_limit(), &mut f).await? {
                Done::Committed(value, _) => Ok(value),
                Done::Recorded(_) => unreachable_record(&name),
            };
        };
        if let Some(op) = ctx.replayed(function_id, &name)? {
            return recorded_result(op, &ctx.workflow_id);
        }
        ctx.check_interrupted()?;
        let started = now_ms();
        let app = ctx.rt.app_db().await?;
        let key = Some((&*ctx.workflow_id, function_id));
        let limit = ctx.rt.db.payload_limit();
        let done = ctx.interruptible(run(&app, key, &name, &options, limit, &mut f)).await?;
        // What this step returns, and what its checkpoint records.
        let (result, output, error): (Result<T>, Option<String>, Option<String>) = match done {
            Ok(Done::Committed(value, json)) => (Ok(value), Some(json), None),
            Ok(Done::Recorded(rec)) => {
                let what = format!("the recorded output of transaction {name} of workflow {}", ctx.workflow_id);
                let ser = rec.serialization.as_deref();
                match rec.error {
                    Some(err) => (Err(Error::Failed(decode_failure(&err, ser, &what)?)), None, Some(err)),
                    None => {
                        let output = rec.output.unwrap_or_else(|| "null".into());
                        (decode(Some(&output), ser, &what), Some(output), None)
                    }
                }
            }
            Err(e) => match e.to_failure() {
                Some(failure) => {
                    let failure = fit_failure(failure, &format!("the error of transaction {name}"), limit);
                    let error = encode_failure(&failure);
                    (Err(Error::Failed(failure)), None, Some(error))
                }
                None => return Err(e),
            },
        };
        match ctx.checkpoint(function_id, name.clone(), output, error, started).await? {
            CheckpointOutcome::Recorded => result,
            CheckpointOutcome::Existing(op) => recorded_result(&op, &ctx.workflow_id),
            CheckpointOutcome::NotOwner => Err(ctx.lost_ownership().await),
        }
    }
    .instrument(span)
}

fn unreachable_record<T>(name: &str) -> Result<T> {
    Err(Error::msg(format!("transaction {name} outside a workflow found a recorded output")))
}

/// How a transaction ended.
enum Done<T> {
    /// Committed now, with the JSON of its output.
    Committed(T, String),
    /// An earlier execution committed it; this is its record.
    Recorded(TransactionRecord),
}

/// Runs the transaction until it commits, fails for good, or finds an earlier commit.
/// `key` is (workflow, step) inside a workflow; `limit` bounds the output recorded.
async fn run<T, F>(
    app: &AppDatabase,
    key: Option<(&str, i32)>,
    name: &str,
    options: &TransactionOptions,
    limit: usize,
    f: &mut F,
) -> Result<Done<T>>
where
    T: Serialize,
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send,
{
    let (mut conflicts, mut lost) = (0u32, 0u32);
    let mut delays = crate::model::backoff::jittered(options.retry_interval, Duration::from_secs(1));
    let context = |what: &str| match key {
        Some((wf, step)) => format!("{what} transaction {name} (step {step} of workflow {wf})"),
        None => format!("{what} transaction {name}"),
    };
    loop {
        let mut conn = None;
        let mut rolled_back_by_commit = false;
        let attempt: std::result::Result<Done<T>, Retry> = async {
            let conn = conn.insert(app.acquire().await.map_err(|e| Retry::classify(e, &context("begin")))?);
            let mut tx = sqlx::Connection::begin_with(&mut **conn, options.isolation.begin())
                .await
                .map_err(|e| Retry::classify(e, &context("begin")))?;
            if let Some((wf, step)) = key {
                let found = app.recorded(&mut tx, wf, step).await.map_err(|e| Retry::classify(e, &context("check")))?;
                if let Some(rec) = found {
                    let _ = tx.rollback().await;
                    return Ok(Done::Recorded(rec));
                }
            }
            let value = match context::step_body(|| f(&mut tx)).await {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(Retry::from_body(e));
                }
            };
            // Too large to record: the transaction rolls back and fails (recorded as a failure).
            let json = encode(&value, &format!("the output of transaction {name}"), limit).map_err(Retry::Fail)?;
            if let Some((wf, step)) = key {
                app.record(&mut tx, wf, step, &json).await.map_err(|e| Retry::classify(e, &context("record")))?;
            }
            tx.commit().await.map_err(|e| match Retry::classify(e, &context("commit")) {
                // Without a record to look for, a commit that may have happened cannot be
                // retried safely.
                Retry::Connection(e) if key.is_none() => Retry::Fail(e),
                Retry::Conflict(e) => {
                    rolled_back_by_commit = true;
                    Retry::Conflict(e)
                }
                other => other,
            })?;
            Ok(Done::Committed(value, json))
        }
        .await;
        if rolled_back_by_commit {
            // Postgres rolled the transaction back as it refused the commit, but sqlx counts it
            // as open and queues a ROLLBACK, which the server answers with a warning ("there is
            // no transaction in progress") that sqlx logs: a normal, retried conflict would read
            // like a bug. The connection is closed instead of being returned with it.
            if let Some(conn) = conn.take() {
                let _ = conn.close().await;
            }
        }
        match attempt {
            Ok(done) => return Ok(done),
            Err(Retry::Fail(e)) => return Err(e),
            Err(Retry::Conflict(e)) => {
                conflicts += 1;
                if conflicts >= options.max_attempts.max(1) {
                    return Err(Error::Failed(
                        Failure::new(
                            "SerializationFailure",
                            format!("{} still conflicted after {conflicts} attempts: {e}", context("running")),
                        )
                        .with_code("40001"),
                    ));
                }
                tracing::debug!(transaction = name, attempt = conflicts, error = %e, "transaction conflicted; running it again");
            }
            Err(Retry::Connection(e)) => {
                lost += 1;
                if lost >= CONNECTION_ATTEMPTS {
                    return Err(e);
                }
                tracing::warn!(transaction = name, error = %e, "application database connection failed; retrying");
            }
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
    }
}

/// Why an attempt ended without committing.
enum Retry {
    /// A serialization failure or deadlock: run again.
    Conflict(Error),
    /// The connection failed: check for a commit and run again.
    Connection(Error),
    /// Final.
    Fail(Error),
}

impl Retry {
    fn classify(e: sqlx::Error, context: &str) -> Retry {
        // Conflicts first: the transient errors include them.
        let (conflict, transient) = (is_conflict(&e), is_transient(&e));
        let err = Error::db(context.to_string(), e);
        if conflict {
            Retry::Conflict(err)
        } else if transient {
            Retry::Connection(err)
        } else {
            Retry::Fail(err)
        }
    }

    /// An error the body returned: conflicts and lost connections are retried; the body's own
    /// SQL errors become application failures carrying the SQLSTATE.
    fn from_body(e: Error) -> Retry {
        match e {
            Error::Database { ref source, .. } if is_conflict(source) => Retry::Conflict(e),
            e => match e.into_body_error() {
                e @ Error::Database { .. } => Retry::Connection(e),
                other => Retry::Fail(other),
            },
        }
    }
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn options_are_built_with_methods() {
        let o =
            TransactionOptions::default().isolation(Isolation::RepeatableRead).max_attempts(0).retry_interval(Duration::from_millis(20));
        assert_eq!((o.isolation, o.max_attempts, o.retry_interval), (Isolation::RepeatableRead, 1, Duration::from_millis(20)));
    }
}
