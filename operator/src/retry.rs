//! Delays between attempts, from `backon`: exponential with jitter, never ending (a loop stops
//! on success or shutdown). [`delays`] for what the operator needs before it can work (the
//! leader Lease, the CRDs), 1 s up to 30 s; [`object_delays`] for an object whose reconcile
//! failed, 2 s up to 5 min, jittered so objects that failed together (one database outage)
//! do not retry together.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The delays before each next attempt.
pub fn delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delays before each retry of one object's reconcile, from its first failure on.
pub fn object_delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_delays_start_near_two_seconds_and_level_off_at_five_minutes() {
        for _ in 0..20 {
            let d: Vec<Duration> = object_delays().take(20).collect();
            assert!(d[0] >= Duration::from_secs(2) && d[0] <= Duration::from_secs(4), "{:?}", d[0]);
            assert!(d[3] >= Duration::from_secs(16), "{:?}", d[3]);
            assert!(d[19] >= Duration::from_secs(300) && d[19] <= Duration::from_secs(600), "{:?}", d[19]);
        }
    }
}
