//! The process's log output. [`init_logging`] installs a `tracing` subscriber that writes each
//! event with the spans it happened in, so a line logged inside a workflow or a step names the
//! workflow and the step (see `spans`) without a word from the user's code: as text, or as one
//! JSON object per line (`MAINSTAY_LOG_FORMAT=json`) for log collectors. `RUST_LOG` filters
//! (default `info`); colour only on a terminal, never in a container's log.

use crate::model::config::env;
use crate::model::error::{Error, Result};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines: `workflow{workflow.id=… workflow.name=…}:step{…}: message`.
    Text,
    /// One JSON object per line: the event's fields flattened, `span` (the innermost) and
    /// `spans` (outermost first), so `spans[0]."workflow.id"` is always the workflow's ID.
    Json,
}

impl LogFormat {
    /// The format `MAINSTAY_LOG_FORMAT` names (`text`, the default, or `json`).
    pub fn from_env() -> Result<LogFormat> {
        match std::env::var(env::LOG_FORMAT).unwrap_or_default().trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::Config(format!("{}={other:?} is not a log format: use text or json", env::LOG_FORMAT))),
        }
    }
}

/// Installs the process's log subscriber in the format `MAINSTAY_LOG_FORMAT` names, and, with
/// the `opentelemetry-otlp` feature, span export over OTLP when the `OTEL_*` variables ask for it
/// (see `telemetry`). Fails if a variable is invalid. Returns `false`, installing nothing, when
/// the process has a subscriber already (yours, or a test harness's: the spans reach it too).
pub fn init_logging() -> Result<bool> {
    init_logging_as(LogFormat::from_env()?)
}

/// Installs the process's log subscriber in `format` (see [`init_logging`]).
pub fn init_logging_as(format: LogFormat) -> Result<bool> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    if tracing::dispatcher::has_been_set() {
        // Not ours to replace, and an exporter would see no span.
        return Ok(false);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let lines = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).with_current_span(true).with_span_list(true).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    #[cfg(feature = "opentelemetry-otlp")]
    let registry = registry.with(crate::runtime::telemetry::layer()?);
    // The only failure: a global subscriber is set already.
    Ok(registry.try_init().is_ok())
}
