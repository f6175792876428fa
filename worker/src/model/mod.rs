//! The bottom layer: plain data and the names that reach the database.
//!
//! Invariant: nothing here does I/O or imports from `sysdb` or `runtime`; these are the types
//! both of them speak (statuses, options, definitions of queues and schedules, errors) and the
//! pure rules over them (validation, encoding, retry delays).

pub mod backoff;
pub mod clock;
pub mod config;
pub mod error;
pub mod fleet;
pub mod management;
pub mod names;
pub mod options;
pub mod queue;
pub mod schedule;
pub mod serialization;
pub mod status;
pub mod stuck;
