//! The remote workspace: `/api/bash`, `/api/file` and `/api/git`, in the
//! OpenHands agent-server's shapes. Files and repositories are named by a
//! `?path=` query, as SDK clients since 1.15 send it; the path-in-the-URL
//! forms older clients send (`/api/file/download/{path}`, ...) are served
//! too. Every path (a file, a command's working directory, a repository) is
//! confined to the workspace root: `..`, absolute paths elsewhere and
//! symlinks leading out are refused with 403.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use super::{Refusal, Runner, bash};

/// How long `start_bash_command` waits for a command to end before it
/// answers: longer than a quick command takes, short next to the SDK's
/// 100 ms poll interval.
const QUICK: Duration = Duration::from_millis(50);

fn forbidden(error: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, error.to_string())
}

/// The routes that take the path in the URL, after their prefix: the form
/// SDK clients before 1.15 send, kept for them.
const PATH_FORMS: &[&str] = &[
    "/api/file/upload/",
    "/api/file/download/",
    "/api/git/changes/",
    "/api/git/diff/",
];

/// The path a request names: its `?path=`, or on a path-form route what
/// follows the prefix, decoded. There the raw URI is read because a path
/// parameter loses the leading `/` that `//` in the URL carries: an
/// absolute path stays absolute, and is refused when it is not inside the
/// workspace.
pub struct Named(String);

#[derive(Deserialize)]
struct PathQuery {
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Named {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        let route = parts.uri.path();
        if let Some(raw) = PATH_FORMS.iter().find_map(|p| route.strip_prefix(p)) {
            let path = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            return Ok(Self(path.into_owned()));
        }
        Query::<PathQuery>::try_from_uri(&parts.uri)
            .map(|Query(query)| Self(query.path))
            .map_err(|_| Refusal::field("path", "is required: ?path=<absolute path>"))
    }
}

/// `path` inside the workspace, or the 403 that refuses it.
fn confined(runner: &Runner, path: &str) -> Result<PathBuf, Refusal> {
    runner.root.resolve(path).map_err(forbidden)
}

/// The confined working directory of a bash request (the root when none).
fn cwd_of(runner: &Runner, request: &bash::Request) -> Result<PathBuf, Refusal> {
    let cwd = confined(runner, request.cwd.as_deref().unwrap_or("."))?;
    if !cwd.is_dir() {
        return Err(Refusal::field(
            "cwd",
            &format!("{} is not a directory", cwd.display()),
        ));
    }
    Ok(cwd)
}

fn timeout_of(runner: &Runner, request: &bash::Request) -> Duration {
    let most = runner.config.command_timeout;
    request.timeout.map_or(most, Duration::from_secs).min(most)
}

/// `POST /api/bash/execute_bash_command`: runs a command and waits; its
/// outputs joined into one `BashOutput`.
pub async fn execute_bash(
    State(runner): State<Arc<Runner>>,
    Json(request): Json<bash::Request>,
) -> Response {
    let cwd = match cwd_of(&runner, &request) {
        Ok(cwd) => cwd,
        Err(refusal) => return refusal.into_response(),
    };
    let timeout = timeout_of(&runner, &request);
    let (started, ended) = runner.bash.start(request, cwd, timeout);
    ended.cancelled().await;
    Json(runner.bash.joined(started.id())).into_response()
}

/// `POST /api/bash/start_bash_command`: starts a command; its outputs are
/// bash events found with `bash_events/search`. The answer waits for the
/// command for [`QUICK`], so that a quick command's output is there on the
/// client's first poll (the SDK otherwise sleeps a 100 ms poll interval).
pub async fn start_bash(
    State(runner): State<Arc<Runner>>,
    Json(request): Json<bash::Request>,
) -> Response {
    let cwd = match cwd_of(&runner, &request) {
        Ok(cwd) => cwd,
        Err(refusal) => return refusal.into_response(),
    };
    let timeout = timeout_of(&runner, &request);
    let (started, ended) = runner.bash.start(request, cwd, timeout);
    let _ = tokio::time::timeout(QUICK, ended.cancelled()).await;
    Json(started).into_response()
}

/// `GET /api/bash/bash_events/search`.
pub async fn search_bash(
    State(runner): State<Arc<Runner>>,
    Query(search): Query<bash::Search>,
) -> Response {
    if search
        .limit
        .is_some_and(|limit| !(1..=100).contains(&limit))
    {
        return Refusal::field("limit", "must be from 1 to 100").into_response();
    }
    let bounds = [
        ("timestamp__gte", search.from.as_deref()),
        ("timestamp__lt", search.until.as_deref()),
    ];
    if let Err(refusal) = super::readable(&bounds) {
        return refusal.into_response();
    }
    Json(runner.bash.search(&search)).into_response()
}

/// `DELETE /api/bash/bash_events`: forgets every bash event.
pub async fn clear_bash(State(runner): State<Arc<Runner>>) -> Response {
    Json(json!({ "cleared_count": runner.bash.clear() })).into_response()
}

/// `GET /api/bash/bash_events/{id}`.
pub async fn bash_event(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.bash.get(&id) {
        Some(event) => Json(event).into_response(),
        None => Refusal::new(
            StatusCode::NOT_FOUND,
            format!("there is no bash event {id}"),
        )
        .into_response(),
    }
}

/// `POST /api/bash/bash_commands/{id}/stop`: stops a command (and what it
/// started); stopping one that already ended succeeds, an unknown id is 404.
pub async fn stop_bash(State(runner): State<Arc<Runner>>, Path(id): Path<String>) -> Response {
    match runner.bash.stop(&id).await {
        Ok(()) => Json(json!({ "success": true })).into_response(),
        Err(unknown) => Refusal::new(StatusCode::NOT_FOUND, unknown.to_string()).into_response(),
    }
}

/// `POST /api/file/upload?path=` (or `/api/file/upload/{path}`): writes
/// the `file` part to `path`.
pub async fn upload(
    State(runner): State<Arc<Runner>>,
    Named(path): Named,
    mut form: Multipart,
) -> Response {
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
    let size = content.len();
    let root = runner.root.clone();
    let written = tokio::task::spawn_blocking(move || root.write(&path, &content, false)).await;
    match written {
        Ok(Ok(())) => Json(json!({ "success": true, "file_size": size })).into_response(),
        Ok(Err(refused)) => forbidden(refused).into_response(),
        Err(error) => {
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

/// `GET /api/file/download?path=` (or `/api/file/download/{path}`).
pub async fn download(State(runner): State<Arc<Runner>>, Named(path): Named) -> Response {
    let root = runner.root.clone();
    let asked = path.clone();
    let opened = tokio::task::spawn_blocking(move || root.open(&asked)).await;
    match opened {
        // Streamed: a large file is never held in memory whole.
        Ok(Ok(Some(file))) => {
            let stream = ReaderStream::new(tokio::fs::File::from_std(file));
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(Ok(None)) => {
            Refusal::new(StatusCode::NOT_FOUND, format!("{path} does not exist")).into_response()
        }
        Ok(Err(refused)) => forbidden(refused).into_response(),
        Err(error) => {
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

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

/// `GET /api/git/changes?path=` (or `/api/git/changes/{path}`): the files
/// changed in the repository at `path`.
pub async fn changes(State(runner): State<Arc<Runner>>, Named(path): Named) -> Response {
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

/// `GET /api/git/diff?path=` (or `/api/git/diff/{path}`): a file's content
/// at HEAD and now.
pub async fn diff(State(runner): State<Arc<Runner>>, Named(path): Named) -> Response {
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
