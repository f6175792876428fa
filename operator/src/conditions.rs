//! Status conditions as the Kubernetes API conventions define them: one per type, each with
//! status, reason, message, observedGeneration and a lastTransitionTime that changes only when
//! the status does (so a steady resource's status is byte-for-byte stable and not rewritten).

use chrono::{DateTime, SecondsFormat, Utc};
use mainstay_crds::Condition;

/// `True` / `False` as condition status strings.
pub fn status_str(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// Sets condition `type_`, keeping its transition time when its status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    set_to(conditions, type_, status_str(status), reason, message, generation, now)
}

/// Sets condition `type_` to `Unknown` (the operator does not know, e.g. while paused).
pub fn set_unknown(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    set_to(conditions, type_, "Unknown", reason, message, generation, now)
}

fn set_to(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time,
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_does() {
        let t0 = crate::ticks::utc(2026, 1, 1, 0, 0, 0);
        let t1 = crate::ticks::utc(2026, 1, 1, 0, 5, 0);
        let mut cs = Vec::new();
        set(&mut cs, "Ready", false, "WorkersNotReady", "0/1", Some(1), t0);
        set(&mut cs, "Ready", false, "WorkersNotReady", "0/2", Some(2), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!((cs[0].message.as_str(), cs[0].observed_generation), ("0/2", Some(2)));
        set(&mut cs, "Ready", true, "Available", "2/2", Some(2), t1);
        assert_eq!(cs[0].last_transition_time.as_deref(), Some("2026-01-01T00:05:00Z"));
        assert!(is_true(&cs, "Ready") && !is_true(&cs, "Degraded"));
    }
}
