//! System-database migrations: DBOS's schema at migration 125, then Mainstay's own objects.
//!
//! Invariants: runs under a session advisory lock, so concurrent launches serialize; each step
//! is one transaction, so a crash leaves either the old or the new version; a database that a
//! later DBOS release migrated further is accepted as is (never downgraded). Mainstay's own
//! migrations are additive (new objects; what older binaries use stays), so a database a later
//! Mainstay release migrated is accepted too, and older workers keep running through an upgrade
//! of the operator or of other workers. A migration that breaks older binaries is recorded as
//! `breaking`; a binary that does not know it refuses the database (`Error::SchemaAhead`).
//!
//! Bookkeeping: `mainstay_migrations` holds migrations 1 and 2 and never more, because binaries
//! released before this rule refuse a database whose `mainstay_migrations` goes past what they
//! know; later migrations are recorded in `mainstay_schema_migrations` (with `breaking`).

use sqlx::{Acquire, AssertSqlSafe, PgPool, Row};

use super::Renderer;
use crate::model::error::{Error, Result};

/// The DBOS migration number whose schema Mainstay creates (DBOS Transact 3.4.0).
pub const DBOS_SCHEMA_VERSION: i64 = 125;

/// Mainstay's own migrations (objects prefixed `mainstay_`), in order.
const MAINSTAY_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0002_mainstay_enqueue_notify.sql")),
    (2, include_str!("../../migrations/0003_mainstay_claim_function.sql")),
    (3, include_str!("../../migrations/0004_mainstay_claim_by_application.sql")),
    (4, include_str!("../../migrations/0005_mainstay_registered_workflows.sql")),
    (5, include_str!("../../migrations/0006_mainstay_registered_arguments_and_queues.sql")),
    (6, include_str!("../../migrations/0007_mainstay_claim_wait_and_trace.sql")),
];

/// Mainstay migrations that older binaries cannot run against (none so far); recorded with
/// `breaking = true`, so those binaries refuse the database instead of misusing it.
const BREAKING_MIGRATIONS: &[i64] = &[];

/// The last migration recorded in the legacy `mainstay_migrations` table (see the module doc).
const LEGACY_LAST: i64 = 2;

/// The newest Mainstay schema version this binary knows.
pub const MAINSTAY_SCHEMA_VERSION: i64 = MAINSTAY_MIGRATIONS[MAINSTAY_MIGRATIONS.len() - 1].0;

const DBOS_SCHEMA: &str = include_str!("../../migrations/0001_dbos_system_schema.sql");

/// A migration file with its schema: the files are DBOS's schema text and Mainstay's additions,
/// written with `{{schema}}` (they hold PL/pgSQL and JSON, so `Renderer`'s braces are not used).
fn render(sql: &str, schema: &str) -> String {
    sql.replace("{{schema}}", &format!("\"{schema}\""))
}

pub(super) async fn run(pool: &PgPool, schema: &str) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(|e| Error::db("acquire a connection to migrate the system database", e))?;
    let lock_key = lock_key(schema);
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::db("take the migration lock", e))?;
    let result = migrate_locked(&mut conn, schema).await;
    // Released explicitly so a pooled connection does not keep holding it.
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))").bind(&lock_key).execute(&mut *conn).await;
    result
}

/// The advisory lock that serializes migrations (and resets) of one schema.
fn lock_key(schema: &str) -> String {
    format!("mainstay-migrate:{schema}")
}

/// Drops the schema and everything in it, under the migration lock.
pub(super) async fn reset(pool: &PgPool, schema: &str) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(|e| Error::db("acquire a connection to reset", e))?;
    let lock_key = lock_key(schema);
    let mut tx = conn.begin().await.map_err(|e| Error::db("begin the reset", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(&lock_key)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("take the migration lock", e))?;
    sqlx::raw_sql(AssertSqlSafe(Renderer::new(schema).sql("DROP SCHEMA IF EXISTS {s} CASCADE")))
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db(format!("drop schema {schema}"), e))?;
    tx.commit().await.map_err(|e| Error::db("commit the reset", e))
}

async fn migrate_locked(conn: &mut sqlx::PgConnection, schema: &str) -> Result<()> {
    let r = Renderer::new(schema);
    let mut tx = conn.begin().await.map_err(|e| Error::db("begin migration", e))?;
    // Idempotent DDL reports every object that already exists as a notice: not news.
    sqlx::raw_sql("SET LOCAL client_min_messages TO warning")
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("configure the migration session", e))?;
    sqlx::raw_sql(AssertSqlSafe(r.sql("CREATE SCHEMA IF NOT EXISTS {s}")))
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db(format!("create schema {schema}"), e))?;
    let dbos_version = table_version(&mut tx, schema, "dbos_migrations").await?;
    match dbos_version {
        Some(v) if v >= DBOS_SCHEMA_VERSION => {
            if v > DBOS_SCHEMA_VERSION {
                tracing::info!(schema, version = v, "system database was migrated by a newer DBOS release; using it as is");
            }
        }
        Some(v) if v > 0 => {
            return Err(Error::SchemaBehind { schema: schema.to_string(), found: v, required: DBOS_SCHEMA_VERSION });
        }
        _ => {
            sqlx::raw_sql(AssertSqlSafe(render(DBOS_SCHEMA, schema)))
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::db(format!("create the DBOS system tables in schema {schema}"), e))?;
            sqlx::raw_sql(AssertSqlSafe(r.sql_with(
                "DELETE FROM {s}.dbos_migrations; INSERT INTO {s}.dbos_migrations (version) VALUES ({version})",
                &[("version", &DBOS_SCHEMA_VERSION.to_string())],
            )))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db("record the DBOS migration version", e))?;
        }
    }

    sqlx::raw_sql(AssertSqlSafe(r.sql(
        "CREATE TABLE IF NOT EXISTS {s}.mainstay_migrations (
             version bigint NOT NULL PRIMARY KEY,
             applied_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint)",
    )))
    .execute(&mut *tx)
    .await
    .map_err(|e| Error::db("create the mainstay_migrations table", e))?;
    sqlx::raw_sql(AssertSqlSafe(r.sql(
        "CREATE TABLE IF NOT EXISTS {s}.mainstay_schema_migrations (
             version bigint NOT NULL PRIMARY KEY,
             breaking boolean NOT NULL DEFAULT false,
             applied_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint)",
    )))
    .execute(&mut *tx)
    .await
    .map_err(|e| Error::db("create the mainstay_schema_migrations table", e))?;
    let legacy = table_version(&mut tx, schema, "mainstay_migrations").await?.unwrap_or(0);
    let later = table_version(&mut tx, schema, "mainstay_schema_migrations").await?.unwrap_or(0);
    let current = legacy.max(later);
    if current > MAINSTAY_SCHEMA_VERSION {
        let breaking: Option<i64> = sqlx::query_scalar(AssertSqlSafe(
            r.sql("SELECT min(version) FROM {s}.mainstay_schema_migrations WHERE version > $1 AND breaking"),
        ))
        .bind(MAINSTAY_SCHEMA_VERSION)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| Error::db("read the Mainstay migrations newer than this binary", e))?;
        if let Some(found) = breaking {
            return Err(Error::SchemaAhead { schema: schema.to_string(), found, known: MAINSTAY_SCHEMA_VERSION });
        }
        tracing::info!(
            schema,
            found = current,
            known = MAINSTAY_SCHEMA_VERSION,
            "the system database was migrated by a newer Mainstay; its additions are compatible with this binary"
        );
    }
    for (version, sql) in MAINSTAY_MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        sqlx::raw_sql(AssertSqlSafe(render(sql, schema)))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db(format!("apply Mainstay migration {version}"), e))?;
        let record = if *version <= LEGACY_LAST {
            r.sql("INSERT INTO {s}.mainstay_migrations (version) VALUES ($1)")
        } else {
            r.sql("INSERT INTO {s}.mainstay_schema_migrations (version, breaking) VALUES ($1, $2)")
        };
        sqlx::query(AssertSqlSafe(record))
            .bind(version)
            .bind(BREAKING_MIGRATIONS.contains(version))
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::db(format!("record Mainstay migration {version}"), e))?;
    }
    tx.commit().await.map_err(|e| Error::db("commit the migration", e))?;
    Ok(())
}

/// The highest version recorded in a bookkeeping table, or `None` if the table does not exist.
async fn table_version(conn: &mut sqlx::PgConnection, schema: &str, table: &str) -> Result<Option<i64>> {
    let exists: bool = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = $2)",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(format!("check for table {schema}.{table}"), e))?
    .get(0);
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(AssertSqlSafe(Renderer::new(schema).sql_with("SELECT max(version) FROM {s}.{table}", &[("table", table)])))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::db(format!("read {schema}.{table}"), e))?;
    Ok(row.get::<Option<i64>, _>(0))
}
