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

/// Installs the process's log subscriber in the format `MAINSTAY_LOG_FORMAT` names; fails if the
/// variable names no format. Returns `false`, installing nothing, when the process has a
/// subscriber already (yours, or a test harness's: the spans reach it too).
pub fn init_logging() -> Result<bool> {
    Ok(init_logging_as(LogFormat::from_env()?))
}

/// Installs the process's log subscriber in `format` (see [`init_logging`]).
pub fn init_logging_as(format: LogFormat) -> bool {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(true).try_init(),
    };
    // The only failure: a global subscriber is set already.
    installed.is_ok()
}
