//! What a Schedule does with a due tick while earlier runs are still in flight.

use mainstay_crds::ConcurrencyPolicy;

/// The action for a due tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickAction {
    /// Enqueue the tick's workflow.
    Fire,
    /// Skip this tick (report it): the previous run is still in flight.
    Skip { running: Vec<String> },
    /// Cancel these runs, then enqueue the tick's workflow.
    ReplaceThenFire { cancel: Vec<String> },
}

/// Decides for a due tick, given the workflow IDs of the schedule's runs still in flight.
pub fn decide(policy: ConcurrencyPolicy, active: &[String]) -> TickAction {
    match (policy, active.is_empty()) {
        (_, true) | (ConcurrencyPolicy::Allow, _) => TickAction::Fire,
        (ConcurrencyPolicy::Forbid, false) => TickAction::Skip { running: active.to_vec() },
        (ConcurrencyPolicy::Replace, false) => TickAction::ReplaceThenFire { cancel: active.to_vec() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_acts_as_the_cronjob_controller_does() {
        let running = vec!["sched-s-2026-01-01T00:00:00+00:00".to_string()];
        assert_eq!(decide(ConcurrencyPolicy::Allow, &running), TickAction::Fire);
        assert_eq!(decide(ConcurrencyPolicy::Forbid, &[]), TickAction::Fire);
        assert_eq!(decide(ConcurrencyPolicy::Forbid, &running), TickAction::Skip { running: running.clone() });
        assert_eq!(decide(ConcurrencyPolicy::Replace, &running), TickAction::ReplaceThenFire { cancel: running.clone() });
        assert_eq!(decide(ConcurrencyPolicy::Replace, &[]), TickAction::Fire);
    }
}
