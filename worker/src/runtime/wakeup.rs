//! Wake-ups for code waiting on the database: a message for a workflow, an event, new stream
//! values. Writers announce them with `pg_notify` on DBOS's channels (payload
//! `<workflow_id>::<key>`); one listener per process turns each announcement into a bump of the
//! waiters of that payload.
//!
//! Invariant: a wake-up only shortens a wait. A waiter subscribes *before* it reads the
//! database, so an announcement between its read and its wait is never lost, and it re-reads
//! at least every polling interval, so a notification lost with a dropped connection (or a
//! writer that does not notify) delays it by at most that long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgNotification;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::names::{EVENTS_CHANNEL, NOTIFICATIONS_CHANNEL, STREAMS_CHANNEL};
use crate::sysdb::SystemDatabase;

/// Every channel the wake-ups serve.
pub(crate) const CHANNELS: [&str; 3] = [NOTIFICATIONS_CHANNEL, EVENTS_CHANNEL, STREAMS_CHANNEL];

/// Waiters by (channel, payload).
#[derive(Default)]
pub(crate) struct Wakeups {
    waiters: Mutex<HashMap<(&'static str, String), watch::Sender<u64>>>,
}

/// A subscription to one (channel, payload); dropping it unsubscribes.
pub(crate) struct Subscription {
    wakeups: Arc<Wakeups>,
    key: (&'static str, String),
    rx: watch::Receiver<u64>,
}

impl Wakeups {
    /// Subscribes to announcements of `payload` on `channel`.
    pub(crate) fn subscribe(self: &Arc<Self>, channel: &'static str, payload: String) -> Subscription {
        let key = (channel, payload);
        let rx =
            self.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_insert_with(|| watch::channel(0).0).subscribe();
        Subscription { wakeups: self.clone(), key, rx }
    }

    /// Wakes the subscribers of `payload` on `channel`.
    pub(crate) fn deliver(&self, channel: &str, payload: &str) {
        let Some(channel) = CHANNELS.into_iter().find(|c| *c == channel) else { return };
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = waiters.get(&(channel, payload.to_string())) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every subscriber (the listener reconnected: anything may have been missed).
    pub(crate) fn deliver_all(&self) {
        for tx in self.waiters.lock().unwrap_or_else(|p| p.into_inner()).values() {
            tx.send_modify(|n| *n += 1);
        }
    }
}

impl Subscription {
    /// Waits for an announcement since the last wait (or since subscribing), at most `limit`.
    pub(crate) async fn wait(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.rx.changed()).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut waiters = self.wakeups.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // This subscription's receiver is still alive here, hence the 1.
        if waiters.get(&self.key).is_some_and(|tx| tx.receiver_count() <= 1) {
            waiters.remove(&self.key);
        }
    }
}

/// What code waiting outside a workflow reads from and is woken by: a runtime's database and
/// wake-ups, or a client's.
#[derive(Clone)]
pub(crate) struct Waiter {
    pub(crate) db: SystemDatabase,
    pub(crate) wakeups: Arc<Wakeups>,
    /// The longest wait between two reads.
    pub(crate) poll: Duration,
}

/// Time left until `deadline_ms` (epoch ms), capped at `poll`; `None` once it has passed.
pub(crate) fn next_wait(deadline_ms: i64, poll: Duration) -> Option<Duration> {
    let left = deadline_ms - crate::model::clock::now_ms();
    (left > 0).then(|| Duration::from_millis(left as u64).min(poll))
}

/// Epoch ms `timeout` from now (saturating).
pub(crate) fn deadline_after(timeout: Duration) -> i64 {
    crate::model::clock::now_ms().saturating_add(crate::model::clock::millis(timeout))
}

/// Runs a listener on `channels` until `stop`, handing each notification to `on_message` and
/// calling `on_reconnect` when the connection was re-established (notifications may have been
/// lost meanwhile). Subscribes before returning, so nothing announced afterwards is missed.
pub(crate) async fn listen(
    db: &SystemDatabase,
    channels: &[&'static str],
    stop: CancellationToken,
    tasks: &TaskTracker,
    on_message: impl Fn(&PgNotification) + Send + 'static,
    on_reconnect: impl Fn() + Send + 'static,
) -> crate::Result<()> {
    let mut listener = db.listener(channels).await?;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(n)) => on_message(&n),
                    Ok(None) => on_reconnect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return,
                        }
                    }
                },
            }
        }
    });
    Ok(())
}

/// The payload writers announce for (workflow or destination, key or topic).
pub(crate) fn payload(id: &str, key: &str) -> String {
    format!("{id}::{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivery_after_subscribing_wakes_and_unsubscribing_cleans_up() {
        let w = Arc::new(Wakeups::default());
        let mut sub = w.subscribe(EVENTS_CHANNEL, payload("wf", "k"));
        w.deliver(EVENTS_CHANNEL, "wf::other");
        w.deliver(EVENTS_CHANNEL, "wf::k");
        tokio::time::timeout(Duration::from_secs(5), sub.wait(Duration::from_secs(60)))
            .await
            .expect("the delivery before the wait is seen");
        drop(sub);
        assert!(w.waiters.lock().unwrap().is_empty());
    }
}
