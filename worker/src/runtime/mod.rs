//! The top layer: executing workflows and steps, the client, and the process around them
//! (dispatch, recovery, the scheduler, health). It reaches the database only through `sysdb`.

pub mod app;
pub mod cancellation;
pub mod client;
pub mod context;
pub mod dispatch;
pub mod event;
pub mod health;
pub mod logging;
pub mod message;
pub(crate) mod metrics;
pub mod recovery;
pub mod registry;
pub mod scheduler;
pub mod sleep;
pub(crate) mod spans;
pub mod step;
pub mod stream;
pub(crate) mod telemetry;
pub mod transaction;
pub mod wakeup;
pub mod workflow;
