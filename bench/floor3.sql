-- The minimum number of dependent commits of a durable two-step workflow (start, step one, then
-- step two merged with the outcome), for `pgbench -M prepared -f bench/floor3.sql`; compare floor.sql.
\set n random(1, 2000000000)
WITH ins AS (INSERT INTO dbos.workflow_status (workflow_uuid, name, status, owner_xid, executor_id, application_version, serialization, recovery_attempts) VALUES ('w' || :n || '-' || :client_id, 'wf', 'PENDING', 'o', 'e', 'v', 'portable_json', 1) RETURNING workflow_uuid) INSERT INTO dbos.workflow_input (workflow_uuid, inputs) SELECT workflow_uuid, '{}' FROM ins;
INSERT INTO dbos.operation_outputs(workflow_uuid, function_id, function_name, output) VALUES ('w' || :n || '-' || :client_id, 1, 's', 'null');
WITH st AS (INSERT INTO dbos.operation_outputs(workflow_uuid, function_id, function_name, output) VALUES ('w' || :n || '-' || :client_id, 2, 's', 'null') RETURNING workflow_uuid), upd AS (UPDATE dbos.workflow_status SET status='SUCCESS', completed_at=2 WHERE workflow_uuid = 'w' || :n || '-' || :client_id RETURNING workflow_uuid) INSERT INTO dbos.workflow_output (workflow_uuid, output) SELECT workflow_uuid, 'null' FROM upd;
