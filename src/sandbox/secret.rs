//! The per-run Secret: the credentials the run's agent gets, minted once
//! per run and owned by it. Every backend reads the agent's secrets from
//! it; the pod spec only refers to it.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use secrecy::{ExposeSecret, SecretString};

use super::owned;
use crate::api::AgentRun;
use crate::api::contract::env;

/// The name of a run's Secret.
pub fn secret_name(run: &AgentRun) -> String {
    format!("{}-run", owned::run_name(run))
}

/// The credentials of one run.
pub struct RunCredentials {
    /// The repository-scoped GitHub token, when GitHub is configured.
    pub github_token: Option<SecretString>,
    /// The run credential: the agent presents it to report its result and
    /// to call the LLM gateway.
    pub report_token: SecretString,
}

/// The per-run Secret, owned by the run; absent credentials are absent keys.
pub fn secret(run: &AgentRun, credentials: &RunCredentials) -> Secret {
    let entries = [
        (env::GITHUB_TOKEN, credentials.github_token.as_ref()),
        (env::REPORT_TOKEN, Some(&credentials.report_token)),
    ];
    let data = entries
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value?.expose_secret().as_bytes().to_vec();
            Some((key.to_owned(), ByteString(value)))
        })
        .collect();
    Secret {
        metadata: owned::metadata(run, secret_name(run)),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The value of `key` in `secret`, if it holds one.
pub fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|v| v.0.as_slice())
}
