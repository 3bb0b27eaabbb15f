//! Where a run's bundle waits between the agent's report and the push: a
//! Secret owned by the run, `<run>-change`. A status could not hold it (an
//! object is at most 1.5 MiB, and the reply may take 1 MiB); a Secret is
//! what the controller already makes and reads by name, and the change may
//! hold private code.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};

use crate::api::AgentRun;
use crate::sandbox::owned::{self, is_owned_by};
use crate::sandbox::secret::value;

const KEY: &str = "bundle";

/// The name of a run's change Secret.
pub fn name(run: &AgentRun) -> String {
    format!("{}-change", owned::run_name(run))
}

/// The hex SHA-256 of `bundle`, which the status records.
pub fn digest(bundle: &[u8]) -> String {
    hex::encode(Sha256::digest(bundle))
}

/// Keeps `bundle` for `run`. A Secret left by an earlier report that was
/// never stored (the status refused it) is replaced: only the stored
/// result's digest decides which bundle is pushed.
pub async fn keep(
    secrets: &Api<Secret>,
    run: &AgentRun,
    bundle: Vec<u8>,
) -> Result<(), kube::Error> {
    let secret = Secret {
        metadata: owned::metadata(run, name(run)),
        data: Some([(KEY.to_owned(), ByteString(bundle))].into()),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            secrets.delete(&name(run), &DeleteParams::default()).await?;
            secrets.create(&PostParams::default(), &secret).await?;
            Ok(())
        }
        other => other.map(drop),
    }
}

/// The bundle kept for `run`, when its Secret exists, belongs to the run
/// and holds the bundle whose digest is `sha256`.
pub async fn load(
    secrets: &Api<Secret>,
    run: &AgentRun,
    sha256: &str,
) -> Result<Option<Vec<u8>>, kube::Error> {
    let Some(secret) = secrets.get_opt(&name(run)).await? else {
        return Ok(None);
    };
    if !is_owned_by(&secret.metadata, run) {
        return Ok(None);
    }
    Ok(value(&secret, KEY)
        .filter(|bundle| digest(bundle) == sha256)
        .map(<[u8]>::to_vec))
}
