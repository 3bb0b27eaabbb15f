//! The `POST /webhooks/github` handler.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use kube::api::PostParams;
use tracing::{Span, field, info, warn};

use super::delivery::{self, Decision};
use super::metrics::Outcome;
use super::signature::Verifier;
use super::{Intake, STORE_TIMEOUT};

type Answer = (StatusCode, String);

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
}

/// Times every webhook request, whatever its answer.
pub(super) async fn record_latency(
    State(intake): State<Arc<Intake>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    intake
        .metrics
        .observe_latency(started.elapsed().as_secs_f64());
    response
}

/// The body, its signature checked as it arrives. Its chunks are kept as
/// they came and joined only once the signature holds, so a refused
/// delivery costs no copy of its body.
async fn read_signed(body: Body, mut verifier: Verifier) -> Result<Bytes, (Outcome, Answer)> {
    let collected = body
        .map_frame(|frame| {
            if let Some(chunk) = frame.data_ref() {
                verifier.update(chunk);
            }
            frame
        })
        .collect()
        .await
        .map_err(|error| {
            let over = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over {
                (
                    Outcome::Invalid,
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is over the intake's limit".into(),
                    ),
                )
            } else {
                (
                    Outcome::Invalid,
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the body could not be read: {error}"),
                    ),
                )
            }
        })?;
    if let Err(error) = verifier.finish() {
        warn!(%error, "refused a wrongly signed delivery");
        return Err((
            Outcome::BadSignature,
            (StatusCode::UNAUTHORIZED, error.to_string()),
        ));
    }
    Ok(collected.to_bytes())
}

#[tracing::instrument(name = "delivery", skip_all, fields(delivery = field::Empty, event = field::Empty))]
pub(super) async fn webhook(State(intake): State<Arc<Intake>>, request: Request) -> Answer {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    // Without a well-formed signature nothing of the body is read.
    let verifier = match intake.secrets.verifier(signature) {
        Ok(verifier) => verifier,
        Err(error) => {
            warn!(%error, "refused an unsigned delivery");
            intake.metrics.delivery(None, Outcome::BadSignature);
            return (StatusCode::UNAUTHORIZED, error.to_string());
        }
    };
    // The whole body within the deadline: a client trickling bytes holds
    // a place for this long at most, however slowly it sends.
    let reading = read_signed(body, verifier);
    let body = match tokio::time::timeout(intake.limits.body_timeout, reading).await {
        Ok(Ok(body)) => body,
        Ok(Err((outcome, answer))) => {
            intake.metrics.delivery(None, outcome);
            return answer;
        }
        Err(_) => {
            intake.metrics.delivery(None, Outcome::Invalid);
            return (
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time".into(),
            );
        }
    };
    let event = header_str(&headers, "x-github-event");
    let delivery = header_str(&headers, "x-github-delivery");
    let span = Span::current();
    if let Some(delivery) = delivery {
        span.record("delivery", delivery);
    }
    if let Some(event) = event {
        span.record("event", event);
    }
    let (outcome, answer) = handle(&intake, &headers, event, delivery, &body).await;
    intake.metrics.delivery(event, outcome);
    answer
}

async fn handle(
    intake: &Intake,
    headers: &HeaderMap,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
) -> (Outcome, Answer) {
    let invalid = |message: String| {
        warn!(%message, "refused an invalid delivery");
        (Outcome::Invalid, (StatusCode::BAD_REQUEST, message))
    };
    let Some(event) = event else {
        return invalid("the X-GitHub-Event header is missing".into());
    };
    let Some(delivery) = delivery else {
        return invalid("the X-GitHub-Delivery header is missing".into());
    };
    let json = header_str(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json {
        return invalid(
            "the body must be application/json: set the webhook's content type to JSON in the GitHub App".into(),
        );
    }

    let run = match delivery::decide(
        &intake.rules,
        event,
        delivery,
        body,
        std::time::SystemTime::now(),
    ) {
        Err(error) => return invalid(error.to_string()),
        Ok(Decision::Pong) => {
            info!("answered a ping");
            return (Outcome::Ignored, (StatusCode::OK, "pong".into()));
        }
        Ok(Decision::Ignored(reason)) => {
            info!(%reason, "ignored");
            return (
                Outcome::Ignored,
                (StatusCode::OK, format!("ignored: {reason}")),
            );
        }
        Ok(Decision::Denied(denial)) => {
            warn!(reason = %denial, "denied by policy");
            return (
                Outcome::Denied,
                (StatusCode::OK, format!("denied: {denial}")),
            );
        }
        Ok(Decision::Run(run)) => run,
    };
    let author = run
        .spec
        .github
        .comment
        .as_ref()
        .map_or("", |c| c.author.as_str());
    let name = run.metadata.name.clone().unwrap_or_default();
    let repo = &run.spec.github.repository;
    if let Err(throttled) = intake.throttle.admit(author, repo) {
        // A redelivery of a comment whose run exists is a duplicate, not a
        // new run: it is never refused for a rate it does not add to.
        let exists = tokio::time::timeout(STORE_TIMEOUT, intake.runs.get_metadata_opt(&name)).await;
        if let Ok(Ok(Some(_))) = exists {
            info!(run = %name, %repo, "duplicate delivery; the run exists");
            return duplicate(&name);
        }
        warn!(reason = %throttled, "throttled");
        return (
            Outcome::Throttled,
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!("throttled: {throttled}"),
            ),
        );
    }

    let stored = tokio::time::timeout(
        STORE_TIMEOUT,
        intake.runs.create(&PostParams::default(), &run),
    )
    .await;
    match stored {
        Ok(Ok(_)) => {
            info!(run = %name, %repo, "accepted");
            (
                Outcome::Accepted,
                (StatusCode::ACCEPTED, format!("accepted: agentrun {name}")),
            )
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
            info!(run = %name, %repo, "duplicate delivery; the run exists");
            duplicate(&name)
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 422 => invalid(format!(
            "the payload does not make a valid AgentRun: {}",
            status.message
        )),
        Ok(Err(error)) => {
            warn!(run = %name, %error, "could not store the run");
            (
                Outcome::Unavailable,
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the run could not be stored; redeliver later".into(),
                ),
            )
        }
        Err(_) => {
            warn!(run = %name, "the apiserver did not answer in {STORE_TIMEOUT:?}");
            (
                Outcome::Unavailable,
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the run could not be stored in time; redeliver later".into(),
                ),
            )
        }
    }
}

/// The answer to a delivery whose run exists already.
fn duplicate(name: &str) -> (Outcome, (StatusCode, String)) {
    (
        Outcome::Duplicate,
        (StatusCode::OK, format!("duplicate: agentrun {name} exists")),
    )
}
