//! What a WorkflowRun's status says, from the workflow's record in the system database: pure
//! functions, no client (the controller reads, these decide).
//!
//! Invariants: the workflow ID of a run is stable for its object (so a repeated apply or
//! reconcile enqueues nothing new) and distinct across namespaces; every status field is
//! bounded, so a huge output or error cannot make the object too large to store.

use chrono::{DateTime, SecondsFormat, Utc};
use mainstay::{Status, WorkflowStatus};
use mainstay_crds::{WorkflowRun, WorkflowRunError, WorkflowRunPhase, WorkflowRunStatus};
use serde_json::Value;

use crate::conditions::set;
use crate::names::{condition, reason};

/// Most characters of an output or error message kept in the status.
pub const MAX_TEXT: usize = 4096;

/// The run's workflow ID: `spec.workflowId`, or `{namespace}.{name}.{uid}`.
pub fn workflow_id(run: &WorkflowRun) -> String {
    if let Some(id) = run.spec.workflow_id.as_ref().filter(|id| !id.is_empty()) {
        return id.clone();
    }
    let m = &run.metadata;
    format!(
        "{}.{}.{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The positional arguments for `spec.input`: an array is the arguments, another value the only
/// one, none is no arguments.
pub fn arguments(input: Option<&Value>) -> Vec<Value> {
    match input {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(one) => vec![one.clone()],
    }
}

/// The phase of a workflow status (a status another SDK wrote that Mainstay does not know
/// reads as Running: the workflow is not finished as far as anyone can tell).
pub fn phase(status: Status) -> WorkflowRunPhase {
    match status {
        Status::Other(_) => WorkflowRunPhase::Running,
        Status::Pending => WorkflowRunPhase::Running,
        Status::Enqueued => WorkflowRunPhase::Enqueued,
        Status::Delayed => WorkflowRunPhase::Delayed,
        Status::Success => WorkflowRunPhase::Succeeded,
        Status::Error => WorkflowRunPhase::Failed,
        Status::Cancelled => WorkflowRunPhase::Cancelled,
        Status::MaxRecoveryAttemptsExceeded => WorkflowRunPhase::MaxRecoveryAttemptsExceeded,
    }
}

/// Whether the phase is final (until someone resumes the workflow).
pub fn finished(phase: WorkflowRunPhase) -> bool {
    matches!(
        phase,
        WorkflowRunPhase::Succeeded
            | WorkflowRunPhase::Failed
            | WorkflowRunPhase::Cancelled
            | WorkflowRunPhase::MaxRecoveryAttemptsExceeded
    )
}

/// `text` cut to `MAX_TEXT` characters, marked when cut.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_TEXT).collect();
    cut.push_str("… (cut; the system database has all of it)");
    cut
}

fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The error of a failed workflow, from its recorded portable JSON (`{"name", "message", …}`).
pub fn error_of(recorded: Option<&str>) -> Option<WorkflowRunError> {
    let text = recorded?;
    let (name, message) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (
            v.get("name").and_then(Value::as_str).unwrap_or("Error").to_string(),
            v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| text.to_string()),
        ),
        Err(_) => ("Error".to_string(), text.to_string()),
    };
    Some(WorkflowRunError { name, message: bounded(&message) })
}

/// Mirrors a workflow's record into the run's status, with the conditions `kubectl wait` uses.
pub fn mirror(status: &mut WorkflowRunStatus, w: &WorkflowStatus, steps: i64, generation: Option<i64>, now: DateTime<Utc>) {
    let phase = phase(w.status.clone());
    status.phase = Some(phase);
    status.workflow_id = Some(w.workflow_id.clone());
    status.app_version = w.app_version.clone();
    status.executor = w.executor_id.clone();
    status.start_time = time(w.started_at_ms);
    status.completion_time = if finished(phase) { time(w.completed_at_ms.or(Some(w.updated_at_ms))) } else { None };
    status.steps_completed = Some(steps);
    status.duration = match (finished(phase), w.started_at_ms, w.completed_at_ms.or(Some(w.updated_at_ms))) {
        (true, Some(start), Some(end)) => Some(duration_text(end - start)),
        _ => None,
    };
    status.output = (phase == WorkflowRunPhase::Succeeded).then(|| bounded(w.output.as_deref().unwrap_or("null")));
    status.error = if phase == WorkflowRunPhase::Failed { error_of(w.error.as_deref()) } else { None };
    let running = matches!(phase, WorkflowRunPhase::Running);
    set(
        &mut status.conditions,
        condition::RUNNING,
        running,
        if running { reason::RUNNING } else { reason::NOT_RUNNING },
        "",
        generation,
        now,
    );
    let succeeded = phase == WorkflowRunPhase::Succeeded;
    set(
        &mut status.conditions,
        condition::SUCCEEDED,
        succeeded,
        if succeeded { reason::WORKFLOW_SUCCEEDED } else { reason::NOT_FINISHED },
        "",
        generation,
        now,
    );
    let (failed, why, msg) = match phase {
        WorkflowRunPhase::Failed => {
            let e = status.error.clone().unwrap_or_default();
            (true, reason::WORKFLOW_FAILED, format!("{}: {}", e.name, e.message))
        }
        WorkflowRunPhase::Cancelled => (true, reason::CANCELLED, "the workflow was cancelled".to_string()),
        WorkflowRunPhase::MaxRecoveryAttemptsExceeded => (
            true,
            reason::MAX_RECOVERY_ATTEMPTS,
            "the workflow was recovered too many times and is parked; resume it once the cause is fixed".to_string(),
        ),
        _ => (false, reason::NOT_FINISHED, String::new()),
    };
    set(&mut status.conditions, condition::FAILED, failed, why, msg, generation, now);
}

/// A duration as kubectl prints one: `850ms`, `42s`, `3m5s`, `2h4m`.
pub fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// Most event keys shown in a run's status, and characters per value.
pub const MAX_EVENTS: usize = 20;
const MAX_EVENT_VALUE: usize = 256;

/// The workflow's events as the status shows them: JSON text, bounded.
pub fn events(events: Vec<(String, Value)>) -> std::collections::BTreeMap<String, String> {
    events
        .into_iter()
        .take(MAX_EVENTS)
        .map(|(k, v)| {
            let text = v.to_string();
            let text = if text.chars().count() > MAX_EVENT_VALUE {
                format!("{}…", text.chars().take(MAX_EVENT_VALUE).collect::<String>())
            } else {
                text
            };
            (k, text)
        })
        .collect()
}

/// How long until a finished run's object is deleted (`Some(0)`: now), or `None` when it is
/// kept (no TTL, or no completion time known).
pub fn ttl_left(ttl_seconds: Option<i64>, completed: Option<&str>, now: DateTime<Utc>) -> Option<std::time::Duration> {
    let ttl = ttl_seconds?;
    let completed = DateTime::parse_from_rfc3339(completed?).ok()?.with_timezone(&Utc);
    let due = completed + chrono::Duration::seconds(ttl.max(0));
    Some((due - now).to_std().unwrap_or_default())
}

/// Whether the run was seen started (enqueued or further) in the database: from then on its
/// status only follows the database, and it is never started again.
pub fn started(status: &WorkflowRunStatus) -> bool {
    status.phase.is_some_and(|p| p != WorkflowRunPhase::Pending)
}

/// The status of a run that cannot start (unknown app, unknown workflow, refused enqueue):
/// `Failed` with the reason, so `kubectl wait --for=condition=Failed` sees it too.
pub fn refused(status: &mut WorkflowRunStatus, why: &str, msg: &str, generation: Option<i64>, now: DateTime<Utc>) {
    status.phase = Some(WorkflowRunPhase::Pending);
    set(&mut status.conditions, condition::SUCCEEDED, false, reason::NOT_FINISHED, "", generation, now);
    set(&mut status.conditions, condition::FAILED, true, why, msg, generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_counts_as_started_once_the_database_showed_it() {
        let mut st = WorkflowRunStatus::default();
        assert!(!started(&st));
        refused(&mut st, "AppNotFound", "no app", Some(1), Utc::now());
        assert!(!started(&st), "a refused run never started");
        st.phase = Some(WorkflowRunPhase::Enqueued);
        assert!(started(&st));
        st.phase = Some(WorkflowRunPhase::Succeeded);
        assert!(started(&st));
    }

    fn run(yaml: &str) -> WorkflowRun {
        yaml_serde::from_str(yaml).unwrap()
    }

    const RUN: &str = r#"
apiVersion: mainstay.dev/v1alpha1
kind: WorkflowRun
metadata: {name: order-7, namespace: shop, uid: 0c6b3d5e-1111-2222-3333-444455556666}
spec: {appRef: shop, workflowName: process_order, input: 7}
"#;

    fn record(status: Status, output: Option<&str>, error: Option<&str>) -> WorkflowStatus {
        let mut w = WorkflowStatus {
            workflow_id: "shop.order-7.x".into(),
            status,
            name: Some("process_order".into()),
            executor_id: Some("shop-1-abc".into()),
            app_version: Some("1.0.0".into()),
            queue_name: None,
            parent_workflow_id: None,
            recovery_attempts: 1,
            created_at_ms: 1_000,
            updated_at_ms: 3_000,
            started_at_ms: Some(2_000),
            completed_at_ms: Some(3_000),
            deadline_epoch_ms: None,
            output: None,
            error: None,
            serialization: None,
        };
        w.output = output.map(str::to_string);
        w.error = error.map(str::to_string);
        w
    }

    #[test]
    fn the_workflow_id_is_stable_per_object_and_namespaced() {
        let r = run(RUN);
        assert_eq!(workflow_id(&r), "shop.order-7.0c6b3d5e-1111-2222-3333-444455556666");
        let mut other = r.clone();
        other.metadata.namespace = Some("billing".into());
        assert_ne!(workflow_id(&r), workflow_id(&other));
        other.spec.workflow_id = Some("chosen".into());
        assert_eq!(workflow_id(&other), "chosen");
    }

    #[test]
    fn input_is_positional_arguments() {
        assert_eq!(arguments(None), Vec::<Value>::new());
        assert_eq!(arguments(Some(&serde_json::json!(7))), vec![serde_json::json!(7)]);
        assert_eq!(arguments(Some(&serde_json::json!([1, "a"]))), vec![serde_json::json!(1), serde_json::json!("a")]);
    }

    #[test]
    fn status_mirrors_the_record_with_conditions_for_kubectl_wait() {
        let now = crate::ticks::utc(2026, 1, 1, 0, 0, 0);
        let mut s = WorkflowRunStatus::default();
        mirror(&mut s, &record(Status::Success, Some("\"shipped\""), None), 3, Some(1), now);
        assert_eq!(s.phase, Some(WorkflowRunPhase::Succeeded));
        assert_eq!(s.output.as_deref(), Some("\"shipped\""));
        assert_eq!(s.steps_completed, Some(3));
        assert!(crate::conditions::is_true(&s.conditions, "Succeeded"));
        assert!(!crate::conditions::is_true(&s.conditions, "Failed"));
        let mut s = WorkflowRunStatus::default();
        mirror(&mut s, &record(Status::Error, None, Some(r#"{"name":"PaymentDeclined","message":"card declined"}"#)), 1, Some(1), now);
        assert_eq!(s.error, Some(WorkflowRunError { name: "PaymentDeclined".into(), message: "card declined".into() }));
        let failed = s.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
        assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", "WorkflowFailed"));
        assert!(failed.message.contains("card declined"));
    }

    #[test]
    fn a_finished_run_goes_after_its_ttl() {
        let now = crate::ticks::utc(2026, 1, 1, 0, 1, 0);
        assert_eq!(ttl_left(None, Some("2026-01-01T00:00:00Z"), now), None);
        assert_eq!(ttl_left(Some(30), None, now), None);
        assert_eq!(ttl_left(Some(30), Some("2026-01-01T00:00:00Z"), now), Some(std::time::Duration::ZERO));
        assert_eq!(ttl_left(Some(90), Some("2026-01-01T00:00:00Z"), now), Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn durations_and_events_read_like_kubectl() {
        assert_eq!(duration_text(850), "850ms");
        assert_eq!(duration_text(42_000), "42s");
        assert_eq!(duration_text(185_000), "3m5s");
        assert_eq!(duration_text(7_440_000), "2h4m");
        let many: Vec<(String, Value)> = (0..30).map(|i| (format!("k{i:02}"), serde_json::json!("x".repeat(1000)))).collect();
        let shown = events(many);
        assert_eq!(shown.len(), MAX_EVENTS);
        assert!(shown.values().all(|v| v.chars().count() <= MAX_EVENT_VALUE + 1));
    }

    #[test]
    fn huge_outputs_are_cut() {
        let big = "x".repeat(100_000);
        let cut = bounded(&big);
        assert!(cut.chars().count() < MAX_TEXT + 100 && cut.ends_with("has all of it)"));
        assert_eq!(bounded("small"), "small");
    }
}
