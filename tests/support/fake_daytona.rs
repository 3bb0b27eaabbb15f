//! A local Daytona answering as Daytona's API and its sandboxes' toolbox
//! answer, in the shapes of the generated models of the official SDK
//! (`Sandbox`, `SandboxListItem`, `ListSandboxesResponse`, `SandboxLabels`,
//! `UploadFilesResponse`, `Session`, `SessionExecuteResponse`,
//! `SessionCommandLogsResponse`), checked against that SDK by
//! `tests/daytona_sdk_contract.rs`. It serves only the routes in [`SERVED`];
//! any other request is refused and recorded, so a client calling a route
//! nobody proved is seen.
//!
//! Each sandbox is a temporary directory; a session command runs there as a
//! local process, so the real agent binary works in it. Deleting or stopping
//! a sandbox kills what runs in it, as a real one would. A sandbox created
//! or started takes a moment to become `started`, as a real one does. Every
//! call is recorded, and faults can be scripted per call.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{MatchedPath, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use smolpaws::process::Process;

/// Every route the fake serves, as `METHOD template`: the contract test
/// proves the official SDK calls each one and parses each answer.
pub const SERVED: &[&str] = &[
    "POST /sandbox",
    "GET /sandbox",
    "GET /sandbox/{id}",
    "DELETE /sandbox/{id}",
    "POST /sandbox/{id}/start",
    "POST /sandbox/{id}/stop",
    "PUT /sandbox/{id}/labels",
    "POST /toolbox/{id}/files/bulk-upload",
    "POST /toolbox/{id}/process/session",
    "GET /toolbox/{id}/process/session/{session}",
    "DELETE /toolbox/{id}/process/session/{session}",
    "POST /toolbox/{id}/process/session/{session}/exec",
    "GET /toolbox/{id}/process/session/{session}/command/{command}/logs",
];

/// How many sandboxes one page of `GET /sandbox` holds unless the caller
/// asks for fewer: small, so that clients page.
const PAGE: usize = 1;

/// How long a sandbox takes to start.
const STARTING: Duration = Duration::from_millis(100);

/// A scripted misbehaviour for the next call whose `METHOD /path` matches.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status.
    Status(u16),
    /// Answer 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// Act, but answer only after this long (past the client's timeout).
    Slow(Duration),
    /// Answer 200 with this body instead, as a Daytona speaking another
    /// version might.
    Answer(Value),
}

struct Command {
    id: String,
    command: String,
    process: Process,
    log: PathBuf,
}

struct Sandbox {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
    state: &'static str,
    /// When a `creating` or `starting` sandbox is `started`.
    ready_at: Option<Instant>,
    snapshot: Option<String>,
    cpu: u64,
    memory: u64,
    disk: u64,
    auto_stop_interval: u64,
    created_at: String,
    /// When it was made or relabelled, for the list's lag.
    changed_at: Instant,
    root: tempfile::TempDir,
    sessions: HashMap<String, Vec<Command>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_processes_in(self.root.path());
    }
}

/// Kills what runs in the sandbox at `root`, as deleting or stopping a real
/// sandbox does: the agent starts in a Unix session of its own, out of
/// reach of its command's process group. Taken are the processes working
/// in `root` and the rest of their sessions, never this test's session
/// (the fake's own shells work in `root` too).
fn kill_processes_in(root: &std::path::Path) {
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let me = std::process::id();
    // Unknown, this test's own session could not be told apart.
    let Some(own) = session_of(me) else {
        return;
    };
    // Again while it finds any: a process may fork as its parent dies.
    for _ in 0..20 {
        let processes: Vec<(u32, Option<u32>, bool)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me)
            .map(|pid| {
                let inside = std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&root));
                (pid, session_of(pid), inside)
            })
            .collect();
        let sessions: HashSet<u32> = processes
            .iter()
            .filter(|(_, session, inside)| *inside && *session != Some(own))
            .filter_map(|(_, session, _)| *session)
            .filter(|session| *session > 1)
            .collect();
        let mut killed = false;
        for (pid, session, inside) in processes {
            if inside || session.is_some_and(|s| sessions.contains(&s)) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                killed |= nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok();
            }
        }
        if !killed {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The session of live process `pid` (not a zombie's: it runs nothing).
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(3)?.parse().ok()
}

impl Sandbox {
    /// Moves a starting sandbox on once its time has come.
    fn settle(&mut self) {
        if self.ready_at.is_some_and(|at| Instant::now() >= at) {
            self.state = "started";
            self.ready_at = None;
        }
    }

    /// A `SandboxListItem`.
    fn list_item(&self, toolbox: &str) -> Value {
        json!({
            "id": self.id,
            "organizationId": "org-test",
            "name": self.name,
            "target": "test",
            "state": self.state,
            "desiredState": if self.state == "stopped" { "stopped" } else { "started" },
            "snapshot": self.snapshot,
            "user": "daytona",
            "public": false,
            "networkBlockAll": false,
            "cpu": self.cpu,
            "gpu": 0,
            "memory": self.memory,
            "disk": self.disk,
            "labels": self.labels,
            "autoStopInterval": self.auto_stop_interval,
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "toolboxProxyUrl": toolbox,
        })
    }

    /// A `Sandbox`: the list item and what only a read of one sandbox says.
    fn json(&self, toolbox: &str) -> Value {
        let mut sandbox = self.list_item(toolbox);
        let fields = sandbox.as_object_mut().expect("an object");
        fields.insert("env".into(), json!({}));
        fields.insert("kvm".into(), json!(false));
        sandbox
    }
}

#[derive(Default)]
struct Inner {
    /// The toolbox proxy's URL, as sandboxes name it.
    toolbox: String,
    sandboxes: BTreeMap<String, Sandbox>,
    created: usize,
    names: Vec<String>,
    calls: Vec<String>,
    routes: Vec<String>,
    refused: Vec<String>,
    commands: Vec<String>,
    /// What to do instead of answering the next call matching a pattern,
    /// exactly or as a prefix.
    faults: VecDeque<(String, bool, Fault)>,
    unauthorized: usize,
    /// How long a new or relabelled sandbox is missing from the list, as
    /// Daytona's list is eventually consistent.
    lag: Duration,
    follows: usize,
}

impl Inner {
    /// The sandbox with this id or name, settled.
    fn sandbox(&mut self, id_or_name: &str) -> Option<&mut Sandbox> {
        let id = if self.sandboxes.contains_key(id_or_name) {
            id_or_name.to_owned()
        } else {
            self.sandboxes
                .values()
                .find(|s| s.name == id_or_name)?
                .id
                .clone()
        };
        let sandbox = self.sandboxes.get_mut(&id)?;
        sandbox.settle();
        Some(sandbox)
    }

    /// The session `session` of started sandbox `id`, or the answer saying
    /// why there is none.
    fn session(&mut self, id: &str, session: &str) -> Result<&mut Vec<Command>, Refusal> {
        let sandbox = self
            .sandbox(id)
            .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, "Sandbox not found".into()))?;
        if sandbox.state != "started" {
            return Err(Refusal(
                StatusCode::BAD_GATEWAY,
                format!("Sandbox is {}: its toolbox does not answer", sandbox.state),
            ));
        }
        sandbox
            .sessions
            .get_mut(session)
            .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, "Session not found".into()))
    }
}

type Shared = Arc<Mutex<Inner>>;

/// The fake; serves until the test ends.
#[derive(Clone)]
pub struct FakeDaytona {
    inner: Shared,
    /// The API base URL, for `DAYTONA_API_URL`.
    pub url: String,
}

/// The API key the fake accepts.
pub const KEY: &str = "dtn-test-key-0123456789";

impl FakeDaytona {
    /// Starts the fake.
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let router = Router::new()
            .route("/sandbox", post(create).get(list))
            .route("/sandbox/{id}", get(one).delete(delete))
            .route("/sandbox/{id}/start", post(start))
            .route("/sandbox/{id}/stop", post(stop))
            .route("/sandbox/{id}/labels", put(labels))
            .route("/toolbox/{id}/files/bulk-upload", post(upload))
            .route("/toolbox/{id}/process/session", post(new_session))
            .route(
                "/toolbox/{id}/process/session/{session}",
                get(session).delete(end_session),
            )
            .route("/toolbox/{id}/process/session/{session}/exec", post(exec))
            .route(
                "/toolbox/{id}/process/session/{session}/command/{command}/logs",
                get(logs),
            )
            .route_layer(middleware::from_fn_with_state(inner.clone(), route))
            .fallback(refuse)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(inner.clone(), gate))
            .with_state(inner.clone());
        let (url, _) = super::serve(router).await;
        inner.lock().expect("the fake's state").toolbox = format!("{url}/toolbox");
        Self { inner, url }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("the fake's state"))
    }

    /// Scripts `fault` for the next call starting with `call`, e.g.
    /// `POST /sandbox`.
    pub fn fail_next(&self, call: &str, fault: Fault) {
        self.with(|s| s.faults.push_back((call.to_owned(), false, fault)));
    }

    /// Scripts `fault` for the next call that is exactly `call`, e.g.
    /// `GET /sandbox` (the list, not a read of one).
    pub fn fail_next_exactly(&self, call: &str, fault: Fault) {
        self.with(|s| s.faults.push_back((call.to_owned(), true, fault)));
    }

    /// Every call, as `METHOD /path`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Every call to a served route, as `METHOD template` (one of
    /// [`SERVED`]), in order.
    pub fn routes(&self) -> Vec<String> {
        self.with(|s| s.routes.clone())
    }

    /// Every call to a route the fake does not serve, as `METHOD /path`.
    pub fn refused(&self) -> Vec<String> {
        self.with(|s| s.refused.clone())
    }

    /// Every command line executed.
    pub fn commands(&self) -> Vec<String> {
        self.with(|s| s.commands.clone())
    }

    /// Sandboxes that exist now.
    pub fn live(&self) -> usize {
        self.with(|s| s.sandboxes.len())
    }

    /// Sandboxes ever created.
    pub fn created(&self) -> usize {
        self.with(|s| s.created)
    }

    /// Calls to served routes refused for a missing or wrong key.
    pub fn unauthorized(&self) -> usize {
        self.with(|s| s.unauthorized)
    }

    /// The directory of sandbox `id`, its working directory, while it lives.
    pub fn root(&self, id: &str) -> Option<PathBuf> {
        self.with(|s| s.sandboxes.get(id).map(|b| b.root.path().to_owned()))
    }

    /// The labels of every live sandbox.
    pub fn labels(&self) -> Vec<BTreeMap<String, String>> {
        self.with(|s| s.sandboxes.values().map(|b| b.labels.clone()).collect())
    }

    /// The name of every sandbox created, first created first.
    pub fn names(&self) -> Vec<String> {
        self.with(|s| s.names.clone())
    }

    /// Pauses sandbox `id` as Daytona's auto-pause would: what ran in it
    /// is frozen, which here means gone.
    pub fn pause(&self, id: &str) {
        self.with(|s| {
            let sandbox = s.sandboxes.get_mut(id).expect("a live sandbox");
            sandbox.state = "paused";
            sandbox.ready_at = None;
            sandbox.sessions.clear();
            kill_processes_in(sandbox.root.path());
        });
    }

    /// Makes the list miss sandboxes made or relabelled less than `lag` ago.
    pub fn lag_list(&self, lag: Duration) {
        self.with(|s| s.lag = lag);
    }

    /// How many times a command's output was followed.
    pub fn follows(&self) -> usize {
        self.with(|s| s.follows)
    }

    /// The state of sandbox `id`, while it lives.
    pub fn state(&self, id: &str) -> Option<String> {
        self.with(|s| s.sandbox(id).map(|b| b.state.to_owned()))
    }
}

/// Records the call and plays scripted faults.
async fn gate(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    let fault = {
        let mut inner = inner.lock().expect("the fake's state");
        inner.calls.push(call.clone());
        let index = inner.faults.iter().position(|(pattern, exact, _)| {
            if *exact {
                call == *pattern
            } else {
                call.starts_with(pattern.as_str())
            }
        });
        index
            .and_then(|i| inner.faults.remove(i))
            .map(|(_, _, fault)| fault)
    };
    match fault {
        Some(Fault::Status(code)) => error(
            StatusCode::from_u16(code).expect("a status"),
            "scripted failure",
        ),
        Some(Fault::RateLimited(seconds)) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            response.headers_mut().insert(
                "retry-after",
                seconds.to_string().parse().expect("a header"),
            );
            response
        }
        Some(Fault::Answer(body)) => Json(body).into_response(),
        Some(Fault::Slow(delay)) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        None => next.run(request).await,
    }
}

/// Checks the key of a call to a served route, and records which route it
/// took.
async fn route(
    State(inner): State<Shared>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {KEY}"));
    {
        let mut inner = inner.lock().expect("the fake's state");
        inner
            .routes
            .push(format!("{} {}", request.method(), matched.as_str()));
        if !authorized {
            inner.unauthorized += 1;
        }
    }
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    next.run(request).await
}

/// Answers a route the fake does not serve, and records it.
async fn refuse(State(inner): State<Shared>, request: Request) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    inner.lock().expect("the fake's state").refused.push(call);
    error(
        StatusCode::NOT_FOUND,
        "the fake Daytona does not serve this route",
    )
}

/// An error answer, kept small until it becomes the response.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "statusCode": status.as_u16(), "message": message, "error": status.canonical_reason() })),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("{what} not found"))
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// The fields of Daytona's `CreateSandbox`: its API refuses any other.
const CREATE_FIELDS: &[&str] = &[
    "name",
    "snapshot",
    "user",
    "env",
    "labels",
    "public",
    "networkBlockAll",
    "kvm",
    "networkAllowList",
    "domainAllowList",
    "outboundProxyUrl",
    "otelEndpointOverride",
    "target",
    "cpu",
    "gpu",
    "gpuType",
    "spot",
    "memory",
    "disk",
    "autoStopInterval",
    "autoPauseInterval",
    "autoArchiveInterval",
    "autoDeleteInterval",
    "ttlMinutes",
    "queueTimeout",
    "volumes",
    "buildInfo",
    "linkedSandbox",
    "secrets",
];

/// The fields of the toolbox's `SessionExecuteRequest`.
const EXECUTE_FIELDS: &[&str] = &["async", "command", "runAsync", "suppressInputEcho"];

/// Refuses a body with a field outside `known`, as Daytona's validation
/// does.
fn only(body: &Value, known: &[&str]) -> Result<(), Refusal> {
    let Some(fields) = body.as_object() else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        ));
    };
    match fields.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("property {unknown} should not exist"),
        )),
        None => Ok(()),
    }
}

/// A whole number of a create body, when given.
fn amount(body: &Value, key: &str) -> Result<Option<u64>, Refusal> {
    match &body[key] {
        Value::Null => Ok(None),
        value => value.as_u64().map(Some).ok_or_else(|| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("{key} must be a positive whole number"),
            )
        }),
    }
}

async fn create(State(inner): State<Shared>, Json(body): Json<Value>) -> Response {
    if let Err(refused) = only(&body, CREATE_FIELDS) {
        return refused.into_response();
    }
    let (cpu, memory, disk) = match (
        amount(&body, "cpu"),
        amount(&body, "memory"),
        amount(&body, "disk"),
    ) {
        (Ok(cpu), Ok(memory), Ok(disk)) => (cpu, memory, disk),
        (Err(refused), _, _) | (_, Err(refused), _) | (_, _, Err(refused)) => {
            return refused.into_response();
        }
    };
    let building = body["buildInfo"]["dockerfileContent"].is_string();
    // Daytona's own words: a snapshot (named or the default) brings its
    // resources.
    if !building && (cpu.is_some() || memory.is_some() || disk.is_some()) {
        return bad_request("Cannot specify Sandbox resources when using a snapshot");
    }
    if building && body["snapshot"].is_string() {
        return bad_request("Cannot specify both a snapshot and a build");
    }
    let labels: BTreeMap<String, String> = match serde_json::from_value(body["labels"].clone()) {
        Ok(labels) => labels,
        Err(_) if body["labels"].is_null() => BTreeMap::new(),
        Err(e) => return bad_request(&format!("labels must map strings to strings: {e}")),
    };
    let auto_stop_interval = match amount(&body, "autoStopInterval") {
        Ok(minutes) => minutes.unwrap_or(15),
        Err(refused) => return refused.into_response(),
    };
    let mut inner = inner.lock().expect("the fake's state");
    let id = format!("sbx-{}", inner.created + 1);
    let name = body["name"].as_str().unwrap_or(&id).to_owned();
    if inner.sandboxes.values().any(|s| s.name == name) {
        return error(
            StatusCode::CONFLICT,
            &format!("Sandbox with name {name} already exists"),
        );
    }
    inner.created += 1;
    inner.names.push(name.clone());
    let sandbox = Sandbox {
        id: id.clone(),
        name,
        labels,
        state: "creating",
        ready_at: Some(Instant::now() + STARTING),
        snapshot: body["snapshot"].as_str().map(str::to_owned),
        cpu: cpu.unwrap_or(1),
        memory: memory.unwrap_or(1),
        disk: disk.unwrap_or(3),
        auto_stop_interval,
        created_at: "2026-11-28T12:00:00.000Z".to_owned(),
        changed_at: Instant::now(),
        root: tempfile::tempdir().expect("a sandbox directory"),
        sessions: HashMap::new(),
    };
    let answer = sandbox.json(&inner.toolbox);
    inner.sandboxes.insert(id, sandbox);
    Json(answer).into_response()
}

/// `GET /sandbox`: the sandboxes carrying every label asked for, a page at a
/// time, the cursor being where the next page starts.
async fn list(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let wanted: BTreeMap<String, String> = match query.get("labels") {
        None => BTreeMap::new(),
        Some(labels) => match serde_json::from_str(labels) {
            Ok(wanted) => wanted,
            Err(e) => return bad_request(&format!("labels must be a JSON object of strings: {e}")),
        },
    };
    let start = match query.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(start)) => start,
        Some(Err(_)) => return bad_request("cursor is not one this server gave"),
    };
    let size = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => PAGE,
        Some(Ok(limit)) if limit > 0 => limit.min(PAGE),
        Some(_) => return bad_request("limit must be a positive whole number"),
    };
    let mut inner = inner.lock().expect("the fake's state");
    let toolbox = inner.toolbox.clone();
    let lag = inner.lag;
    let matching: Vec<Value> = inner
        .sandboxes
        .values_mut()
        .filter(|s| s.changed_at.elapsed() >= lag)
        .filter(|s| wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| {
            s.settle();
            s.list_item(&toolbox)
        })
        .collect();
    let end = (start + size).min(matching.len());
    let items = matching.get(start..end).unwrap_or_default();
    let next = (end < matching.len()).then(|| end.to_string());
    Json(json!({ "items": items, "nextCursor": next })).into_response()
}

async fn one(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let toolbox = inner.toolbox.clone();
    match inner.sandbox(&id) {
        Some(sandbox) => Json(sandbox.json(&toolbox)).into_response(),
        None => not_found("Sandbox"),
    }
}

async fn delete(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let toolbox = inner.toolbox.clone();
    let Some(id) = inner.sandbox(&id).map(|s| s.id.clone()) else {
        return not_found("Sandbox");
    };
    // Dropping the sandbox kills its commands and removes its directory.
    let mut gone = inner.sandboxes.remove(&id).expect("the sandbox just found");
    gone.state = "destroying";
    Json(gone.json(&toolbox)).into_response()
}

async fn start(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let toolbox = inner.toolbox.clone();
    let Some(sandbox) = inner.sandbox(&id) else {
        return not_found("Sandbox");
    };
    match sandbox.state {
        "started" | "starting" | "creating" => {}
        "stopped" | "archived" | "paused" => {
            sandbox.state = if sandbox.state == "paused" {
                "resuming"
            } else {
                "starting"
            };
            sandbox.ready_at = Some(Instant::now() + STARTING);
        }
        other => return bad_request(&format!("Sandbox is {other} and cannot be started")),
    }
    Json(sandbox.json(&toolbox)).into_response()
}

async fn stop(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let toolbox = inner.toolbox.clone();
    let Some(sandbox) = inner.sandbox(&id) else {
        return not_found("Sandbox");
    };
    sandbox.state = "stopped";
    sandbox.ready_at = None;
    sandbox.sessions.clear();
    kill_processes_in(sandbox.root.path());
    Json(sandbox.json(&toolbox)).into_response()
}

async fn labels(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let labels: BTreeMap<String, String> = match serde_json::from_value(body["labels"].clone()) {
        Ok(labels) => labels,
        Err(e) => return bad_request(&format!("labels must map strings to strings: {e}")),
    };
    let mut inner = inner.lock().expect("the fake's state");
    match inner.sandbox(&id) {
        Some(sandbox) => {
            sandbox.labels = labels;
            sandbox.changed_at = Instant::now();
            Json(json!({ "labels": sandbox.labels })).into_response()
        }
        None => not_found("Sandbox"),
    }
}

/// `POST /files/bulk-upload`: `files[i].path` and `files[i].file` parts.
async fn upload(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    mut form: Multipart,
) -> Response {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut contents: BTreeMap<String, bytes::Bytes> = BTreeMap::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return bad_request(&format!("not a multipart form: {e}")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let Some((index, part)) = name
            .strip_prefix("files[")
            .and_then(|rest| rest.split_once("]."))
            .map(|(i, part)| (i.to_owned(), part.to_owned()))
        else {
            return bad_request(&format!("unexpected form field {name:?}"));
        };
        let value = match field.bytes().await {
            Ok(value) => value,
            Err(e) => return bad_request(&format!("{name} could not be read: {e}")),
        };
        match part.as_str() {
            "path" => {
                paths.insert(index, String::from_utf8_lossy(&value).into_owned());
            }
            "file" => {
                contents.insert(index, value);
            }
            _ => return bad_request(&format!("unexpected form field {name:?}")),
        }
    }
    if paths.is_empty() || paths.keys().ne(contents.keys()) {
        return bad_request("every files[i] needs a path and a file");
    }
    let root = {
        let mut inner = inner.lock().expect("the fake's state");
        match inner.sandbox(&id) {
            Some(sandbox) if sandbox.state == "started" => sandbox.root.path().to_owned(),
            Some(sandbox) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    &format!("Sandbox is {}: its toolbox does not answer", sandbox.state),
                );
            }
            None => return not_found("Sandbox"),
        }
    };
    let mut files = Vec::new();
    for (index, path) in &paths {
        let content = &contents[index];
        let target = root.join(path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("mkdir in the sandbox");
        }
        std::fs::write(&target, content).expect("writing in the sandbox");
        files.push(json!({ "path": path, "bytes": content.len() }));
    }
    Json(json!({ "files": files, "errors": [] })).into_response()
}

async fn new_session(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(session) = body["sessionId"].as_str().filter(|s| !s.is_empty()) else {
        return bad_request("sessionId is required");
    };
    let mut inner = inner.lock().expect("the fake's state");
    if inner.session(&id, session).is_ok() {
        return error(StatusCode::CONFLICT, "session already exists");
    }
    match inner.sandbox(&id) {
        Some(sandbox) if sandbox.state == "started" => {
            sandbox.sessions.insert(session.to_owned(), Vec::new());
            StatusCode::CREATED.into_response()
        }
        Some(sandbox) => error(
            StatusCode::BAD_GATEWAY,
            &format!("Sandbox is {}: its toolbox does not answer", sandbox.state),
        ),
        None => not_found("Sandbox"),
    }
}

async fn session(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let commands = match inner.session(&id, &session) {
        Ok(commands) => commands,
        Err(refused) => return refused.into_response(),
    };
    let commands: Vec<Value> = commands
        .iter_mut()
        .map(|c| {
            let exit = c.process.exited().map(|s| s.code().unwrap_or(-1));
            json!({ "id": c.id, "command": c.command, "exitCode": exit })
        })
        .collect();
    Json(json!({ "sessionId": session, "commands": commands })).into_response()
}

async fn end_session(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    if let Err(refused) = inner.session(&id, &session) {
        return refused.into_response();
    }
    if let Some(sandbox) = inner.sandbox(&id) {
        sandbox.sessions.remove(&session);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn exec(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(refused) = only(&body, EXECUTE_FIELDS) {
        return refused.into_response();
    }
    let Some(command) = body["command"].as_str().map(str::to_owned) else {
        return bad_request("command is required");
    };
    // The fake runs commands in the background only, as smolpaws does, and
    // holds clients to `runAsync`: `async` is its deprecated spelling.
    if body["runAsync"] != json!(true) || !body["async"].is_null() {
        return bad_request("this fake runs session commands with runAsync (not async) only");
    }
    let mut inner = inner.lock().expect("the fake's state");
    let root = match inner.sandbox(&id) {
        Some(sandbox) => sandbox.root.path().to_owned(),
        None => return not_found("Sandbox"),
    };
    let commands = match inner.session(&id, &session) {
        Ok(commands) => commands,
        Err(refused) => return refused.into_response(),
    };
    let cmd_id = format!("cmd-{}", commands.len() + 1);
    let log = root.join(format!(".{session}-{cmd_id}.log"));
    let mut shell = std::process::Command::new("sh");
    shell
        .arg("-c")
        .arg(&command)
        .current_dir(&root)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &root);
    let process = Process::spawn(&cmd_id, shell, &log).expect("the command starts");
    commands.push(Command {
        id: cmd_id.clone(),
        command: command.clone(),
        process,
        log,
    });
    inner.commands.push(command);
    Json(json!({ "cmdId": cmd_id })).into_response()
}

/// A command's output: `SessionCommandLogsResponse` for clients that name
/// their SDK version, plain text for older ones, as the daemon answers; or,
/// with `follow=true` on a WebSocket, the output as it is written, each
/// frame marked as stdout, closed once the command exited. The fake keeps
/// one log per command, so `stdout` is all of it.
async fn logs(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path((id, session, command)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let log = {
        let mut inner = inner.lock().expect("the fake's state");
        let commands = match inner.session(&id, &session) {
            Ok(commands) => commands,
            Err(refused) => return refused.into_response(),
        };
        match commands.iter().find(|c| c.id == command) {
            Some(command) => command.log.clone(),
            None => return not_found("Command"),
        }
    };
    if query.get("follow").map(String::as_str) == Some("true") {
        inner.lock().expect("the fake's state").follows += 1;
        return match upgrade {
            Ok(upgrade) => {
                upgrade.on_upgrade(move |socket| follow(inner, socket, log, (id, session, command)))
            }
            Err(_) => bad_request("follow is for WebSocket requests only"),
        };
    }
    let output = std::fs::read_to_string(log).unwrap_or_default();
    if headers.contains_key("x-daytona-sdk-version") {
        Json(json!({ "output": output, "stdout": output, "stderr": "" })).into_response()
    } else {
        output.into_response()
    }
}

/// Streams `log` to `socket` as it grows until its command exited; drops
/// the connection when the command, its session or its sandbox is gone.
async fn follow(
    inner: Shared,
    mut socket: WebSocket,
    log: PathBuf,
    (id, session, command): (String, String, String),
) {
    let mut sent = 0;
    loop {
        let exited = {
            let mut inner = inner.lock().expect("the fake's state");
            let Ok(commands) = inner.session(&id, &session) else {
                return;
            };
            let Some(command) = commands.iter_mut().find(|c| c.id == command) else {
                return;
            };
            command.process.exited().is_some()
        };
        let written = std::fs::read(&log).unwrap_or_default();
        if let Some(fresh) = written.get(sent..).filter(|fresh| !fresh.is_empty()) {
            let mut frame = b"\x01\x01\x01".to_vec();
            frame.extend_from_slice(fresh);
            if socket.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
            sent = written.len();
        } else if exited {
            // A normal close: the SDK takes any other code for a failure.
            let close = CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
