//! The result endpoint: where a sandbox reports its agent's reply.
//!
//! `POST /v1/runs/{namespace}/{name}/result` with `Authorization: Bearer
//! <SMOLPAWS_REPORT_TOKEN>` and a JSON [`Report`]. The token is the run's
//! own credential (see [`super::credential`]), so a sandbox can report only
//! for its own run; the endpoint stores the reply in the run's status and
//! nothing else. The contract is written down in `docs/result-contract.md`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::info;

use super::change::stored;
use super::credential::{Refusal as Answer, RunAuth, unavailable};
use super::status::FIELD_MANAGER;
use crate::api::contract::{
    MAX_REPORT_BYTES, PROGRESS_ROUTE, Progress, RESULT_ROUTE, Report, SPEC_ROUTE,
};
use crate::api::{AgentRun, ChangeRef, RunResult};

/// The result endpoint's routes.
pub fn router(auth: Arc<RunAuth>) -> Router {
    Router::new()
        .route(RESULT_ROUTE, post(report))
        .route(SPEC_ROUTE, get(spec))
        .route(PROGRESS_ROUTE, post(progress))
        .layer(RequestBodyLimitLayer::new(MAX_REPORT_BYTES))
        .layer(DefaultBodyLimit::disable())
        .route("/healthz", get(|| async { "ok" }))
        .layer(TraceLayer::new_for_http())
        .with_state(auth)
}

/// The run's spec, for its own agent only.
#[tracing::instrument(skip_all, fields(run = %format!("{namespace}/{name}")))]
async fn spec(
    State(auth): State<Arc<RunAuth>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match auth.authenticate(&namespace, &name, &headers).await {
        Ok(run) => axum::Json(run.agent_spec()).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The run `namespace/name` and the JSON `what` its agent sent as `body`,
/// or the answer refusing them.
async fn sent<T: serde::de::DeserializeOwned>(
    auth: &RunAuth,
    (namespace, name): (&str, &str),
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(AgentRun, T), Answer> {
    let run = auth.authenticate(namespace, name, headers).await?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send the {what} as application/json"),
        ));
    }
    let parsed = serde_json::from_slice(body).map_err(|error| {
        (
            StatusCode::BAD_REQUEST,
            format!("the {what} is not valid: {error}"),
        )
    })?;
    Ok((run, parsed))
}

/// The agent's latest steps, kept in the run's status for its progress
/// comment. Last writer wins: steps are a view, not a record.
#[tracing::instrument(skip_all, fields(run = %format!("{namespace}/{name}")))]
async fn progress(
    State(auth): State<Arc<RunAuth>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let (run, progress): (_, Progress) =
        match sent(&auth, (&namespace, &name), &headers, &body, "progress").await {
            Ok(sent) => sent,
            Err(refusal) => return refusal,
        };
    if run.phase().is_terminal() || run.status.as_ref().is_some_and(|s| s.result.is_some()) {
        return (StatusCode::CONFLICT, "the run already reported".into());
    }
    let runs: Api<AgentRun> = Api::namespaced(auth.client().clone(), &namespace);
    let patch = json!({ "status": { "progress": { "steps": progress.tidy() } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match runs
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => (StatusCode::NO_CONTENT, String::new()),
        Err(error) => unavailable(error),
    }
}

#[tracing::instrument(skip_all, fields(run = %format!("{namespace}/{name}")))]
async fn report(
    State(auth): State<Arc<RunAuth>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let (run, report): (_, Report) =
        match sent(&auth, (&namespace, &name), &headers, &body, "report").await {
            Ok(sent) => sent,
            Err(refusal) => return refusal,
        };
    let runs: Api<AgentRun> = Api::namespaced(auth.client().clone(), &namespace);
    let mut run = run;
    // The controller writes the status too (the run starting, say): a
    // conflict means the run changed since it was read, and the decision
    // is made again on what it is now.
    for _ in 0..STORE_ATTEMPTS {
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
        match store(&runs, &run, report.clone()).await {
            Ok(()) => return (StatusCode::NO_CONTENT, String::new()),
            Err(kube::Error::Api(status)) if status.is_conflict() => {}
            Err(error) => return unavailable(error),
        }
        let uid = run.metadata.uid.clone();
        run = match runs.get(&name).await {
            Ok(run) => run,
            Err(error) => return unavailable(error),
        };
        // Recreated under the same name: the credential was the old run's.
        if run.metadata.uid != uid {
            return (
                StatusCode::CONFLICT,
                "the run this credential belongs to is gone".into(),
            );
        }
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the run kept changing while the result was stored; report again".into(),
    )
}

/// Attempts at storing a report on a run that keeps changing under it.
const STORE_ATTEMPTS: usize = 5;

/// Writes `report` into `run`'s status, on the resourceVersion it was read
/// at: a run that ended meanwhile refuses it with a conflict. Its change's
/// bundle is kept first, in the run's change Secret; one that cannot be
/// taken is recorded as refused, and the reply is stored all the same.
pub async fn store(
    runs: &Api<AgentRun>,
    run: &AgentRun,
    mut report: Report,
) -> Result<(), kube::Error> {
    let change = report.change.take();
    let mut result = RunResult::from(report);
    if let Some(change) = change {
        let (sha256, refused) = match change.decode() {
            Ok(bundle) => {
                let secrets = Api::namespaced(
                    runs.clone().into_client(),
                    &run.namespace().unwrap_or_default(),
                );
                let sha256 = stored::digest(&bundle);
                stored::keep(&secrets, run, bundle).await?;
                (Some(sha256), None)
            }
            Err(reason) => (None, Some(reason)),
        };
        result.change = Some(ChangeRef {
            base: change.base,
            sha256,
            refused,
        });
    }
    let patch = json!({
        "metadata": { "resourceVersion": run.metadata.resource_version },
        "status": { "result": result },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    runs.patch_status(&run.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    info!(
        reply_bytes = result.reply.len(),
        "stored the agent's result"
    );
    Ok(())
}
