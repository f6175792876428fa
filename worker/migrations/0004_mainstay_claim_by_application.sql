-- Mainstay's own: the claim of 0003, scoped to one application, as DBOS 3.4 scopes its
-- dequeue, so any number of Mainstay and DBOS applications can share one system database:
--   * rows of the claimer's application or of none (application_name NULL);
--   * of the claimer's version, or without a version when the claimer's version is the newest
--     (version_timestamp) of its application (rows of application_versions owned by it or by
--     none), re-read on every claim so a rollback takes effect at once;
--   * only workflows whose names the claimer has registered (DBOS claims any name and leaves
--     what it cannot run PENDING; a Mainstay worker never takes work it cannot run);
--   * concurrency and rate budgets are counted over the claimer's application, as DBOS does.
-- A claimed row becomes the claimer's (version and application). 0003's function stays for
-- binaries that still call it.
CREATE OR REPLACE FUNCTION {{schema}}.mainstay_claim_app(
    p_queue text, p_version text, p_executor text, p_max_attempts bigint, p_free bigint,
    p_concurrency bigint, p_worker_concurrency bigint, p_rate_max bigint, p_rate_period float8,
    p_partition text, p_partition_concurrency bigint, p_partition_worker_concurrency bigint,
    p_partition_rate_max bigint, p_partition_rate_period float8, p_lock boolean,
    p_app text, p_names text[])
    RETURNS TABLE (claimed_id text, claimed_name text, claimed_status text, claimed_owner text,
                   claimed_inputs text, claimed_serialization text, claimed_deadline bigint,
                   claimed_has_steps boolean)
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
    SELECT workflow_uuid FROM {{schema}}.workflow_status
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
WHERE ws.workflow_uuid = picked.workflow_uuid
RETURNING ws.workflow_uuid, ws.name, ws.status, ws.owner_xid, COALESCE(wi.inputs, ws.inputs),
          ws.serialization, ws.workflow_deadline_epoch_ms,
          EXISTS (SELECT 1 FROM {{schema}}.operation_outputs oo
                  WHERE oo.workflow_uuid = ws.workflow_uuid);
END;
$fn$;
