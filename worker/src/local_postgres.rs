//! A private Postgres for development, started from the system's PostgreSQL binaries.
//!
//! Used by `mainstay postgres start|stop` and by the examples when no database URL is
//! configured. It listens on 127.0.0.1 only and trusts local connections, so it is for a
//! developer's machine, never for production. Postgres refuses to run as root; as root the
//! server runs as the `postgres` system user, in a directory that user owns.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::{Error, Result};

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
            Ok(p) => p.parse().map_err(|_| {
                Error::Config(format!("{PORT_ENV}={p:?} is not a port number (1-65535)"))
            })?,
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
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            Error::Config(format!("cannot create {}: {e}", self.data_dir.display()))
        })?;
        if is_root() {
            run(Command::new("chown").arg("-R").arg("postgres:").arg(&self.data_dir), "chown the data directory to postgres")
                .await
                .map_err(|e| Error::Config(format!(
                    "running as root, the local Postgres must run as the `postgres` user, but {e}; \
                     create that user (apt-get install postgresql does) or run as a normal user"
                )))?;
        }
        if !pgdata.join("PG_VERSION").exists() {
            run(
                self.as_owner(&bin.join("initdb"))
                    .arg("-D")
                    .arg(&pgdata)
                    .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"]),
                "initialize the local Postgres data directory",
            )
            .await?;
        }
        if self.is_running(&bin).await {
            return Ok(self.url());
        }
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.data_dir.display()
        );
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
        )
        .await
        .map_err(|e| {
            Error::Config(format!(
                "{e}; see {} (is port {} already taken? set {PORT_ENV} to another port)",
                self.data_dir.join("postgres.log").display(),
                self.port
            ))
        })?;
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

async fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::Config(format!("failed to {what}: cannot run {:?}: {e}", cmd.as_std().get_program())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "failed to {what} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        std::env::var("USER").map(|u| u == "root").unwrap_or(false)
            || std::fs::metadata("/proc/self").map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            }).unwrap_or(false)
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
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        Error::Config(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in \
             /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
             macOS: `brew install postgresql@16`), or set MAINSTAY_DATABASE_URL to an existing server"
                .to_string(),
        )
    })
}

/// The configured database URL (`MAINSTAY_DATABASE_URL`, then `DATABASE_URL`), or, when none is
/// set, the URL of a private local Postgres started on demand. For examples and development.
pub async fn configured_or_local_url() -> Result<String> {
    use crate::config::env;
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
pub async fn development_config(app_name: &str) -> Result<crate::Config> {
    let mut config = crate::Config::new(configured_or_local_url().await?);
    config.app_name = Some(app_name.to_string());
    config.apply_env()?;
    Ok(config)
}
