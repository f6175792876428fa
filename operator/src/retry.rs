//! Delays between attempts, from `backon`: exponential with jitter, never ending (a loop stops
//! on success or shutdown). [`delays`] for what the operator needs before it can work (the
//! leader Lease, the CRDs), 1 s up to 30 s; [`object_delays`] for an object whose reconcile
//! failed, 1–2 s at first and at most 5 min, jittered so objects that failed together (one
//! database outage) do not retry together. (backon's jitter adds up to the delay itself, so a
//! cap of `max` yields delays up to `2 × max`.)

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

/// The delays before each retry of one object's reconcile, from its first failure on: 1–2 s,
/// doubling, then 2.5–5 min.
pub fn object_delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(150))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_delays_start_near_a_second_and_never_pass_five_minutes() {
        for _ in 0..20 {
            let d: Vec<Duration> = object_delays().take(20).collect();
            assert!(d[0] >= Duration::from_secs(1) && d[0] <= Duration::from_secs(2), "{:?}", d[0]);
            assert!(d[3] >= Duration::from_secs(8), "{:?}", d[3]);
            assert!(d.iter().all(|d| *d <= Duration::from_secs(300)), "{d:?}");
            assert!(d[19] >= Duration::from_secs(150), "{:?}", d[19]);
        }
    }
}
