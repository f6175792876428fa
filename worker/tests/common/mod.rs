//! Setup for the runtime's integration tests: the shared test kit (`mainstay-testkit`: fresh
//! databases on the Postgres that `MAINSTAY_TEST_DATABASE_URL` points at, waiting on
//! conditions, child processes, log capture) plus how these tests configure Mainstay.
#![allow(dead_code)]

use std::time::Duration;

pub use mainstay_testkit::*;

pub fn config(url: &str, executor: &str) -> mainstay::Config {
    let mut c = mainstay::Config::new(url);
    c.executor_id = executor.to_string();
    c.app_version = Some("test-v1".to_string());
    c.polling_interval = Duration::from_millis(200);
    c.pool_size = 8;
    c
}

/// Launches a non-global instance for a test.
pub async fn launch(url: &str, executor: &str) -> mainstay::Mainstay {
    mainstay::Mainstay::builder(config(url, executor)).global(false).launch().await.expect("launch mainstay")
}
