//! The number of workers a DurableApp should have.
//!
//! A fixed `spec.replicas` (set by hand or by an external autoscaler through `/scale`) is
//! obeyed as is. Otherwise desired = clamp(ceil((queued + running) / targetQueueDepth), min, max),
//! stabilized the way the HorizontalPodAutoscaler does it: scale up to the lowest
//! recommendation of the up-window, down to the highest of the down-window, so a brief spike or
//! lull does not flap the fleet. With an up-window of zero, work arriving at an app scaled to
//! zero gets a worker on the next reconcile.

use chrono::{DateTime, Duration, Utc};
use mainstay_crds::{DurableAppSpec, ScalingSpec};

/// The raw recommendation for a queue depth (queued plus running workflows).
pub fn recommend(depth: i64, scaling: &ScalingSpec) -> i32 {
    let target = i64::from(scaling.target_queue_depth.max(1));
    let wanted = (depth.max(0) + target - 1) / target;
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted.clamp(scaling.min_replicas.max(0), scaling.max_replicas.max(scaling.min_replicas.max(0)))
}

/// Recommendations remembered between reconciles, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub samples: Vec<(DateTime<Utc>, i32)>,
    /// The workers found when this history started (see [`History::seed`]): it holds a
    /// scale-down for one window, never a scale-up.
    pub seeded: Option<(DateTime<Utc>, i32)>,
}

impl History {
    /// Starts an empty history (a fresh operator process: a restart or a fail-over) as if the
    /// workers it finds had been recommended just now, so a scale-down still waits a whole
    /// stabilization window: the window is derived from the cluster (the Deployment's replicas),
    /// never from a memory the restart lost. Scaling up is not held back by it.
    pub fn seed(&mut self, at: DateTime<Utc>, current: i32) {
        if self.samples.is_empty() && self.seeded.is_none() {
            self.seeded = Some((at, current));
        }
    }

    /// Records a recommendation and forgets what no window needs any more. Samples are a
    /// step function (each holds until the next), so the newest one older than `keep` stays:
    /// it is still in effect at the start of any window.
    pub fn record(&mut self, at: DateTime<Utc>, recommendation: i32, keep: Duration) {
        self.samples.push((at, recommendation));
        let inside = self.samples.iter().position(|(t, _)| at - *t <= keep).unwrap_or(self.samples.len());
        self.samples.drain(..inside.saturating_sub(1));
    }

    /// The recommendations in effect at some point of the `window` before `now`: the one in
    /// effect when it began (the newest made at or before its start: reconciles are sparse at
    /// rest, so a window may hold no sample of its own), and those made after. A window of
    /// zero is the newest recommendation alone.
    fn within(&self, now: DateTime<Utc>, window: Duration) -> impl Iterator<Item = i32> + '_ {
        let start = now - window;
        let at_start = self.samples.iter().rev().find(|(t, _)| *t <= start).map(|(_, n)| *n);
        self.samples.iter().filter(move |(t, _)| *t > start && *t <= now).map(|(_, n)| *n).chain(at_start)
    }
}

/// The worker count to apply now.
pub fn desired(spec: &DurableAppSpec, current: i32, history: &History, now: DateTime<Utc>) -> i32 {
    if let Some(fixed) = spec.replicas {
        return fixed.max(0);
    }
    let s = &spec.scaling;
    let up = Duration::seconds(i64::from(s.scale_up_stabilization_seconds.max(0)));
    let down = Duration::seconds(i64::from(s.scale_down_stabilization_seconds.max(0)));
    let latest = history.samples.last().map(|(_, n)| *n).unwrap_or(current);
    let up_to = history.within(now, up).min().unwrap_or(latest);
    let seeded = history.seeded.filter(|(t, _)| now - *t <= down).map(|(_, n)| n);
    let down_to = history.within(now, down).chain(seeded).max().unwrap_or(latest);
    if up_to > current {
        up_to
    } else if down_to < current {
        down_to
    } else {
        current
    }
    .clamp(s.min_replicas.max(0), s.max_replicas.max(s.min_replicas.max(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DurableAppSpec {
        yaml_serde::from_str(yaml).unwrap()
    }

    const AUTOSCALED: &str = r#"
image: shop:1
database: {urlSecret: {name: db}}
scaling: {minReplicas: 0, maxReplicas: 8, targetQueueDepth: 50,
          scaleUpStabilizationSeconds: 0, scaleDownStabilizationSeconds: 60}
"#;

    fn t(s: i64) -> DateTime<Utc> {
        crate::ticks::utc(2026, 1, 1, 0, 0, 0) + Duration::seconds(s)
    }

    #[test]
    fn recommendation_is_depth_over_target_clamped() {
        let s = spec(AUTOSCALED).scaling;
        assert_eq!(recommend(0, &s), 0);
        assert_eq!(recommend(1, &s), 1);
        assert_eq!(recommend(100, &s), 2);
        assert_eq!(recommend(101, &s), 3);
        assert_eq!(recommend(100_000, &s), 8);
    }

    #[test]
    fn a_fixed_replica_count_wins() {
        let mut s = spec(AUTOSCALED);
        s.replicas = Some(3);
        assert_eq!(desired(&s, 7, &History::default(), t(0)), 3);
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let s = spec(AUTOSCALED);
        let keep = Duration::seconds(600);
        let mut h = History::default();
        // Work arrives while scaled to zero: up immediately.
        h.record(t(0), recommend(500, &s.scaling), keep);
        assert_eq!(desired(&s, 0, &h, t(0)), 8);
        // Queue drains: the down-window still remembers 8.
        h.record(t(30), recommend(0, &s.scaling), keep);
        assert_eq!(desired(&s, 8, &h, t(30)), 8);
        // After 60 s of zero, down to zero.
        h.record(t(95), recommend(0, &s.scaling), keep);
        assert_eq!(desired(&s, 8, &h, t(95)), 0);
    }

    #[test]
    fn an_up_window_ignores_a_brief_spike() {
        let mut s = spec(AUTOSCALED);
        s.scaling.scale_up_stabilization_seconds = 30;
        let keep = Duration::seconds(600);
        let mut h = History::default();
        h.record(t(0), 1, keep);
        h.record(t(10), 8, keep);
        assert_eq!(desired(&s, 1, &h, t(10)), 1, "the spike has not held for 30 s");
        h.record(t(45), 8, keep);
        assert_eq!(desired(&s, 1, &h, t(45)), 8);
    }

    #[test]
    fn sparse_samples_hold_until_the_next_one() {
        let mut s = spec(AUTOSCALED);
        s.scaling.scale_up_stabilization_seconds = 30;
        let keep = Duration::seconds(120);
        let mut h = History::default();
        // Steady load recorded once, then nothing for minutes (nothing changed).
        h.record(t(0), 8, keep);
        h.record(t(200), 0, keep);
        assert_eq!(h.samples.len(), 2, "the sample in effect before the window is kept");
        assert_eq!(desired(&s, 8, &h, t(200)), 8, "the drain must wait out the down-window");
        h.record(t(261), 0, keep);
        assert_eq!(desired(&s, 8, &h, t(261)), 0);
        // Without an up-window, work arriving at rest scales up at once (the value held
        // before it does not count).
        let mut at_once = spec(AUTOSCALED);
        at_once.scaling.scale_up_stabilization_seconds = 0;
        h.record(t(600), 3, keep);
        assert_eq!(desired(&at_once, 0, &h, t(600)), 3);
        h.record(t(601), 0, keep);
        // A spike on an app at rest still waits out the up-window.
        h.record(t(900), 4, keep);
        assert_eq!(desired(&s, 0, &h, t(900)), 0);
        h.record(t(931), 4, keep);
        assert_eq!(desired(&s, 0, &h, t(931)), 4);
    }

    #[test]
    fn a_restart_keeps_the_scale_down_window_and_does_not_delay_scale_up() {
        let s = spec(AUTOSCALED);
        let keep = Duration::seconds(600);
        // A fresh process finds 5 workers and an empty queue: it waits a whole window.
        let mut h = History::default();
        h.seed(t(0), 5);
        h.record(t(0), recommend(0, &s.scaling), keep);
        assert_eq!(desired(&s, 5, &h, t(0)), 5, "dropped workers right after a restart");
        h.record(t(59), 0, keep);
        assert_eq!(desired(&s, 5, &h, t(59)), 5);
        h.record(t(61), 0, keep);
        assert_eq!(desired(&s, 5, &h, t(61)), 0);
        // Seeding never holds a scale-up back, and seeds only an empty history.
        let mut h = History::default();
        h.seed(t(0), 1);
        h.record(t(0), recommend(400, &s.scaling), keep);
        assert_eq!(desired(&s, 1, &h, t(0)), 8);
        h.seed(t(1), 0);
        assert_eq!(h.seeded, Some((t(0), 1)));
    }
}
