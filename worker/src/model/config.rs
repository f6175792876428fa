//! Configuration: from code, from the environment, validated before anything connects.
//!
//! Every environment variable mainstay reads is a constant in [`env`], so the names that reach
//! deployments (the operator sets them on worker pods) live in one place.
//!
//! Invariant: no password leaves this module in text. A database URL is shown only through
//! [`redact`] (or [`Redacted`]), which hides the userinfo password and the `password` and
//! `sslpassword` query parameters, and `Config`'s `Debug` prints its URLs that way.

use std::time::Duration;

use crate::model::error::{Error, Result};

/// Names of the environment variables mainstay reads.
pub mod env {
    /// System database URL (`postgres://user:pass@host:port/db`).
    pub const DATABASE_URL: &str = "MAINSTAY_DATABASE_URL";
    /// Fallback for [`DATABASE_URL`], the conventional name.
    pub const DATABASE_URL_FALLBACK: &str = "DATABASE_URL";
    /// Schema of the system tables (default `dbos`).
    pub const SYSTEM_SCHEMA: &str = "MAINSTAY_SYSTEM_SCHEMA";
    /// This process's executor ID (in Kubernetes: the pod name).
    pub const EXECUTOR_ID: &str = "MAINSTAY_EXECUTOR_ID";
    /// The application version this process runs; only workflows of it are recovered here.
    pub const APP_VERSION: &str = "MAINSTAY_APP_VERSION";
    /// The application name recorded with workflows.
    pub const APP_NAME: &str = "MAINSTAY_APP_NAME";
    /// `true`: this process's version becomes its application's latest at launch (a deploy of
    /// a plain process, or a rollback), so it takes work enqueued without a version.
    pub const LATEST_VERSION: &str = "MAINSTAY_LATEST_VERSION";
    /// Application database URL, where `#[transaction]`s run (default: the system database).
    pub const APP_DATABASE_URL: &str = "MAINSTAY_APP_DATABASE_URL";
    /// Port of the health endpoint (`/healthz`, `/readyz`); unset serves none.
    pub const HEALTH_PORT: &str = "MAINSTAY_HEALTH_PORT";
    /// The largest payload (input, output, message, event or stream value) written, in bytes.
    pub const MAX_PAYLOAD_BYTES: &str = "MAINSTAY_MAX_PAYLOAD_BYTES";
    /// The log format of `mainstay::init_logging`: `text` (default) or `json`.
    pub const LOG_FORMAT: &str = "MAINSTAY_LOG_FORMAT";
    /// Recoveries a workflow may have before it is parked as `MAX_RECOVERY_ATTEMPTS_EXCEEDED`.
    pub const MAX_RECOVERY_ATTEMPTS: &str = "MAINSTAY_MAX_RECOVERY_ATTEMPTS";
}

/// The schema DBOS and mainstay use by default.
pub const DEFAULT_SCHEMA: &str = "dbos";
/// Executor ID of a process that was not given one.
pub const DEFAULT_EXECUTOR_ID: &str = "local";
/// The largest payload written when none is configured: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 << 20;
/// The smallest payload limit accepted: mainstay's own small records must fit.
pub const MIN_MAX_PAYLOAD_BYTES: usize = 1 << 10;
/// The largest payload limit accepted: Postgres stores at most 1 GB in one value.
pub const MAX_MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Runtime configuration. Build it with [`Config::new`] or [`Config::from_env`] and adjust the
/// public fields. Its `Debug` output shows the database URLs without their passwords.
#[derive(Clone)]
pub struct Config {
    /// System database URL.
    pub database_url: String,
    /// Application database URL, where transactions run and record their outputs; `None`
    /// uses the system database.
    pub app_database_url: Option<String>,
    /// Connections to the application database.
    pub app_pool_size: u32,
    /// Schema holding the system tables.
    pub system_schema: String,
    /// Identity of this process for recovery; unique per live process.
    pub executor_id: String,
    /// Application version; `None` derives one from the source of the registered workflows
    /// (see the README: what a deploy that sets it must do).
    pub app_version: Option<String>,
    /// Application name recorded with workflows. Workers claim, recover and schedule only work
    /// of their application (or of none), so several applications can share a database.
    pub app_name: Option<String>,
    /// Make this process's version the application's latest at launch, so it takes work
    /// enqueued without a version (otherwise only a version registered for the first time
    /// becomes the latest). Set it when a launch is a deploy of this version, e.g. a rollback.
    pub latest_version: bool,
    /// Recoveries allowed after the first execution before a workflow is parked as
    /// `MAX_RECOVERY_ATTEMPTS_EXCEEDED`.
    pub max_recovery_attempts: i64,
    /// Connections to the system database.
    pub pool_size: u32,
    /// How long to keep retrying an unreachable database at launch.
    pub connect_timeout: Duration,
    /// Checkpoint batches written concurrently by the group committer.
    pub commit_concurrency: usize,
    /// Fallback polling interval for queued work when no notification arrives.
    pub polling_interval: Duration,
    /// Queued workflows this process runs at once (all queues together).
    pub worker_concurrency: usize,
    /// Where to serve the health endpoint (`/healthz`: the runtime is alive; `/readyz`: it can
    /// reach its database and is not shutting down). `None` serves nothing.
    pub health_addr: Option<std::net::SocketAddr>,
    /// The largest payload written, in bytes of its JSON: a workflow's inputs and output, a
    /// step's output, a message, an event or stream value, a schedule's context. A larger one
    /// is refused with [`Error::PayloadTooLarge`] (a workflow or step whose output is too large
    /// fails with it), so one huge value cannot exhaust memory or bloat the database.
    pub max_payload_bytes: usize,
}

impl std::fmt::Debug for Config {
    /// Written by hand so that `{:?}` of a configuration (in a log line, a panic, a test
    /// failure) never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field fails to compile until it is listed here.
        let Config {
            database_url,
            app_database_url,
            app_pool_size,
            system_schema,
            executor_id,
            app_version,
            app_name,
            latest_version,
            max_recovery_attempts,
            pool_size,
            connect_timeout,
            commit_concurrency,
            polling_interval,
            worker_concurrency,
            health_addr,
            max_payload_bytes,
        } = self;
        f.debug_struct("Config")
            .field("database_url", &Redacted(database_url))
            .field("app_database_url", &app_database_url.as_deref().map(Redacted))
            .field("app_pool_size", app_pool_size)
            .field("system_schema", system_schema)
            .field("executor_id", executor_id)
            .field("app_version", app_version)
            .field("app_name", app_name)
            .field("latest_version", latest_version)
            .field("max_recovery_attempts", max_recovery_attempts)
            .field("pool_size", pool_size)
            .field("connect_timeout", connect_timeout)
            .field("commit_concurrency", commit_concurrency)
            .field("polling_interval", polling_interval)
            .field("worker_concurrency", worker_concurrency)
            .field("health_addr", health_addr)
            .field("max_payload_bytes", max_payload_bytes)
            .finish()
    }
}

impl Config {
    /// A configuration for this database URL with defaults for everything else.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            app_database_url: None,
            app_pool_size: 10,
            system_schema: DEFAULT_SCHEMA.to_string(),
            executor_id: DEFAULT_EXECUTOR_ID.to_string(),
            app_version: None,
            app_name: None,
            latest_version: false,
            max_recovery_attempts: 100,
            pool_size: 20,
            connect_timeout: Duration::from_secs(30),
            commit_concurrency: 2,
            polling_interval: Duration::from_secs(1),
            worker_concurrency: 256,
            health_addr: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Reads the configuration from the environment (see [`env`]).
    pub fn from_env() -> Result<Self> {
        let url = std::env::var(env::DATABASE_URL).or_else(|_| std::env::var(env::DATABASE_URL_FALLBACK)).map_err(|_| {
            Error::Config(format!(
                "no database URL: set {} (or {}) to a Postgres URL such as \
                     postgres://postgres:secret@localhost:5432/myapp",
                env::DATABASE_URL,
                env::DATABASE_URL_FALLBACK
            ))
        })?;
        let mut config = Config::new(url);
        config.apply_env()?;
        Ok(config)
    }

    /// Overrides fields with the environment variables that are set; a malformed value is an
    /// error that names the variable.
    pub fn apply_env(&mut self) -> Result<()> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var(env::APP_DATABASE_URL) {
            self.app_database_url = Some(v);
        }
        if let Some(v) = var(env::SYSTEM_SCHEMA) {
            self.system_schema = v;
        }
        if let Some(v) = var(env::EXECUTOR_ID) {
            self.executor_id = v;
        }
        if let Some(v) = var(env::APP_VERSION) {
            self.app_version = Some(v);
        }
        if let Some(v) = var(env::APP_NAME) {
            self.app_name = Some(v);
        }
        if let Some(v) = var(env::LATEST_VERSION) {
            self.latest_version = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => return Err(Error::Config(format!("{} is {v:?}; set it to true or false", env::LATEST_VERSION))),
            };
        }
        if let Some(v) = var(env::HEALTH_PORT) {
            let port: u16 = v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{} is {v:?}, not a port number; set it to a port such as 8081, or unset it \
                     to serve no health endpoint",
                    env::HEALTH_PORT
                ))
            })?;
            self.health_addr = Some(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
        }
        if let Some(v) = var(env::MAX_RECOVERY_ATTEMPTS) {
            self.max_recovery_attempts = v.trim().parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                Error::Config(format!(
                    "{} is {v:?}, not a number of recoveries; set it to a whole number such as 100 \
                     (the default), or unset it",
                    env::MAX_RECOVERY_ATTEMPTS
                ))
            })?;
        }
        if let Some(v) = var(env::MAX_PAYLOAD_BYTES) {
            self.max_payload_bytes = v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{} is {v:?}, not a number of bytes; set it to e.g. {DEFAULT_MAX_PAYLOAD_BYTES} \
                     (16 MiB, the default), or unset it",
                    env::MAX_PAYLOAD_BYTES
                ))
            })?;
        }
        Ok(())
    }

    /// Checks every field; the error names the field and how to fix it.
    pub fn validate(&self) -> Result<()> {
        validate_database_url(&self.database_url)?;
        if let Some(url) = &self.app_database_url {
            validate_database_url(url).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("application database ({}): {m}", env::APP_DATABASE_URL)),
                other => other,
            })?;
        }
        if self.app_pool_size == 0 {
            return Err(Error::Config("app_pool_size must be at least 1".into()));
        }
        validate_identifier(&self.system_schema).map_err(|why| {
            Error::Config(format!(
                "system schema {:?} {why}; use letters, digits and underscores, starting with a \
                 letter or underscore, at most 63 characters (set {})",
                self.system_schema,
                env::SYSTEM_SCHEMA
            ))
        })?;
        if self.executor_id.trim().is_empty() {
            return Err(Error::Config(format!("executor ID is empty; set {} to a name unique to this process", env::EXECUTOR_ID)));
        }
        if self.max_recovery_attempts < 0 {
            return Err(Error::Config("max_recovery_attempts must be >= 0".into()));
        }
        if self.pool_size < 2 {
            return Err(Error::Config("pool_size must be at least 2 (one connection listens for notifications)".into()));
        }
        if self.commit_concurrency == 0 || self.worker_concurrency == 0 {
            return Err(Error::Config("commit_concurrency and worker_concurrency must be at least 1".into()));
        }
        if !(MIN_MAX_PAYLOAD_BYTES..=MAX_MAX_PAYLOAD_BYTES).contains(&self.max_payload_bytes) {
            return Err(Error::Config(format!(
                "max_payload_bytes is {}, but it must be between {MIN_MAX_PAYLOAD_BYTES} (1 KiB) and \
                 {MAX_MAX_PAYLOAD_BYTES} (1 GiB, the most Postgres stores in one value); set {} \
                 within that range, or unset it for the default of 16 MiB",
                self.max_payload_bytes,
                env::MAX_PAYLOAD_BYTES
            )));
        }
        Ok(())
    }
}

/// Checks a Postgres URL without connecting, so typos are reported before any retrying.
pub fn validate_database_url(raw: &str) -> Result<()> {
    let hint = "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE";
    if is_key_value_string(raw) {
        return Err(Error::Config(format!(
            "the database URL is a key=value connection string (not shown: it may hold a password), \
             which mainstay does not take; write it as a URL: {hint}"
        )));
    }
    let parsed = url::Url::parse(raw).map_err(|e| Error::Config(format!("database URL {} is malformed ({e}); {hint}", redact(raw))))?;
    match parsed.scheme() {
        "postgres" | "postgresql" => {}
        other => {
            return Err(Error::Config(format!(
                "database URL {} has scheme `{other}`, but only postgres:// and postgresql:// are \
                 supported; {hint}",
                redact(raw)
            )))
        }
    }
    let has_socket_host = parsed.query_pairs().any(|(k, v)| k == "host" && v.starts_with('/'));
    if parsed.host_str().map(str::is_empty).unwrap_or(true) && !has_socket_host {
        return Err(Error::Config(format!("database URL {} names no host; {hint}", redact(raw))));
    }
    Ok(())
}

/// The URL with its passwords replaced by `***`, safe for logs and error messages: the
/// userinfo password and the value of every secret query parameter (`password`,
/// `sslpassword`; see [`is_secret_parameter`]). Other parameters are kept as written. Text that
/// is not a URL is not shown at all.
pub fn redact(raw: &str) -> String {
    let mut u = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(_) if is_key_value_string(raw) => return "<a key=value connection string>".to_string(),
        Err(_) => return "<unparseable URL>".to_string(),
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if let Some(query) = u.query() {
        let kept = query
            .split('&')
            .map(|pair| match parameter_name(pair) {
                Some(name) if is_secret_parameter(&name) => {
                    format!("{}=***", pair.split('=').next().unwrap_or_default())
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        u.set_query(Some(&kept));
    }
    u.to_string()
}

/// A URL shown through [`redact`], for `format!` and `Debug` fields.
pub struct Redacted<'a>(pub &'a str);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(self.0))
    }
}

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact(self.0))
    }
}

/// Whether a connection parameter's value is a secret: libpq's `password` and `sslpassword`,
/// and, to be safe, any name containing "password" or "secret" (in any case).
pub fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name.contains("secret")
}

/// The decoded name of one `name=value` query pair, as the driver reads it.
fn parameter_name(pair: &str) -> Option<String> {
    url::form_urlencoded::parse(pair.as_bytes()).next().map(|(name, _)| name.into_owned())
}

/// `raw` without the secret query parameters the Postgres driver does not understand (all but
/// `password`), and their names. The driver logs the value of every parameter it does not
/// know, so `sslpassword` (which it does not support) must not reach it.
pub(crate) fn without_unsupported_secrets(raw: &str) -> (String, Vec<String>) {
    let Ok(mut u) = url::Url::parse(raw) else { return (raw.to_string(), Vec::new()) };
    let Some(query) = u.query() else { return (raw.to_string(), Vec::new()) };
    let mut dropped = Vec::new();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match parameter_name(pair) {
            Some(name) if name != "password" && is_secret_parameter(&name) => {
                dropped.push(name);
                false
            }
            _ => true,
        })
        .collect();
    if dropped.is_empty() {
        return (raw.to_string(), dropped);
    }
    let kept = kept.join("&");
    u.set_query((!kept.is_empty()).then_some(kept.as_str()));
    (u.to_string(), dropped)
}

/// Whether `raw` looks like a libpq key=value connection string (`host=... password=...`)
/// rather than a URL.
fn is_key_value_string(raw: &str) -> bool {
    !raw.contains("://") && raw.contains('=')
}

fn validate_identifier(name: &str) -> std::result::Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => return Err("does not start with a letter or underscore"),
        _ => {}
    }
    if name.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("contains characters other than letters, digits and underscores");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_with_actionable_messages() {
        assert!(validate_database_url("postgres://u:p@localhost:5432/db").is_ok());
        assert!(validate_database_url("postgresql://localhost/db").is_ok());
        assert!(validate_database_url("postgres:///db?host=/tmp/pg").is_ok());
        let err = validate_database_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(err.contains("scheme `mysql`") && !err.contains("secret"), "{err}");
        let err = validate_database_url("not a url").unwrap_err().to_string();
        assert!(err.contains("malformed") && err.contains("postgres://"), "{err}");
    }

    #[test]
    fn redact_hides_every_password_and_keeps_the_rest() {
        assert_eq!(redact("postgres://app:S3CRET@db:5432/shop"), "postgres://app:***@db:5432/shop");
        let r = redact("postgres://app@db/shop?sslmode=require&password=S3CRET&application_name=x");
        assert_eq!(r, "postgres://app@db/shop?sslmode=require&password=***&application_name=x");
        let r = redact("postgres://app:S3CRET@db/shop?sslpassword=K3Y&Password=S3CRET&sslkey=/k.pem");
        assert_eq!(r, "postgres://app:***@db/shop?sslpassword=***&Password=***&sslkey=/k.pem");
        // An encoded name is still the parameter the driver reads.
        let r = redact("postgres://db/shop?pass%77ord=S3CRET");
        assert!(!r.contains("S3CRET"), "{r}");
        assert_eq!(redact("postgres://db/shop"), "postgres://db/shop");
        assert_eq!(redact("host=db password=S3CRET"), "<a key=value connection string>");
        assert_eq!(redact("postgres://app:S3CRET@db:notaport/shop"), "<unparseable URL>");
    }

    #[test]
    fn debug_of_a_config_shows_no_password() {
        let mut c = Config::new("postgres://app:S3CRET@db/shop?password=S3CRET");
        c.app_database_url = Some("postgres://app@db/app?sslpassword=S3CRET".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("S3CRET"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/shop?password=***"), "{shown}");
        assert!(shown.contains("sslpassword=***") && shown.contains("executor_id"), "{shown}");
        let shown = format!("{c:#?}");
        assert!(!shown.contains("S3CRET"), "{shown}");
    }

    #[test]
    fn secrets_the_driver_cannot_use_never_reach_it() {
        let (url, dropped) = without_unsupported_secrets("postgres://db/shop?sslpassword=K3Y&password=p&sslmode=require");
        assert_eq!(url, "postgres://db/shop?password=p&sslmode=require");
        assert_eq!(dropped, ["sslpassword"]);
        let (url, dropped) = without_unsupported_secrets("postgres://db/shop?sslpassword=K3Y");
        assert_eq!((url.as_str(), dropped.len()), ("postgres://db/shop", 1));
        let plain = "postgres://u:p@db/shop?sslmode=require";
        assert_eq!(without_unsupported_secrets(plain), (plain.to_string(), vec![]));
    }

    #[test]
    fn key_value_strings_are_refused_without_being_shown() {
        let err = validate_database_url("host=db user=app password=S3CRET").unwrap_err().to_string();
        assert!(err.contains("key=value") && err.contains("postgres://") && !err.contains("S3CRET"), "{err}");
        let mut c = Config::new("postgres://db/shop");
        c.app_database_url = Some("postgres://app:S3CRET@db:x/app".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(env::APP_DATABASE_URL) && !err.contains("S3CRET"), "{err}");
    }

    #[test]
    fn the_payload_and_recovery_limits_are_bounded_and_read_from_the_environment() {
        let mut c = Config::new("postgres://localhost/db");
        assert_eq!(c.max_payload_bytes, 16 * 1024 * 1024);
        c.max_payload_bytes = 512;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max_payload_bytes is 512") && err.contains(env::MAX_PAYLOAD_BYTES), "{err}");
        c.max_payload_bytes = (1 << 30) + 1;
        assert!(c.validate().is_err());
        c.max_payload_bytes = 1 << 30;
        assert!(c.validate().is_ok());
        // The only test that sets this variable, and no other reads the environment.
        std::env::set_var(env::MAX_PAYLOAD_BYTES, "65536");
        c.apply_env().unwrap();
        assert_eq!(c.max_payload_bytes, 65536);
        std::env::set_var(env::MAX_PAYLOAD_BYTES, "16MiB");
        let err = c.apply_env().unwrap_err().to_string();
        std::env::remove_var(env::MAX_PAYLOAD_BYTES);
        assert!(err.contains(env::MAX_PAYLOAD_BYTES) && err.contains("\"16MiB\""), "{err}");
        // Likewise the recovery limit (in this test: no two tests set the environment at once).
        std::env::set_var(env::MAX_RECOVERY_ATTEMPTS, "0");
        c.apply_env().unwrap();
        assert_eq!(c.max_recovery_attempts, 0);
        std::env::set_var(env::MAX_RECOVERY_ATTEMPTS, "-1");
        let err = c.apply_env().unwrap_err().to_string();
        std::env::remove_var(env::MAX_RECOVERY_ATTEMPTS);
        assert!(err.contains(env::MAX_RECOVERY_ATTEMPTS) && err.contains("\"-1\""), "{err}");
    }

    #[test]
    fn schema_names_are_identifiers() {
        let mut c = Config::new("postgres://localhost/db");
        assert!(c.validate().is_ok());
        c.system_schema = "bad-name".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("bad-name") && err.contains(env::SYSTEM_SCHEMA), "{err}");
    }
}
