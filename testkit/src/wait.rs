//! Waiting on a condition: poll until it holds, fail naming what was awaited. CI machines are
//! slow and loaded, so tests wait on conditions with generous deadlines, never on margins.

use std::future::Future;
use std::time::{Duration, Instant};

/// A wait that ran out of time, with the last error the check reported, if any.
#[derive(Debug)]
pub struct TimedOut<E> {
    pub after: Duration,
    pub last_error: Option<E>,
}

/// Polls `check` every `interval` until it yields a value. After `timeout` returns
/// [`TimedOut`]; a check that fails is tried again (a component still starting), its last
/// error kept for the report.
pub async fn poll_until<T, E, F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> Result<T, TimedOut<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            return Err(TimedOut { after: timeout, last_error });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Polls `check` until it returns `Some`; fails the test after `timeout`, naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let polled = poll_until(timeout, Duration::from_millis(20), || {
        let fut = check();
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    match polled.await {
        Ok(v) => v,
        Err(t) => panic!("timed out after {:?} waiting for {what}", t.after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_condition_holds_and_reports_the_last_error() {
        let mut n = 0;
        let v = wait_for("the third look", Duration::from_secs(5), || {
            n += 1;
            let seen = n;
            async move { (seen == 3).then_some(seen) }
        })
        .await;
        assert_eq!(v, 3);
        let out: Result<(), _> =
            poll_until(Duration::from_millis(50), Duration::from_millis(10), || async { Err::<Option<()>, _>("refused") }).await;
        assert_eq!(out.unwrap_err().last_error, Some("refused"));
    }
}
