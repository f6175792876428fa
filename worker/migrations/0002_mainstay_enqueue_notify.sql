-- Mainstay's own objects (prefixed mainstay_): triggers announce newly runnable queued work
-- so idle workers wake in milliseconds instead of waiting for their polling interval. The
-- WHEN clauses keep the trigger function from running at all for ordinary writes.
CREATE OR REPLACE FUNCTION {{schema}}.mainstay_enqueue_notify() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
AS $fn$
BEGIN
    PERFORM pg_notify('mainstay_enqueued', NEW.queue_name);
    RETURN NULL;
END;
$fn$;

DROP TRIGGER IF EXISTS mainstay_enqueue_insert ON {{schema}}.workflow_status;
CREATE TRIGGER mainstay_enqueue_insert AFTER INSERT ON {{schema}}.workflow_status
    FOR EACH ROW WHEN (NEW.status = 'ENQUEUED' AND NEW.queue_name IS NOT NULL)
    EXECUTE FUNCTION {{schema}}.mainstay_enqueue_notify();

DROP TRIGGER IF EXISTS mainstay_enqueue_update ON {{schema}}.workflow_status;
CREATE TRIGGER mainstay_enqueue_update AFTER UPDATE OF status ON {{schema}}.workflow_status
    FOR EACH ROW WHEN (NEW.status = 'ENQUEUED' AND OLD.status IS DISTINCT FROM 'ENQUEUED'
                       AND NEW.queue_name IS NOT NULL)
    EXECUTE FUNCTION {{schema}}.mainstay_enqueue_notify();
