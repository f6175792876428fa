//! Queues: named lines of workflows, run by the workers that listen to them, within limits.
//!
//! A queue's limits live in the system database (`queues`), so they can change while workers
//! run: workers re-read them as they claim. Declaring a queue in code writes its settings only
//! when the queue has none yet, so settings changed at runtime (by the operator, the CLI or
//! [`crate::Client::set_queue`]) survive restarts and deploys.

use std::time::Duration;

use crate::model::error::{Error, Result};
use crate::model::names::INTERNAL_QUEUE;

/// At most `max` workflows start per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub max: u32,
    pub period: Duration,
}

/// A queue and its limits. Unset limits do not limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    /// Workflows of this queue running at once, across all workers.
    pub concurrency: Option<u32>,
    /// Workflows of this queue running at once on one worker.
    pub worker_concurrency: Option<u32>,
    /// Starts per period, across all workers.
    pub rate_limit: Option<RateLimit>,
    /// Whether enqueues may set a priority (lower runs first).
    pub priority_enabled: bool,
    /// Whether every enqueue names a partition, and the partition limits apply per partition.
    pub partitioned: bool,
    pub partition_concurrency: Option<u32>,
    pub partition_worker_concurrency: Option<u32>,
    pub partition_rate_limit: Option<RateLimit>,
    /// How often idle workers look for work when no notification arrives.
    pub polling_interval: Duration,
}

impl Queue {
    /// A queue with no limits.
    pub fn new(name: impl Into<String>) -> Queue {
        Queue {
            name: name.into(),
            concurrency: None,
            worker_concurrency: None,
            rate_limit: None,
            priority_enabled: false,
            partitioned: false,
            partition_concurrency: None,
            partition_worker_concurrency: None,
            partition_rate_limit: None,
            polling_interval: Duration::from_secs(1),
        }
    }

    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    pub fn worker_concurrency(mut self, n: u32) -> Self {
        self.worker_concurrency = Some(n);
        self
    }

    pub fn rate_limit(mut self, max: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit { max, period });
        self
    }

    pub fn priority_enabled(mut self, enabled: bool) -> Self {
        self.priority_enabled = enabled;
        self
    }

    /// Makes the queue partitioned, with these limits per partition.
    pub fn partitioned(mut self) -> Self {
        self.partitioned = true;
        self
    }

    pub fn partition_concurrency(mut self, n: u32) -> Self {
        self.partitioned = true;
        self.partition_concurrency = Some(n);
        self
    }

    pub fn partition_worker_concurrency(mut self, n: u32) -> Self {
        self.partitioned = true;
        self.partition_worker_concurrency = Some(n);
        self
    }

    pub fn partition_rate_limit(mut self, max: u32, period: Duration) -> Self {
        self.partitioned = true;
        self.partition_rate_limit = Some(RateLimit { max, period });
        self
    }

    pub fn polling_interval(mut self, interval: Duration) -> Self {
        self.polling_interval = interval;
        self
    }

    /// Whether claims must be serialized across workers because they spend a shared budget.
    pub(crate) fn has_shared_budget(&self) -> bool {
        self.concurrency.is_some()
            || self.rate_limit.is_some()
            || self.partition_concurrency.is_some()
            || self.partition_rate_limit.is_some()
    }

    /// Checks the settings; the error names the queue, the setting and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("queue {:?}: {what}", self.name)));
        if self.name.trim().is_empty() {
            return bad("the name is empty".into());
        }
        if self.name == INTERNAL_QUEUE {
            return bad(format!("{INTERNAL_QUEUE} is reserved for recovery; choose another name"));
        }
        for (what, v) in [
            ("concurrency", self.concurrency),
            ("worker_concurrency", self.worker_concurrency),
            ("partition_concurrency", self.partition_concurrency),
            ("partition_worker_concurrency", self.partition_worker_concurrency),
        ] {
            if v == Some(0) {
                return bad(format!("{what} is 0, so nothing would ever run; use at least 1 or leave it unset"));
            }
        }
        if let (Some(w), Some(c)) = (self.worker_concurrency, self.concurrency) {
            if w > c {
                return bad(format!("worker_concurrency {w} exceeds concurrency {c}; lower it to at most {c}"));
            }
        }
        for (what, r) in [("rate_limit", self.rate_limit), ("partition_rate_limit", self.partition_rate_limit)] {
            if let Some(r) = r {
                if r.max == 0 || r.period.is_zero() {
                    return bad(format!("{what} needs max >= 1 and a period > 0"));
                }
            }
        }
        if self.polling_interval.is_zero() {
            return bad("polling_interval must be > 0".into());
        }
        Ok(())
    }

    /// Checks the options of one enqueue against this queue.
    pub(crate) fn check_enqueue(&self, priority: Option<i32>, partition_key: Option<&str>) -> Result<()> {
        if priority.is_some_and(|p| p != 0) && !self.priority_enabled {
            return Err(Error::InvalidArgument(format!(
                "queue {:?} does not have priorities enabled; declare it with .priority_enabled(true) \
                 or enqueue without a priority",
                self.name
            )));
        }
        match (self.partitioned, partition_key) {
            (true, None) => Err(Error::InvalidArgument(format!(
                "queue {:?} is partitioned: give each enqueue a partition key (.partition_key(..))",
                self.name
            ))),
            (false, Some(_)) => Err(Error::InvalidArgument(format!(
                "queue {:?} is not partitioned, so a partition key has no meaning; declare it \
                 .partitioned() or drop the key",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_explained() {
        assert!(Queue::new("q").concurrency(10).worker_concurrency(2).validate().is_ok());
        let e = Queue::new("q").concurrency(0).validate().unwrap_err().to_string();
        assert!(e.contains("concurrency is 0"), "{e}");
        let e = Queue::new("q").concurrency(2).worker_concurrency(5).validate().unwrap_err().to_string();
        assert!(e.contains("exceeds concurrency"), "{e}");
        let e = Queue::new(INTERNAL_QUEUE).validate().unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        let e = Queue::new("q").rate_limit(0, Duration::from_secs(1)).validate().unwrap_err().to_string();
        assert!(e.contains("rate_limit"), "{e}");
    }

    #[test]
    fn enqueue_options_must_fit_the_queue() {
        let plain = Queue::new("q");
        assert!(plain.check_enqueue(Some(3), None).is_err());
        assert!(plain.check_enqueue(None, Some("k")).is_err());
        let part = Queue::new("p").partition_concurrency(1).priority_enabled(true);
        assert!(part.check_enqueue(Some(3), Some("k")).is_ok());
        assert!(part.check_enqueue(None, None).is_err());
    }
}
