//! Whether the current version of an app can run a start, checked before anything is enqueued:
//! the workflow is registered, the input has as many arguments as the workflow takes, and the
//! queue is one its workers listen to.
//!
//! Invariants: judged only from what the version's workers recorded at launch; nothing recorded
//! (no worker of the version has launched yet, other SDKs, older releases) means unknown, and an
//! unknown is never refused, so a first deploy scaled to zero still gets its first run. The
//! types of the arguments are only named here: whether a value fits its type is found by the
//! worker decoding it, and reported as the run's error.

use mainstay::{RegisteredWorkflow, INTERNAL_QUEUE};

use crate::names::reason;

/// What the version's workers recorded.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// `namespace/name` of the DurableApp, for messages.
    pub app: &'a str,
    pub version: &'a str,
    pub workflows: &'a [RegisteredWorkflow],
    /// Empty: not recorded.
    pub queues: &'a [String],
}

/// What is being started.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    pub workflow: &'a str,
    /// How many positional arguments the input gives, with the field that gives them; `None`
    /// when the start has no input of its own (a fork replays its source's).
    pub arguments: Option<(usize, &'a str)>,
    /// The queue, with the field that names it; `None` is the internal queue.
    pub queue: Option<(&'a str, &'a str)>,
}

/// Why a start is refused: a condition reason and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The first problem of `start`, or `None` when it can run (or nothing is known).
pub fn check(recorded: &Recorded, start: &Start) -> Option<Refusal> {
    if recorded.workflows.is_empty() {
        return None;
    }
    let Some(workflow) = recorded.workflows.iter().find(|w| w.name == start.workflow) else {
        let names: Vec<&str> = recorded.workflows.iter().map(|w| w.name.as_str()).collect();
        return Some(Refusal {
            reason: reason::WORKFLOW_NOT_FOUND,
            message: format!(
                "workflow {} is not registered by version {} of DurableApp {}; it registers {}. Fix spec.workflowName",
                start.workflow,
                recorded.version,
                recorded.app,
                names.join(", ")
            ),
        });
    };
    if let (Some(types), Some((given, field))) = (&workflow.arguments, start.arguments) {
        if types.len() != given {
            return Some(Refusal {
                reason: reason::INVALID_INPUT,
                message: format!(
                    "workflow {} takes {} ({}), but {field} gives {}; {}",
                    start.workflow,
                    plural(types.len(), "argument"),
                    types.join(", "),
                    plural(given, "argument"),
                    fix_for(field)
                ),
            });
        }
    }
    if let Some((queue, field)) = start.queue {
        if queue != INTERNAL_QUEUE && !recorded.queues.is_empty() && !recorded.queues.iter().any(|q| q == queue) {
            let listened: Vec<&str> = recorded.queues.iter().map(String::as_str).filter(|q| *q != INTERNAL_QUEUE).collect();
            let listened = if listened.is_empty() { "only the internal one".to_string() } else { listened.join(", ") };
            return Some(Refusal {
                reason: reason::QUEUE_NOT_FOUND,
                message: format!(
                    "no worker of version {} of DurableApp {} listens to queue {queue} (they listen to {listened}), so the \
                     run would wait forever; fix {field} (remove it for the internal queue), or add the queue to the app's code",
                    recorded.version, recorded.app
                ),
            });
        }
    }
    None
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn fix_for(field: &str) -> &'static str {
    if field.contains("schedule") {
        "a scheduled workflow is called with (scheduled_at, context): give it those two arguments, or fix spec.workflowName"
    } else {
        "give the positional arguments as a JSON array (one argument may be given alone), or fix spec.workflowName"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflows() -> Vec<RegisteredWorkflow> {
        vec![
            RegisteredWorkflow { name: "process_order".into(), arguments: Some(vec!["i64".into()]), schedule: None },
            RegisteredWorkflow { name: "by_hand".into(), arguments: None, schedule: None },
        ]
    }

    fn recorded<'a>(workflows: &'a [RegisteredWorkflow], queues: &'a [String]) -> Recorded<'a> {
        Recorded { app: "prod/shop", version: "1.4.2", workflows, queues }
    }

    fn start<'a>(workflow: &'a str, given: Option<usize>, queue: Option<&'a str>) -> Start<'a> {
        Start { workflow, arguments: given.map(|n| (n, "spec.input")), queue: queue.map(|q| (q, "spec.queue")) }
    }

    #[test]
    fn nothing_recorded_refuses_nothing() {
        assert_eq!(check(&recorded(&[], &[]), &start("anything", Some(5), Some("nowhere"))), None);
    }

    #[test]
    fn an_unknown_workflow_names_the_registered_ones() {
        let w = workflows();
        let r = check(&recorded(&w, &[]), &start("proces_order", Some(1), None)).unwrap();
        assert_eq!(r.reason, "WorkflowNotFound");
        assert!(r.message.contains("proces_order") && r.message.contains("process_order, by_hand"), "{}", r.message);
    }

    #[test]
    fn the_argument_count_is_checked_when_known() {
        let w = workflows();
        let r = check(&recorded(&w, &[]), &start("process_order", Some(2), None)).unwrap();
        assert_eq!(r.reason, "InvalidInput");
        assert_eq!(
            r.message,
            "workflow process_order takes 1 argument (i64), but spec.input gives 2 arguments; give the positional \
             arguments as a JSON array (one argument may be given alone), or fix spec.workflowName"
        );
        assert_eq!(check(&recorded(&w, &[]), &start("process_order", Some(1), None)), None);
        assert_eq!(check(&recorded(&w, &[]), &start("by_hand", Some(7), None)), None, "unknown types are not checked");
        assert_eq!(check(&recorded(&w, &[]), &start("process_order", None, None)), None, "a fork has no input of its own");
        let scheduled = Start { workflow: "process_order", arguments: Some((2, "the schedule's (scheduled_at, context)")), queue: None };
        assert!(check(&recorded(&w, &[]), &scheduled).unwrap().message.contains("a scheduled workflow is called with"));
    }

    #[test]
    fn a_queue_no_worker_listens_to_is_refused_once_queues_are_recorded() {
        let w = workflows();
        let queues = vec![INTERNAL_QUEUE.to_string(), "orders".to_string()];
        let r = check(&recorded(&w, &queues), &start("process_order", Some(1), Some("order"))).unwrap();
        assert_eq!(r.reason, "QueueNotFound");
        assert!(r.message.contains("queue order (they listen to orders)"), "{}", r.message);
        assert_eq!(check(&recorded(&w, &queues), &start("process_order", Some(1), Some("orders"))), None);
        assert_eq!(check(&recorded(&w, &queues), &start("process_order", Some(1), Some(INTERNAL_QUEUE))), None);
        assert_eq!(check(&recorded(&w, &[]), &start("process_order", Some(1), Some("order"))), None, "queues not recorded");
    }
}
