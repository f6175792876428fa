//! Waiting between attempts: exponential delays from `backon`, the one mechanism every retry
//! and poll loop of the runtime uses (rather than a doubling written out at each loop).
//!
//! Invariant: the iterators never end; a loop decides itself when to stop (a deadline, a
//! number of attempts, a shutdown).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from `first`, doubling up to `max`: for polling a condition.
pub(crate) fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new().with_min_delay(first).with_max_delay(max).without_max_times().build()
}

/// As [`delays`], each lengthened by up to as much again at random: for retrying after a
/// conflict or an outage, so contenders do not come back together.
pub(crate) fn jittered(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new().with_min_delay(first).with_max_delay(max).with_jitter().without_max_times().build()
}

/// A random fraction in `[0, 1)`, to spread periodic work of many processes.
pub(crate) fn jitter_fraction() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_their_cap_and_never_end() {
        let d: Vec<Duration> = delays(Duration::from_millis(100), Duration::from_millis(500)).take(6).collect();
        let ms: Vec<u128> = d.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 500, 500, 500]);
        for (i, j) in jittered(Duration::from_millis(100), Duration::from_millis(400)).take(50).enumerate() {
            let base = (100u64 << i.min(2)) as u128;
            assert!(j.as_millis() >= base && j.as_millis() < 2 * base + 1, "attempt {i}: {j:?}");
        }
        assert!((0.0..1.0).contains(&jitter_fraction()));
    }
}
