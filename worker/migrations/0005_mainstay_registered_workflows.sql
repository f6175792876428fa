-- Mainstay's own: the workflows each application version registers, written by every worker at
-- launch, so tools (the operator checking a Schedule's workflow name, the CLI) can tell a
-- workflow no worker of a version can run from one that is merely waiting. DBOS keeps no such
-- record; rows of other SDKs are simply absent (absent means "unknown", never "missing").
CREATE TABLE IF NOT EXISTS {{schema}}.mainstay_registered_workflows (
    application_name text NOT NULL DEFAULT '',
    application_version text NOT NULL,
    workflow_name text NOT NULL,
    registered_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000)::bigint,
    PRIMARY KEY (application_name, application_version, workflow_name)
);
