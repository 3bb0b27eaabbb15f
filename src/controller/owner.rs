//! What the operator's replicas keep beyond any one of them (the run key's
//! Secret, the leader Lease) is owned by their Deployment, so uninstalling
//! the operator removes it. An upgrade keeps the Deployment, and with it
//! both; deleting and recreating the Deployment replaces both, and runs in
//! flight then can no longer report.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Why the operator's Deployment could not be made an owner.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The apiserver refused or failed.
    #[error(
        "could not read the operator's Deployment {namespace}/{name} (SMOLPAWS_DEPLOYMENT), which owns what its replicas share: {source}"
    )]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the apiserver said.
        source: kube::Error,
    },
    /// The apiserver's answer lacked the uid an owner reference needs.
    #[error("the operator's Deployment {namespace}/{name} came back without a uid")]
    NoUid {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// An owner reference to the operator's Deployment `name` in `namespace`.
pub async fn deployment(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, OwnerError> {
    let found = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| OwnerError::Read {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    found.owner_ref(&()).ok_or_else(|| OwnerError::NoUid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Makes `owner` the owner of `object` when it has none: an object made
/// before its owner was known (by an older operator) is adopted. Guarded by
/// the version read, so an owner set meanwhile is never replaced.
pub async fn adopt<K>(api: &Api<K>, object: &K, owner: &OwnerReference) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !object.owner_references().is_empty() {
        return Ok(());
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "ownerReferences": [owner],
        }
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
