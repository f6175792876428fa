//! No password reaches a log line or an error: launches against databases that refuse or do not
//! answer, with a distinctive password in every place a URL can carry one, while every event
//! of every crate (sqlx's included) is captured at TRACE level.

mod common;

use std::time::Duration;

use mainstay::{Config, Error, Mainstay};

const SECRET: &str = "Xyzzy-S3CRET-4417";

fn log_text() -> String {
    common::logged()
}

fn server() -> String {
    let u = url::Url::parse(&common::admin_url()).expect("test URL parses");
    format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(5432))
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the password appears in {what}:\n{text}");
}

/// Launches with `url` and returns the error, after checking that neither the error nor the
/// configuration's `Debug` shows the password.
async fn failed_launch(url: String, connect_timeout: Duration) -> Error {
    common::capture_logs();
    let mut config = Config::new(url);
    config.connect_timeout = connect_timeout;
    config.app_database_url = Some(format!("postgres://app:{SECRET}@{}/app?sslpassword={SECRET}", server()));
    tracing::info!(?config, "launching");
    assert_hidden("the configuration's Debug", &format!("{config:?}"));
    let err = Mainstay::builder(config).global(false).launch().await.err().expect("the launch fails");
    tracing::error!(error = %err, debug = ?err, "launch failed");
    assert_hidden("the error's Display", &err.to_string());
    assert_hidden("the error's Debug", &format!("{err:?}"));
    err
}

#[tokio::test]
async fn a_refused_login_shows_no_password() {
    let url = format!("postgres://mainstay_no_such_role:{SECRET}@{}/postgres", server());
    let err = failed_launch(url, Duration::from_secs(5)).await;
    match &err {
        Error::Connect { retried: false, url, .. } => assert!(url.contains("mainstay_no_such_role:***@"), "{url}"),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert!(err.to_string().contains("mainstay_no_such_role"), "the error says which login: {err}");
    assert_hidden("the log", &log_text());
}

#[tokio::test]
async fn password_parameters_are_hidden_and_unsupported_ones_dropped() {
    let url = format!("postgres://mainstay_no_such_role@{}/postgres?password={SECRET}&sslpassword={SECRET}&sslmode=prefer", server());
    let err = failed_launch(url, Duration::from_secs(5)).await;
    assert!(matches!(err, Error::Connect { retried: false, .. }), "{err:?}");
    assert!(err.to_string().contains("password=***&sslpassword=***&sslmode=prefer"), "{err}");
    let log = log_text();
    assert!(log.contains("ignoring connection parameter sslpassword"), "the dropped parameter is named:\n{log}");
    assert_hidden("the log", &log);
}

#[tokio::test]
async fn an_unreachable_database_shows_no_password() {
    // Port 1 on the loopback: nothing listens, so every attempt is refused until the pool gives up.
    let url = format!("postgres://app:{SECRET}@127.0.0.1:1/shop?password={SECRET}&sslpassword={SECRET}");
    let err = failed_launch(url, Duration::from_secs(1)).await;
    assert!(matches!(err, Error::Connect { retried: true, .. }), "{err:?}");
    let log = log_text();
    assert!(log.contains("127.0.0.1:1/shop?password=***"), "the URL is logged, redacted:\n{log}");
    assert_hidden("the log", &log);
}
