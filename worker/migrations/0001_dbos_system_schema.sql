-- The DBOS 3.4 system database (DBOS migration 125), written for Mainstay from the
-- published interface. `{{schema}}` is replaced by the configured, quoted schema name.
-- Every statement is idempotent so that a crash half-way through is repaired by re-running.

CREATE TABLE IF NOT EXISTS {{schema}}.dbos_migrations (
    version bigint NOT NULL PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_status (
    workflow_uuid text NOT NULL PRIMARY KEY,
    status text,
    name text,
    authenticated_user text,
    assumed_role text,
    authenticated_roles text,
    request text,
    output text,
    error text,
    executor_id text,
    created_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    updated_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    application_version text,
    application_id text,
    class_name varchar(255) DEFAULT NULL,
    config_name varchar(255) DEFAULT NULL,
    recovery_attempts bigint DEFAULT 0,
    queue_name text,
    workflow_timeout_ms bigint,
    workflow_deadline_epoch_ms bigint,
    inputs text,
    started_at_epoch_ms bigint,
    deduplication_id text,
    priority integer NOT NULL DEFAULT 0,
    queue_partition_key text,
    forked_from text,
    owner_xid text,
    parent_workflow_id text,
    serialization text,
    delay_until_epoch_ms bigint,
    was_forked_from boolean NOT NULL DEFAULT false,
    rate_limited boolean NOT NULL DEFAULT false,
    completed_at bigint,
    attributes jsonb,
    schedule_name text,
    debounce_deadline_epoch_ms bigint,
    is_debounced boolean NOT NULL DEFAULT false,
    application_name text,
    creator_xid text
);

CREATE INDEX IF NOT EXISTS workflow_status_created_at_index
    ON {{schema}}.workflow_status (created_at);
CREATE INDEX IF NOT EXISTS idx_workflow_status_attributes
    ON {{schema}}.workflow_status USING gin (attributes) WHERE attributes IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_completed_at
    ON {{schema}}.workflow_status (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_deadline
    ON {{schema}}.workflow_status (workflow_deadline_epoch_ms)
    WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED') AND workflow_deadline_epoch_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_delayed
    ON {{schema}}.workflow_status (delay_until_epoch_ms) WHERE status = 'DELAYED';
CREATE INDEX IF NOT EXISTS idx_workflow_status_failed
    ON {{schema}}.workflow_status (status, created_at)
    WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
CREATE INDEX IF NOT EXISTS idx_workflow_status_forked_from
    ON {{schema}}.workflow_status (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_in_flight_v2
    ON {{schema}}.workflow_status (queue_name, status, priority, created_at) INCLUDE (application_name)
    WHERE status IN ('ENQUEUED', 'PENDING');
CREATE INDEX IF NOT EXISTS idx_workflow_status_parent_workflow_id
    ON {{schema}}.workflow_status (parent_workflow_id) WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_partition_dequeue_v3
    ON {{schema}}.workflow_status (queue_name, status, queue_partition_key, priority, created_at, workflow_uuid)
    INCLUDE (application_name)
    WHERE status IN ('ENQUEUED', 'PENDING') AND queue_partition_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_pending
    ON {{schema}}.workflow_status (created_at) WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS idx_workflow_status_rate_limited
    ON {{schema}}.workflow_status (queue_name, started_at_epoch_ms) WHERE rate_limited = true;
CREATE INDEX IF NOT EXISTS idx_workflow_status_schedule_name
    ON {{schema}}.workflow_status (schedule_name) WHERE schedule_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_status_started_at
    ON {{schema}}.workflow_status (started_at_epoch_ms) WHERE started_at_epoch_ms IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_workflow_status_dedup_id
    ON {{schema}}.workflow_status (queue_name, deduplication_id) WHERE deduplication_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_input (
    workflow_uuid text NOT NULL PRIMARY KEY,
    inputs text,
    retention_timestamp bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint
);
CREATE INDEX IF NOT EXISTS idx_workflow_input_retention
    ON {{schema}}.workflow_input (retention_timestamp);

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_output (
    workflow_uuid text NOT NULL PRIMARY KEY,
    output text,
    error text,
    retention_timestamp bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint
);
CREATE INDEX IF NOT EXISTS idx_workflow_output_retention
    ON {{schema}}.workflow_output (retention_timestamp);

CREATE TABLE IF NOT EXISTS {{schema}}.operation_outputs (
    workflow_uuid text NOT NULL,
    function_id integer NOT NULL,
    function_name text NOT NULL DEFAULT '',
    output text,
    error text,
    child_workflow_id text,
    started_at_epoch_ms bigint,
    completed_at_epoch_ms bigint,
    serialization text,
    application_name text,
    retention_timestamp bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    PRIMARY KEY (workflow_uuid, function_id)
);
CREATE INDEX IF NOT EXISTS idx_operation_outputs_completed_at_function_name_v2
    ON {{schema}}.operation_outputs (completed_at_epoch_ms, function_name) INCLUDE (application_name);
CREATE INDEX IF NOT EXISTS idx_operation_outputs_retention
    ON {{schema}}.operation_outputs (retention_timestamp);

CREATE TABLE IF NOT EXISTS {{schema}}.notifications (
    message_uuid text NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    destination_uuid text NOT NULL
        REFERENCES {{schema}}.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    topic text,
    message text NOT NULL,
    created_at_epoch_ms bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    serialization text,
    consumed boolean NOT NULL DEFAULT false,
    consumed_by_function_id integer
);
CREATE INDEX IF NOT EXISTS idx_workflow_topic
    ON {{schema}}.notifications (destination_uuid, topic);

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_events (
    workflow_uuid text NOT NULL
        REFERENCES {{schema}}.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    serialization text,
    PRIMARY KEY (workflow_uuid, key)
);

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_events_history (
    workflow_uuid text NOT NULL
        REFERENCES {{schema}}.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    function_id integer NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    serialization text,
    PRIMARY KEY (workflow_uuid, function_id, key)
);

CREATE TABLE IF NOT EXISTS {{schema}}.streams (
    workflow_uuid text NOT NULL
        REFERENCES {{schema}}.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    "offset" integer NOT NULL,
    function_id integer NOT NULL DEFAULT 0,
    serialization text,
    PRIMARY KEY (workflow_uuid, key, "offset")
);

CREATE TABLE IF NOT EXISTS {{schema}}.event_dispatch_kv (
    service_name text NOT NULL,
    workflow_fn_name text NOT NULL,
    key text NOT NULL,
    value text,
    update_seq numeric(38, 0),
    update_time numeric(38, 15),
    PRIMARY KEY (service_name, workflow_fn_name, key)
);

CREATE TABLE IF NOT EXISTS {{schema}}.queues (
    queue_id text NOT NULL DEFAULT gen_random_uuid()::text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    concurrency integer,
    worker_concurrency integer,
    rate_limit_max integer,
    rate_limit_period_sec double precision,
    priority_enabled boolean NOT NULL DEFAULT false,
    partition_queue boolean NOT NULL DEFAULT false,
    polling_interval_sec double precision NOT NULL DEFAULT 1.0,
    created_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    updated_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    application_name text,
    partition_concurrency integer,
    partition_worker_concurrency integer,
    partition_rate_limit_max integer,
    partition_rate_limit_period_sec double precision
);

CREATE TABLE IF NOT EXISTS {{schema}}.workflow_schedules (
    schedule_id text NOT NULL PRIMARY KEY,
    schedule_name text NOT NULL UNIQUE,
    workflow_name text NOT NULL,
    workflow_class_name text,
    schedule text NOT NULL,
    status text NOT NULL DEFAULT 'ACTIVE',
    context text NOT NULL,
    last_fired_at text,
    automatic_backfill boolean NOT NULL DEFAULT false,
    cron_timezone text,
    queue_name text,
    application_name text
);

CREATE TABLE IF NOT EXISTS {{schema}}.application_versions (
    version_id text NOT NULL PRIMARY KEY,
    version_name text NOT NULL UNIQUE,
    version_timestamp bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    created_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000.0)::bigint,
    application_name text
);
CREATE INDEX IF NOT EXISTS idx_application_versions_owner_timestamp
    ON {{schema}}.application_versions (application_name, version_timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_application_versions_timestamp
    ON {{schema}}.application_versions (version_timestamp DESC);
CREATE UNIQUE INDEX IF NOT EXISTS uq_application_versions_owner_version
    ON {{schema}}.application_versions (application_name, version_name) WHERE application_name IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS uq_application_versions_unclaimed_version
    ON {{schema}}.application_versions (version_name) WHERE application_name IS NULL;

-- Wakes receivers blocked in recv(): the payload names the destination workflow and topic.
CREATE OR REPLACE FUNCTION {{schema}}.notifications_function() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
AS $fn$
BEGIN
    PERFORM pg_notify('dbos_notifications_channel', NEW.destination_uuid || '::' || NEW.topic);
    RETURN NEW;
END;
$fn$;

DROP TRIGGER IF EXISTS dbos_notifications_trigger ON {{schema}}.notifications;
CREATE TRIGGER dbos_notifications_trigger AFTER INSERT ON {{schema}}.notifications
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.notifications_function();

-- Enqueue by name from any language that speaks SQL. Inputs are stored as portable JSON.
CREATE OR REPLACE FUNCTION {{schema}}.enqueue_workflow(
    workflow_name text,
    queue_name text,
    positional_args json[] DEFAULT ARRAY[]::json[],
    named_args json DEFAULT '{}'::json,
    class_name text DEFAULT NULL,
    config_name text DEFAULT NULL,
    workflow_id text DEFAULT NULL,
    app_version text DEFAULT NULL,
    timeout_ms bigint DEFAULT NULL,
    deadline_epoch_ms bigint DEFAULT NULL,
    deduplication_id text DEFAULT NULL,
    priority integer DEFAULT NULL,
    queue_partition_key text DEFAULT NULL,
    authenticated_user text DEFAULT NULL,
    authenticated_roles text DEFAULT NULL,
    delay_until_epoch_ms bigint DEFAULT NULL,
    application_name text DEFAULT NULL
) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
AS $fn$
DECLARE
    id text := COALESCE(enqueue_workflow.workflow_id, gen_random_uuid()::text);
    now_ms bigint := (EXTRACT(epoch FROM now()) * 1000)::bigint;
BEGIN
    IF COALESCE(enqueue_workflow.workflow_name, '') = '' THEN
        RAISE EXCEPTION 'enqueue_workflow: workflow_name must be a non-empty string';
    END IF;
    IF COALESCE(enqueue_workflow.queue_name, '') = '' THEN
        RAISE EXCEPTION 'enqueue_workflow: queue_name must be a non-empty string';
    END IF;
    IF enqueue_workflow.workflow_id = '' THEN
        RAISE EXCEPTION 'enqueue_workflow: workflow_id, when given, must be a non-empty string';
    END IF;
    IF enqueue_workflow.named_args IS NOT NULL
       AND json_typeof(enqueue_workflow.named_args) <> 'object' THEN
        RAISE EXCEPTION 'enqueue_workflow: named_args must be a JSON object';
    END IF;
    IF enqueue_workflow.delay_until_epoch_ms < 0 THEN
        RAISE EXCEPTION 'enqueue_workflow: delay_until_epoch_ms must be >= 0';
    END IF;

    BEGIN
        INSERT INTO {{schema}}.workflow_status AS ws (
            workflow_uuid, status, name, class_name, config_name, queue_name,
            deduplication_id, priority, queue_partition_key, application_version,
            created_at, updated_at, recovery_attempts, workflow_timeout_ms,
            workflow_deadline_epoch_ms, owner_xid, serialization, authenticated_user,
            authenticated_roles, delay_until_epoch_ms, application_name)
        VALUES (
            id,
            CASE WHEN enqueue_workflow.delay_until_epoch_ms IS NULL THEN 'ENQUEUED' ELSE 'DELAYED' END,
            enqueue_workflow.workflow_name, enqueue_workflow.class_name,
            enqueue_workflow.config_name, enqueue_workflow.queue_name,
            enqueue_workflow.deduplication_id, COALESCE(enqueue_workflow.priority, 0),
            enqueue_workflow.queue_partition_key, enqueue_workflow.app_version,
            now_ms, now_ms, 0, enqueue_workflow.timeout_ms,
            enqueue_workflow.deadline_epoch_ms, gen_random_uuid()::text, 'portable_json',
            enqueue_workflow.authenticated_user, enqueue_workflow.authenticated_roles,
            enqueue_workflow.delay_until_epoch_ms, enqueue_workflow.application_name)
        ON CONFLICT (workflow_uuid) DO UPDATE SET updated_at = EXCLUDED.updated_at;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'DBOS queue duplicated'
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('queue %s already holds a workflow with deduplication ID %s',
                                  enqueue_workflow.queue_name, enqueue_workflow.deduplication_id);
    END;

    INSERT INTO {{schema}}.workflow_input (workflow_uuid, inputs, retention_timestamp)
    VALUES (id,
            json_build_object('positionalArgs', COALESCE(enqueue_workflow.positional_args, ARRAY[]::json[]),
                              'namedArgs', COALESCE(enqueue_workflow.named_args, '{}'::json))::text,
            now_ms)
    ON CONFLICT (workflow_uuid) DO NOTHING;

    RETURN id;
END;
$fn$;

-- Sends a message to a workflow; idempotent on message_id.
CREATE OR REPLACE FUNCTION {{schema}}.send_message(
    destination_id text,
    message json,
    topic text DEFAULT NULL,
    message_id text DEFAULT NULL
) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
AS $fn$
BEGIN
    INSERT INTO {{schema}}.notifications (message_uuid, destination_uuid, topic, message, serialization)
    VALUES (COALESCE(send_message.message_id, gen_random_uuid()::text),
            send_message.destination_id,
            COALESCE(send_message.topic, '__null__topic__'),
            send_message.message::text,
            'portable_json')
    ON CONFLICT (message_uuid) DO NOTHING;
EXCEPTION WHEN foreign_key_violation THEN
    RAISE EXCEPTION 'DBOS non-existent workflow'
        USING ERRCODE = 'foreign_key_violation',
              DETAIL = format('no workflow with ID %s to send to', send_message.destination_id);
END;
$fn$;
