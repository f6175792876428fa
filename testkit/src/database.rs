//! Fresh databases on the test Postgres, one per test, so tests never see each other's rows.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The variable naming a Postgres superuser URL for tests (`bash .ci/run` starts one and sets it).
pub const TEST_URL_ENV: &str = "MAINSTAY_TEST_DATABASE_URL";

/// The test Postgres's superuser URL; fails the test with what to set when it is missing.
pub fn admin_url() -> String {
    std::env::var(TEST_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{TEST_URL_ENV} is not set: point it at a Postgres superuser URL, e.g. \
             postgres://postgres@127.0.0.1:5432/postgres (bash .ci/run starts one and sets it)"
        )
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("the test database URL does not parse: {e}"));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// The database name for a test named `name`: lowercase, `_` for anything else, prefixed `t_`.
pub fn database_name(name: &str) -> String {
    format!("t_{}", name.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

/// Drops and creates database `t_<name>` on the server `admin` points at; returns its URL.
pub async fn fresh_database_on(admin: &str, name: &str) -> Result<String, sqlx::Error> {
    let db = database_name(name);
    let mut conn = PgConnection::connect(admin).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).execute(&mut conn).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(with_database(admin, &db))
}

/// An empty database named after the test, on the test Postgres; returns its URL.
pub async fn fresh_database(name: &str) -> String {
    fresh_database_on(&admin_url(), name).await.unwrap_or_else(|e| panic!("cannot create test database for {name}: {e}"))
}

/// A connection to `url`.
pub async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_identifiers_and_urls_keep_the_rest() {
        assert_eq!(database_name("Crash-Test 1"), "t_crash_test_1");
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable", "t_x"),
            "postgres://u:p@127.0.0.1:5432/t_x?sslmode=disable"
        );
    }
}
