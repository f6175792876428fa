//! Prometheus's own checker of the metrics text format, `promtool check metrics`: what the tests
//! hold every `/metrics` endpoint to. `tests/cluster/build.sh observability` builds it and
//! `.ci/run` names it in `MAINSTAY_PROMTOOL`.

use std::io::Write;
use std::process::{Command, Stdio};

/// The variable naming the `promtool` binary.
pub const PROMTOOL_ENV: &str = "MAINSTAY_PROMTOOL";

/// Runs `promtool check metrics` on `text` and panics with its findings if it finds any.
/// Without `MAINSTAY_PROMTOOL` it fails in CI (`CI=true`) and elsewhere prints a NOTICE and
/// returns `false`: the caller's other checks still run, this one did not.
pub fn check_metrics(text: &str) -> bool {
    let Ok(promtool) = std::env::var(PROMTOOL_ENV) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{PROMTOOL_ENV} is not set: .ci/run builds promtool (tests/cluster/build.sh observability) and sets it"
        );
        eprintln!("NOTICE: {PROMTOOL_ENV} is not set; the metrics text was not checked by promtool (bash tests/cluster/build.sh observability builds it)");
        return false;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool} ({PROMTOOL_ENV}): {e}"));
    child.stdin.take().expect("promtool's stdin").write_all(text.as_bytes()).expect("write the metrics to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics refused the metrics: {said}\n{text}");
    true
}
