//! The run credential: how the result endpoint and the LLM gateway know a
//! request comes from the agent of the run it names. The agent presents the
//! credential from its run's Secret as a bearer token (or, the way
//! Anthropic's clients send a key, as `x-api-key`); it is checked against
//! the operator's [`RunKey`] before the apiserver hears of the request.
//!
//! The namespace and name come from the URL, so they are checked as
//! Kubernetes names before they reach any apiserver path.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use governor::Quota;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::warn;

use super::run_key::RunKey;
use crate::api::AgentRun;
use crate::keyed_limit::KeyedLimit;

/// Calls one run may make per second, sustained: an agent reports once,
/// fetches its spec once and asks the LLM one step at a time.
const CALLS_PER_SECOND: NonZeroU32 = NonZeroU32::new(10).expect("non-zero");

/// Calls one run may make in a burst, after a quiet spell.
const CALL_BURST: NonZeroU32 = NonZeroU32::new(60).expect("non-zero");

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

/// Checks run credentials and paces each run's calls.
pub struct RunAuth {
    client: Client,
    key: Arc<RunKey>,
    calls: KeyedLimit,
}

impl RunAuth {
    /// Checks credentials made with `key`, reading runs through `client`.
    pub fn new(client: Client, key: Arc<RunKey>) -> Self {
        let quota = Quota::per_second(CALLS_PER_SECOND).allow_burst(CALL_BURST);
        Self {
            client,
            key,
            calls: KeyedLimit::new(quota),
        }
    }

    /// The Kubernetes client runs are read through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The run `namespace/name`, when `headers` carry its credential. The
    /// credential is checked first, so a caller without one costs no
    /// apiserver call; the run's uid must then match the credential's, so a
    /// run deleted and made again under the same name is not opened by
    /// the old one's.
    pub async fn authenticate(
        &self,
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
        let Some(uid) = self.key.verify(namespace, name, presented) else {
            warn!("refused a wrong run credential");
            return Err(unauthorized());
        };
        if !self.calls.admit(format!("{namespace}/{name}")) {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!("this run calls more than {CALLS_PER_SECOND} times a second; slow down"),
            ));
        }
        let runs: Api<AgentRun> = Api::namespaced(self.client.clone(), namespace);
        match runs.get_opt(name).await {
            Ok(Some(run)) if run.uid().as_deref() == Some(uid) => Ok(run),
            // Gone, or another run under the same name: the credential
            // opens nothing.
            Ok(_) => Err(unauthorized()),
            Err(error) => Err(unavailable(error)),
        }
    }
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
    use std::time::Duration;

    use axum::http::HeaderValue;
    use http::{Request, Response};
    use kube::client::Body;
    use secrecy::ExposeSecret;

    use super::*;
    use crate::api::{Phase, fixtures};

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[tokio::test]
    async fn only_a_valid_credential_reaches_the_apiserver() {
        let (service, mut apiserver) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let key = Arc::new(RunKey::new([3; 32]));
        let auth = RunAuth::new(Client::new(service, "ns"), key.clone());
        let mut run = fixtures::run("a", "o/r", Phase::Running);
        run.metadata.uid = Some("u-1".into());
        let credential = key.credential(&run).expect("a stored run");

        let (uid, _) = credential.expose_secret().split_once('.').expect("uid.mac");
        let forged = format!("{uid}.{}", "0".repeat(64));
        for (namespace, name, headers) in [
            ("ns", "a", bearer(&forged)),
            ("ns", "b", bearer(credential.expose_secret())),
            ("ns", "..%2Fsecrets", bearer(credential.expose_secret())),
            ("ns", "a", HeaderMap::new()),
        ] {
            let refused = auth.authenticate(namespace, name, &headers).await;
            assert_eq!(
                refused.map(|_| ()).map_err(|(status, _)| status),
                Err(StatusCode::UNAUTHORIZED),
                "{namespace}/{name}"
            );
        }
        let asked = tokio::time::timeout(Duration::from_millis(50), apiserver.next_request()).await;
        assert!(asked.is_err(), "a refused caller made the apiserver work");

        let answer = tokio::spawn(async move {
            let (request, respond) = apiserver.next_request().await.expect("one request");
            let body = serde_json::to_vec(&run).expect("JSON");
            respond.send_response(Response::new(Body::from(body)));
            request.uri().path().to_owned()
        });
        let headers = bearer(credential.expose_secret());
        let opened = auth.authenticate("ns", "a", &headers).await;
        assert_eq!(opened.map(|run| run.name_any()), Ok("a".to_owned()));
        assert_eq!(
            answer.await.expect("the apiserver task"),
            "/apis/smolpaws.dev/v1alpha1/namespaces/ns/agentruns/a"
        );
    }

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
