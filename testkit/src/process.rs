//! Child processes for crash and multi-worker tests: the test binary runs itself again with
//! only one ignored test (the child's entry point), so a child is real code in a real process
//! that a test can SIGKILL.

use std::process::Stdio;

/// A command that runs this test binary with only the ignored test `entry`; killed on drop.
/// Set its environment and output, then spawn it.
pub fn self_command(entry: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--ignored", "--exact", entry, "--nocapture", "--test-threads=1"]).stderr(Stdio::inherit()).kill_on_drop(true);
    cmd
}

/// Spawns [`self_command`] with `envs` set and its stdout piped, for the test to read.
pub fn spawn_self(entry: &str, envs: &[(&str, &str)]) -> tokio::process::Child {
    self_command(entry).envs(envs.iter().copied()).stdout(Stdio::piped()).spawn().expect("spawn the child process")
}

/// SIGKILLs a child process and reaps it.
pub async fn kill_child(mut child: tokio::process::Child) {
    child.start_kill().expect("SIGKILL the child");
    child.wait().await.expect("reap the child");
}
