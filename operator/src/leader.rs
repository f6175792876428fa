//! Leader election with a coordination.k8s.io Lease, so several operator replicas are safe:
//! only the holder runs the controllers; the others stand by and take over when the lease
//! expires or is released. A replica that loses the lease stops its controllers and stands by
//! again. On shutdown the lease is released, so a restarted or upgraded operator takes over at
//! once instead of waiting for it to expire.
//!
//! Invariant: a leader that cannot renew its Lease stops acting before another replica may take
//! over. The lease manager keeps reporting leadership while renewals fail (it only logs and
//! retries), so a watchdog reads the Lease itself: the controllers stop once the last renewal
//! it saw is within `STEP_DOWN_MARGIN_SECONDS` of expiring, and resume when a renewal shows up.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::names::{FIELD_MANAGER, LEASE_NAME};

/// Seconds a lease is valid without renewal.
pub const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews (every 5 s with a 15 s lease).
pub const RENEW_GRACE_SECONDS: u64 = 10;
/// Seconds before its Lease expires that a leader which could not renew it stops acting: it
/// acts until 10 s after its last renewal seen, which leaves 5 s for the next renewal (due at
/// 5 s) to be written and seen, and 5 s before another replica may take over.
pub const STEP_DOWN_MARGIN_SECONDS: i64 = 5;

/// Whether a leader whose last renewal seen is `renewed` (epoch ms, our clock: we wrote it)
/// may still act at `now`.
pub fn may_act(renewed_ms: Option<i64>, now_ms: i64) -> bool {
    renewed_ms.is_some_and(|r| now_ms < r + (LEASE_SECONDS as i64 - STEP_DOWN_MARGIN_SECONDS) * 1000)
}

/// The renewal time of the Lease if `identity` holds it; `None` if another does or it cannot
/// be read.
async fn own_renewal(leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>, identity: &str) -> Result<Option<i64>, kube::Error> {
    let lease = leases.get(LEASE_NAME).await?;
    let spec = lease.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(None);
    }
    Ok(spec.renew_time.or(spec.acquire_time).map(|t| t.0.as_millisecond()))
}

/// What the Lease last showed this replica.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// It named this replica as holder.
    mine: bool,
    /// The newest renewal (or acquisition) time it showed for this replica, epoch ms.
    renewed_ms: Option<i64>,
}

/// Reads the Lease every second (each read may take up to 5 s) and records what it shows, until
/// `stop`. Decoupled from the decision so a slow read never delays a step-down.
async fn watch_lease(kube: kube::Client, namespace: String, identity: String, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kube, &namespace);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), own_renewal(&leases, &identity)).await {
            Ok(Ok(Some(r))) => {
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                s.mine = true;
                s.renewed_ms = Some(s.renewed_ms.map_or(r, |old| old.max(r)));
            }
            Ok(Ok(None)) => seen.lock().unwrap_or_else(|p| p.into_inner()).mine = false,
            Ok(Err(e)) => tracing::warn!(identity, error = %e, "cannot read the leader Lease"),
            Err(_) => tracing::warn!(identity, "reading the leader Lease timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Whether the Lease, as last seen, lets this replica act now.
fn lease_allows(seen: &Mutex<Seen>) -> bool {
    let s = *seen.lock().unwrap_or_else(|p| p.into_inner());
    s.mine && may_act(s.renewed_ms, chrono::Utc::now().timestamp_millis())
}

/// Resolves when this replica must stop acting: the Lease shows another holder, or no renewal
/// has been seen for too long (the API is unreachable, or renewals are refused).
async fn watchdog(seen: &Mutex<Seen>, identity: &str) {
    loop {
        if !lease_allows(seen) {
            tracing::warn!(identity, "the leader Lease was not renewed in time (or names another holder); stepping down before it expires");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn manager(kube: &kube::Client, namespace: &str, identity: &str, stop: &CancellationToken) -> Option<LeaseManager> {
    let mut delays = crate::retry::delays();
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
            _ = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(30))) => {}
        }
    }
}

/// Makes Deployment `owner` (of `namespace`) an owner of the Lease, so the garbage collector
/// deletes the Lease with the Deployment. Not fatal: a Lease left behind only costs an object.
async fn own_lease(kube: &kube::Client, namespace: &str, owner: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let deployment = kube::Api::<Deployment>::namespaced(kube.clone(), namespace).get(owner).await?;
    let uid = deployment.metadata.uid.unwrap_or_default();
    let leases = kube::Api::<Lease>::namespaced(kube.clone(), namespace);
    let lease = leases.get(LEASE_NAME).await?;
    if lease.metadata.owner_references.iter().flatten().any(|o| o.uid == uid) {
        return Ok(());
    }
    let reference =
        OwnerReference { api_version: "apps/v1".into(), kind: "Deployment".into(), name: owner.to_string(), uid, ..Default::default() };
    let patch = serde_json::json!({"metadata": {"ownerReferences": [reference]}});
    leases.patch(LEASE_NAME, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    Ok(())
}

/// Runs `work` whenever this replica leads, until `stop` is cancelled. With `owner`, the
/// leader makes that Deployment the Lease's owner (see [`own_lease`]).
pub async fn lead<F, Fut>(
    kube: kube::Client,
    namespace: &str,
    identity: &str,
    owner: Option<&str>,
    metrics: &Metrics,
    stop: CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(manager) = manager(&kube, namespace, identity, &stop).await else { return };
    let (mut leading, task) = manager.watch().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watching = CancellationToken::new();
    tokio::spawn(watch_lease(kube.clone(), namespace.to_string(), identity.to_string(), seen.clone(), watching.clone()));
    tracing::info!(identity, namespace, lease = LEASE_NAME, "waiting for leadership");
    'terms: loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        // Act only on a renewal the Lease shows (within a second of winning it, normally):
        // the manager keeps claiming leadership while its renewals fail.
        while !lease_allows(&seen) {
            tokio::select! {
                _ = stop.cancelled() => break 'terms,
                r = leading.wait_for(|l| !*l) => if r.is_err() { break 'terms } else { continue 'terms },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        if let Some(owner) = owner {
            if let Err(e) = own_lease(&kube, namespace, owner).await {
                tracing::warn!(error = %e, deployment = owner, "cannot make the operator's Deployment the Lease's owner; the Lease may outlive an uninstall");
            }
        }
        tracing::info!(identity, "leading; starting controllers");
        metrics.leader.set(1);
        let lost = tokio::select! {
            _ = stop.cancelled() => false,
            r = leading.wait_for(|l| !*l) => r.is_ok(),
            _ = watchdog(&seen, identity) => true,
            _ = work() => false,
        };
        metrics.leader.set(0);
        if !lost {
            break;
        }
        tracing::warn!(identity, "lost the lease; controllers stopped, standing by");
    }
    watching.cancel();
    drop(leading);
    match task.await {
        Ok(Ok(_)) => tracing::info!(identity, "released the lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "failed to release the lease; it expires in {LEASE_SECONDS} s"),
        Err(e) => tracing::warn!(error = %e, "lease task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_before_its_lease_can_expire() {
        let renewed = 1_000_000;
        assert!(may_act(Some(renewed), renewed));
        assert!(may_act(Some(renewed), renewed + 9_999));
        // Others may take over at renewed + 15 s; this one stops 5 s before, and 5 s after the
        // next renewal was due.
        assert!(!may_act(Some(renewed), renewed + 10_000));
        assert!(((LEASE_SECONDS - RENEW_GRACE_SECONDS) as i64) * 1000 + 5_000 <= 10_000);
        assert!(!may_act(None, renewed));
    }
}
