-- Mainstay's own: what a version's workflows take, which run on a schedule, and which queues its
-- workers listen to, written
-- with the registered workflows at every launch, so tools (the operator starting a WorkflowRun,
-- the CLI) can refuse an input of the wrong length or a queue no worker of the version listens
-- to before anything is enqueued, rather than leave it failing or waiting. `arguments` holds the
-- Rust types of the positional arguments as written (a JSON array of strings), NULL when unknown
-- (workflows implemented without the macros, rows of older binaries). `schedule` is the cron
-- expression (and time zone) a `#[scheduled]` workflow declares, NULL for others.
ALTER TABLE {{schema}}.mainstay_registered_workflows ADD COLUMN IF NOT EXISTS arguments jsonb;
ALTER TABLE {{schema}}.mainstay_registered_workflows ADD COLUMN IF NOT EXISTS schedule text;

CREATE TABLE IF NOT EXISTS {{schema}}.mainstay_registered_queues (
    application_name text NOT NULL DEFAULT '',
    application_version text NOT NULL,
    queue_name text NOT NULL,
    registered_at bigint NOT NULL DEFAULT (EXTRACT(epoch FROM now()) * 1000)::bigint,
    PRIMARY KEY (application_name, application_version, queue_name)
);
