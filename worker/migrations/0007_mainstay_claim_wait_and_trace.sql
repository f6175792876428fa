-- Mainstay's own: the trace context each workflow was started in, and a claim that returns it
-- with how long each claimed workflow waited.
--
-- `mainstay_workflow_trace` holds the W3C traceparent of the span that started or enqueued a
-- workflow (written in the statement that inserts the workflow, only when traces are exported),
-- so each of its executions, on any worker and after any recovery, continues that trace. DBOS's
-- tables have no place for it, and theirs must stay as DBOS defines them. Deleting a workflow
-- (by Mainstay or by DBOS's tools) deletes its row, through the foreign key.
--
-- The claim returns, besides 0004's columns, the workflow's wait in milliseconds on the
-- database's clock since it became ready to run, and its trace context. A queued row's
-- `updated_at` is when it was last put in the queue (enqueued, re-enqueued by a recovery or a
-- resume, released), so ready is the later of that and the end of its delay. A function's result type
-- cannot change in place (and prepared statements of running binaries would fail on it), so
-- the claim is a new function, and 0004's becomes a wrapper over it: one body to keep, and
-- binaries that call the old name get the same rows as before.
CREATE TABLE IF NOT EXISTS {{schema}}.mainstay_workflow_trace (
    workflow_uuid text PRIMARY KEY
        REFERENCES {{schema}}.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    traceparent text NOT NULL
);

CREATE OR REPLACE FUNCTION {{schema}}.mainstay_claim_queued(
    p_queue text, p_version text, p_executor text, p_max_attempts bigint, p_free bigint,
    p_concurrency bigint, p_worker_concurrency bigint, p_rate_max bigint, p_rate_period float8,
    p_partition text, p_partition_concurrency bigint, p_partition_worker_concurrency bigint,
    p_partition_rate_max bigint, p_partition_rate_period float8, p_lock boolean,
    p_app text, p_names text[])
    RETURNS TABLE (claimed_id text, claimed_name text, claimed_status text, claimed_owner text,
                   claimed_inputs text, claimed_serialization text, claimed_deadline bigint,
                   claimed_has_steps boolean, claimed_wait_ms bigint, claimed_traceparent text)
    LANGUAGE plpgsql VOLATILE
    SET search_path TO 'pg_catalog', 'pg_temp'
    -- One plan for every call: re-planning this statement costs more than running it.
    SET plan_cache_mode TO 'force_generic_plan'
AS $fn$
#variable_conflict use_column
BEGIN
    IF p_lock THEN
        PERFORM pg_advisory_xact_lock(hashtext('mainstay-queue:' || p_queue));
    END IF;
    RETURN QUERY
WITH budget AS (
    SELECT GREATEST(0, LEAST(
        p_free,
        CASE WHEN p_concurrency IS NULL THEN p_free ELSE p_concurrency - (
            SELECT count(*) FROM {{schema}}.workflow_status WHERE queue_name = p_queue AND status = 'PENDING' AND (application_name = p_app OR application_name IS NULL)) END,
        CASE WHEN p_worker_concurrency IS NULL THEN p_free ELSE p_worker_concurrency - (
            SELECT count(*) FROM {{schema}}.workflow_status
            WHERE queue_name = p_queue AND status = 'PENDING' AND executor_id = p_executor AND (application_name = p_app OR application_name IS NULL)) END,
        CASE WHEN p_rate_max IS NULL THEN p_free ELSE p_rate_max - (
            SELECT count(*) FROM {{schema}}.workflow_status
            WHERE queue_name = p_queue AND rate_limited AND (application_name = p_app OR application_name IS NULL)
              AND started_at_epoch_ms > (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint - (p_rate_period * 1000)::int8) END,
        CASE WHEN p_partition IS NULL OR p_partition_concurrency IS NULL THEN p_free ELSE p_partition_concurrency - (
            SELECT count(*) FROM {{schema}}.workflow_status
            WHERE queue_name = p_queue AND status = 'PENDING' AND queue_partition_key = p_partition AND (application_name = p_app OR application_name IS NULL)) END,
        CASE WHEN p_partition IS NULL OR p_partition_worker_concurrency IS NULL THEN p_free ELSE p_partition_worker_concurrency - (
            SELECT count(*) FROM {{schema}}.workflow_status
            WHERE queue_name = p_queue AND status = 'PENDING' AND queue_partition_key = p_partition
              AND executor_id = p_executor AND (application_name = p_app OR application_name IS NULL)) END,
        CASE WHEN p_partition IS NULL OR p_partition_rate_max IS NULL THEN p_free ELSE p_partition_rate_max - (
            SELECT count(*) FROM {{schema}}.workflow_status
            WHERE queue_name = p_queue AND rate_limited AND queue_partition_key = p_partition AND (application_name = p_app OR application_name IS NULL)
              AND started_at_epoch_ms > (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint - (p_partition_rate_period * 1000)::int8) END
    )) AS n
), picked AS (
    SELECT workflow_uuid,
           GREATEST(COALESCE(updated_at, created_at), delay_until_epoch_ms) AS ready_at
    FROM {{schema}}.workflow_status
    WHERE queue_name = p_queue AND status = 'ENQUEUED'
      AND (p_partition IS NULL OR queue_partition_key = p_partition)
      AND name = ANY(p_names)
      AND (application_name = p_app OR application_name IS NULL)
      AND (application_version = p_version
           OR (application_version IS NULL
               AND p_version IS NOT DISTINCT FROM (
                   SELECT version_name FROM {{schema}}.application_versions
                   WHERE application_name = p_app OR application_name IS NULL
                   ORDER BY version_timestamp DESC, created_at DESC LIMIT 1)))
    ORDER BY priority, created_at
    LIMIT (SELECT n FROM budget)
    FOR UPDATE SKIP LOCKED
)
UPDATE {{schema}}.workflow_status ws
SET status = CASE WHEN COALESCE(ws.recovery_attempts, 0) > p_max_attempts THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
                  ELSE 'PENDING' END,
    owner_xid = gen_random_uuid()::text,
    executor_id = p_executor,
    application_version = COALESCE(ws.application_version, p_version),
    application_name = COALESCE(ws.application_name, p_app),
    started_at_epoch_ms = (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint,
    updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint,
    recovery_attempts = COALESCE(ws.recovery_attempts, 0) + 1,
    rate_limited = (p_rate_max IS NOT NULL OR p_partition_rate_max IS NOT NULL),
    workflow_deadline_epoch_ms = CASE
        WHEN ws.workflow_timeout_ms IS NOT NULL AND ws.workflow_deadline_epoch_ms IS NULL
        THEN (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint + ws.workflow_timeout_ms ELSE ws.workflow_deadline_epoch_ms END
FROM picked LEFT JOIN {{schema}}.workflow_input wi ON wi.workflow_uuid = picked.workflow_uuid
     LEFT JOIN {{schema}}.mainstay_workflow_trace wt ON wt.workflow_uuid = picked.workflow_uuid
WHERE ws.workflow_uuid = picked.workflow_uuid
RETURNING ws.workflow_uuid, ws.name, ws.status, ws.owner_xid, COALESCE(wi.inputs, ws.inputs),
          ws.serialization, ws.workflow_deadline_epoch_ms,
          EXISTS (SELECT 1 FROM {{schema}}.operation_outputs oo
                  WHERE oo.workflow_uuid = ws.workflow_uuid),
          ws.started_at_epoch_ms - picked.ready_at, wt.traceparent;
END;
$fn$;

CREATE OR REPLACE FUNCTION {{schema}}.mainstay_claim_app(
    p_queue text, p_version text, p_executor text, p_max_attempts bigint, p_free bigint,
    p_concurrency bigint, p_worker_concurrency bigint, p_rate_max bigint, p_rate_period float8,
    p_partition text, p_partition_concurrency bigint, p_partition_worker_concurrency bigint,
    p_partition_rate_max bigint, p_partition_rate_period float8, p_lock boolean,
    p_app text, p_names text[])
    RETURNS TABLE (claimed_id text, claimed_name text, claimed_status text, claimed_owner text,
                   claimed_inputs text, claimed_serialization text, claimed_deadline bigint,
                   claimed_has_steps boolean)
    LANGUAGE sql VOLATILE
    SET search_path TO 'pg_catalog', 'pg_temp'
AS $fn$
    SELECT c.claimed_id, c.claimed_name, c.claimed_status, c.claimed_owner, c.claimed_inputs,
           c.claimed_serialization, c.claimed_deadline, c.claimed_has_steps
    FROM {{schema}}.mainstay_claim_queued(p_queue, p_version, p_executor, p_max_attempts, p_free,
        p_concurrency, p_worker_concurrency, p_rate_max, p_rate_period, p_partition,
        p_partition_concurrency, p_partition_worker_concurrency, p_partition_rate_max,
        p_partition_rate_period, p_lock, p_app, p_names) c;
$fn$;
