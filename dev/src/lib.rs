//! # mainstay-dev
//!
//! Development tools for mainstay: a private Postgres started from the system's PostgreSQL
//! binaries, used by `mainstay postgres start|stop`, the examples and the benchmarks when no
//! database URL is configured.
//!
//! It is a crate of its own so that production workers, which depend on `mainstay` only, never
//! contain code that runs `initdb` and, as root, `chown`s directories. The server listens on
//! 127.0.0.1 only and trusts local connections, so it is for a developer's machine, never for
//! production. Postgres refuses to run as root; as root the server runs as the `postgres`
//! system user, in a directory that user owns.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use mainstay::config::env;
use tokio::process::Command;

/// Result of the development tools.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong starting or stopping the local Postgres.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`PORT_ENV`] is set to something that is not a port.
    #[error("{PORT_ENV}={value:?} is not a port number (1-65535); set it to a free port such as 5433")]
    InvalidPort { value: String },

    /// No `initdb` and `pg_ctl` on `PATH` nor in `/usr/lib/postgresql/*/bin`.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in \
         /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
         macOS: `brew install postgresql@16`), or set {} to an existing server",
        env::DATABASE_URL
    )]
    BinariesNotFound,

    /// The data directory cannot be created.
    #[error("cannot create the local Postgres directory {}: {source}; set {DATA_DIR_ENV} to a writable directory", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL tool (or `chown`, `runuser`) could not be started.
    #[error("failed to {what}: cannot run {program}: {source}{}", hint_suffix(hint))]
    Spawn {
        what: String,
        program: String,
        hint: Option<String>,
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL tool (or `chown`) ran and failed.
    #[error("failed to {what} ({status}): {stderr}{}", hint_suffix(hint))]
    CommandFailed { what: String, status: ExitStatus, stderr: String, hint: Option<String> },

    /// The `MAINSTAY_*` configuration applied by [`development_config`] is invalid.
    #[error(transparent)]
    Mainstay(#[from] mainstay::Error),
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default()
}

/// Environment variable overriding the data directory.
pub const DATA_DIR_ENV: &str = "MAINSTAY_POSTGRES_DIR";
/// Environment variable overriding the port (default 5432).
pub const PORT_ENV: &str = "MAINSTAY_POSTGRES_PORT";
/// Port used when none is configured.
pub const DEFAULT_PORT: u16 = 5432;

/// A local development server: where its data lives and where it listens.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    pub data_dir: PathBuf,
    pub port: u16,
}

impl LocalPostgres {
    /// The server configured by the environment, or the default location and port.
    pub fn from_env() -> Result<LocalPostgres> {
        let port = match std::env::var(PORT_ENV) {
            Ok(p) => parse_port(&p)?,
            Err(_) => DEFAULT_PORT,
        };
        let data_dir = match std::env::var_os(DATA_DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None if is_root() => PathBuf::from("/var/tmp/mainstay-postgres"),
            None => {
                let base = std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                    .unwrap_or_else(std::env::temp_dir);
                base.join("mainstay/postgres")
            }
        };
        Ok(LocalPostgres { data_dir, port })
    }

    /// The URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pgdata(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    /// Initializes the data directory if needed and starts the server (idempotent). Returns the
    /// URL to connect to.
    pub async fn start(&self) -> Result<String> {
        let bin = find_binaries()?;
        let pgdata = self.pgdata();
        std::fs::create_dir_all(&self.data_dir).map_err(|source| Error::DataDir { path: self.data_dir.clone(), source })?;
        if is_root() {
            run(
                Command::new("chown").arg("-R").arg("postgres:").arg(&self.data_dir),
                "chown the data directory to postgres",
                Some(
                    "running as root, the local Postgres must run as the `postgres` user: create that \
                     user (apt-get install postgresql does) or run as a normal user"
                        .to_string(),
                ),
            )
            .await?;
        }
        if !pgdata.join("PG_VERSION").exists() {
            run(
                self.as_owner(&bin.join("initdb")).arg("-D").arg(&pgdata).args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]),
                "initialize the local Postgres data directory",
                None,
            )
            .await?;
        }
        if self.is_running(&bin).await {
            return Ok(self.url());
        }
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", self.port, self.data_dir.display());
        run(
            self.as_owner(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&pgdata)
                .arg("-o")
                .arg(options)
                .arg("-l")
                .arg(self.data_dir.join("postgres.log"))
                .args(["-w", "-t", "60", "start"]),
            "start the local Postgres",
            Some(format!(
                "see {} (is port {} already taken? set {PORT_ENV} to another port)",
                self.data_dir.join("postgres.log").display(),
                self.port
            )),
        )
        .await?;
        Ok(self.url())
    }

    /// Stops the server if it runs.
    pub async fn stop(&self) -> Result<()> {
        let bin = find_binaries()?;
        if !self.is_running(&bin).await {
            return Ok(());
        }
        run(
            self.as_owner(&bin.join("pg_ctl")).arg("-D").arg(self.pgdata()).args(["-m", "fast", "-w", "stop"]),
            "stop the local Postgres",
            None,
        )
        .await
    }

    async fn is_running(&self, bin: &Path) -> bool {
        if !self.pgdata().join("PG_VERSION").exists() {
            return false;
        }
        self.as_owner(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.pgdata())
            .arg("status")
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn as_owner(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

fn parse_port(value: &str) -> Result<u16> {
    match value.trim().parse() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Error::InvalidPort { value: value.to_string() }),
    }
}

/// Runs `cmd` to completion; `hint` says how to fix a failure.
async fn run(cmd: &mut Command, what: &str, hint: Option<String>) -> Result<()> {
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(source) => {
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            return Err(Error::Spawn { what: what.to_string(), program, hint, source });
        }
    };
    if out.status.success() {
        return Ok(());
    }
    Err(Error::CommandFailed {
        what: what.to_string(),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        hint,
    })
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        std::env::var("USER").map(|u| u == "root").unwrap_or(false)
            || std::fs::metadata("/proc/self")
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.uid() == 0
                })
                .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: on PATH, or the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> Result<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(Error::BinariesNotFound)
}

/// The configured database URL (`MAINSTAY_DATABASE_URL`, then `DATABASE_URL`), or, when none is
/// set, the URL of a private local Postgres started on demand. For examples and development.
pub async fn configured_or_local_url() -> Result<String> {
    for name in [env::DATABASE_URL, env::DATABASE_URL_FALLBACK] {
        if let Ok(url) = std::env::var(name) {
            if !url.trim().is_empty() {
                return Ok(url);
            }
        }
    }
    let local = LocalPostgres::from_env()?;
    let url = local.start().await?;
    tracing::info!(data_dir = %local.data_dir.display(), %url, "using a private local Postgres");
    eprintln!(
        "No {} set: using a private local Postgres at {url} (data in {}; stop it with `mainstay postgres stop`).",
        env::DATABASE_URL,
        local.data_dir.display()
    );
    Ok(url)
}

/// A configuration for development and examples: the database from
/// [`configured_or_local_url`], the application name `app_name`, then every `MAINSTAY_*`
/// variable applied.
pub async fn development_config(app_name: &str) -> Result<mainstay::Config> {
    let mut config = mainstay::Config::new(configured_or_local_url().await?);
    config.app_name = Some(app_name.to_string());
    config.apply_env()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_port_names_the_variable() {
        assert_eq!(parse_port(" 5433 ").unwrap(), 5433);
        for bad in ["0", "70000", "five"] {
            let err = parse_port(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPort { .. }), "{err:?}");
            assert!(err.to_string().contains(PORT_ENV), "{err}");
        }
    }

    #[tokio::test]
    async fn a_failed_command_says_what_it_was_doing_and_how_to_fix_it() {
        let err = run(Command::new("sh").args(["-c", "echo nope >&2; exit 3"]), "start the local Postgres", Some("see the log".into()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::CommandFailed { .. }), "{err:?}");
        assert!(text.starts_with("failed to start the local Postgres (") && text.ends_with("nope; see the log"), "{text}");
        let err = run(&mut Command::new("/nonexistent/pg_ctl"), "stop the local Postgres", None).await.unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }) && err.to_string().contains("/nonexistent/pg_ctl"), "{err}");
    }
}
