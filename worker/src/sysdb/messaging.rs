//! Statements for messages (`notifications`), events (`workflow_events` and their history) and
//! streams (`streams`).
//!
//! Invariants: an operation of a workflow changes the shared table and records its step in one
//! statement, guarded by the owner check (the status row is share-locked, so a recovery that
//! takes the workflow over waits for it, or it sees the new owner and writes nothing). A
//! received message is marked consumed in the statement that records it: a crash leaves either
//! both or neither. Event and stream writers announce themselves with `pg_notify` on DBOS's
//! channels, delivered at commit.

use std::sync::Arc;

use sqlx::Row;

use super::{q, Renderer, SystemDatabase};
use crate::model::error::{Error, Result};
use crate::model::names::{SEND_OPERATION, SET_EVENT_OPERATION};

/// What a workflow operation's statement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpWrite {
    /// Written, with its step record.
    Recorded,
    /// A record already exists at this step (an earlier execution wrote it).
    AlreadyRecorded,
    /// The writer no longer owns the workflow; nothing was written.
    NotOwner,
}

/// What a receive found.
#[derive(Debug, Clone)]
pub(crate) enum Received {
    /// A message, consumed and recorded now, or recorded by an earlier execution.
    Value(StoredValue),
    /// No message yet.
    Nothing,
    /// The receiver no longer owns the workflow; nothing was consumed.
    NotOwner,
}

/// A value read from a table of values: its text and serialization.
#[derive(Debug, Clone)]
pub(crate) struct StoredValue {
    pub value: String,
    pub serialization: Option<String>,
}

/// A stream value with its position.
#[derive(Debug, Clone)]
pub(crate) struct StreamEntry {
    pub offset: i32,
    pub value: StoredValue,
}

pub(super) struct Statements {
    send_from_workflow: Arc<str>,
    send: Arc<str>,
    receive: Arc<str>,
    set_event: Arc<str>,
    get_event: Arc<str>,
    list_events: Arc<str>,
    write_stream: Arc<str>,
    read_stream: Arc<str>,
}

/// The owner check every workflow operation starts with.
const OWN: &str = "own AS (SELECT 1 FROM {s}.workflow_status \
    WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING' FOR SHARE)";

/// The step record of a workflow operation whose output is null (send, set_event, stream
/// writes): written once, only when the owner check passed. `{op}` is its name, a literal or a
/// parameter.
const RECORD: &str = r#"rec AS (
    INSERT INTO {s}.operation_outputs (workflow_uuid, function_id, function_name, output,
        serialization, started_at_epoch_ms, completed_at_epoch_ms)
    SELECT $1, $3, {op}, 'null', 'portable_json', {now}, {now} FROM own
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING
    RETURNING 1
)"#;

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let f = |text: &str| r.sql(text);
        let with_own = |text: &str| r.sql_with(text, &[("own", OWN)]);
        // `op` is the operation name as SQL: a quoted constant or a parameter.
        let recorded = |op: &str, text: &str| r.sql_with(text, &[("own", OWN), ("rec", RECORD), ("op", op)]);
        let literal = |name: &str| format!("'{name}'");
        Statements {
            // $1 workflow, $2 owner, $3 function ID, $4 destination, $5 topic, $6 message,
            // $7 message ID
            send_from_workflow: recorded(
                &literal(SEND_OPERATION),
                r#"
WITH {own}, {rec}, msg AS (
    INSERT INTO {s}.notifications (message_uuid, destination_uuid, topic, message, serialization)
    SELECT $7, $4, $5, $6, 'portable_json' FROM rec
    RETURNING 1
)
SELECT (SELECT count(*) FROM own) AS owned, (SELECT count(*) FROM msg) AS written"#,
            ),
            send: f(r#"
INSERT INTO {s}.notifications (message_uuid, destination_uuid, topic, message, serialization)
VALUES ($4, $1, $2, $3, 'portable_json')
ON CONFLICT (message_uuid) DO NOTHING"#),
            // $1 workflow, $2 owner, $3 function ID, $4 topic, $5 started at
            receive: with_own(
                r#"
WITH {own}, prior AS (
    SELECT output, serialization FROM {s}.operation_outputs
    WHERE workflow_uuid = $1 AND function_id = $3
), msg AS (
    SELECT message_uuid FROM {s}.notifications
    WHERE destination_uuid = $1 AND topic = $4 AND NOT consumed
      AND EXISTS (SELECT 1 FROM own) AND NOT EXISTS (SELECT 1 FROM prior)
    ORDER BY created_at_epoch_ms, message_uuid
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), took AS (
    UPDATE {s}.notifications n SET consumed = true, consumed_by_function_id = $3
    FROM msg WHERE n.message_uuid = msg.message_uuid
    RETURNING n.message, n.serialization
), rec AS (
    INSERT INTO {s}.operation_outputs (workflow_uuid, function_id, function_name, output,
        serialization, started_at_epoch_ms, completed_at_epoch_ms)
    SELECT $1, $3, 'DBOS.recv', message, serialization, $5, {now} FROM took
)
SELECT (SELECT count(*) FROM own) AS owned,
       (SELECT count(*) FROM prior) AS has_prior,
       COALESCE((SELECT message FROM took), (SELECT output FROM prior)) AS message,
       COALESCE((SELECT serialization FROM took), (SELECT serialization FROM prior)) AS serialization"#,
            ),
            // $1 workflow, $2 owner, $3 function ID, $4 key, $5 value
            set_event: recorded(
                &literal(SET_EVENT_OPERATION),
                r#"
WITH {own}, {rec}, ev AS (
    INSERT INTO {s}.workflow_events (workflow_uuid, key, value, serialization)
    SELECT $1, $4, $5, 'portable_json' FROM rec
    ON CONFLICT (workflow_uuid, key)
    DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization
    RETURNING 1
), hist AS (
    INSERT INTO {s}.workflow_events_history (workflow_uuid, function_id, key, value, serialization)
    SELECT $1, $3, $4, $5, 'portable_json' FROM rec
    ON CONFLICT (workflow_uuid, function_id, key)
    DO UPDATE SET value = EXCLUDED.value, serialization = EXCLUDED.serialization
), note AS (
    SELECT pg_notify('dbos_workflow_events_channel', $1 || '::' || $4) FROM ev
)
SELECT (SELECT count(*) FROM own) AS owned, (SELECT count(*) FROM note) AS written"#,
            ),
            get_event: f("SELECT value, serialization FROM {s}.workflow_events \
                 WHERE workflow_uuid = $1 AND key = $2"),
            list_events: f("SELECT key, value, serialization FROM {s}.workflow_events \
                 WHERE workflow_uuid = $1 ORDER BY key LIMIT $2"),
            // $1 workflow, $2 owner, $3 function ID, $4 key, $5 value, $6 operation name
            write_stream: recorded(
                "$6",
                r#"
WITH {own}, {rec}, val AS (
    INSERT INTO {s}.streams (workflow_uuid, key, value, "offset", function_id, serialization)
    SELECT $1, $4, $5,
           COALESCE((SELECT max("offset") + 1 FROM {s}.streams
                     WHERE workflow_uuid = $1 AND key = $4), 0),
           $3, 'portable_json'
    FROM rec
    RETURNING 1
), note AS (
    SELECT pg_notify('dbos_streams_channel', $1 || '::' || $4) FROM val
)
SELECT (SELECT count(*) FROM own) AS owned, (SELECT count(*) FROM note) AS written"#,
            ),
            read_stream: f(r#"
SELECT "offset", value, serialization FROM {s}.streams
WHERE workflow_uuid = $1 AND key = $2 AND "offset" >= $3
ORDER BY "offset"
LIMIT 1000"#),
        }
    }
}

/// A workflow operation's statement with its first parameters bound: workflow, owner, step.
fn op_query(
    sql: &Arc<str>,
    workflow_id: &str,
    owner: &str,
    function_id: i32,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q(sql).bind(workflow_id).bind(owner).bind(function_id)
}

/// The outcome of a workflow operation's statement, from its `owned` and `written` counts.
fn op_write(row: &sqlx::postgres::PgRow) -> OpWrite {
    match (row.get::<i64, _>("owned"), row.get::<i64, _>("written")) {
        (0, _) => OpWrite::NotOwner,
        (_, 0) => OpWrite::AlreadyRecorded,
        _ => OpWrite::Recorded,
    }
}

/// Whether `e` is a foreign-key violation (a message to a workflow that does not exist).
fn is_missing_destination(e: &sqlx::Error) -> bool {
    crate::model::error::sqlstate(e).as_deref() == Some("23503")
}

/// Whether `e` is a unique violation (two stream writers took the same offset).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    crate::model::error::sqlstate(e).as_deref() == Some("23505")
}

impl SystemDatabase {
    /// Sends a message from workflow `workflow_id` (step `function_id`), recorded with it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_from_workflow(
        &self,
        workflow_id: &str,
        owner: &str,
        function_id: i32,
        destination: &str,
        topic: &str,
        message: &str,
        message_id: &str,
    ) -> Result<OpWrite> {
        let row = op_query(&self.sql.messaging.send_from_workflow, workflow_id, owner, function_id)
            .bind(destination)
            .bind(topic)
            .bind(message)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| send_error(destination, e))?;
        Ok(op_write(&row))
    }

    /// Sends a message from outside a workflow; idempotent on `message_id`.
    pub(crate) async fn send(&self, destination: &str, topic: &str, message: &str, message_id: &str) -> Result<()> {
        q(&self.sql.messaging.send)
            .bind(destination)
            .bind(topic)
            .bind(message)
            .bind(message_id)
            .execute(&self.pool)
            .await
            .map_err(|e| send_error(destination, e))?;
        Ok(())
    }

    /// Consumes the oldest unconsumed message of `topic` for the workflow and records it as
    /// step `function_id`, in one statement; or returns what an earlier execution recorded there.
    pub(crate) async fn receive(&self, workflow_id: &str, owner: &str, function_id: i32, topic: &str, started_ms: i64) -> Result<Received> {
        let row = op_query(&self.sql.messaging.receive, workflow_id, owner, function_id)
            .bind(topic)
            .bind(started_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::db(format!("receive a message for workflow {workflow_id}"), e))?;
        if row.get::<i64, _>("owned") == 0 {
            return Ok(Received::NotOwner);
        }
        let message: Option<String> = row.get("message");
        Ok(match message {
            Some(value) => Received::Value(StoredValue { value, serialization: row.get("serialization") }),
            // A recorded timeout.
            None if row.get::<i64, _>("has_prior") > 0 => Received::Value(StoredValue { value: "null".into(), serialization: None }),
            None => Received::Nothing,
        })
    }

    /// Sets event `key` of workflow `workflow_id` (step `function_id`) and announces it.
    pub(crate) async fn set_event(&self, workflow_id: &str, owner: &str, function_id: i32, key: &str, value: &str) -> Result<OpWrite> {
        let row = op_query(&self.sql.messaging.set_event, workflow_id, owner, function_id)
            .bind(key)
            .bind(value)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::db(format!("set event {key} of workflow {workflow_id}"), e))?;
        Ok(op_write(&row))
    }

    /// The current value of event `key` of a workflow, if it was set.
    pub(crate) async fn get_event(&self, workflow_id: &str, key: &str) -> Result<Option<StoredValue>> {
        let row = q(&self.sql.messaging.get_event)
            .bind(workflow_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read event {key} of workflow {workflow_id}"), e))?;
        Ok(row.map(|r| StoredValue { value: r.get(0), serialization: r.get(1) }))
    }

    /// The current events of a workflow (at most `limit`, by key).
    pub(crate) async fn list_events(&self, workflow_id: &str, limit: i64) -> Result<Vec<(String, StoredValue)>> {
        let rows = q(&self.sql.messaging.list_events)
            .bind(workflow_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("list the events of workflow {workflow_id}"), e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), StoredValue { value: r.get(1), serialization: r.get(2) })).collect())
    }

    /// Appends a value to stream `key` of a workflow (step `function_id`, named `operation`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_stream(
        &self,
        workflow_id: &str,
        owner: &str,
        function_id: i32,
        key: &str,
        value: &str,
        operation: &str,
    ) -> Result<OpWrite> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = op_query(&self.sql.messaging.write_stream, workflow_id, owner, function_id)
                .bind(key)
                .bind(value)
                .bind(operation)
                .fetch_one(&self.pool)
                .await;
            match result {
                Ok(row) => return Ok(op_write(&row)),
                // A concurrent writer of the same stream took the offset; take the next one.
                Err(e) if is_unique_violation(&e) && attempt < 20 => continue,
                Err(e) => return Err(Error::db(format!("write to stream {key} of workflow {workflow_id}"), e)),
            }
        }
    }

    /// Values of stream `key` of a workflow from offset `from` on (at most 1,000 at a time).
    pub(crate) async fn read_stream(&self, workflow_id: &str, key: &str, from: i32) -> Result<Vec<StreamEntry>> {
        let rows = q(&self.sql.messaging.read_stream)
            .bind(workflow_id)
            .bind(key)
            .bind(from)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db(format!("read stream {key} of workflow {workflow_id}"), e))?;
        Ok(rows
            .into_iter()
            .map(|r| StreamEntry { offset: r.get(0), value: StoredValue { value: r.get(1), serialization: r.get(2) } })
            .collect())
    }
}

fn send_error(destination: &str, e: sqlx::Error) -> Error {
    if is_missing_destination(&e) {
        return Error::NotFound { workflow_id: destination.to_string() };
    }
    Error::db(format!("send a message to workflow {destination}"), e)
}
