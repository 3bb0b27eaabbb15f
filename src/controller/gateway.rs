//! The LLM gateway: sandboxes call the LLM here, never the provider. The
//! provider's key stays in the operator; a sandbox holds only its run
//! credential, which opens the gateway while its run is live and within
//! its budget.
//!
//! `POST /v1/runs/{namespace}/{name}/llm/chat/completions` (OpenAI and
//! every compatible server) and `.../llm/messages` (Anthropic) are forwarded
//! to the configured provider with the real key added, streaming included.
//! The operator counts each run's requests and the tokens the provider
//! reports, refuses a run past its budget, and writes the count into the
//! run's `status.llm`. A provider's error body goes to the log and the
//! run's status; the sandbox gets a summary, so nothing the provider
//! echoes back (a prompt, a key fragment) reaches the model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::credential::RunAuth;
use super::status::FIELD_MANAGER;
use crate::api::contract::BUDGET_EXHAUSTED;
use crate::api::llm_refusal::Refusal;
use crate::api::{AgentRun, GatewayUsage};

/// The largest request body forwarded: a long conversation with tool
/// output, above what a 200k-token context window holds.
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// How long a request's body may take to arrive, once authenticated.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests forwarded at once across all runs: what bounds the memory a
/// flood of large bodies can hold.
const MAX_IN_FLIGHT: usize = 32;

/// The largest non-streamed answer read whole to count its tokens.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Runs counted in memory before quiet ones are dropped.
const MAX_COUNTED_RUNS: usize = 1024;

/// How long a run may not call before its count is left to its status.
const QUIET: Duration = Duration::from_secs(60 * 60);

/// How much of a provider's error is kept in the run's status.
const MAX_ERROR_CHARS: usize = 2048;

/// What the gateway forwards to, and how much a run may spend.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The provider's base URL (ending in `/`): `LLM_BASE_URL`, or the
    /// provider's own API when unset (chosen per request by its route).
    pub base_url: Option<String>,
    /// The provider's key; none for local servers that want none.
    pub api_key: Option<SecretString>,
    /// The most LLM requests one run may make.
    pub max_requests: u64,
    /// The most tokens (prompt and completion) one run may spend; a run's
    /// `spec.agent.maxTokens` may lower it.
    pub max_tokens: u64,
    /// The longest one forwarded request may take.
    pub timeout: Duration,
    /// The model runs use when their spec names none; a request for any
    /// other model than its run's is refused.
    pub model: Option<String>,
}

/// The wire format of a forwarded route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `chat/completions`.
    OpenAi,
    /// `messages`.
    Anthropic,
}

impl Route {
    fn of(path: &str) -> Option<Self> {
        match path {
            "chat/completions" => Some(Self::OpenAi),
            "messages" => Some(Self::Anthropic),
            _ => None,
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Self::OpenAi => "https://api.openai.com/v1/",
            Self::Anthropic => "https://api.anthropic.com/v1/",
        }
    }

    /// An error body in this format's own shape, so the agent's client
    /// reads it.
    fn error(self, status: StatusCode, kind: &str, message: &str) -> Response {
        let body = match self {
            Self::OpenAi => json!({ "error": { "message": message, "type": kind } }),
            Self::Anthropic => {
                json!({ "type": "error", "error": { "type": kind, "message": message } })
            }
        };
        (status, axum::Json(body)).into_response()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The gateway's counters.
#[derive(Clone, Default)]
struct GatewayMetrics {
    requests: Family<OutcomeLabel, Counter>,
    tokens: Family<KindLabel, Counter>,
}

/// The LLM gateway of one operator.
pub struct Gateway {
    client: Client,
    http: reqwest::Client,
    config: GatewayConfig,
    /// Places for requests in flight, across all runs.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Runs with a request in flight: an agent asks one thing at a time,
    /// and a budget checked before the answer cannot be raced.
    busy: Mutex<std::collections::HashSet<String>>,
    /// What each live run (by uid) spent, ahead of what its status says,
    /// and when it last called.
    spent: Mutex<HashMap<String, (GatewayUsage, Instant)>>,
    metrics: GatewayMetrics,
}

impl Gateway {
    /// A gateway reading runs through `client`, its counters registered in
    /// `registry`.
    pub fn new(client: Client, config: GatewayConfig, registry: &mut Registry) -> Self {
        crate::tls::install_default_provider();
        let metrics = GatewayMetrics::default();
        registry.register(
            "smolpaws_llm_gateway_requests",
            "LLM requests sandboxes made through the gateway, by outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "smolpaws_llm_gateway_tokens",
            "Tokens the provider reported for gateway requests, by kind",
            metrics.tokens.clone(),
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.timeout)
            .build()
            .expect("a reqwest client with a TLS provider installed builds");
        Self {
            client,
            http,
            config,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            busy: Mutex::new(std::collections::HashSet::new()),
            spent: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The gateway's routes, for runs `auth` lets in.
    pub fn router(self: Arc<Self>, auth: Arc<RunAuth>) -> Router {
        Router::new()
            .route("/v1/runs/{namespace}/{name}/llm/{*path}", post(forward))
            // The body is read only after the credential is checked, by the
            // handler, within its own cap and timeout.
            .layer(DefaultBodyLimit::disable())
            .with_state((self, auth))
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// What `run` has spent: this process's count, or the status when that
    /// is further along (written by an earlier operator).
    fn spent(&self, run: &AgentRun) -> GatewayUsage {
        let spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        latest(
            spent.get(&run.uid().unwrap_or_default()).map(|(u, _)| u),
            run,
        )
    }

    /// Records a change to `run`'s spending, here and in its status.
    async fn record(&self, run: &AgentRun, change: impl FnOnce(&mut GatewayUsage)) {
        let usage = {
            let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
            let uid = run.uid().unwrap_or_default();
            let mut usage = latest(spent.get(&uid).map(|(u, _)| u), run);
            change(&mut usage);
            if spent.len() >= MAX_COUNTED_RUNS {
                // A run quiet this long has ended or waits on a tool: its
                // status holds its count.
                spent.retain(|_, (_, last)| last.elapsed() < QUIET);
            }
            spent.insert(uid, (usage.clone(), Instant::now()));
            usage
        };
        let runs: Api<AgentRun> =
            Api::namespaced(self.client.clone(), &run.namespace().unwrap_or_default());
        let patch = json!({ "status": { "llm": usage } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        // The count in memory stays authoritative for this process; the
        // status catches up with the next request.
        if let Err(error) = runs
            .patch_status(&run.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            warn!(%error, "could not record the run's LLM spending in its status");
        }
    }

    /// Drops `run`'s count: it has ended, and its status holds the total.
    /// Counts of runs whose agents never called again after their end are
    /// dropped with this process; each is a few dozen bytes.
    fn forget(&self, run: &AgentRun) {
        self.spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.uid().unwrap_or_default());
    }

    /// Why `run` may not make another request, if it may not.
    fn refusal(&self, run: &AgentRun) -> Option<String> {
        let spent = self.spent(run);
        let max_tokens = run
            .spec
            .agent
            .as_ref()
            .and_then(|a| a.max_tokens)
            .map_or(self.config.max_tokens, |n| {
                n.unsigned_abs().min(self.config.max_tokens)
            });
        let tokens = (spent.prompt_tokens + spent.completion_tokens).unsigned_abs();
        if spent.requests.unsigned_abs() >= self.config.max_requests {
            return Some(format!(
                "this run's LLM budget is spent: {} requests made, at most {} allowed",
                spent.requests, self.config.max_requests
            ));
        }
        if tokens >= max_tokens {
            return Some(format!(
                "this run's LLM budget is spent: {tokens} tokens used, at most {max_tokens} allowed"
            ));
        }
        None
    }
}

/// The further along of `counted` (this process's count) and `run`'s
/// status.
fn latest(counted: Option<&GatewayUsage>, run: &AgentRun) -> GatewayUsage {
    let stored = run.status.as_ref().and_then(|s| s.llm.as_ref());
    match (counted, stored) {
        (Some(counted), Some(stored)) if stored.requests > counted.requests => stored.clone(),
        (Some(counted), _) => counted.clone(),
        (None, stored) => stored.cloned().unwrap_or_default(),
    }
}

/// The `(prompt, completion)` tokens an answer (or one streamed event of
/// it) reports, in either wire format.
fn usage_of(value: &Value) -> Option<(i64, i64)> {
    let usage = value
        .get("usage")
        .or_else(|| value.get("message").and_then(|m| m.get("usage")))?;
    let number = |keys: &[&str]| {
        keys.iter()
            .find_map(|key| usage.get(*key).and_then(Value::as_i64))
            .unwrap_or(0)
    };
    Some((
        number(&["prompt_tokens", "input_tokens"]),
        number(&["completion_tokens", "output_tokens"]),
    ))
}

/// The usage a stream of server-sent events reports, read as it passes.
#[derive(Default)]
struct StreamedUsage {
    pending: Vec<u8>,
    prompt: i64,
    completion: i64,
}

impl StreamedUsage {
    /// Reads the complete `data:` lines in `chunk`; counts are kept at their
    /// largest, since providers report running totals.
    fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii())
                && let Some((prompt, completion)) = usage_of(&event)
            {
                self.prompt = self.prompt.max(prompt);
                self.completion = self.completion.max(completion);
            }
        }
    }
}

/// Records a streamed answer's tokens once the stream ends, or the sandbox
/// stops reading it.
struct StreamRecorder {
    gateway: Arc<Gateway>,
    run: AgentRun,
    usage: StreamedUsage,
    /// The request's place, held until the stream ends.
    _place: Place,
}

impl Drop for StreamRecorder {
    fn drop(&mut self) {
        let gateway = self.gateway.clone();
        let run = self.run.clone();
        let (prompt, completion) = (self.usage.prompt, self.usage.completion);
        tokio::spawn(async move {
            gateway.add_tokens(&run, prompt, completion).await;
        });
    }
}

impl Gateway {
    async fn add_tokens(&self, run: &AgentRun, prompt: i64, completion: i64) {
        let to_counter = |n: i64| u64::try_from(n).unwrap_or(0);
        self.metrics
            .tokens
            .get_or_create(&KindLabel { kind: "prompt" })
            .inc_by(to_counter(prompt));
        self.metrics
            .tokens
            .get_or_create(&KindLabel { kind: "completion" })
            .inc_by(to_counter(completion));
        self.record(run, |usage| {
            usage.prompt_tokens += prompt;
            usage.completion_tokens += completion;
        })
        .await;
    }
}

/// Request headers passed on to the provider: the body's format and the
/// API version; never a credential, and no beta features (some let the
/// provider fetch from the internet on the sandbox's behalf).
const FORWARDED: &[&str] = &["content-type", "accept", "anthropic-version"];

/// A request's place in flight: one of the gateway's, and its run's only
/// one; both are given back when it is dropped (the answer was streamed
/// or the request was refused).
struct Place {
    gateway: Arc<Gateway>,
    uid: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Place {
    fn take(gateway: &Arc<Gateway>, run: &AgentRun) -> Option<Self> {
        let permit = gateway.in_flight.clone().try_acquire_owned().ok()?;
        let uid = run.uid().unwrap_or_default();
        let mut busy = gateway.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(uid.clone()) {
            return None;
        }
        Some(Self {
            gateway: gateway.clone(),
            uid,
            _permit: permit,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.gateway
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.uid);
    }
}

impl Gateway {
    /// The body to forward for `run`: its own model only, and a streamed
    /// OpenAI answer asked to report its usage, so the budget sees it.
    fn admit_body(&self, run: &AgentRun, route: Route, body: &Bytes) -> Result<Bytes, String> {
        let mut request: Value =
            serde_json::from_slice(body).map_err(|e| format!("the request is not JSON: {e}"))?;
        let allowed = run
            .spec
            .agent
            .as_ref()
            .and_then(|a| a.model.as_deref())
            .or(self.config.model.as_deref());
        let asked = request.get("model").and_then(Value::as_str);
        if let Some(allowed) = allowed
            && asked != Some(allowed)
        {
            return Err(format!(
                "this run may use the model {allowed}, not {}",
                asked.unwrap_or("(none)")
            ));
        }
        let streamed = request.get("stream").and_then(Value::as_bool) == Some(true);
        if route == Route::OpenAi && streamed {
            request["stream_options"] = json!({ "include_usage": true });
            return Ok(serde_json::to_vec(&request)
                .expect("a JSON value serializes")
                .into());
        }
        Ok(body.clone())
    }
}

#[tracing::instrument(skip_all, fields(run = %format!("{namespace}/{name}"), route = %path))]
async fn forward(
    State((gateway, auth)): State<(Arc<Gateway>, Arc<RunAuth>)>,
    Path((namespace, name, path)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(route) = Route::of(&path) else {
        gateway.count("unknown_route");
        return (
            StatusCode::NOT_FOUND,
            "the gateway serves chat/completions and messages",
        )
            .into_response();
    };
    let run = match auth.authenticate(&namespace, &name, &headers).await {
        Ok(run) => run,
        Err((status, message)) => {
            gateway.count("refused");
            return route.error(status, "authentication_error", &message);
        }
    };
    let live = !run.phase().is_terminal() && run.status.as_ref().is_none_or(|s| s.result.is_none());
    if !live {
        gateway.forget(&run);
        gateway.count("refused");
        return route.error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this run has ended: its credential opens nothing any more",
        );
    }
    if let Some(reason) = gateway.refusal(&run) {
        gateway.count("over_budget");
        info!(%reason, "refused an LLM request over the run's budget");
        return route.error(StatusCode::FORBIDDEN, BUDGET_EXHAUSTED, &reason);
    }
    let Some(place) = Place::take(&gateway, &run) else {
        gateway.count("busy");
        return route.error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "one LLM request at a time per run, and the gateway is at its limit; retry shortly",
        );
    };
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_REQUEST_BYTES))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                gateway.count("refused");
                let message = format!("the request body is over {MAX_REQUEST_BYTES} bytes");
                return route.error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    &message,
                );
            }
            Err(_) => {
                gateway.count("refused");
                let message = "the request body did not arrive in time";
                return route.error(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    message,
                );
            }
        };
    let body = match gateway.admit_body(&run, route, &body) {
        Ok(body) => body,
        Err(message) => {
            gateway.count("refused");
            return route.error(StatusCode::FORBIDDEN, "permission_error", &message);
        }
    };
    gateway.record(&run, |usage| usage.requests += 1).await;

    let base = gateway
        .config
        .base_url
        .clone()
        .unwrap_or_else(|| route.default_base_url().to_owned());
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    let mut request = gateway.http.post(&url).body(body);
    for name in FORWARDED {
        if let Some(value) = headers.get(*name) {
            request = request.header(*name, value);
        }
    }
    if let Some(key) = &gateway.config.api_key {
        request = match route {
            Route::OpenAi => request.bearer_auth(key.expose_secret()),
            Route::Anthropic => request.header("x-api-key", key.expose_secret()),
        };
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(error) => {
            gateway.count("unreachable");
            warn!(%error, "the LLM provider could not be reached");
            let message = "the LLM provider could not be reached; the operator's log says why";
            return route.error(StatusCode::BAD_GATEWAY, "provider_unreachable", message);
        }
    };
    let status = answer.status();
    if !status.is_success() {
        return provider_error(&gateway, &run, route, answer).await;
    }
    let streamed = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    gateway.count("forwarded");
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = if streamed {
        let mut recorder = StreamRecorder {
            gateway: gateway.clone(),
            run,
            usage: StreamedUsage::default(),
            _place: place,
        };
        Body::from_stream(answer.bytes_stream().map(move |chunk| {
            if let Ok(chunk) = &chunk {
                recorder.usage.feed(chunk);
            }
            chunk
        }))
    } else {
        let bytes = match read_capped(answer).await {
            Ok(bytes) => bytes,
            Err(message) => {
                warn!(%message, "the LLM provider's answer could not be read");
                return route.error(StatusCode::BAD_GATEWAY, "provider_error", &message);
            }
        };
        if let Some((prompt, completion)) = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .as_ref()
            .and_then(usage_of)
        {
            gateway.add_tokens(&run, prompt, completion).await;
        }
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// A non-streamed answer, whole, up to [`MAX_ANSWER_BYTES`].
async fn read_capped(answer: reqwest::Response) -> Result<Bytes, String> {
    let mut stream = answer.bytes_stream();
    let mut whole = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the answer failed: {e}"))?;
        if whole.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.into())
}

/// A provider's refusal: logged and kept in the run's status in full, told
/// to the sandbox only by its status (and when to retry).
async fn provider_error(
    gateway: &Gateway,
    run: &AgentRun,
    route: Route,
    answer: reqwest::Response,
) -> Response {
    let status = answer.status();
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let text = read_capped(answer)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|message| message);
    let kept: String = text.chars().take(MAX_ERROR_CHARS).collect();
    gateway.count("provider_error");
    warn!(%status, error = %kept, "the LLM provider refused a request");
    let recorded = format!("{status}: {kept}");
    gateway
        .record(run, |usage| usage.last_error = Some(recorded))
        .await;
    // The two refusals the agent can act on pass on in the gateway's own
    // words, numbers only; any other answer is told only by its status.
    let mut response = match Refusal::read(status.as_u16(), &kept) {
        Some(refusal) => route.error(status, refusal.code(), &refusal.to_string()),
        None => route.error(
            status,
            "provider_error",
            &format!(
                "the LLM provider answered {status}; its answer is in the AgentRun's status.llm.lastError and the operator's log"
            ),
        ),
    };
    if let Some(retry_after) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_in_both_wire_formats() {
        let openai = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 3}});
        let anthropic = json!({"usage": {"input_tokens": 7, "output_tokens": 2}});
        let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 9}}});
        assert_eq!(usage_of(&openai), Some((12, 3)));
        assert_eq!(usage_of(&anthropic), Some((7, 2)));
        assert_eq!(usage_of(&start), Some((9, 0)));
        assert_eq!(usage_of(&json!({"choices": []})), None);
    }

    #[test]
    fn streamed_usage_is_read_across_chunk_boundaries() {
        let mut usage = StreamedUsage::default();
        let events = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25}}}\n\n",
            "data: {\"type\":\"content_block_delta\"}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
            "data: [DONE]\n\n",
        );
        for chunk in events.as_bytes().chunks(7) {
            usage.feed(chunk);
        }
        assert_eq!((usage.prompt, usage.completion), (25, 15));
    }
}
