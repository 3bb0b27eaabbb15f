//! The result endpoint: where a sandbox reports its agent's reply.
//!
//! `POST /v1/runs/{namespace}/{name}/result` with `Authorization: Bearer
//! <SMOLPAWS_REPORT_TOKEN>` and a JSON [`Report`]. The token is the one in the
//! run's own Secret, so a sandbox can report only for its own run; the
//! endpoint stores the reply in the run's status and nothing else. The
//! contract is written down in `docs/result-contract.md`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use super::status::FIELD_MANAGER;
use crate::api::contract::{MAX_REPORT_BYTES, RESULT_ROUTE, Report, env};
use crate::api::{AgentRun, RunResult};
use crate::sandbox::secret::{secret_name, value};

type Answer = (StatusCode, String);

/// The result endpoint's routes.
pub fn router(client: Client) -> Router {
    Router::new()
        .route(RESULT_ROUTE, post(report))
        .layer(RequestBodyLimitLayer::new(MAX_REPORT_BYTES))
        .layer(DefaultBodyLimit::disable())
        .route("/healthz", get(|| async { "ok" }))
        .layer(TraceLayer::new_for_http())
        .with_state(Arc::new(client))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Bearer ")
}

#[tracing::instrument(skip_all, fields(run = %format!("{namespace}/{name}")))]
async fn report(
    State(client): State<Arc<Client>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            "a valid report token is required".to_owned(),
        )
    };
    let Some(presented) = bearer(&headers) else {
        return unauthorized();
    };
    let runs: Api<AgentRun> = Api::namespaced(client.as_ref().clone(), &namespace);
    let run = match runs.get_opt(&name).await {
        Ok(Some(run)) => run,
        // Not found and not allowed look alike to a caller without a token.
        Ok(None) => return unauthorized(),
        Err(error) => return unavailable(error),
    };
    let secrets: Api<Secret> = Api::namespaced(client.as_ref().clone(), &namespace);
    let secret = match secrets.get_opt(&secret_name(&run)).await {
        Ok(secret) => secret,
        Err(error) => return unavailable(error),
    };
    let Some(expected) = secret.as_ref().and_then(|s| value(s, env::REPORT_TOKEN)) else {
        return unauthorized();
    };
    if !bool::from(expected.ct_eq(presented)) {
        warn!("refused a report with a wrong token");
        return unauthorized();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the report as application/json".into(),
        );
    }
    let report: Report = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the report is not valid: {error}"),
            );
        }
    };
    if run.phase().is_terminal() {
        return (
            StatusCode::CONFLICT,
            format!("the run already ended ({})", run.phase()),
        );
    }
    if run.status.as_ref().is_some_and(|s| s.result.is_some()) {
        return (
            StatusCode::CONFLICT,
            "the run's result was already reported".into(),
        );
    }
    match store(&runs, &name, report).await {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(error) => unavailable(error),
    }
}

/// Writes `report` into run `name`'s status.
pub async fn store(runs: &Api<AgentRun>, name: &str, report: Report) -> Result<(), kube::Error> {
    let result = RunResult::from(report);
    let patch = json!({ "status": { "result": result } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    runs.patch_status(name, &params, &Patch::Merge(&patch))
        .await?;
    info!(
        reply_bytes = result.reply.len(),
        "stored the agent's result"
    );
    Ok(())
}

fn unavailable(error: kube::Error) -> Answer {
    warn!(%error, "the apiserver could not serve a report");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the result could not be stored now; report again".into(),
    )
}
