//! The remote workspace: `/api/bash`, `/api/file` and `/api/git`, in the
//! OpenHands agent-server's shapes. Every path (a file, a command's working
//! directory, a repository) is confined to the workspace root: `..`,
//! absolute paths elsewhere and symlinks leading out are refused with 403.

use std::collections::VecDeque;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::Command;

use super::{Refusal, Runner, now};
use crate::agent::tools::shell;
use crate::agent::tools::workspace::Workspace;

/// How many bash events are kept for `bash_events/search`.
const KEPT_BASH_EVENTS: usize = 1000;

/// The bash events of commands started in the background.
#[derive(Default)]
pub struct BashEvents(Mutex<VecDeque<Value>>);

impl BashEvents {
    fn push(&self, event: Value) {
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == KEPT_BASH_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    fn matching(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().filter(|e| keep(e)).cloned().collect()
    }
}

fn forbidden(error: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, error.to_string())
}

/// The path a request names after `route` (its prefix), decoded. The raw
/// URI is read because a path parameter loses the leading `/` that `//` in
/// the URL carries: an absolute path stays absolute, and is refused when it
/// is not inside the workspace.
fn named(uri: &Uri, route: &str) -> String {
    let raw = uri.path().strip_prefix(route).unwrap_or_default();
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// `path` inside the workspace, or the 403 that refuses it.
fn confined(runner: &Runner, path: &str) -> Result<PathBuf, Refusal> {
    runner.root.resolve(path).map_err(forbidden)
}

/// A bash command request.
#[derive(Debug, Deserialize)]
pub struct ExecuteBash {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<u64>,
}

impl ExecuteBash {
    fn timeout(&self, most: Duration) -> Duration {
        self.timeout.map_or(most, Duration::from_secs).min(most)
    }
}

/// Runs `request` to its end: the `BashOutput` event.
async fn execute(
    runner: &Runner,
    request: &ExecuteBash,
    command_id: &str,
) -> Result<Value, Refusal> {
    let cwd = confined(runner, request.cwd.as_deref().unwrap_or("."))?;
    let workspace = Workspace::new(&cwd).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("cwd: {} is not a directory ({e})", cwd.display()),
        )
    })?;
    let timeout = request.timeout(runner.config.command_timeout);
    let ran = shell::run(&workspace, &request.command, timeout)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (exit_code, stderr) = match (ran.timed_out, ran.exit_code) {
        (true, _) => (
            Some(-1),
            Some(format!(
                "timed out after {}s; the command was stopped",
                timeout.as_secs()
            )),
        ),
        (false, code) => (code.or(Some(-1)), None),
    };
    Ok(json!({
        "kind": "BashOutput",
        "id": crate::random::uuid(),
        "timestamp": now(),
        "command_id": command_id,
        "order": 0,
        "exit_code": exit_code,
        "stdout": ran.output,
        "stderr": stderr,
    }))
}

/// `POST /api/bash/execute_bash_command`: runs a command and waits.
pub async fn execute_bash(
    State(runner): State<Arc<Runner>>,
    Json(request): Json<ExecuteBash>,
) -> Response {
    match execute(&runner, &request, &crate::random::uuid()).await {
        Ok(output) => Json(output).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /api/bash/start_bash_command`: starts a command; its output is a
/// bash event found with `bash_events/search`.
pub async fn start_bash(
    State(runner): State<Arc<Runner>>,
    Json(request): Json<ExecuteBash>,
) -> Response {
    if let Err(refusal) = confined(&runner, request.cwd.as_deref().unwrap_or(".")) {
        return refusal.into_response();
    }
    let id = crate::random::uuid();
    let started = json!({
        "kind": "BashCommand",
        "id": id,
        "timestamp": now(),
        "command": request.command,
        "cwd": request.cwd,
        "timeout": request.timeout(runner.config.command_timeout).as_secs(),
    });
    runner.bash.push(started.clone());
    let background = runner.clone();
    tokio::spawn(async move {
        let output = match execute(&background, &request, &id).await {
            Ok(output) => output,
            Err(_) => json!({
                "kind": "BashOutput", "id": crate::random::uuid(), "timestamp": now(),
                "command_id": id, "order": 0, "exit_code": -1, "stdout": null,
                "stderr": "the command could not run",
            }),
        };
        background.bash.push(output);
    });
    Json(started).into_response()
}

/// Filters of `bash_events/search`.
#[derive(Debug, Deserialize)]
pub struct BashSearch {
    #[serde(default, rename = "command_id__eq")]
    command_id_eq: Option<String>,
    #[serde(default)]
    command_id: Option<String>,
    #[serde(default, rename = "kind__eq")]
    kind_eq: Option<String>,
}

/// `GET /api/bash/bash_events/search`.
pub async fn search_bash(
    State(runner): State<Arc<Runner>>,
    Query(search): Query<BashSearch>,
) -> Response {
    let command = search.command_id_eq.or(search.command_id);
    let items = runner.bash.matching(|event| {
        let of_command = command
            .as_deref()
            .is_none_or(|c| event["id"] == c || event["command_id"] == c);
        let of_kind = search.kind_eq.as_deref().is_none_or(|k| event["kind"] == k);
        of_command && of_kind
    });
    Json(json!({ "items": items, "next_page_id": null })).into_response()
}

/// `GET /api/bash/bash_events/{id}`.
pub async fn bash_event(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.bash.matching(|e| e["id"] == id.as_str()).pop() {
        Some(event) => Json(event).into_response(),
        None => Refusal::new(
            StatusCode::NOT_FOUND,
            format!("there is no bash event {id}"),
        )
        .into_response(),
    }
}

/// `POST /api/file/upload/{path}`: writes the `file` part to `path`.
pub async fn upload(State(runner): State<Arc<Runner>>, uri: Uri, mut form: Multipart) -> Response {
    let path = named(&uri, "/api/file/upload/");
    let target = match confined(&runner, &path) {
        Ok(target) => target,
        Err(refusal) => return refusal.into_response(),
    };
    let mut content = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => match field.bytes().await {
                Ok(bytes) => content = Some(bytes),
                Err(error) => {
                    return Refusal::new(StatusCode::BAD_REQUEST, format!("file: {error}"))
                        .into_response();
                }
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => {
                return Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("the form is not valid: {error}"),
                )
                .into_response();
            }
        }
    }
    let Some(content) = content else {
        return Refusal::new(StatusCode::BAD_REQUEST, "file: the form has no file part")
            .into_response();
    };
    let written = async {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&target, &content).await
    };
    match written.await {
        Ok(()) => Json(json!({ "success": true })).into_response(),
        Err(error) => Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} could not be written: {error}", target.display()),
        )
        .into_response(),
    }
}

/// `GET /api/file/download/{path}`.
pub async fn download(State(runner): State<Arc<Runner>>, uri: Uri) -> Response {
    let path = named(&uri, "/api/file/download/");
    let source = match confined(&runner, &path) {
        Ok(source) => source,
        Err(refusal) => return refusal.into_response(),
    };
    match tokio::fs::read(&source).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(bytes),
        )
            .into_response(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Refusal::new(StatusCode::NOT_FOUND, format!("{path} does not exist")).into_response()
        }
        Err(error) => Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{path} cannot be read: {error}"),
        )
        .into_response(),
    }
}

/// Runs git in `dir`; its stdout.
async fn git(dir: &FsPath, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut command = Command::new("git");
    let output = crate::agent::hardening::confine(&mut command, &[])
        .arg("-C")
        .arg(dir)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// `GET /api/git/changes/{path}`: the files changed in the repository at
/// `path`.
pub async fn changes(State(runner): State<Arc<Runner>>, uri: Uri) -> Response {
    let path = named(&uri, "/api/git/changes/");
    let repository = match confined(&runner, &path) {
        Ok(repository) => repository,
        Err(refusal) => return refusal.into_response(),
    };
    let status = match git(
        &repository,
        &["status", "--porcelain=v1", "-z", "--untracked-files=all"],
    )
    .await
    {
        Ok(status) => status,
        Err(error) => {
            return Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{path} is not a git repository: {error}"),
            )
            .into_response();
        }
    };
    let mut entries = status.split(|&b| b == 0).filter(|e| e.len() > 3);
    let mut changes = Vec::new();
    while let Some(entry) = entries.next() {
        let code = &entry[..2];
        let file = String::from_utf8_lossy(&entry[3..]).into_owned();
        let kind = match code {
            [b'R', _] | [_, b'R'] => {
                // A rename is followed by its source path.
                entries.next();
                "MOVED"
            }
            b"??" | [b'A', _] => "ADDED",
            [b'D', _] | [_, b'D'] => "DELETED",
            _ => "UPDATED",
        };
        changes.push(json!({ "status": kind, "path": file }));
    }
    Json(changes).into_response()
}

/// `GET /api/git/diff/{path}`: a file's content at HEAD and now.
pub async fn diff(State(runner): State<Arc<Runner>>, uri: Uri) -> Response {
    let path = named(&uri, "/api/git/diff/");
    let file = match confined(&runner, &path) {
        Ok(file) => file,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(parent) = file.parent() else {
        return Refusal::new(StatusCode::BAD_REQUEST, "path: name a file").into_response();
    };
    let root = match git(parent, &["rev-parse", "--show-toplevel"]).await {
        Ok(root) => PathBuf::from(String::from_utf8_lossy(&root).trim()),
        Err(error) => {
            return Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{path} is not in a git repository: {error}"),
            )
            .into_response();
        }
    };
    let relative = file
        .strip_prefix(&root)
        .unwrap_or(&file)
        .display()
        .to_string();
    let original = git(&root, &["show", &format!("HEAD:{relative}")])
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let modified = tokio::fs::read_to_string(&file).await.ok();
    Json(json!({ "original": original, "modified": modified })).into_response()
}
