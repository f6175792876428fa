//! Workflow statuses and the status record other code inspects.

use serde::{Deserialize, Serialize};

/// The lifecycle state of a workflow, as stored in `workflow_status.status` (and serialized
/// the same way: `"PENDING"`, `"SUCCESS"`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Status {
    Pending,
    Success,
    Error,
    MaxRecoveryAttemptsExceeded,
    Cancelled,
    Enqueued,
    Delayed,
    /// A status written by a newer system this version does not know.
    Other(String),
}

impl From<Status> for String {
    fn from(s: Status) -> String {
        s.as_str().to_string()
    }
}

impl From<String> for Status {
    fn from(s: String) -> Status {
        Status::parse(&s)
    }
}

impl Status {
    pub const PENDING: &'static str = "PENDING";
    pub const SUCCESS: &'static str = "SUCCESS";
    pub const ERROR: &'static str = "ERROR";
    pub const MAX_RECOVERY_ATTEMPTS_EXCEEDED: &'static str = "MAX_RECOVERY_ATTEMPTS_EXCEEDED";
    pub const CANCELLED: &'static str = "CANCELLED";
    pub const ENQUEUED: &'static str = "ENQUEUED";
    pub const DELAYED: &'static str = "DELAYED";

    pub fn parse(s: &str) -> Status {
        match s {
            Self::PENDING => Status::Pending,
            Self::SUCCESS => Status::Success,
            Self::ERROR => Status::Error,
            Self::MAX_RECOVERY_ATTEMPTS_EXCEEDED => Status::MaxRecoveryAttemptsExceeded,
            Self::CANCELLED => Status::Cancelled,
            Self::ENQUEUED => Status::Enqueued,
            Self::DELAYED => Status::Delayed,
            other => Status::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Pending => Self::PENDING,
            Status::Success => Self::SUCCESS,
            Status::Error => Self::ERROR,
            Status::MaxRecoveryAttemptsExceeded => Self::MAX_RECOVERY_ATTEMPTS_EXCEEDED,
            Status::Cancelled => Self::CANCELLED,
            Status::Enqueued => Self::ENQUEUED,
            Status::Delayed => Self::DELAYED,
            Status::Other(s) => s,
        }
    }

    /// Whether the workflow will not change state again without a resume or fork.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Success | Status::Error | Status::Cancelled | Status::MaxRecoveryAttemptsExceeded)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one workflow's row.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowStatus {
    pub workflow_id: String,
    pub status: Status,
    pub name: Option<String>,
    pub executor_id: Option<String>,
    pub app_version: Option<String>,
    pub queue_name: Option<String>,
    pub parent_workflow_id: Option<String>,
    pub recovery_attempts: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub deadline_epoch_ms: Option<i64>,
    /// Raw recorded output (portable JSON), if finished successfully.
    pub output: Option<String>,
    /// Raw recorded error (portable JSON), if failed.
    pub error: Option<String>,
    pub serialization: Option<String>,
}
