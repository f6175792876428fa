//! # mainstay
//!
//! Durable workflows for Rust. Workflows are ordinary async functions made of steps; every
//! step's outcome is checkpointed in Postgres, so after a crash a workflow resumes from its
//! last completed step. The system database is the DBOS 3.x schema, so DBOS's CLI and SDKs can
//! inspect and drive mainstay workflows.
//!
//! ```no_run
//! #[mainstay::step]
//! async fn step_one() -> mainstay::Result<()> {
//!     println!("Step one completed!");
//!     Ok(())
//! }
//!
//! #[mainstay::workflow]
//! async fn two_steps() -> mainstay::Result<()> {
//!     step_one().await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> mainstay::Result<()> {
//! let app = mainstay::Mainstay::launch(mainstay::Config::from_env()?).await?;
//! two_steps().await?;
//! app.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The attributes are sugar: [`step`], [`step_with`], [`sleep`], the [`Workflow`] trait and
//! [`WorkflowCall`] are the API they expand to, usable directly.

// The layers, bottom to top; a module imports only from its own layer or the ones below
// (`tests/layers.rs` holds this):
// - `model`: plain data and the names that reach the database, no I/O;
// - `sysdb`: the system database, the only place SQL is written;
// - `runtime`: executing workflows, the client, the process around them.
mod model;
mod runtime;
mod sysdb;

pub use model::config::{self, Config};
pub use model::error::{Error, Failure, OrFail, Result};
pub use model::fleet::{Progress, QueueDepth, RegistrationMark, UnfinishedWork, UnrunnableWork, WorkGroup};
pub use model::management::{ExecutorWork, ForkOptions, RegisteredWorkflow, StepInfo, VersionWork, WorkflowFilter};
pub use model::names::{
    CLOSE_STREAM_OPERATION, GET_EVENT_OPERATION, INTERNAL_QUEUE, RECV_OPERATION, SEND_OPERATION, SET_EVENT_OPERATION, SLEEP_OPERATION,
    WRITE_STREAM_OPERATION,
};
pub use model::options::WorkflowOptions;
pub use model::queue::{Queue, RateLimit};
pub use model::schedule::{format_tick, tick_workflow_id, CronSchedule, InvalidSchedule, Schedule, ScheduleStatus};
pub use model::serialization::PORTABLE_JSON;
pub use model::status::{Status, WorkflowStatus};
pub use model::stuck::{
    ParkedWorkflow, QueueWait, StalledOnExecutor, StalledWorkflow, StrandedReason, StrandedWork, StuckCriteria, StuckWork, StuckWorkflows,
};
pub use runtime::app::{wait_for_signal, Mainstay, MainstayBuilder};
pub use runtime::client::Client;
pub use runtime::context::workflow_id;
pub use runtime::event::{get_event, set_event};
pub use runtime::health;
pub use runtime::logging::{init_logging, init_logging_as, LogFormat};
pub use runtime::message::{recv, send};
pub use runtime::registry::Registration;
pub use runtime::sleep::sleep;
pub use runtime::step::{step, step_with, IntoWorkflowCall, Step, StepCall, StepOptions, StepWorkflow};
pub use runtime::stream::{close_stream, read_stream, write_stream};
pub use runtime::transaction::{transaction, transaction_with, Isolation, TransactionOptions};
pub use runtime::workflow::{Workflow, WorkflowCall, WorkflowHandle};
pub use sysdb::{DBOS_SCHEMA_VERSION, MAINSTAY_SCHEMA_VERSION};

/// The chrono version scheduled workflows receive their times in.
pub use chrono;
pub use mainstay_macros::{scheduled, step, transaction, workflow};
/// The sqlx version mainstay's transactions hand their connection from.
pub use sqlx;

/// Runs the system-database migrations against `config`'s database and returns.
pub async fn migrate(config: &Config) -> Result<()> {
    let db = sysdb::SystemDatabase::connect(config).await?;
    let result = db.migrate().await;
    db.close().await;
    result
}

#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::workflow::{boxed, boxed_for, WorkflowResult};
    pub use futures::future::BoxFuture;
    pub use inventory;

    /// Has Postgres prepare every system-database statement against the migrated schema of
    /// `config`'s database (the test that holds all statements valid); returns how many.
    pub async fn prepare_every_statement(config: &crate::Config) -> Result<usize, Vec<String>> {
        let db = crate::sysdb::SystemDatabase::connect(config).await.map_err(|e| vec![e.to_string()])?;
        let result = crate::sysdb::prepare_every_statement(db.pool(), &config.system_schema).await;
        db.close().await;
        result
    }
}
