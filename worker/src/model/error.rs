//! Errors of the runtime, and the durable form of application failures.
//!
//! Invariant: an [`Error::Failed`] is data. When a step or workflow fails with it, the failure is
//! recorded in DBOS's portable error format (`{"name","message","code","data"}`) and every later
//! read (a replay, `get_result` from any process, another DBOS SDK) returns the same value.
//! The other variants describe the runtime's own situation (a database outage, a cancellation,
//! a shutdown) and are never recorded as a workflow's outcome: a workflow interrupted by them
//! stays `PENDING` and is recovered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Result of mainstay operations and of workflow and step bodies.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An application failure in DBOS's portable error format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// A short class name for the failure, e.g. `"PaymentDeclined"`.
    pub name: String,
    /// Human-readable message.
    pub message: String,
    /// Optional machine-readable code (a number or a string).
    #[serde(default)]
    pub code: Option<Value>,
    /// Optional structured detail.
    #[serde(default)]
    pub data: Option<Value>,
}

impl Failure {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { name: name.into(), message: message.into(), code: None, data: None }
    }

    pub fn with_code(mut self, code: impl Into<Value>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Attaches structured detail. Data that cannot be serialized (a map with non-string
    /// keys, a failing `Serialize` impl) is not dropped silently: the detail then says why, as
    /// `{"unserializable": "<the error>"}`; use [`Failure::try_with_data`] to handle it instead.
    pub fn with_data(self, data: impl Serialize) -> Self {
        match self.try_with_data(&data) {
            Ok(with) => with,
            Err((mut without, e)) => {
                without.data = Some(serde_json::json!({ "unserializable": e.to_string() }));
                without
            }
        }
    }

    /// Attaches structured detail, or gives the failure back unchanged with the serialization
    /// error.
    #[allow(clippy::result_large_err)]
    pub fn try_with_data(mut self, data: impl Serialize) -> std::result::Result<Self, (Self, serde_json::Error)> {
        match serde_json::to_value(data) {
            Ok(v) => {
                self.data = Some(v);
                Ok(self)
            }
            Err(e) => Err((self, e)),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Everything that can go wrong in mainstay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An application failure, recorded durably and returned as itself on every read.
    #[error("{0}")]
    Failed(Failure),

    /// The workflow was cancelled; it stops at its next step.
    #[error("workflow {workflow_id} was cancelled")]
    Cancelled { workflow_id: String },

    /// A workflow ID is already used by a different workflow function.
    #[error(
        "workflow ID {workflow_id} already belongs to workflow `{existing}`, not `{requested}`; \
         choose another workflow ID"
    )]
    WorkflowConflict { workflow_id: String, existing: String, requested: String },

    /// An enqueue was refused because its deduplication ID is taken.
    #[error(
        "queue {queue} already holds a workflow with deduplication ID {deduplication_id} that is \
         enqueued or running; wait for it to finish, or enqueue with another deduplication ID"
    )]
    Duplicate { queue: String, deduplication_id: String },

    /// A replay called a different operation than the recorded one at the same position.
    #[error(
        "non-deterministic workflow {workflow_id}: step {function_id} was recorded as `{recorded}` \
         but the code now calls `{called}`; workflow code must call the same steps in the same \
         order when it is re-run (deploy code changes as a new application version)"
    )]
    NonDeterministic { workflow_id: String, function_id: i32, recorded: String, called: String },

    /// The application version is registered by another application (DBOS requires version
    /// names to be unique in a system database).
    #[error(
        "application version {version} is already registered by application {owner} in this system \
         database, and version names are unique across applications; give {} a version of its own \
         (MAINSTAY_APP_VERSION, or spec.appVersion of its DurableApp), e.g. {}-{version}",
        app.as_deref().unwrap_or("this application"),
        app.as_deref().unwrap_or("myapp")
    )]
    VersionConflict { version: String, owner: String, app: Option<String> },

    /// A queue's settings belong to another application (queue names are unique in a system
    /// database, and each queue's limits are one application's, as in DBOS).
    #[error(
        "queue {queue}'s settings belong to application {owner}; give this application's queue \
         another name, or leave its settings to {owner}"
    )]
    QueueConflict { queue: String, owner: String },

    /// A schedule declared in code (`#[scheduled]`) is named like a schedule of another
    /// application (or, for an application without a name, of some application): declaring it
    /// would take that schedule over, so the launch is refused.
    #[error(
        "schedule {schedule} of #[scheduled] workflow {workflow} cannot be declared: a schedule of that \
         name belongs to {}, and a schedule declared in code never takes over another application's; \
         {}",
        owner.as_deref().map_or("no application".to_string(), |o| format!("application {o}")),
        schedule_conflict_fix(schedule, workflow, app.as_deref())
    )]
    ScheduleConflict { schedule: String, workflow: String, owner: Option<String>, app: Option<String> },

    /// Two workflows (or a workflow and a `#[step(enqueue)]`) are registered under one name:
    /// recovery and queues start workflows by name, so one of them would run the other's work.
    #[error(
        "workflow name {name:?} is registered twice, by {first} and by {second}; recovered and queued \
         workflows are started by name, so one would run the other's work. Give one of them another \
         name (#[mainstay::workflow(name = \"...\")]) or rename the function"
    )]
    DuplicateWorkflow { name: String, first: String, second: String },

    /// No workflow with this ID exists.
    #[error("no workflow with ID {workflow_id}")]
    NotFound { workflow_id: String },

    /// No schedule with this name exists.
    #[error("no schedule named {name}; `mainstay schedule list` shows the schedules")]
    ScheduleNotFound { name: String },

    /// The workflow was recovered more often than allowed and is no longer run.
    #[error(
        "workflow {workflow_id} exceeded its maximum recovery attempts and was moved to \
         MAX_RECOVERY_ATTEMPTS_EXCEEDED; inspect it, then resume it to run it again"
    )]
    MaxRecoveryAttemptsExceeded { workflow_id: String },

    /// Another process took over this workflow; this execution stops without writing.
    #[error("workflow {workflow_id} is now owned by another execution; this one stops")]
    NotOwner { workflow_id: String },

    /// The runtime is shutting down; the workflow stays PENDING and is recovered later.
    #[error("mainstay is shutting down; workflow {workflow_id} stays PENDING for recovery")]
    Shutdown { workflow_id: String },

    /// A value could not be (de)serialized.
    #[error("failed to {action} {what}: {source}")]
    Serialization {
        action: &'static str,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A payload (a workflow's inputs or output, a step's output, a message, an event or stream
    /// value, a schedule's context) encodes to more than
    /// [`Config::max_payload_bytes`](crate::Config::max_payload_bytes), so it is not written.
    /// An enqueue or start is refused before anything is written; a workflow or step whose
    /// output is too large fails with it, recorded as a failure named `PayloadTooLarge` (its
    /// data: `what`, `size` and `limit`).
    #[error(
        "{what} is {size} bytes, more than the payload limit of {limit} bytes; store large data \
         elsewhere (an object store, a table of your own) and pass a reference to it (a key, a URL), \
         or raise the limit (MAINSTAY_MAX_PAYLOAD_BYTES, Config::max_payload_bytes)"
    )]
    PayloadTooLarge { what: String, size: usize, limit: usize },

    /// A recorded value uses a format mainstay cannot read (e.g. Python pickle).
    #[error(
        "{what} is stored in the `{format}` serialization format, which mainstay cannot read; \
         only `portable_json` is supported (write it from the other SDK with portable serialization)"
    )]
    UnsupportedSerialization { what: String, format: String },

    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// What only a workflow may do (receive a message, set an event, write a stream) was
    /// called outside one; the message says what and how to fix it.
    #[error("{0}")]
    OutsideWorkflow(String),

    /// An argument or a definition (a queue's settings, a schedule, a workflow name) is
    /// invalid; the message names it and how to fix it.
    #[error("{0}")]
    InvalidArgument(String),

    /// The workflow is in a state that does not allow the operation (resuming one that is
    /// running or succeeded).
    #[error("{0}")]
    InvalidState(String),

    /// Something with that name or ID exists already (a schedule, a fork's new ID).
    #[error("{0}")]
    AlreadyExists(String),

    /// The system database is at an older DBOS migration than this release needs.
    #[error(
        "the system database schema `{schema}` is at DBOS migration {found}, older than the \
         {required} Mainstay requires; launch DBOS Transact 3.4 against it once to upgrade it, or \
         use a new schema"
    )]
    SchemaBehind { schema: String, found: i64, required: i64 },

    /// Version `version` is not registered for the application, so it cannot be its latest.
    #[error(
        "application version {version} could not be made the latest of {}: it is not registered for it",
        app.as_deref().unwrap_or("applications without a name")
    )]
    VersionNotRegistered { version: String, app: Option<String> },

    /// A concurrent change got in the way; doing it again is expected to work.
    #[error("{0}")]
    Contended(String),

    /// A local resource (a listening port, a signal handler) could not be had.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A statement against the system database failed.
    #[error("failed to {context}: {}", describe(source))]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },

    /// A database could not be connected to. `retried`: the server did not answer (it was
    /// retried until the connect timeout); otherwise it refused the connection (credentials,
    /// database name).
    #[error(
        "cannot connect to the {which} database at {url}: {}{}",
        describe(source),
        if *retried { " (no answer before the connect timeout: is Postgres running and reachable at that address?)" }
        else { " (check the user, password and database name in the URL)" }
    )]
    Connect {
        which: String,
        /// The URL without its password.
        url: String,
        retried: bool,
        #[source]
        source: sqlx::Error,
    },

    /// The system database was migrated by newer code than this binary, in a way this binary
    /// cannot work with.
    #[error(
        "the system database schema `{schema}` has Mainstay migration {found}, which changes the \
         schema incompatibly with this binary (it knows up to {known}); upgrade this program to a \
         Mainstay release that knows version {found}, or point it at another database"
    )]
    SchemaAhead { schema: String, found: i64, known: i64 },

    /// mainstay was used before it was launched.
    #[error("{0}")]
    NotLaunched(&'static str),
}

/// How to resolve an [`Error::ScheduleConflict`].
fn schedule_conflict_fix(schedule: &str, workflow: &str, app: Option<&str>) -> String {
    let rename = "give the workflow another name with #[scheduled(name = \"...\")]";
    let delete = format!("or, if that schedule is stale, delete it (`mainstay schedule delete {schedule}`)");
    match app {
        Some(app) => format!(
            "{rename}, give this application another name than {app} (MAINSTAY_APP_NAME; its schedule is \
             named {{app}}.{workflow}), {delete}"
        ),
        None => format!(
            "set this application's name (MAINSTAY_APP_NAME), so its schedule is named {{app}}.{workflow}, \
             {rename}, {delete}"
        ),
    }
}

/// What a failed statement says, as its author can act on it: the server's message (with its
/// detail and hint), not the driver's rendering, which appends the line of the *server's*
/// source code that raised it.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut out = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    out.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    out.push_str(&format!("; hint: {hint}"));
                }
            }
            if let Some(code) = db.code() {
                out.push_str(&format!(" [SQLSTATE {code}]"));
            }
            out
        }
        other => other.to_string(),
    }
}

impl Error {
    /// An application failure with a name and message.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Failed(Failure::new(name, message))
    }

    /// An application failure named `Error` with this message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error::Failed(Failure::new("Error", message.to_string()))
    }

    /// Wraps any error as a durable application failure. The name is the error's type name
    /// (without its module path) and the message includes its chain of causes.
    pub fn from_std<E: std::error::Error + ?Sized>(err: &E) -> Self {
        let full = std::any::type_name::<E>();
        let name = full.rsplit("::").next().unwrap_or(full).to_string();
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        Error::Failed(Failure { name, message, code: None, data: None })
    }

    pub(crate) fn db(context: impl Into<String>, source: sqlx::Error) -> Self {
        Error::Database { context: context.into(), source }
    }

    /// Whether the system tables are missing (the database was never migrated, or was dropped
    /// and recreated): running the migrations fixes it.
    pub fn is_schema_missing(&self) -> bool {
        match self {
            Error::Database { source: sqlx::Error::Database(db), .. } => {
                // undefined_table, invalid_schema_name, undefined_function
                matches!(db.code().as_deref(), Some("42P01") | Some("3F000") | Some("42883"))
            }
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, if this is one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Error::Database { source, .. } => sqlstate(source),
            _ => None,
        }
    }

    /// An error returned by user code (a step or transaction body): an error its own SQL
    /// raised (a constraint, a syntax error) is an application failure named `DatabaseError`
    /// with the SQLSTATE as its code, recorded like any failure; a lost connection stays an
    /// interruption, so the work is retried rather than failed.
    pub(crate) fn into_body_error(self) -> Error {
        match self {
            Error::Database { ref source, .. } if !is_transient(source) => {
                let failure = Failure::new("DatabaseError", source.to_string());
                Error::Failed(match self.sqlstate() {
                    Some(code) => failure.with_code(code),
                    None => failure,
                })
            }
            other => other,
        }
    }

    /// The durable failure this error is recorded as, or `None` if it must not be recorded
    /// (the work was interrupted, not failed).
    pub(crate) fn to_failure(&self) -> Option<Failure> {
        match self {
            Error::Failed(f) => Some(f.clone()),
            Error::Cancelled { .. }
            | Error::NotOwner { .. }
            | Error::Shutdown { .. }
            | Error::Database { .. }
            | Error::Connect { .. }
            | Error::NotLaunched(_) => None,
            Error::PayloadTooLarge { what, size, limit } => Some(
                Failure::new(self.kind_name(), self.to_string()).with_data(serde_json::json!({"what": what, "size": size, "limit": limit})),
            ),
            other => Some(Failure::new(other.kind_name(), other.to_string())),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Error::Failed(_) => "Failed",
            Error::Cancelled { .. } => "Cancelled",
            Error::WorkflowConflict { .. } => "WorkflowConflict",
            Error::Duplicate { .. } => "Duplicate",
            Error::NonDeterministic { .. } => "NonDeterministic",
            Error::VersionConflict { .. } => "VersionConflict",
            Error::QueueConflict { .. } => "QueueConflict",
            Error::ScheduleConflict { .. } => "ScheduleConflict",
            Error::DuplicateWorkflow { .. } => "DuplicateWorkflow",
            Error::NotFound { .. } => "NotFound",
            Error::ScheduleNotFound { .. } => "ScheduleNotFound",
            Error::MaxRecoveryAttemptsExceeded { .. } => "MaxRecoveryAttemptsExceeded",
            Error::NotOwner { .. } => "NotOwner",
            Error::Shutdown { .. } => "Shutdown",
            Error::Serialization { .. } => "Serialization",
            Error::PayloadTooLarge { .. } => "PayloadTooLarge",
            Error::UnsupportedSerialization { .. } => "UnsupportedSerialization",
            Error::Config(_) => "Config",
            Error::OutsideWorkflow(_) => "OutsideWorkflow",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::InvalidState(_) => "InvalidState",
            Error::AlreadyExists(_) => "AlreadyExists",
            Error::SchemaBehind { .. } => "SchemaBehind",
            Error::VersionNotRegistered { .. } => "VersionNotRegistered",
            Error::Contended(_) => "Contended",
            Error::Io { .. } => "Io",
            Error::Database { .. } => "Database",
            Error::Connect { .. } => "Connect",
            Error::SchemaAhead { .. } => "SchemaAhead",
            Error::NotLaunched(_) => "NotLaunched",
        }
    }

    /// The recorded failure, if this is an application failure.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Error::Failed(f) => Some(f),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for Error {
    /// Lets bodies use `?` on sqlx results. A step or transaction body's own SQL error becomes
    /// an application failure when the body returns it (see `Error::into_body_error`).
    fn from(source: sqlx::Error) -> Self {
        Error::Database { context: "run a statement".into(), source }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        Error::Failed(f)
    }
}

/// Lets bodies use `?` on I/O: an application failure named `IoError`, its code the kind
/// (`"NotFound"`, `"PermissionDenied"`, …), recorded and replayed like any failure.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let Error::Failed(f) = Error::from_std(&e) else { unreachable!("from_std makes a failure") };
        Error::Failed(Failure { name: "IoError".into(), code: Some(Value::String(format!("{:?}", e.kind()))), ..f })
    }
}

/// Lets bodies use `?` on JSON (de)serialization of their own: a failure named `JsonError`.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        let Error::Failed(f) = Error::from_std(&e) else { unreachable!("from_std makes a failure") };
        Error::Failed(Failure { name: "JsonError".into(), ..f })
    }
}

/// `?` on any other error in a step or workflow body: `result.or_fail()?` records it as an
/// application failure named after its type, its message carrying the chain of causes
/// ([`Error::from_std`]), so a replay or another process reads back the same failure.
pub trait OrFail<T> {
    /// The error as a durable failure named after its type.
    fn or_fail(self) -> Result<T>;
    /// The error as a durable failure named `name`.
    fn or_fail_as(self, name: &str) -> Result<T>;
}

impl<T, E: std::error::Error> OrFail<T> for std::result::Result<T, E> {
    fn or_fail(self) -> Result<T> {
        self.map_err(|e| Error::from_std(&e))
    }

    fn or_fail_as(self, name: &str) -> Result<T> {
        self.map_err(|e| match Error::from_std(&e) {
            Error::Failed(f) => Error::Failed(Failure { name: name.to_string(), ..f }),
            other => other,
        })
    }
}

/// The SQLSTATE of a failed statement, if the server reported one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string())
}

/// Whether a failed statement is a serialization failure or a deadlock: running the whole
/// transaction again may succeed.
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40001") | Some("40P01"))
}

/// Whether a failed statement may succeed when tried again on a fresh connection.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08")
                || code == "57P01"
                || code == "57P02"
                || code == "57P03"
                || code == "40001"
                || code == "40P01"
                || code == "53300"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_that_cannot_be_serialized_says_so_instead_of_vanishing() {
        // JSON object keys must be strings: a map keyed by tuples cannot be serialized.
        let bad: std::collections::BTreeMap<(i32, i32), i32> = [((1, 2), 3)].into();
        let f = Failure::new("Declined", "card declined").with_data(&bad);
        let why = f.data.as_ref().and_then(|d| d.get("unserializable")).and_then(Value::as_str).unwrap_or_default();
        assert!(why.contains("key must be a string"), "{:?}", f.data);
        let (back, e) = Failure::new("Declined", "card declined").try_with_data(&bad).expect_err("refused");
        assert_eq!(back, Failure::new("Declined", "card declined"));
        assert!(e.to_string().contains("key must be a string"));
        assert_eq!(Failure::new("A", "b").with_data(7).data, Some(serde_json::json!(7)));
    }

    fn read_missing() -> Result<String> {
        Ok(std::fs::read_to_string("/nonexistent/mainstay-test")?)
    }

    fn parse(text: &str) -> Result<i64> {
        text.parse::<i64>().or_fail()
    }

    #[test]
    fn ordinary_errors_become_failures_with_question_mark() {
        let f = read_missing().unwrap_err().failure().cloned().expect("a failure");
        assert_eq!((f.name.as_str(), f.code), ("IoError", Some(Value::String("NotFound".into()))));
        let json: Result<Value> = serde_json::from_str::<Value>("{").map_err(Error::from);
        assert_eq!(json.unwrap_err().failure().map(|f| f.name.clone()), Some("JsonError".into()));
        let f = parse("seven").unwrap_err().failure().cloned().expect("a failure");
        assert_eq!(f.name, "ParseIntError");
        assert!(f.message.contains("invalid digit"), "{}", f.message);
        let named = "x".parse::<u8>().or_fail_as("BadQuantity").unwrap_err();
        assert_eq!(named.failure().map(|f| f.name.as_str()), Some("BadQuantity"));
        // Data: it survives a round trip through its recorded form.
        let back: Failure = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
