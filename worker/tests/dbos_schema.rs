//! Oracle test: Mainstay's system-database migrations must produce exactly the catalog that the
//! real DBOS Transact 3.4.0 Python package creates when it launches.
//!
//! DBOS is run from a Python virtualenv named by `MAINSTAY_DBOS_PYTHON`:
//!
//! ```text
//! python3 -m venv DIR && DIR/bin/pip install dbos==3.4.0
//! export MAINSTAY_DBOS_PYTHON=DIR/bin/python
//! ```
//!
//! Without it the DBOS comparisons are skipped locally (with a notice) and fail in CI (`CI=true`).
//! Objects Mainstay adds for itself (names starting `mainstay_`) are left out of the comparison.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgConnection;

const SCHEMA: &str = "dbos";
const PYTHON_ENV: &str = "MAINSTAY_DBOS_PYTHON";
const DBOS_TIMEOUT: Duration = Duration::from_secs(180);

/// Launching DBOS once creates (migrates) its system database; argv[1] is the database URL.
const DBOS_LAUNCH: &str = r#"
import sys
from dbos import DBOS
DBOS(config={"name": "oracle", "system_database_url": sys.argv[1]})
DBOS.launch()
DBOS.destroy()
"#;

// Every query takes the schema as $1 and, as $2, whether to include Mainstay's own objects.
// Each returns one normalized text line per catalog object.

const COLUMNS_SQL: &str = "
SELECT format('%s.%s: type=%s/%s max_length=%s precision=%s scale=%s default=%s nullable=%s',
              c.table_name, c.column_name, c.data_type, c.udt_name,
              coalesce(c.character_maximum_length::text, '(none)'),
              coalesce(c.numeric_precision::text, '(none)'),
              coalesce(c.numeric_scale::text, '(none)'),
              coalesce(c.column_default::text, '(none)'),
              c.is_nullable)
FROM information_schema.columns c
WHERE c.table_schema = $1
  AND ($2 OR NOT (starts_with(c.table_name::text, 'mainstay_')
                  OR starts_with(c.column_name::text, 'mainstay_')))";

const CONSTRAINTS_SQL: &str = "
SELECT format('%s.%s: %s', coalesce(rel.relname::text, '(no table)'), con.conname,
              pg_get_constraintdef(con.oid))
FROM pg_constraint con
JOIN pg_namespace n ON n.oid = con.connamespace
LEFT JOIN pg_class rel ON rel.oid = con.conrelid
WHERE n.nspname = $1
  AND ($2 OR NOT (starts_with(con.conname::text, 'mainstay_')
                  OR coalesce(starts_with(rel.relname::text, 'mainstay_'), false)))";

const INDEXES_SQL: &str = "
SELECT format('%s.%s: %s', i.tablename, i.indexname, i.indexdef)
FROM pg_indexes i
WHERE i.schemaname = $1
  AND ($2 OR NOT (starts_with(i.tablename::text, 'mainstay_')
                  OR starts_with(i.indexname::text, 'mainstay_')))";

const FUNCTIONS_SQL: &str = "
SELECT format('%s(%s): arguments=[%s] returns=%s security_definer=%s config=%s',
              p.proname, pg_get_function_identity_arguments(p.oid),
              pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.prosecdef,
              coalesce(array_to_string(p.proconfig, ' | '), '(none)'))
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1
  AND ($2 OR NOT starts_with(p.proname::text, 'mainstay_'))";

const TRIGGERS_SQL: &str = "
SELECT format('%s.%s: %s', c.relname, t.tgname, pg_get_triggerdef(t.oid))
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1
  AND NOT t.tgisinternal
  AND ($2 OR NOT (starts_with(t.tgname::text, 'mainstay_')
                  OR starts_with(c.relname::text, 'mainstay_')))";

// The whole row, so that any column DBOS records there is compared too.
const MIGRATIONS_SQL: &str = "SELECT m::text FROM dbos.dbos_migrations m";

/// One database's catalog, as sorted lines per category.
#[derive(Debug, PartialEq)]
struct Snapshot {
    categories: Vec<(&'static str, Vec<String>)>,
}

impl Snapshot {
    fn get(&self, category: &str) -> &[String] {
        self.categories
            .iter()
            .find(|(name, _)| *name == category)
            .map(|(_, lines)| lines.as_slice())
            .unwrap_or_else(|| panic!("no category {category}"))
    }

    fn summary(&self) -> String {
        self.categories.iter().map(|(name, lines)| format!("{} {name}", lines.len())).collect::<Vec<_>>().join(", ")
    }
}

async fn lines(conn: &mut PgConnection, sql: &'static str, include_mainstay: bool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(sql)
        .bind(SCHEMA)
        .bind(include_mainstay)
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("catalog query failed: {e}\n{sql}"));
    rows.sort();
    rows
}

async fn snapshot(url: &str, include_mainstay: bool) -> Snapshot {
    let mut conn = common::connect(url).await;
    let mut categories = Vec::new();
    for (name, sql) in [
        ("columns", COLUMNS_SQL),
        ("constraints", CONSTRAINTS_SQL),
        ("indexes", INDEXES_SQL),
        ("functions", FUNCTIONS_SQL),
        ("triggers", TRIGGERS_SQL),
    ] {
        categories.push((name, lines(&mut conn, sql, include_mainstay).await));
    }
    let mut migrations: Vec<String> =
        sqlx::query_scalar(MIGRATIONS_SQL).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("read dbos.dbos_migrations: {e}"));
    migrations.sort();
    categories.push(("dbos_migrations rows", migrations));
    Snapshot { categories }
}

/// A readable diff of two snapshots, or `None` if they are equal. Lines only in `left` are
/// prefixed "- ", lines only in `right` "+ ", merged in sorted order so that two versions of
/// the same object end up next to each other.
fn diff(left: &Snapshot, right: &Snapshot) -> Option<String> {
    let mut out = String::new();
    for ((name, l), (_, r)) in left.categories.iter().zip(&right.categories) {
        // Multiset difference: count +1 for every left line, -1 for every right line.
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for line in l {
            *counts.entry(line).or_default() += 1;
        }
        for line in r {
            *counts.entry(line).or_default() -= 1;
        }
        let changed: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n != 0)
            .flat_map(|(line, n)| {
                let sign = if *n > 0 { "- " } else { "+ " };
                (0..n.abs()).map(move |_| format!("  {sign}{line}"))
            })
            .collect();
        if !changed.is_empty() {
            out.push_str(&format!("{name} ({} differing lines):\n", changed.len()));
            for line in changed {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The Python interpreter with `dbos==3.4.0` installed, or `None` (after a notice) when it is
/// not configured outside CI. In CI a missing interpreter is a failure, never a silent skip.
fn dbos_python(test: &str) -> Option<String> {
    match std::env::var(PYTHON_ENV) {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            let how = format!(
                "{PYTHON_ENV} is not set. The DBOS schema oracle needs a Python with DBOS Transact \
                 3.4.0: run `python3 -m venv DIR && DIR/bin/pip install dbos==3.4.0`, then set \
                 {PYTHON_ENV}=DIR/bin/python"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{how}");
            }
            eprintln!("NOTICE: skipping the DBOS comparison in {test}: {how}");
            None
        }
    }
}

/// Launches the real DBOS against `url` so that it creates its system schema there.
async fn create_schema_with_dbos(python: &str, url: &str) {
    let started = Instant::now();
    let run = tokio::process::Command::new(python).arg("-c").arg(DBOS_LAUNCH).arg(url).kill_on_drop(true).output();
    let output = tokio::time::timeout(DBOS_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("DBOS did not create its schema within {DBOS_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("could not run {python} ({PYTHON_ENV}): {e}; is it a Python with dbos==3.4.0?"));
    if !output.status.success() {
        panic!(
            "DBOS failed to create its schema ({}) using {python}:\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!("DBOS created its schema in {:?}", started.elapsed());
}

async fn mainstay_migrate(url: &str, what: &str) {
    mainstay::migrate(&mainstay::Config::new(url)).await.unwrap_or_else(|e| panic!("mainstay::migrate ({what}) failed: {e}"));
}

async fn mainstay_versions(url: &str) -> Vec<i64> {
    let mut conn = common::connect(url).await;
    sqlx::query_scalar(
        "SELECT version FROM dbos.mainstay_migrations UNION ALL SELECT version FROM dbos.mainstay_schema_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read dbos.mainstay_migrations")
}

fn expected_mainstay_versions() -> Vec<i64> {
    (1..=mainstay::MAINSTAY_SCHEMA_VERSION).collect()
}

fn assert_dbos_version(snap: &Snapshot, who: &str) {
    assert_eq!(
        snap.get("dbos_migrations rows"),
        [format!("({})", mainstay::DBOS_SCHEMA_VERSION)],
        "{who}: dbos.dbos_migrations must hold the single row {}",
        mainstay::DBOS_SCHEMA_VERSION
    );
}

#[tokio::test]
async fn mainstay_schema_matches_dbos_3_4_0() {
    common::init_tracing();
    let Some(python) = dbos_python("mainstay_schema_matches_dbos_3_4_0") else { return };
    let started = Instant::now();
    let dbos_url = common::fresh_database("dbos_schema_oracle_dbos").await;
    let mainstay_url = common::fresh_database("dbos_schema_oracle_mainstay").await;

    tokio::join!(create_schema_with_dbos(&python, &dbos_url), mainstay_migrate(&mainstay_url, "fresh database"),);

    let dbos = snapshot(&dbos_url, false).await;
    let ours = snapshot(&mainstay_url, false).await;
    eprintln!("DBOS 3.4.0 schema: {}", dbos.summary());
    eprintln!("Mainstay schema:   {}", ours.summary());

    // Guard against a vacuous pass (e.g. both sides empty because the schema name changed).
    for category in ["columns", "constraints", "indexes", "functions", "triggers"] {
        assert!(!dbos.get(category).is_empty(), "DBOS created no {category} in schema {SCHEMA}");
    }

    if let Some(d) = diff(&dbos, &ours) {
        panic!(
            "Mainstay's system schema differs from the one DBOS Transact 3.4.0 creates \
             (schema `{SCHEMA}`, objects named mainstay_* excluded).\n\
             Lines starting '- ' exist only in DBOS's database (the oracle, {dbos_url});\n\
             lines starting '+ ' exist only in Mainstay's database ({mainstay_url}).\n\n{d}"
        );
    }
    assert_dbos_version(&dbos, "DBOS");
    assert_dbos_version(&ours, "Mainstay");
    eprintln!("schemas identical; oracle comparison took {:?}", started.elapsed());
}

#[tokio::test]
async fn mainstay_migrate_is_idempotent_and_accepts_a_dbos_created_schema() {
    common::init_tracing();
    // Checked first so that CI fails fast when the oracle is not set up.
    let python = dbos_python("mainstay_migrate_is_idempotent_and_accepts_a_dbos_created_schema");

    // Twice on a fresh database: the second run changes nothing, Mainstay's objects included.
    let url = common::fresh_database("dbos_schema_migrate_twice").await;
    mainstay_migrate(&url, "first run on a fresh database").await;
    let first = snapshot(&url, true).await;
    let first_versions = mainstay_versions(&url).await;
    mainstay_migrate(&url, "second run on the same database").await;
    let second = snapshot(&url, true).await;
    if let Some(d) = diff(&first, &second) {
        panic!(
            "a second mainstay::migrate changed the schema ('- ' only after the first run, \
             '+ ' only after the second):\n\n{d}"
        );
    }
    assert_dbos_version(&second, "Mainstay, migrated twice");
    assert_eq!(first_versions, expected_mainstay_versions());
    assert_eq!(mainstay_versions(&url).await, expected_mainstay_versions());
    assert!(
        second.get("triggers").iter().any(|t| t.contains("mainstay_enqueue_insert")),
        "Mainstay's own triggers are missing after migrate: {:?}",
        second.get("triggers")
    );

    let Some(python) = python else { return };

    // On a database whose schema DBOS itself created, migrate succeeds, keeps version 125,
    // adds only its own objects and leaves DBOS's untouched.
    let url = common::fresh_database("dbos_schema_dbos_then_mainstay").await;
    create_schema_with_dbos(&python, &url).await;
    let before = snapshot(&url, false).await;
    assert_dbos_version(&before, "DBOS");
    mainstay_migrate(&url, "on a DBOS-created schema").await;
    let after = snapshot(&url, false).await;
    if let Some(d) = diff(&before, &after) {
        panic!(
            "mainstay::migrate altered DBOS's objects in a DBOS-created schema ('- ' only before, \
             '+ ' only after; mainstay_* objects excluded):\n\n{d}"
        );
    }
    assert_dbos_version(&after, "DBOS, then Mainstay");
    assert_eq!(mainstay_versions(&url).await, expected_mainstay_versions());
    let with_ours = snapshot(&url, true).await;
    assert!(
        with_ours.get("triggers").iter().any(|t| t.contains("mainstay_enqueue_insert")),
        "Mainstay's own triggers were not added to the DBOS-created schema: {:?}",
        with_ours.get("triggers")
    );

    // And again: still idempotent on the DBOS-created database.
    mainstay_migrate(&url, "second run on a DBOS-created schema").await;
    let again = snapshot(&url, true).await;
    if let Some(d) = diff(&with_ours, &again) {
        panic!("a second mainstay::migrate on a DBOS-created schema changed it:\n\n{d}");
    }
}
