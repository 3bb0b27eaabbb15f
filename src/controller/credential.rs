//! The run credential: how the result endpoint and the LLM gateway know a
//! request comes from the agent of the run it names. The credential is the
//! report token in the run's own Secret, presented as a bearer token (or,
//! the way Anthropic's clients send a key, as `x-api-key`).
//!
//! The namespace and name come from the URL, so they are checked as
//! Kubernetes names before they reach any apiserver path.

use axum::http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::api::AgentRun;
use crate::api::contract::env;
use crate::sandbox::secret::{secret_name, value};

/// A refused request: its status and what to tell the caller.
pub type Refusal = (StatusCode, String);

/// The credential `headers` present, if any.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    bearer.or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))
}

/// Whether `name` is a DNS-1123 label or subdomain, as Kubernetes names
/// and namespaces are: nothing that could reshape an apiserver path.
pub fn is_kubernetes_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The run `namespace/name`, when `headers` carry its credential.
pub async fn authenticate(
    client: &Client,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<AgentRun, Refusal> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            "a valid run credential is required".to_owned(),
        )
    };
    if !is_kubernetes_name(namespace) || !is_kubernetes_name(name) {
        return Err(unauthorized());
    }
    let Some(presented) = presented(headers) else {
        return Err(unauthorized());
    };
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), namespace);
    let run = match runs.get_opt(name).await {
        Ok(Some(run)) => run,
        // Not found and not allowed look alike to a caller without a token.
        Ok(None) => return Err(unauthorized()),
        Err(error) => return Err(unavailable(error)),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&secret_name(&run)).await {
        Ok(secret) => secret,
        Err(error) => return Err(unavailable(error)),
    };
    let Some(expected) = secret.as_ref().and_then(|s| value(s, env::REPORT_TOKEN)) else {
        return Err(unauthorized());
    };
    if !bool::from(expected.ct_eq(presented)) {
        warn!("refused a wrong run credential");
        return Err(unauthorized());
    }
    Ok(run)
}

/// The apiserver could not answer: the caller should try again.
pub fn unavailable(error: kube::Error) -> Refusal {
    warn!(%error, "the apiserver could not serve a sandbox's request");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the apiserver is unavailable now; try again".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::is_kubernetes_name;

    #[test]
    fn only_kubernetes_names_pass() {
        for good in ["default", "run-1", "a.b-c", "x"] {
            assert!(is_kubernetes_name(good), "{good}");
        }
        for bad in [
            "", "..", "../x", "a/b", "a%2Fb", "a?b", "A", "-a", "a-", "a..b",
        ] {
            assert!(!is_kubernetes_name(bad), "{bad}");
        }
    }
}
