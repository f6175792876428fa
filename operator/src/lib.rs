//! The mainstay operator's decision logic: validation, the objects it builds, scaling,
//! roll-outs, cron ticks and concurrency policies. Everything here is pure (no client, no
//! clock of its own) and unit-tested from YAML fixtures; the controllers that apply these
//! decisions to a cluster and read queue depths through mainstay's client API build on it.

pub mod names;
pub mod policy;
pub mod rollout;
pub mod scaling;
pub mod ticks;
