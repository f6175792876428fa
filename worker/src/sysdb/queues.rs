//! Queue statements: settings in `queues`, claims under limits, delayed work.
//!
//! Invariants of a claim: a queue with a shared budget (global or partition concurrency, a rate
//! limit) is claimed under a transaction-level advisory lock on the queue, and the counting
//! claim runs on a snapshot taken after the lock was granted (inside the `mainstay_claim_queued`
//! function, migrations 0004 and 0007), so it counts every claim committed before it: no two claimers
//! can spend the same budget. A queue without one is claimed with `SKIP LOCKED` alone. Either
//! way a claim is one round trip (partitioned queues: one per partition, in one transaction).
//! Every claimed row gets a fresh owner token.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, Row};

use super::{q, Claimed, Renderer, SystemDatabase};
use crate::model::error::{Error, Result};
use crate::model::queue::{Queue, RateLimit};
use crate::model::status::Status;

pub(super) struct Statements {
    claim: Arc<str>,
    partitions: Arc<str>,
    declare: Arc<str>,
    update: Arc<str>,
    settings: Arc<str>,
    owner: Arc<str>,
    promote_delayed: Arc<str>,
    depth: Arc<str>,
}

impl Statements {
    pub(super) fn new(r: &Renderer) -> Statements {
        let f = |text: &str| r.sql(text);
        let columns = [("columns", COLUMNS)];
        Statements {
            claim: f(CLAIM),
            partitions: f("SELECT DISTINCT queue_partition_key FROM {s}.workflow_status \
                 WHERE queue_name = $1 AND status = 'ENQUEUED' AND queue_partition_key IS NOT NULL"),
            declare: r.sql_with(
                "INSERT INTO {s}.queues ({columns}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (name) DO NOTHING",
                &columns,
            ),
            // A queue's settings belong to one application (DBOS's rule): an application may
            // take a queue of none, or update its own; `$13` NULL (no application) may update
            // any. No row back: another application owns it.
            update: r.sql_with(
                "INSERT INTO {s}.queues ({columns}, application_name) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (name) DO UPDATE SET application_name = COALESCE({s}.queues.application_name, EXCLUDED.application_name), \
                   concurrency = EXCLUDED.concurrency, \
                   worker_concurrency = EXCLUDED.worker_concurrency, \
                   rate_limit_max = EXCLUDED.rate_limit_max, \
                   rate_limit_period_sec = EXCLUDED.rate_limit_period_sec, \
                   priority_enabled = EXCLUDED.priority_enabled, \
                   partition_queue = EXCLUDED.partition_queue, \
                   polling_interval_sec = EXCLUDED.polling_interval_sec, \
                   partition_concurrency = EXCLUDED.partition_concurrency, \
                   partition_worker_concurrency = EXCLUDED.partition_worker_concurrency, \
                   partition_rate_limit_max = EXCLUDED.partition_rate_limit_max, \
                   partition_rate_limit_period_sec = EXCLUDED.partition_rate_limit_period_sec, \
                   updated_at = {now} \
                 WHERE {s}.queues.application_name IS NULL OR EXCLUDED.application_name IS NULL \
                    OR {s}.queues.application_name = EXCLUDED.application_name \
                 RETURNING 1",
                &columns,
            ),
            owner: f("SELECT application_name FROM {s}.queues WHERE name = $1"),
            settings: r
                .sql_with("SELECT {columns} FROM {s}.queues WHERE $1::text[] IS NULL OR name = ANY($1::text[]) ORDER BY name", &columns),
            promote_delayed: f("UPDATE {s}.workflow_status SET status = 'ENQUEUED', updated_at = {now} \
                 WHERE status = 'DELAYED' AND delay_until_epoch_ms <= {now} \
                   AND queue_name = ANY($1::text[]) \
                   AND (application_name IS NOT DISTINCT FROM $2 OR application_name IS NULL) \
                   AND NOT is_debounced \
                 RETURNING queue_name"),
            depth: f("SELECT queue_name, count(*) FILTER (WHERE status = 'ENQUEUED'), \
                        count(*) FILTER (WHERE status = 'PENDING') \
                 FROM {s}.workflow_status \
                 WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name IS NOT NULL \
                   AND {scope} \
                 GROUP BY queue_name"),
        }
    }
}

/// The settings columns of `queues`, in the order the statements bind them.
const COLUMNS: &str = "name, concurrency, worker_concurrency, rate_limit_max, rate_limit_period_sec, \
    priority_enabled, partition_queue, polling_interval_sec, partition_concurrency, \
    partition_worker_concurrency, partition_rate_limit_max, partition_rate_limit_period_sec";

/// `$1` queue, `$2` version, `$3` executor, `$4` max recovery attempts, `$5` free local slots,
/// `$6` concurrency, `$7` worker concurrency, `$8`/`$9` rate limit max/period, `$10` partition
/// key (NULL: not partitioned), `$11` partition concurrency, `$12` partition worker concurrency,
/// `$13`/`$14` partition rate limit max/period, `$15` take the queue's lock, `$16` the
/// claimer's application (NULL: none), `$17` the workflow names it can run. NULL limits do not
/// limit. See migrations 0004 for what a claim may take and 0007 for the wait and trace context it returns.
const CLAIM: &str = "SELECT * FROM {s}.mainstay_claim_queued($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

fn limit(v: Option<u32>) -> Option<i64> {
    v.map(i64::from)
}

fn rate(r: Option<RateLimit>) -> (Option<i64>, Option<f64>) {
    match r {
        Some(r) => (Some(i64::from(r.max)), Some(r.period.as_secs_f64())),
        None => (None, None),
    }
}

/// Who claims, for how many.
pub(crate) struct Claimer<'a> {
    pub app_name: Option<&'a str>,
    /// The workflows the claimer has registered: it claims no others.
    pub names: &'a [String],
    pub app_version: &'a str,
    pub executor_id: &'a str,
    pub max_recovery_attempts: i64,
    pub free: i64,
}

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_claim(query: PgQuery, queue: &Queue, who: &Claimer<'_>, partition: Option<&str>) -> PgQuery {
    let lock = queue.has_shared_budget();
    let (rmax, rper) = rate(queue.rate_limit);
    let (prmax, prper) = rate(queue.partition_rate_limit);
    query
        .bind(queue.name.clone())
        .bind(who.app_version.to_string())
        .bind(who.executor_id.to_string())
        .bind(who.max_recovery_attempts)
        .bind(who.free)
        .bind(limit(queue.concurrency))
        .bind(limit(queue.worker_concurrency))
        .bind(rmax)
        .bind(rper)
        .bind(partition.map(str::to_string))
        .bind(limit(queue.partition_concurrency))
        .bind(limit(queue.partition_worker_concurrency))
        .bind(prmax)
        .bind(prper)
        .bind(lock)
        .bind(who.app_name.map(str::to_string))
        .bind(who.names.to_vec())
}

fn claimed(row: sqlx::postgres::PgRow, queue: &str) -> Claimed {
    Claimed {
        queue: queue.to_string(),
        id: row.get(0),
        name: row.get::<Option<String>, _>(1).unwrap_or_default(),
        status: Status::parse(row.get::<Option<String>, _>(2).as_deref().unwrap_or("")),
        owner: row.get::<Option<String>, _>(3).unwrap_or_default(),
        inputs: row.get(4),
        serialization: row.get(5),
        deadline_ms: row.get(6),
        has_steps: row.get(7),
        wait_ms: row.get(8),
        traceparent: row.get(9),
    }
}

fn bind_settings(query: PgQuery, queue: &Queue) -> PgQuery {
    let (rmax, rper) = rate(queue.rate_limit);
    let (prmax, prper) = rate(queue.partition_rate_limit);
    query
        .bind(queue.name.clone())
        .bind(queue.concurrency.map(|v| v as i32))
        .bind(queue.worker_concurrency.map(|v| v as i32))
        .bind(rmax.map(|v| v as i32))
        .bind(rper)
        .bind(queue.priority_enabled)
        .bind(queue.partitioned)
        .bind(queue.polling_interval.as_secs_f64())
        .bind(queue.partition_concurrency.map(|v| v as i32))
        .bind(queue.partition_worker_concurrency.map(|v| v as i32))
        .bind(prmax.map(|v| v as i32))
        .bind(prper)
}

impl SystemDatabase {
    /// Claims runnable workflows of `queue` within its limits.
    pub(crate) async fn claim_queue(&self, queue: &Queue, who: &Claimer<'_>) -> Result<Vec<Claimed>> {
        let ctx = || format!("claim queued workflows from queue {}", queue.name);
        let stmts = &self.sql.queues;
        if !queue.partitioned {
            // One statement: the claim function takes the queue's lock itself when needed.
            let rows = bind_claim(q(&stmts.claim), queue, who, None).fetch_all(&self.pool).await.map_err(|e| Error::db(ctx(), e))?;
            return Ok(rows.into_iter().map(|r| claimed(r, &queue.name)).collect());
        }
        // Partitions are claimed one by one in one transaction, under one lock.
        let mut conn = self.pool.acquire().await.map_err(|e| Error::db(ctx(), e))?;
        let mut tx = conn.begin().await.map_err(|e| Error::db(ctx(), e))?;
        let mut out = Vec::new();
        let keys: Vec<String> = q(&stmts.partitions)
            .bind(queue.name.clone())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| Error::db(ctx(), e))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut free = who.free;
        for key in keys {
            if free <= 0 {
                break;
            }
            let who = Claimer { free, ..*who };
            let rows = bind_claim(q(&stmts.claim), queue, &who, Some(&key)).fetch_all(&mut *tx).await.map_err(|e| Error::db(ctx(), e))?;
            free -= rows.len() as i64;
            out.extend(rows.into_iter().map(|r| claimed(r, &queue.name)));
        }
        tx.commit().await.map_err(|e| Error::db(ctx(), e))?;
        Ok(out)
    }

    /// Writes a queue's settings unless the queue already has some (the database wins, so
    /// settings changed at runtime survive restarts).
    pub(crate) async fn declare_queue(&self, queue: &Queue) -> Result<()> {
        bind_settings(q(&self.sql.queues.declare), queue)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db(format!("declare queue {}", queue.name), e))?;
        Ok(())
    }

    /// Writes a queue's settings, replacing what is stored; running workers pick them up.
    /// `app`: the application writing them, which may not replace another one's.
    pub(crate) async fn update_queue(&self, queue: &Queue, app: Option<&str>) -> Result<()> {
        let ctx = || format!("update the settings of queue {}", queue.name);
        let written =
            bind_settings(q(&self.sql.queues.update), queue).bind(app).fetch_optional(&self.pool).await.map_err(|e| Error::db(ctx(), e))?;
        if written.is_some() {
            return Ok(());
        }
        let owner: Option<String> = q(&self.sql.queues.owner)
            .bind(queue.name.clone())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::db(ctx(), e))?
            .and_then(|r| r.get(0));
        Err(Error::QueueConflict { queue: queue.name.clone(), owner: owner.unwrap_or_default() })
    }

    /// The stored settings of these queues (queues without a row are absent).
    pub(crate) async fn queue_settings(&self, names: &[String]) -> Result<Vec<Queue>> {
        self.queue_settings_of(Some(names)).await
    }

    /// The stored settings of every queue.
    pub(crate) async fn all_queue_settings(&self) -> Result<Vec<Queue>> {
        self.queue_settings_of(None).await
    }

    async fn queue_settings_of(&self, names: Option<&[String]>) -> Result<Vec<Queue>> {
        let rows = q(&self.sql.queues.settings).bind(names).fetch_all(&self.pool).await.map_err(|e| Error::db("read queue settings", e))?;
        let positive = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v as u32);
        let rate = |max: Option<i32>, period: Option<f64>| match (positive(max), period) {
            (Some(max), Some(p)) if p > 0.0 => Some(RateLimit { max, period: Duration::from_secs_f64(p) }),
            _ => None,
        };
        Ok(rows
            .into_iter()
            .map(|r| Queue {
                name: r.get(0),
                concurrency: positive(r.get(1)),
                worker_concurrency: positive(r.get(2)),
                rate_limit: rate(r.get(3), r.get(4)),
                priority_enabled: r.get(5),
                partitioned: r.get(6),
                polling_interval: Duration::from_secs_f64(r.get::<f64, _>(7).max(0.001)),
                partition_concurrency: positive(r.get(8)),
                partition_worker_concurrency: positive(r.get(9)),
                partition_rate_limit: rate(r.get(10), r.get(11)),
            })
            .collect())
    }

    /// Moves `DELAYED` workflows whose time has come to `ENQUEUED`; returns their queues.
    /// Only rows of application `app` (and of none), and never DBOS's debounced ones (their
    /// owner releases them).
    pub(crate) async fn promote_delayed(&self, queues: &[String], app: Option<&str>) -> Result<Vec<String>> {
        let rows = q(&self.sql.queues.promote_delayed)
            .bind(queues)
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::db("enqueue delayed workflows whose time has come", e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// `(queue, enqueued, pending)` for every queue with work (`app`: counting only workflows
    /// of this application and of none).
    pub(crate) async fn queue_depths(&self, app: Option<&str>) -> Result<Vec<(String, i64, i64)>> {
        let rows = q(&self.sql.queues.depth).bind(app).fetch_all(&self.pool).await.map_err(|e| Error::db("read queue depths", e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }
}
