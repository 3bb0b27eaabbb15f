//! `smolpaws agent serve`: the runner. The old TypeScript runner's API
//! (`POST /run`) on the agent entry, plus the OpenHands agent-server routes
//! the `openhands-sdk` clients (1.58) speak: conversations with persisted
//! events, a websocket that streams them, a remote workspace (`/api/bash`,
//! `/api/file`, `/api/git`), and `/server_info` and `/ready`.

pub mod auth;
pub mod bash;
pub mod conversations;
pub mod events;
mod job;
mod legacy;
pub mod models;
mod socket;
mod workspace_api;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::info;

use crate::agent::WorkArgs;
use crate::agent::tools::workspace::Workspace;
use conversations::{
    ConversationError, Conversations, ExecutionStatus, SendMessage, StartConversation,
};

/// The port the old runner listened on.
const PORT: u16 = 3000;

/// Settings of `smolpaws agent serve`.
#[derive(Args, Clone, Debug)]
pub struct RunnerArgs {
    /// Where to listen; 127.0.0.1:3000 in a terminal, 0.0.0.0:3000 in a
    /// container (loopback only while no token is set).
    #[arg(long, env = "SMOLPAWS_RUNNER_ADDR")]
    pub listen: Option<SocketAddr>,

    /// The token every route but /alive and /health requires; one is made
    /// at start (and written, readable by this user only, beside the
    /// conversations) when none is set.
    #[arg(long, env = crate::agent::handover::RUNNER_TOKEN, hide_env_values = true)]
    pub token: Option<SecretString>,

    /// Where workspaces live: each conversation's, and each /run's while it
    /// runs; every /api path is confined to it.
    #[arg(long, env = "SMOLPAWS_WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,

    /// Where conversations are persisted (alias OPENHANDS_CONVERSATIONS_DIR;
    /// default ~/.openhands/conversations).
    #[arg(long, env = "SMOLPAWS_PERSISTENCE_DIR")]
    pub persistence_dir: Option<PathBuf>,

    /// Agent runs at once (/run and conversations); more get 429.
    #[arg(long, env = "SMOLPAWS_RUNNER_MAX_RUNS", default_value_t = 4)]
    pub max_runs: usize,

    /// The largest request body, in bytes.
    #[arg(long, env = "SMOLPAWS_RUNNER_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// The longest an /api/bash command may run.
    #[arg(long, env = "SMOLPAWS_RUNNER_COMMAND_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// Browser origins allowed to call the runner (comma separated, e.g.
    /// `http://localhost:3001`); a request from any other web page is
    /// refused.
    #[arg(long, env = "SMOLPAWS_RUNNER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// How the agent works.
    #[command(flatten)]
    pub agent: WorkArgs,
}

/// What every route shares.
pub struct Runner {
    config: RunnerArgs,
    /// The workspace root, which every /api path is confined to.
    root: Workspace,
    slots: Arc<Semaphore>,
    conversations: Arc<Conversations>,
    models: Arc<models::Models>,
    bash: Arc<bash::Bash>,
    /// When the runner started, for `/server_info`.
    started: std::time::Instant,
}

/// A refused request: its status and why, answered in FastAPI's shape
/// (`detail`, and `field` when one field is wrong), which clients expect.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    detail: String,
    field: Option<String>,
}

impl Refusal {
    /// A refusal with `status`, saying `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            field: None,
        }
    }

    /// A 400 for `field`, which is wrong because `why`.
    pub fn field(field: &str, why: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            detail: format!("{field}: {why}"),
            field: Some(field.to_owned()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "detail": self.detail, "field": field }),
            None => json!({ "detail": self.detail }),
        };
        (self.status, Json(body)).into_response()
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn in_container() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::path::Path::new("/.dockerenv").exists()
}

/// The address to listen on, and whether it is loopback-only by force.
fn address(config: &RunnerArgs) -> anyhow::Result<SocketAddr> {
    let default = if in_container() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT)
    };
    Ok(config.listen.unwrap_or(default))
}

/// A token for a runner started without one, said on stderr only, as
/// Jupyter does: the developer copies it, and nothing the model's tools can
/// read (a file, the environment) holds it.
fn made_token() -> SecretString {
    let token = crate::random::token();
    eprintln!(
        "smolpaws runner: no SMOLPAWS_RUNNER_TOKEN was set, so every request needs this one:\n  {token}"
    );
    SecretString::from(token)
}

/// Serves until `stop` is cancelled, then pauses running conversations
/// (each records it) and waits for them.
pub async fn serve(mut config: RunnerArgs, stop: CancellationToken) -> anyhow::Result<()> {
    // The model runs bash here too: its tools must not read the token or
    // the LLM key from this process's environment or memory.
    let credentials = crate::agent::handover::isolate(crate::agent::handover::Credentials {
        llm_api_key: config.agent.llm.take_api_key(),
        runner_token: config.token.take(),
        ..Default::default()
    })
    .context("could not put the runner's credentials out of its tools' reach")?;
    config.agent.llm.api_key = credentials.llm_api_key;
    config.token = credentials.runner_token;
    if config
        .token
        .as_ref()
        .is_none_or(|token| token.expose_secret().is_empty())
    {
        config.token = Some(made_token());
        // A token only a terminal saw serves this machine only, unless an
        // address was asked for.
        if config.listen.is_none() {
            config.listen = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT));
        }
    }
    let address = address(&config)?;
    let persistence = config
        .persistence_dir
        .clone()
        .or_else(|| std::env::var_os("OPENHANDS_CONVERSATIONS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| home().join(".openhands/conversations"));
    let workspaces = config
        .workspace_root
        .clone()
        .unwrap_or_else(|| home().join(".smolpaws/workspaces"));
    std::fs::create_dir_all(&workspaces)
        .with_context(|| format!("cannot create {}", workspaces.display()))?;
    let root = Workspace::new(&workspaces)
        .with_context(|| format!("the workspace root {} is unusable", workspaces.display()))?;
    let slots = Arc::new(Semaphore::new(config.max_runs));
    let models = Arc::new(models::Models::new(config.agent.clone()));
    let conversations = Arc::new(
        Conversations::load(
            &persistence,
            root.root(),
            config.agent.clone(),
            config.agent.redactor(&[config.token.as_ref()]),
            models.clone(),
            slots.clone(),
            config.max_runs,
        )
        .with_context(|| format!("cannot load conversations from {}", persistence.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let address = listener.local_addr()?;
    info!(
        %address,
        workspaces = %root.root().display(),
        persistence = %persistence.display(),
        "runner listening"
    );
    let runner = Arc::new(Runner {
        config,
        root,
        slots,
        conversations: conversations.clone(),
        models,
        bash: Arc::default(),
        started: std::time::Instant::now(),
    });
    axum::serve(listener, router(runner))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("the runner failed")?;
    conversations.shut_down().await;
    Ok(())
}

/// Now, in microseconds since the epoch.
fn now_micros() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_microsecond()
}

/// The timestamp `micros` as events carry it: UTC, RFC 3339, always with
/// six fractional digits, so that text order is time order.
fn timestamp(micros: i64) -> String {
    let second = k8s_openapi::jiff::Timestamp::from_second(micros.div_euclid(1_000_000))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{}.{:06}Z",
        second.strftime("%Y-%m-%dT%H:%M:%S"),
        micros.rem_euclid(1_000_000)
    )
}

/// Now, as event timestamps are written.
fn now() -> String {
    timestamp(now_micros())
}

/// A timestamp a client gives (RFC 3339, or the SDK's offset-less ISO
/// form, read as UTC) in microseconds.
fn micros(text: &str) -> Option<i64> {
    use k8s_openapi::jiff::{Timestamp, civil::DateTime, tz::TimeZone};
    text.parse::<Timestamp>()
        .ok()
        .or_else(|| {
            let civil: DateTime = text.parse().ok()?;
            civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
        })
        .map(|t| t.as_microsecond())
}

/// Whether `timestamp` is at or after `from` and before `until` (each
/// bound when given and readable).
fn within(timestamp: &str, from: Option<&str>, until: Option<&str>) -> bool {
    let at = micros(timestamp);
    let after = from
        .and_then(micros)
        .is_none_or(|from| at.is_some_and(|t| t >= from));
    let before = until
        .and_then(micros)
        .is_none_or(|until| at.is_some_and(|t| t < until));
    after && before
}

/// Refuses time bounds that are not timestamps, naming the field.
fn readable(bounds: &[(&str, Option<&str>)]) -> Result<(), Refusal> {
    match bounds
        .iter()
        .find(|(_, bound)| bound.is_some_and(|b| micros(b).is_none()))
    {
        Some((field, _)) => Err(Refusal::field(
            field,
            "must be an ISO 8601 timestamp, e.g. 2026-11-28T17:00:00Z",
        )),
        None => Ok(()),
    }
}

/// Every route.
pub fn router(runner: Arc<Runner>) -> Router {
    let token = Arc::new(
        runner
            .config
            .token
            .clone()
            .expect("serve sets a token before routing"),
    );
    let limit = runner.config.max_body_bytes;
    let origins: auth::Origins = runner.config.allowed_origins.clone().into();
    Router::new()
        .route("/alive", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/health", get(|| async { "OK" }))
        .route(
            "/ready",
            get(|| async { Json(json!({ "status": "ready" })) }),
        )
        .route("/server_info", get(server_info))
        .route("/run", post(job::run))
        .route("/api/conversations", post(create).get(batch))
        .route("/api/conversations/search", get(search))
        .route("/api/conversations/count", get(count))
        .route("/api/conversations/{id}", get(one).delete(delete))
        .route("/api/conversations/{id}/run", post(run))
        .route("/api/conversations/{id}/pause", post(pause))
        // A pause stops the run at once already, the model's call included.
        .route("/api/conversations/{id}/interrupt", post(pause))
        .route("/api/conversations/{id}/events", post(send))
        .route("/api/conversations/{id}/events/search", get(search_events))
        .route("/api/conversations/{id}/events/count", get(count_events))
        .route("/sockets/events/{id}", get(socket::events))
        .route(
            "/api/bash/execute_bash_command",
            post(workspace_api::execute_bash),
        )
        .route(
            "/api/bash/start_bash_command",
            post(workspace_api::start_bash),
        )
        .route(
            "/api/bash/bash_events/search",
            get(workspace_api::search_bash),
        )
        .route(
            "/api/bash/bash_events",
            axum::routing::delete(workspace_api::clear_bash),
        )
        .route("/api/bash/bash_events/{id}", get(workspace_api::bash_event))
        .route(
            "/api/bash/bash_commands/{id}/stop",
            post(workspace_api::stop_bash),
        )
        .route("/api/file/upload", post(workspace_api::upload))
        .route("/api/file/download", get(workspace_api::download))
        .route("/api/git/changes", get(workspace_api::changes))
        .route("/api/git/diff", get(workspace_api::diff))
        // The path forms SDK clients before 1.15 send, kept for them.
        .route("/api/file/upload/{*path}", post(workspace_api::upload))
        .route("/api/file/download/{*path}", get(workspace_api::download))
        .route("/api/git/changes/{*path}", get(workspace_api::changes))
        .route("/api/git/diff/{*path}", get(workspace_api::diff))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn_with_state(token, auth::require))
        .layer(axum::middleware::from_fn_with_state(
            origins,
            auth::no_foreign_origin,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(runner)
}

impl From<ConversationError> for Refusal {
    fn from(error: ConversationError) -> Self {
        let status = match &error {
            ConversationError::NotFound(_) => StatusCode::NOT_FOUND,
            ConversationError::Running(_) => StatusCode::CONFLICT,
            ConversationError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ConversationError::Empty | ConversationError::BadId(_) => StatusCode::BAD_REQUEST,
            ConversationError::Outside(_) => StatusCode::FORBIDDEN,
            ConversationError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, error.to_string())
    }
}

impl IntoResponse for ConversationError {
    fn into_response(self) -> Response {
        Refusal::from(self).into_response()
    }
}

fn success() -> Response {
    Json(json!({ "success": true })).into_response()
}

/// A JSON body, or a 400 that names the field that is wrong and why.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let field = error.path().to_string();
        match field.as_str() {
            "." => Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid: {}", error.inner()),
            ),
            _ => Refusal::field(&field, &error.inner().to_string()),
        }
    })
}

async fn create(State(runner): State<Arc<Runner>>, bytes: axum::body::Bytes) -> Response {
    let request: StartConversation = match body(&bytes) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    match runner.conversations.create(request) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Paging and filters of searches: `page_id` is where the page starts.
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    page_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    status: Option<ExecutionStatus>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    source: Option<events::Source>,
    /// Only messages containing this text (any case).
    #[serde(default)]
    body: Option<String>,
    /// Events: `TIMESTAMP` (the default) or `TIMESTAMP_DESC`; conversations:
    /// `CREATED_AT`, `UPDATED_AT`, each with `_DESC` (`CREATED_AT_DESC`
    /// the default).
    #[serde(default)]
    sort_order: Option<String>,
    #[serde(default, rename = "timestamp__gte")]
    from: Option<String>,
    #[serde(default, rename = "timestamp__lt")]
    until: Option<String>,
}

impl Page {
    fn cut<T: serde::Serialize>(&self, items: Vec<T>) -> Response {
        if self.limit.is_some_and(|limit| !(1..=100).contains(&limit)) {
            return Refusal::field("limit", "must be from 1 to 100").into_response();
        }
        let start = self
            .page_id
            .as_deref()
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(0);
        let limit = self.limit.unwrap_or(100);
        let end = (start + limit).min(items.len());
        let next = (end < items.len()).then(|| end.to_string());
        let page: Vec<&T> = items.iter().skip(start).take(limit).collect();
        Json(json!({ "items": page, "next_page_id": next })).into_response()
    }

    fn keeps(&self, event: &events::Event) -> bool {
        self.kind.as_deref().is_none_or(|k| event.kind() == k)
            && self.source.is_none_or(|s| event.source == s)
            && self
                .body
                .as_deref()
                .is_none_or(|b| event.mentions(&b.to_lowercase()))
            && within(
                &event.timestamp,
                self.from.as_deref(),
                self.until.as_deref(),
            )
    }
}

/// `GET /server_info`: what this server is, for clients that check
/// versions; open, as the agent-server's is.
async fn server_info(State(runner): State<Arc<Runner>>) -> Response {
    Json(json!({
        "title": "smolpaws runner",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": runner.started.elapsed().as_secs_f64(),
        "conversation_runtime": "local",
        "usable_tools": crate::agent::toolbox::definitions()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /api/conversations?ids=..&ids=..`: those conversations, `null` for
/// each unknown one, as the agent-server answers (at most 99 ids).
async fn batch(State(runner): State<Arc<Runner>>, uri: axum::http::Uri) -> Response {
    let ids: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ids="))
        .map(|id| {
            percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if ids.len() > 99 {
        return Refusal::field("ids", "at most 99 ids at once").into_response();
    }
    let infos: Vec<Option<conversations::ConversationInfo>> = ids
        .iter()
        .map(|id| runner.conversations.get(id).ok().map(|c| c.info()))
        .collect();
    Json(infos).into_response()
}

async fn search(State(runner): State<Arc<Runner>>, Query(page): Query<Page>) -> Response {
    let mut infos = runner.conversations.list(page.status);
    let order = page.sort_order.as_deref().unwrap_or("CREATED_AT_DESC");
    let (by_update, descending) = match order {
        "CREATED_AT" => (false, false),
        "CREATED_AT_DESC" => (false, true),
        "UPDATED_AT" => (true, false),
        "UPDATED_AT_DESC" => (true, true),
        _ => {
            return Refusal::field(
                "sort_order",
                "must be CREATED_AT or UPDATED_AT, or either _DESC",
            )
            .into_response();
        }
    };
    infos.sort_by(|a, b| match by_update {
        true => a.updated_at.cmp(&b.updated_at),
        false => a.created_at.cmp(&b.created_at),
    });
    if descending {
        infos.reverse();
    }
    page.cut(infos)
}

async fn count(State(runner): State<Arc<Runner>>, Query(page): Query<Page>) -> Response {
    Json(runner.conversations.list(page.status).len()).into_response()
}

async fn one(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.conversations.get(&id) {
        Ok(conversation) => Json(conversation.info()).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn delete(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.conversations.delete(&id) {
        Ok(()) => success(),
        Err(error) => error.into_response(),
    }
}

async fn run(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.conversations.run(&id) {
        Ok(()) => success(),
        Err(error) => error.into_response(),
    }
}

async fn pause(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.conversations.pause(&id) {
        Ok(()) => success(),
        Err(error) => error.into_response(),
    }
}

async fn send(
    State(runner): State<Arc<Runner>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let message: SendMessage = match body(&bytes) {
        Ok(message) => message,
        Err(refusal) => return refusal.into_response(),
    };
    match runner.conversations.send(&id, message) {
        Ok(()) => success(),
        Err(error) => error.into_response(),
    }
}

fn events_of(runner: &Runner, id: &str, page: &Page) -> Result<Vec<Arc<events::Event>>, Refusal> {
    readable(&[
        ("timestamp__gte", page.from.as_deref()),
        ("timestamp__lt", page.until.as_deref()),
    ])?;
    Ok(runner
        .conversations
        .get(id)?
        .events()
        .into_iter()
        .filter(|e| page.keeps(e))
        .collect())
}

async fn search_events(
    State(runner): State<Arc<Runner>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    let descending = match page.sort_order.as_deref() {
        None | Some("TIMESTAMP") => false,
        Some("TIMESTAMP_DESC") => true,
        Some(_) => {
            return Refusal::field("sort_order", "must be TIMESTAMP or TIMESTAMP_DESC")
                .into_response();
        }
    };
    match events_of(&runner, &id, &page) {
        Ok(mut events) => {
            if descending {
                events.reverse();
            }
            page.cut(events)
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn count_events(
    State(runner): State<Arc<Runner>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    match events_of(&runner, &id, &page) {
        Ok(events) => Json(events.len()).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}
