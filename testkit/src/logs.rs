//! Log capture for tests that assert on what was (or was not) logged, and a plain test logger.

/// Everything logged by this test binary at TRACE level, from any thread or task, every
/// crate's (sqlx's included). The first call installs the subscriber; call it before anything
/// logs (`init_tracing` in the same binary would otherwise win, and `logged()` says so).
pub fn capture_logs() {
    captured();
}

/// What was captured so far; panics when another subscriber was installed first (a test that
/// asserts on captured logs must never pass because nothing was captured).
pub fn logged() -> String {
    let (installed, log) = captured();
    assert!(*installed, "another tracing subscriber was installed before capture_logs()");
    String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
}

fn captured() -> &'static (bool, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    static LOG: std::sync::OnceLock<(bool, std::sync::Arc<std::sync::Mutex<Vec<u8>>>)> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .is_ok();
        (installed, log)
    })
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
