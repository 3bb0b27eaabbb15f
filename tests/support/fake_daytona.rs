//! A local Daytona speaking the REST shapes the backend uses: sandboxes
//! (create, list by labels, get, start, labels, delete) and the toolbox
//! (upload, process sessions, commands and their logs). Each sandbox is a
//! temporary directory; a session command runs there as a local process, so
//! the real agent binary works in it. Deleting or stopping a sandbox kills
//! what runs in it, as a real one would. Every call is recorded, and faults
//! can be scripted per call.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use smolpaws::process::Process;

/// A scripted misbehaviour for the next call whose `METHOD /path-pattern`
/// starts with a prefix.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status.
    Status(u16),
    /// Answer 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// Act, but answer only after this long (past the client's timeout).
    Slow(Duration),
}

struct Command {
    id: String,
    process: Process,
    log: PathBuf,
}

struct Sandbox {
    id: String,
    labels: BTreeMap<String, String>,
    state: &'static str,
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
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "organizationId": "org-test",
            "state": self.state,
            "labels": self.labels,
            "target": "test",
            "cpu": 1,
            "memory": 2,
            "disk": 10,
        })
    }
}

#[derive(Default)]
struct Inner {
    sandboxes: BTreeMap<String, Sandbox>,
    created: usize,
    calls: Vec<String>,
    commands: Vec<String>,
    faults: VecDeque<(String, Fault)>,
    unauthorized: usize,
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
            .route("/toolbox/{id}/toolbox/files/upload", post(upload))
            .route("/toolbox/{id}/toolbox/process/session", post(new_session))
            .route(
                "/toolbox/{id}/toolbox/process/session/{session}",
                get(session).delete(end_session),
            )
            .route(
                "/toolbox/{id}/toolbox/process/session/{session}/exec",
                post(exec),
            )
            .route(
                "/toolbox/{id}/toolbox/process/session/{session}/command/{command}/logs",
                get(logs),
            )
            .layer(axum::extract::DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(inner.clone(), gate))
            .with_state(inner.clone());
        let (url, _) = super::serve(router).await;
        Self { inner, url }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("the fake's state"))
    }

    /// Scripts `fault` for the next call starting with `call`, e.g.
    /// `POST /sandbox`.
    pub fn fail_next(&self, call: &str, fault: Fault) {
        self.with(|s| s.faults.push_back((call.to_owned(), fault)));
    }

    /// Every call, as `METHOD /path`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
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

    /// Calls refused for a missing or wrong key.
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
}

/// Checks the key, records the call and plays scripted faults.
async fn gate(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let call = format!("{} {}", request.method(), request.uri().path());
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {KEY}"));
    let fault = {
        let mut inner = inner.lock().expect("the fake's state");
        inner.calls.push(call.clone());
        if !authorized {
            inner.unauthorized += 1;
        }
        let index = inner
            .faults
            .iter()
            .position(|(p, _)| call.starts_with(p.as_str()));
        index.and_then(|i| inner.faults.remove(i)).map(|(_, f)| f)
    };
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
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
        Some(Fault::Slow(delay)) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        None => next.run(request).await,
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

async fn create(State(inner): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    inner.created += 1;
    let id = format!("sbx-{}", inner.created);
    let labels: BTreeMap<String, String> =
        serde_json::from_value(body["labels"].clone()).unwrap_or_default();
    let sandbox = Sandbox {
        id: id.clone(),
        labels,
        state: "started",
        root: tempfile::tempdir().expect("a sandbox directory"),
        sessions: HashMap::new(),
    };
    let answer = sandbox.json();
    inner.sandboxes.insert(id, sandbox);
    Json(answer).into_response()
}

async fn list(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let wanted: BTreeMap<String, String> = query
        .get("labels")
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .unwrap_or_default();
    let inner = inner.lock().expect("the fake's state");
    let found: Vec<Value> = inner
        .sandboxes
        .values()
        .filter(|s| wanted.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(Sandbox::json)
        .collect();
    Json(found).into_response()
}

async fn one(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match inner.lock().expect("the fake's state").sandboxes.get(&id) {
        Some(sandbox) => Json(sandbox.json()).into_response(),
        None => not_found("Sandbox"),
    }
}

async fn delete(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    // Dropping the sandbox kills its commands and removes its directory.
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .remove(&id)
    {
        Some(_) => StatusCode::OK.into_response(),
        None => not_found("Sandbox"),
    }
}

async fn start(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .get_mut(&id)
    {
        Some(sandbox) => {
            sandbox.state = "started";
            StatusCode::OK.into_response()
        }
        None => not_found("Sandbox"),
    }
}

async fn stop(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .get_mut(&id)
    {
        Some(sandbox) => {
            sandbox.state = "stopped";
            sandbox.sessions.clear();
            kill_processes_in(sandbox.root.path());
            StatusCode::OK.into_response()
        }
        None => not_found("Sandbox"),
    }
}

async fn labels(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .get_mut(&id)
    {
        Some(sandbox) => {
            sandbox.labels = serde_json::from_value(body["labels"].clone()).unwrap_or_default();
            Json(json!({ "labels": sandbox.labels })).into_response()
        }
        None => not_found("Sandbox"),
    }
}

async fn upload(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut form: Multipart,
) -> Response {
    let Some(path) = query.get("path").cloned() else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let mut content = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("file") {
            content = field.bytes().await.ok();
        }
    }
    let Some(content) = content else {
        return error(StatusCode::BAD_REQUEST, "file is required");
    };
    let root = match inner.lock().expect("the fake's state").sandboxes.get(&id) {
        Some(sandbox) => sandbox.root.path().to_owned(),
        None => return not_found("Sandbox"),
    };
    let target = root.join(path.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).expect("mkdir in the sandbox");
    }
    std::fs::write(&target, &content).expect("writing in the sandbox");
    StatusCode::OK.into_response()
}

async fn new_session(
    State(inner): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let session = body["sessionId"].as_str().unwrap_or_default().to_owned();
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .get_mut(&id)
    {
        Some(sandbox) if sandbox.sessions.contains_key(&session) => {
            error(StatusCode::CONFLICT, "session already exists")
        }
        Some(sandbox) => {
            sandbox.sessions.insert(session, Vec::new());
            StatusCode::CREATED.into_response()
        }
        None => not_found("Sandbox"),
    }
}

async fn session(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
) -> Response {
    let mut inner = inner.lock().expect("the fake's state");
    let Some(commands) = inner
        .sandboxes
        .get_mut(&id)
        .and_then(|s| s.sessions.get_mut(&session))
    else {
        return not_found("Session");
    };
    let commands: Vec<Value> = commands
        .iter_mut()
        .map(|c| {
            let exit = c.process.exited().map(|s| s.code().unwrap_or(-1));
            json!({ "id": c.id, "command": "[recorded]", "exitCode": exit })
        })
        .collect();
    Json(json!({ "sessionId": session, "commands": commands })).into_response()
}

async fn end_session(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
) -> Response {
    match inner
        .lock()
        .expect("the fake's state")
        .sandboxes
        .get_mut(&id)
        .and_then(|s| s.sessions.remove(&session))
    {
        Some(_) => StatusCode::OK.into_response(),
        None => not_found("Session"),
    }
}

async fn exec(
    State(inner): State<Shared>,
    Path((id, session)): Path<(String, String)>,
    _headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let command = body["command"].as_str().unwrap_or_default().to_owned();
    let mut inner = inner.lock().expect("the fake's state");
    inner.commands.push(command.clone());
    let Some(sandbox) = inner.sandboxes.get_mut(&id) else {
        return not_found("Sandbox");
    };
    let root = sandbox.root.path().to_owned();
    let Some(commands) = sandbox.sessions.get_mut(&session) else {
        return not_found("Session");
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
        process,
        log,
    });
    Json(json!({ "cmdId": cmd_id })).into_response()
}

async fn logs(
    State(inner): State<Shared>,
    Path((id, session, command)): Path<(String, String, String)>,
) -> Response {
    let inner = inner.lock().expect("the fake's state");
    let log = inner
        .sandboxes
        .get(&id)
        .and_then(|s| s.sessions.get(&session))
        .and_then(|commands| commands.iter().find(|c| c.id == command))
        .map(|c| c.log.clone());
    match log {
        Some(log) => std::fs::read_to_string(log)
            .unwrap_or_default()
            .into_response(),
        None => not_found("Command"),
    }
}
