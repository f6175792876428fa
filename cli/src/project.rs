//! The project file `mainstay.yaml`: the application's name, database URLs (with `${VAR}` and
//! `${VAR:-default}` taken from the environment), and the commands that start it and migrate
//! its application database.
//!
//! Invariants: a loaded project is valid; every error names the key and says how to fix it.
//! Substituted values (often passwords) are never shown: commands are printed as written, and
//! `Debug` shows the database URLs redacted.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The file name the CLI looks for in the current directory.
pub const FILE_NAME: &str = "mainstay.yaml";

/// `mainstay.yaml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    app_database_url: Option<String>,
    #[serde(default)]
    system_schema: Option<String>,
    #[serde(default)]
    start: Vec<String>,
    #[serde(default)]
    migrate: Vec<String>,
}

/// A command of the project: run with the environment substituted, shown as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectCommand {
    /// As written in the file, with its `${VAR}` references: what is printed.
    pub written: String,
    /// With the variables substituted: what runs.
    pub line: String,
}

/// A validated project.
#[derive(Clone, PartialEq)]
pub struct Project {
    pub name: String,
    /// The system database URL, if the file sets one.
    pub database_url: Option<String>,
    pub app_database_url: Option<String>,
    pub system_schema: Option<String>,
    pub start: Vec<ProjectCommand>,
    pub migrate: Vec<ProjectCommand>,
    /// The directory commands run in (the file's).
    pub dir: PathBuf,
}

impl std::fmt::Debug for Project {
    /// By hand: the URLs may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use mainstay::config::Redacted;
        f.debug_struct("Project")
            .field("name", &self.name)
            .field("database_url", &self.database_url.as_deref().map(Redacted))
            .field("app_database_url", &self.app_database_url.as_deref().map(Redacted))
            .field("system_schema", &self.system_schema)
            .field("start", &self.start.iter().map(|c| &c.written).collect::<Vec<_>>())
            .field("migrate", &self.migrate.iter().map(|c| &c.written).collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Project {
    /// Loads `mainstay.yaml` from `dir`, or `None` if there is none.
    pub fn find(dir: &Path) -> anyhow::Result<Option<Project>> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Project::parse(&text, &|name| std::env::var(name).ok(), dir).with_context(|| format!("invalid {}", path.display())).map(Some)
    }

    /// Parses and validates the file's text; `env` looks variables up.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>, dir: &Path) -> anyhow::Result<Project> {
        let raw: Raw = yaml_serde::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{e}; the keys are name, database_url, app_database_url, system_schema, start \
                 (a list of commands) and migrate (a list of commands)"
            )
        })?;
        let name = raw.name.trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("name: {:?} is not a valid application name; use letters, digits, '-' and '_'", raw.name);
        }
        let url = |key: &str, value: Option<String>| -> anyhow::Result<Option<String>> {
            let Some(value) = value else { return Ok(None) };
            let value = substitute(&value, env).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            if value.is_empty() {
                return Ok(None);
            }
            mainstay::config::validate_database_url(&value).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            Ok(Some(value))
        };
        let commands = |key: &str, list: Vec<String>| -> anyhow::Result<Vec<ProjectCommand>> {
            list.into_iter()
                .enumerate()
                .map(|(i, written)| {
                    let line = substitute(&written, env).map_err(|e| anyhow::anyhow!("{key}[{i}]: {e}"))?;
                    if line.trim().is_empty() {
                        bail!("{key}[{i}]: the command is empty; remove it or write the command to run");
                    }
                    Ok(ProjectCommand { written, line })
                })
                .collect()
        };
        Ok(Project {
            name,
            database_url: url("database_url", raw.database_url)?,
            app_database_url: url("app_database_url", raw.app_database_url)?,
            system_schema: raw.system_schema.map(|s| substitute(&s, env)).transpose().map_err(|e| anyhow::anyhow!("system_schema: {e}"))?,
            start: commands("start", raw.start)?,
            migrate: commands("migrate", raw.migrate)?,
            dir: dir.to_path_buf(),
        })
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` with values from `env`.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            // Not the text itself: what follows may be a password written in the file.
            bail!("unterminated `${{` at character {}; write ${{VARIABLE}}", text[..text.len() - after.len() - 2].chars().count() + 1);
        };
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("`${{{inner}}}` is not a variable reference; write ${{NAME}} or ${{NAME:-default}}");
        }
        match (env(var).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => bail!(
                "environment variable {var} is not set (referenced as ${{{var}}}); set it, or give a \
                 default with ${{{var}:-value}}"
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PGPASS" => Some("s3cret".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> anyhow::Result<Project> {
        Project::parse(text, &env, Path::new("/app"))
    }

    #[test]
    fn variables_are_substituted_with_defaults() {
        let p = parse(
            "name: shop\ndatabase_url: postgres://app:${PGPASS}@${PGHOST:-localhost}:5432/shop\n\
             start: [\"cargo run\"]\nmigrate: [\"cargo run -- migrate\"]\n",
        )
        .unwrap();
        assert_eq!(p.database_url.as_deref(), Some("postgres://app:s3cret@localhost:5432/shop"));
        assert_eq!(p.start, [ProjectCommand { written: "cargo run".into(), line: "cargo run".into() }]);
        assert_eq!(p.dir, Path::new("/app"));
    }

    #[test]
    fn substituted_secrets_are_never_shown() {
        let p = parse(
            "name: shop\ndatabase_url: postgres://app:${PGPASS}@localhost/shop\n\
             migrate: [\"psql postgres://app:${PGPASS}@localhost/shop -f m.sql\"]\n",
        )
        .unwrap();
        assert_eq!(p.migrate[0].written, "psql postgres://app:${PGPASS}@localhost/shop -f m.sql");
        assert_eq!(p.migrate[0].line, "psql postgres://app:s3cret@localhost/shop -f m.sql");
        let shown = format!("{p:?}");
        assert!(!shown.contains("s3cret") && shown.contains("app:***@localhost"), "{shown}");
        let err = format!("{:#}", parse("name: shop\ndatabase_url: postgres://app:s3cret@h/${DB\n").unwrap_err());
        assert!(err.contains("unterminated `${` at character 25") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let err = |t: &str| format!("{:#}", parse(t).unwrap_err());
        assert!(err("name: shop\ndatabase_url: ${NOPE}\n").contains("database_url: environment variable NOPE is not set"));
        assert!(err("name: shop\ndatabase_url: mysql://x/y\n").contains("database_url:"));
        assert!(err("name: shop\nstrat: [x]\n").contains("unknown field `strat`"));
        assert!(err("name: 'my shop'\n").contains("name:"));
        assert!(err("name: shop\nstart: ['  ']\n").contains("start[0]: the command is empty"));
        assert!(err("name: shop\nmigrate: ['${']\n").contains("migrate[0]: unterminated"));
        assert!(err("database_url: x\n").contains("missing field `name`"));
    }
}
