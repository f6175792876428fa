//! The `tracing` spans of workflow executions and of the operations they record, so every log
//! line emitted inside a workflow or a step carries its workflow ID and step, with no code from
//! the user, and a trace of a workflow reads as workflow → step / transaction / sleep / send /
//! recv / child.
//!
//! Invariants: one span per execution of a workflow (a recovery or a replay on another worker is
//! a new span, marked `workflow.replay`), one per operation called inside a workflow, created at
//! the call (marked `step.replayed` when a previous execution's record answers it), so its
//! parent is the workflow's span even when steps run concurrently (`join!`).
//! Outside a workflow an operation has no span of its own. Spans are at INFO level: a subscriber
//! that filters INFO out pays nothing for them. Span and field names are all here (`tracing`
//! takes them as literals); a span's `otel.name` is the function's name, as OpenTelemetry's
//! conventions ask of a span name (low cardinality: never an ID).

use std::sync::Arc;

use tracing::field::Empty;
use tracing::Span;

use crate::runtime::context::WorkflowContext;

/// The kinds of operation a workflow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Step,
    Transaction,
    Sleep,
    Send,
    Recv,
    /// Starting (or enqueuing) a child workflow.
    Child,
}

/// The span of one execution of workflow `name` (`id`, claimed from `queue` if it was), a child
/// of `caller` (none: a root).
pub(crate) fn workflow(caller: &Span, name: &str, id: &str, queue: Option<&str>, app_version: &str, executor: &str, replay: bool) -> Span {
    tracing::info_span!(
        parent: caller,
        "workflow",
        otel.name = %name,
        workflow.id = %id,
        workflow.name = %name,
        workflow.queue = queue,
        workflow.replay = replay,
        app.version = %app_version,
        executor.id = %executor,
    )
}

/// The span of an operation called at `position` (none outside a workflow).
pub(crate) fn operation(kind: Operation, name: &str, position: Option<&(Arc<WorkflowContext>, i32)>) -> Span {
    let Some((_, function_id)) = position else { return Span::none() };
    // A span's name must be a literal, one per kind.
    match kind {
        Operation::Step => {
            tracing::info_span!("step", otel.name = %name, step.id = function_id, step.name = %name, step.attempts = Empty, step.replayed = Empty)
        }
        Operation::Transaction => {
            tracing::info_span!("transaction", otel.name = %name, step.id = function_id, step.name = %name, step.replayed = Empty)
        }
        Operation::Sleep => {
            tracing::info_span!("sleep", otel.name = %name, step.id = function_id, step.name = %name, step.replayed = Empty)
        }
        Operation::Send => tracing::info_span!("send", otel.name = %name, step.id = function_id, step.name = %name, step.replayed = Empty),
        Operation::Recv => tracing::info_span!("recv", otel.name = %name, step.id = function_id, step.name = %name, step.replayed = Empty),
        Operation::Child => tracing::info_span!(
            "child",
            otel.name = %name,
            step.id = function_id,
            step.name = %name,
            child.id = Empty,
            step.replayed = Empty
        ),
    }
}

/// Marks the current operation's span as replayed: its recorded outcome was returned, nothing
/// ran again.
pub(crate) fn record_replayed() {
    Span::current().record("step.replayed", true);
}

/// Records on the current span how many attempts a step or transaction took.
pub(crate) fn record_attempts(attempts: u32) {
    Span::current().record("step.attempts", attempts);
}
