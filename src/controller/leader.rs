//! Leader election: only the replica holding the `smolpaws-controller`
//! Lease reconciles, so two replicas never act on one run at once.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::ControllerMetrics;
use super::owner;
use super::run_key::RunKey;
use super::{ControllerConfig, ControllerParts, LeaseConfig};

/// The Lease's name.
const LEASE_NAME: &str = "smolpaws-controller";

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or written.
    #[error("leader election failed: {0}")]
    Lease(#[from] LeaseManagerError),
    /// Another replica took the Lease.
    #[error("lost the leader Lease; exiting so that this replica restarts as a follower")]
    Lost,
}

/// Runs the controller while this replica holds the leader Lease; returns
/// when `stop` is cancelled, or with [`LeaderError::Lost`] when another
/// replica takes over (the process should then exit).
pub async fn lead(
    client: kube::Client,
    config: &ControllerConfig,
    lease: &LeaseConfig,
    parts: ControllerParts,
    key: Arc<RunKey>,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) -> Result<(), LeaderError> {
    let namespace = lease
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = lease.identity.clone().unwrap_or_else(crate::random::token);
    let seconds = lease.duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .build()
        .await?;
    let (mut leading, lease) = manager.watch().await;
    info!(%namespace, %identity, "waiting to become the leader");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return Err(LeaderError::Lost) },
            () = stop.cancelled() => return Ok(()),
        }
    }
    info!(%identity, "leading: reconciling AgentRuns");
    if let Some(deployment) = &config.deployment {
        own_lease(&client, &namespace, deployment).await;
    }
    let lost = async {
        loop {
            if leading.changed().await.is_err() || !*leading.borrow_and_update() {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        () = super::run(client, config, parts, key, metrics, stop.clone().cancelled_owned()) => Ok(()),
        () = lost => Err(LeaderError::Lost),
    };
    // Dropping the watch lets the lease manager release the Lease.
    drop(leading);
    let _ = lease.await;
    outcome
}

/// Makes the operator's Deployment own the Lease (the lease manager makes
/// it without one), so uninstalling removes it. A failure leaves only a
/// Lease behind, so it is logged and leading goes on.
async fn own_lease(client: &kube::Client, namespace: &str, deployment: &str) {
    let owned = async {
        let owner = owner::deployment(client, namespace, deployment)
            .await
            .map_err(|e| e.to_string())?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let lease = leases.get(LEASE_NAME).await.map_err(|e| e.to_string())?;
        owner::adopt(&leases, &lease, &owner)
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(error) = owned.await {
        warn!(%error, "could not make the operator's Deployment own the leader Lease");
    }
}
