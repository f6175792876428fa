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

mod app;
mod backoff;
mod cancellation;
mod client;
pub mod config;
mod context;
mod dispatch;
mod error;
mod event;
mod fleet;
pub mod health;
mod management;
mod message;
mod queue;
mod recovery;
mod registry;
mod schedule;
mod scheduler;
mod serialization;
mod sleep;
mod status;
mod step;
mod stream;
mod sysdb;
mod transaction;
mod wakeup;
mod workflow;

pub use app::{wait_for_signal, Mainstay, MainstayBuilder};
pub use client::{Client, QueueDepth, UnrunnableWork};
pub use config::Config;
pub use context::workflow_id;
pub use error::{Error, Failure, OrFail, Result};
pub use event::{get_event, set_event, GET_EVENT_OPERATION, SET_EVENT_OPERATION};
pub use fleet::{Progress, RegistrationMark, UnfinishedWork, WorkGroup};
pub use management::{ExecutorWork, ForkOptions, RegisteredWorkflow, StepInfo, VersionWork, WorkflowFilter};
pub use message::{recv, send, RECV_OPERATION, SEND_OPERATION};
pub use queue::{Queue, RateLimit};
pub use registry::Registration;
pub use schedule::{format_tick, tick_workflow_id, CronSchedule, InvalidSchedule, Schedule, ScheduleStatus};
pub use serialization::PORTABLE_JSON;
pub use sleep::{sleep, SLEEP_OPERATION};
pub use status::{Status, WorkflowStatus};
pub use step::{step, step_with, IntoWorkflowCall, Step, StepCall, StepOptions, StepWorkflow};
pub use stream::{close_stream, read_stream, write_stream, CLOSE_STREAM_OPERATION, WRITE_STREAM_OPERATION};
pub use sysdb::{DBOS_SCHEMA_VERSION, INTERNAL_QUEUE, MAINSTAY_SCHEMA_VERSION};
pub use transaction::{transaction, transaction_with, Isolation, TransactionOptions};
pub use workflow::{Workflow, WorkflowCall, WorkflowHandle, WorkflowOptions};

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
    pub use crate::workflow::{boxed, boxed_for, WorkflowResult};
    pub use futures::future::BoxFuture;
    pub use inventory;
}
