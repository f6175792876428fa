//! Leader election with a coordination.k8s.io Lease, so several operator replicas are safe:
//! only the holder runs the controllers; the others stand by and take over when the lease
//! expires or is released. A replica that loses the lease stops its controllers and stands by
//! again. On shutdown the lease is released, so a restarted or upgraded operator takes over at
//! once instead of waiting for it to expire.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::names::{FIELD_MANAGER, LEASE_NAME};

/// Seconds a lease is valid without renewal.
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
pub const RENEW_GRACE_SECONDS: u64 = 5;

async fn manager(kube: &kube::Client, namespace: &str, identity: &str, stop: &CancellationToken) -> Option<LeaseManager> {
    let mut delay = Duration::from_secs(1);
    loop {
        let built = LeaseManagerBuilder::new(kube.clone(), LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(RENEW_GRACE_SECONDS)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await;
        match built {
            Ok(m) => return Some(m),
            Err(e) => {
                tracing::error!(
                    error = %e, namespace, lease = LEASE_NAME,
                    "cannot use the leader-election Lease (does the namespace exist, and may this \
                     service account get, create and patch leases there?); retrying"
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs `work` whenever this replica leads, until `stop` is cancelled.
pub async fn lead<F, Fut>(kube: kube::Client, namespace: &str, identity: &str, metrics: &Metrics, stop: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(manager) = manager(&kube, namespace, identity, &stop).await else { return };
    let (mut leading, task) = manager.watch().await;
    tracing::info!(identity, namespace, lease = LEASE_NAME, "waiting for leadership");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        tracing::info!(identity, "became the leader; starting controllers");
        metrics.leader.set(1);
        let lost = tokio::select! {
            _ = stop.cancelled() => false,
            r = leading.wait_for(|l| !*l) => r.is_ok(),
            _ = work() => false,
        };
        metrics.leader.set(0);
        if !lost {
            break;
        }
        tracing::warn!(identity, "lost the lease; controllers stopped, standing by");
    }
    drop(leading);
    match task.await {
        Ok(Ok(_)) => tracing::info!(identity, "released the lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "failed to release the lease; it expires in {LEASE_SECONDS} s"),
        Err(e) => tracing::warn!(error = %e, "lease task failed"),
    }
}
