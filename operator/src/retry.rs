//! Waiting between attempts at what the operator needs before it can work (the leader Lease,
//! the CRDs): exponential delays with jitter from `backon`, from 1 s up to 30 s, never ending
//! (the loops stop on success or shutdown).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The delays before each next attempt.
pub fn delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
