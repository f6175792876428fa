//! Test helpers shared by Mainstay's suites (the runtime's integration tests, the CLI's, the
//! examples', the operator's end-to-end tests): one copy of each, so a fix reaches them all.
//!
//! Nothing here fakes a component: databases are real ones on the Postgres that
//! `MAINSTAY_TEST_DATABASE_URL` names, waits are on conditions (never on a fixed sleep), and
//! a missing prerequisite fails the test with what to set, never passes it.

mod database;
mod http;
mod logs;
mod outcomes;
mod process;
mod promtool;
mod wait;

pub use database::{admin_url, connect, database_name, fresh_database, fresh_database_on, with_database, TEST_URL_ENV};
pub use http::{free_port, http_get, HttpAnswer};
pub use logs::{capture_logs, init_tracing, logged};
pub use outcomes::count_outcome_writes;
pub use process::{kill_child, self_command, spawn_self};
pub use promtool::{check_metrics, PROMTOOL_ENV};
pub use wait::{poll_until, wait_for, TimedOut};
