//! The key run credentials are made from. A run's credential is its uid and
//! an HMAC of its namespace, name and uid under this key, so the result
//! endpoint and the LLM gateway check it before any apiserver call: a
//! caller without one cannot make the operator look anything up.
//!
//! Every replica must hold the same key, and a restart must keep it, or live
//! runs could no longer report. It lives in a Secret in the operator's
//! namespace, made by whichever replica starts first and owned by the
//! operator's Deployment, so that uninstalling the operator removes it.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams, ResourceExt};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

use super::owner::{self, OwnerError};
use crate::api::AgentRun;

/// The Secret holding the key.
pub const SECRET_NAME: &str = "smolpaws-run-key";
const KEY_FIELD: &str = "key";
const KEY_BYTES: usize = 32;

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RunKeyError {
    /// The apiserver refused or failed.
    #[error("could not read or create the Secret {namespace}/{SECRET_NAME}: {source}")]
    Apiserver {
        /// Where it was looked for.
        namespace: String,
        /// What the apiserver said.
        source: kube::Error,
    },
    /// The operator's Deployment, which owns the Secret, could not be had.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// The Secret exists but holds no usable key.
    #[error(
        "the Secret {namespace}/{SECRET_NAME} has no {KEY_BYTES}-byte `{KEY_FIELD}`; delete it and restart to make a new one"
    )]
    Malformed {
        /// Where it was found.
        namespace: String,
    },
}

/// The operator's key for run credentials.
pub struct RunKey(SecretBox<[u8; KEY_BYTES]>);

impl RunKey {
    /// A key from `bytes`.
    pub fn new(bytes: [u8; KEY_BYTES]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Self::new(bytes)
    }

    /// The key every replica in `namespace` shares: read from its Secret,
    /// which the first replica to start creates, owned by `deployment` (the
    /// operator's, in `namespace`) when named; a Secret an older operator
    /// made without one is adopted.
    pub async fn shared(
        client: &Client,
        namespace: &str,
        deployment: Option<&str>,
    ) -> Result<Self, RunKeyError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let failed = |source| RunKeyError::Apiserver {
            namespace: namespace.to_owned(),
            source,
        };
        let owner = match deployment {
            Some(name) => Some(owner::deployment(client, namespace, name).await?),
            None => None,
        };
        let found = match secrets.get_opt(SECRET_NAME).await.map_err(failed)? {
            Some(found) => {
                if let Some(owner) = &owner {
                    owner::adopt(&secrets, &found, owner)
                        .await
                        .map_err(failed)?;
                }
                found
            }
            None => {
                let fresh = Self::generate();
                match secrets
                    .create(&PostParams::default(), &fresh.secret(owner))
                    .await
                {
                    Ok(_) => return Ok(fresh),
                    // Another replica made it first: theirs is the key.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => {
                        secrets.get(SECRET_NAME).await.map_err(failed)?
                    }
                    Err(error) => return Err(failed(error)),
                }
            }
        };
        found
            .data
            .as_ref()
            .and_then(|data| data.get(KEY_FIELD))
            .and_then(|value| <[u8; KEY_BYTES]>::try_from(value.0.as_slice()).ok())
            .map(Self::new)
            .ok_or_else(|| RunKeyError::Malformed {
                namespace: namespace.to_owned(),
            })
    }

    fn secret(&self, owner: Option<OwnerReference>) -> Secret {
        let data = BTreeMap::from([(
            KEY_FIELD.to_owned(),
            ByteString(self.0.expose_secret().to_vec()),
        )]);
        Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "smolpaws".to_owned(),
                )])),
                owner_references: owner.map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            immutable: Some(true),
            type_: Some("Opaque".into()),
            ..Secret::default()
        }
    }

    fn mac(&self, namespace: &str, name: &str, uid: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        // Names hold no newline, so the fields cannot run into each other.
        for field in [namespace, name, uid] {
            mac.update(field.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The credential of `run`: its uid and the HMAC binding it to the run's
    /// namespace and name. None for a run the apiserver has not stored yet.
    pub fn credential(&self, run: &AgentRun) -> Option<SecretString> {
        let uid = run.uid()?;
        let namespace = run.namespace()?;
        let mac = self.mac(&namespace, &run.name_any(), &uid).finalize();
        Some(SecretString::from(format!(
            "{uid}.{}",
            hex::encode(mac.into_bytes())
        )))
    }

    /// The uid of the run `namespace/name` when `presented` is its
    /// credential; compared in constant time.
    pub fn verify<'a>(&self, namespace: &str, name: &str, presented: &'a [u8]) -> Option<&'a str> {
        let presented = std::str::from_utf8(presented).ok()?;
        let (uid, mac) = presented.split_once('.')?;
        let mac = hex::decode(mac).ok()?;
        self.mac(namespace, name, uid).verify_slice(&mac).ok()?;
        Some(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Phase, fixtures};

    fn run(namespace: &str, name: &str, uid: &str) -> AgentRun {
        let mut run = fixtures::run(name, "o/r", Phase::Running);
        run.metadata.namespace = Some(namespace.into());
        run.metadata.uid = Some(uid.into());
        run
    }

    #[test]
    fn a_credential_opens_its_own_run_only() {
        let key = RunKey::generate();
        let credential = key.credential(&run("ns", "a", "u-1")).expect("stored run");
        let presented = credential.expose_secret().as_bytes();
        assert_eq!(key.verify("ns", "a", presented), Some("u-1"));
        assert_eq!(key.verify("ns", "b", presented), None, "another name");
        assert_eq!(
            key.verify("other", "a", presented),
            None,
            "another namespace"
        );
        assert_eq!(
            RunKey::generate().verify("ns", "a", presented),
            None,
            "another operator's key"
        );
    }

    #[test]
    fn a_forged_or_malformed_credential_opens_nothing() {
        let key = RunKey::generate();
        let real = key.credential(&run("ns", "a", "u-1")).expect("stored run");
        let real = real.expose_secret();
        let (_, mac) = real.split_once('.').expect("uid.mac");
        let swapped = format!("u-2.{mac}");
        for forged in [
            swapped.as_str(),
            "",
            ".",
            "u-1",
            "u-1.",
            "u-1.zz",
            &real[..real.len() - 2],
        ] {
            assert_eq!(key.verify("ns", "a", forged.as_bytes()), None, "{forged:?}");
        }
        assert_eq!(key.verify("ns", "a", &[0xff, b'.', b'0']), None);
    }

    #[test]
    fn a_run_the_apiserver_has_not_stored_has_no_credential() {
        let mut unstored = run("ns", "a", "u-1");
        unstored.metadata.uid = None;
        assert!(RunKey::generate().credential(&unstored).is_none());
    }
}
