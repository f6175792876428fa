//! The mainstay operator: the DurableApp and Schedule controllers and the decisions they make.
//!
//! The decision logic (validation, the objects built, scaling, roll-outs, cron ticks,
//! concurrency policies, which executors are dead) is pure: no client, no clock of its own,
//! unit-tested from YAML fixtures. The controllers apply those decisions to a cluster and reach
//! each app's system database only through mainstay's client API; the operator writes no SQL.

pub mod api_requests;
pub mod app_decision;
pub mod conditions;
pub mod controller;
pub mod crd_drift;
pub mod crd_watch;
pub mod database;
pub mod endpoints;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observer;
pub mod policy;
pub mod recovery;
pub mod retry;
pub mod rollout;
pub mod run_status;
pub mod runnable;
pub mod scaling;
pub mod schedule_runs;
pub mod stores;
pub mod ticks;
pub mod validate;
pub mod workload;
