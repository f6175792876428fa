//! The application database side of transactions: DBOS's `datasource_outputs` table, where a
//! transaction records its output inside its own database transaction.
//!
//! Invariants: the output row commits with the transaction's own changes or not at all, so
//! "committed" and "recorded" are the same fact; a later execution of the same step (after a
//! crash between this commit and the system-database checkpoint) finds the row and returns it
//! instead of running the body again. The table is created idempotently, under an advisory
//! lock, the first time a process runs a transaction.

use std::sync::Arc;

use sqlx::postgres::Postgres;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::Renderer;
use crate::model::error::{Error, Result};

/// Advisory lock key serializing the creation of the outputs table (an arbitrary constant).
const CREATE_LOCK: i64 = 0x6d61_696e_7374_7478;

/// An output recorded by a committed transaction.
#[derive(Debug, Clone)]
pub(crate) struct TransactionRecord {
    pub output: Option<String>,
    pub error: Option<String>,
    pub serialization: Option<String>,
}

/// The application database.
#[derive(Clone)]
pub(crate) struct AppDatabase {
    pool: PgPool,
    recorded: Arc<str>,
    record: Arc<str>,
}

impl AppDatabase {
    /// Uses `pool`, creating the outputs table in `schema` if it is missing.
    pub(crate) async fn open(pool: PgPool, schema: &str) -> Result<AppDatabase> {
        let r = Renderer::new(schema);
        let mut tx = pool.begin().await.map_err(|e| Error::db("prepare the application database", e))?;
        let lock = CREATE_LOCK.to_string();
        let create = r.sql_with(
            "SELECT pg_advisory_xact_lock({lock});
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.datasource_outputs (
                 workflow_id TEXT NOT NULL,
                 step_id INT4 NOT NULL,
                 output TEXT,
                 error TEXT,
                 serialization TEXT,
                 created_at BIGINT NOT NULL DEFAULT (EXTRACT(EPOCH FROM now()) * 1000)::bigint,
                 PRIMARY KEY (workflow_id, step_id)
             );",
            &[("lock", &lock)],
        );
        sqlx::raw_sql(AssertSqlSafe(create.to_string())).execute(&mut *tx).await.map_err(|e| {
            Error::db(
                format!(
                    "create \"{schema}\".datasource_outputs in the application database (the role needs \
                     CREATE on the database, or create the table beforehand)"
                ),
                e,
            )
        })?;
        tx.commit().await.map_err(|e| Error::db("prepare the application database", e))?;
        Ok(AppDatabase {
            pool,
            recorded: r.sql(
                "SELECT output, error, serialization FROM {s}.datasource_outputs \
                 WHERE workflow_id = $1 AND step_id = $2",
            ),
            record: r.sql(
                "INSERT INTO {s}.datasource_outputs (workflow_id, step_id, output, serialization) \
                 VALUES ($1, $2, $3, 'portable_json')",
            ),
        })
    }

    /// The statements it runs on each transaction.
    pub(crate) fn statements(&self) -> [&Arc<str>; 2] {
        [&self.recorded, &self.record]
    }

    /// A connection of the application's pool, to run one transaction on.
    pub(crate) async fn acquire(&self) -> std::result::Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// The output an earlier execution of step `step_id` committed, if any.
    pub(crate) async fn recorded(
        &self,
        conn: &mut PgConnection,
        workflow_id: &str,
        step_id: i32,
    ) -> std::result::Result<Option<TransactionRecord>, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(self.recorded.clone())).bind(workflow_id).bind(step_id).fetch_optional(conn).await?;
        Ok(row.map(|r| TransactionRecord { output: r.get(0), error: r.get(1), serialization: r.get(2) }))
    }

    /// Records step `step_id`'s output inside the transaction `conn` is in.
    pub(crate) async fn record(
        &self,
        conn: &mut PgConnection,
        workflow_id: &str,
        step_id: i32,
        output: &str,
    ) -> std::result::Result<(), sqlx::Error> {
        sqlx::query(AssertSqlSafe(self.record.clone())).bind(workflow_id).bind(step_id).bind(output).execute(conn).await?;
        Ok(())
    }
}
