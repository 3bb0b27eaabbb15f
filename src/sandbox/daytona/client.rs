//! Daytona's REST API, the calls the Daytona backend makes: sandboxes
//! (create, find by label across pages, get by id or name, start, stop,
//! relabel, delete) and, through each sandbox's toolbox proxy, its toolbox
//! (upload files, run a command in a process session, read its state, read
//! or follow its logs). The shapes are those of Daytona's generated models
//! at [`API_VERSION`].
//!
//! Every call has a timeout and is retried with backoff while Daytona answers
//! 429 (after its `Retry-After`) or 5xx, or does not answer; errors quote
//! Daytona's own message.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::warn;

/// Why a Daytona call failed.
#[derive(Debug, thiserror::Error)]
pub enum DaytonaError {
    /// Daytona answered with an error.
    #[error("Daytona answered {status} to {call}: {message}")]
    Api {
        /// The call, e.g. `POST /sandbox`.
        call: String,
        /// The HTTP status.
        status: StatusCode,
        /// Daytona's message.
        message: String,
        /// How long Daytona asked to wait, for 429.
        retry_after: Option<Duration>,
    },
    /// Daytona did not answer in time, or the connection failed.
    #[error("Daytona did not answer {call}: {reason}")]
    Unreachable {
        /// The call.
        call: String,
        /// What went wrong.
        reason: String,
    },
    /// A bulk upload answered, but named files it could not write.
    #[error("Daytona could not write every file uploaded to sandbox {sandbox}: {errors}")]
    Upload {
        /// The sandbox.
        sandbox: String,
        /// Daytona's errors, joined.
        errors: String,
    },
    /// Daytona's answer was not what its API describes.
    #[error("Daytona's answer to {call} is not understood: {reason}")]
    Garbled {
        /// The call.
        call: String,
        /// What the parser said.
        reason: String,
    },
}

impl DaytonaError {
    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            Self::Unreachable { .. } => true,
            Self::Upload { .. } | Self::Garbled { .. } => false,
        }
    }

    /// Whether Daytona refused for the request rate, without acting.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::Api { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS)
    }

    /// Whether Daytona said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// Whether Daytona refused because the object exists already.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { status, .. } if *status == StatusCode::CONFLICT)
    }

    /// When to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The Daytona API version this client was checked against: the official
/// SDK of that version drives `tests/support/fake_daytona.rs` in
/// `tests/daytona_sdk_contract.rs`. Sent as the SDK version, which is what
/// makes the sandbox daemon answer logs as JSON.
pub const API_VERSION: &str = "0.226.1";

/// A sandbox's lifecycle state, as Daytona names it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Being created.
    Creating,
    /// Being restored from a backup.
    Restoring,
    /// Deleted.
    Destroyed,
    /// Being deleted.
    Destroying,
    /// Running; its toolbox answers.
    Started,
    /// Stopped; its files stay.
    Stopped,
    /// Starting.
    Starting,
    /// Stopping.
    Stopping,
    /// Failed; `errorReason` says why.
    Error,
    /// Its image could not be built.
    BuildFailed,
    /// Waiting for its image build.
    PendingBuild,
    /// Its image is being built.
    BuildingSnapshot,
    /// Its snapshot is being pulled.
    PullingSnapshot,
    /// Stopped and moved to cheaper storage.
    Archived,
    /// Being archived.
    Archiving,
    /// Its resources are being changed.
    Resizing,
    /// A snapshot of it is being taken.
    Snapshotting,
    /// Being forked.
    Forking,
    /// Being paused.
    Pausing,
    /// Paused, its memory kept.
    Paused,
    /// Resuming from a pause.
    Resuming,
    /// A state this client does not know (Daytona's `unknown`, or one added
    /// after [`API_VERSION`]): waited out like any transition.
    #[default]
    #[serde(other)]
    Unknown,
}

/// What a sandbox in some state needs before the agent can run there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It runs: the toolbox answers.
    Ready,
    /// At rest (stopped, archived, paused): a start brings it back.
    Startable,
    /// On its way somewhere: look again later.
    Transitioning,
    /// It failed and stays failed.
    Failed,
    /// It is being or was deleted.
    Gone,
}

impl SandboxState {
    /// What the sandbox needs before the agent can run there.
    pub fn readiness(self) -> Readiness {
        use SandboxState::*;
        match self {
            Started => Readiness::Ready,
            // Daytona's start also resumes a paused sandbox and restores an
            // archived one.
            Stopped | Archived | Paused => Readiness::Startable,
            Error | BuildFailed => Readiness::Failed,
            Destroyed | Destroying => Readiness::Gone,
            Creating | Restoring | Starting | Stopping | PendingBuild | BuildingSnapshot
            | PullingSnapshot | Archiving | Resizing | Snapshotting | Forking | Pausing
            | Resuming | Unknown => Readiness::Transitioning,
        }
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => f.write_str("unknown"),
        }
    }
}

/// A sandbox as Daytona describes it (its `Sandbox` and `SandboxListItem`
/// models share these fields).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Daytona's id.
    pub id: String,
    /// Its name, unique in the organization.
    pub name: String,
    /// Where it is in its lifecycle; absent while Daytona does not know.
    #[serde(default)]
    pub state: SandboxState,
    /// The labels it was created or relabelled with.
    pub labels: BTreeMap<String, String>,
    /// Why it is in `error`.
    #[serde(default)]
    pub error_reason: Option<String>,
    /// The base URL of its toolbox (files, processes).
    pub toolbox_proxy_url: String,
}

impl Sandbox {
    /// The base URL of this sandbox's toolbox calls.
    fn toolbox(&self) -> String {
        format!(
            "{}/{}",
            self.toolbox_proxy_url.trim_end_matches('/'),
            self.id
        )
    }
}

/// A page of `GET /sandbox` (`ListSandboxesResponse`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<Sandbox>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// What a new sandbox is made from: a snapshot, or an image built for it.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A snapshot by name, or Daytona's default snapshot when `None`; a
    /// snapshot brings its own resources.
    Snapshot(Option<String>),
    /// An image, built with these resources.
    Image {
        /// The image reference, e.g. `ubuntu:24.04`.
        image: String,
        /// CPU cores.
        cpu: Option<u32>,
        /// Memory, GiB.
        memory: Option<u32>,
    },
}

/// A new sandbox.
#[derive(Clone, Debug)]
pub struct NewSandbox {
    /// Its name, unique in the organization: a second create with it is
    /// refused, and [`DaytonaClient::get`] finds it by it.
    pub name: String,
    /// What it is made from.
    pub source: Source,
    /// The region.
    pub target: Option<String>,
    /// Minutes without activity before Daytona stops it; 0 never.
    pub auto_stop_interval: u32,
    /// Labels to find it by.
    pub labels: BTreeMap<String, String>,
}

/// `CreateSandbox` as Daytona reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_info: Option<BuildInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<u32>,
    auto_stop_interval: u32,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildInfo {
    dockerfile_content: String,
}

impl<'a> From<&'a NewSandbox> for CreateBody<'a> {
    fn from(new: &'a NewSandbox) -> Self {
        let (snapshot, build_info, cpu, memory) = match &new.source {
            Source::Snapshot(snapshot) => (snapshot.as_deref(), None, None, None),
            // Daytona refuses resources with a snapshot: they come only with
            // a build.
            Source::Image { image, cpu, memory } => (
                None,
                Some(BuildInfo {
                    dockerfile_content: format!("FROM {image}\n"),
                }),
                *cpu,
                *memory,
            ),
        };
        Self {
            name: &new.name,
            snapshot,
            build_info,
            target: new.target.as_deref(),
            cpu,
            memory,
            auto_stop_interval: new.auto_stop_interval,
            labels: &new.labels,
        }
    }
}

/// A process session and the commands run in it (`Session`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The session's id.
    pub session_id: String,
    /// Its commands, first started first.
    pub commands: Vec<SessionCommand>,
}

/// A command of a session (`Command`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCommand {
    /// The command's id.
    pub id: String,
    /// Its exit code, once it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// `SessionExecuteResponse`, of a command started with `runAsync`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Executed {
    cmd_id: String,
}

/// `SessionCommandLogsResponse`: `output` is stdout and stderr as written.
#[derive(Deserialize)]
struct Logs {
    output: String,
}

/// `UploadFilesResponse`: a bulk upload answers 200 even when some files
/// failed, and names them here.
#[derive(Deserialize)]
struct Uploaded {
    #[serde(default)]
    errors: Option<Vec<String>>,
}

/// A command's output streaming from its sandbox: binary or text frames,
/// see [`super::follow`].
pub type LogStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which failures a call may be repeated after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Any transient failure: repeating the call changes nothing.
    Transient,
    /// Only 429, which Daytona answers without acting: the call is not
    /// idempotent (it creates something), so after a timeout or a 5xx the
    /// caller looks for what it may have made before trying again.
    RateLimited,
}

/// A Daytona API client.
#[derive(Clone, Debug)]
pub struct DaytonaClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    attempts: u32,
    timeout: Duration,
}

impl DaytonaClient {
    /// A client of the API at `base` (e.g. `https://app.daytona.io/api`)
    /// with `key`; each call gives up after `timeout`, and transient
    /// failures are tried `attempts` times.
    pub fn new(base: &str, key: SecretString, timeout: Duration, attempts: u32) -> Self {
        crate::tls::install_default_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("smolpaws/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            attempts: attempts.max(1),
            timeout,
        }
    }

    /// Sends the request `build` makes to `path` under `base` (the API, or
    /// a sandbox's toolbox) until it succeeds, fails for good or runs out
    /// of attempts; the successful response's body.
    async fn send(
        &self,
        method: Method,
        (base, path): (&str, &str),
        retry: Retry,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Bytes, DaytonaError> {
        let call = call_name(&method, path);
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let request = build(
                self.http
                    .request(method.clone(), format!("{base}{path}"))
                    .bearer_auth(self.key.expose_secret())
                    .header("X-Daytona-Source", "smolpaws")
                    .header("X-Daytona-SDK-Version", API_VERSION),
            );
            let error = match request.send().await {
                Err(error) => DaytonaError::Unreachable {
                    call: call.clone(),
                    reason: if error.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        error.to_string()
                    },
                },
                Ok(response) if response.status().is_success() => {
                    return response
                        .bytes()
                        .await
                        .map_err(|e| DaytonaError::Unreachable {
                            call: call.clone(),
                            reason: e.to_string(),
                        });
                }
                Ok(response) => api_error(&call, response).await,
            };
            let repeatable = match retry {
                Retry::Transient => error.is_transient(),
                Retry::RateLimited => error.is_rate_limited(),
            };
            if !repeatable || attempt >= self.attempts {
                return Err(error);
            }
            let pause = error
                .retry_after()
                .unwrap_or(wait)
                .min(Duration::from_secs(30));
            warn!(%error, attempt, retry_in = ?pause, "Daytona call failed; retrying");
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(Duration::from_secs(8));
            attempt += 1;
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        target: (&str, &str),
        retry: Retry,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, DaytonaError> {
        let body = self
            .send(method.clone(), target, retry, |r| {
                build(r).header(reqwest::header::ACCEPT, "application/json")
            })
            .await?;
        serde_json::from_slice(&body).map_err(|e| DaytonaError::Garbled {
            call: call_name(&method, target.1),
            reason: e.to_string(),
        })
    }

    /// Creates a sandbox; Daytona answers 409 when one of its name exists.
    pub async fn create(&self, sandbox: &NewSandbox) -> Result<Sandbox, DaytonaError> {
        let body = CreateBody::from(sandbox);
        self.json(
            Method::POST,
            (&self.base, "/sandbox"),
            Retry::RateLimited,
            |r| r.json(&body),
        )
        .await
    }

    /// The sandboxes carrying all of `labels`, every page of them.
    ///
    /// Daytona's list is eventually consistent: a sandbox made or relabelled
    /// a moment ago may be missing. [`Self::get`] by name is not.
    pub async fn find(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Sandbox>, DaytonaError> {
        let labels =
            serde_json::to_string(labels).expect("a map of strings always serializes to JSON");
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let page: Page = self
                .json(
                    Method::GET,
                    (&self.base, "/sandbox"),
                    Retry::Transient,
                    |r| match &cursor {
                        Some(cursor) => r.query(&[("labels", &labels), ("cursor", cursor)]),
                        None => r.query(&[("labels", &labels)]),
                    },
                )
                .await?;
            found.extend(page.items);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                None => return Ok(found),
                // A cursor given twice would page forever.
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(DaytonaError::Garbled {
                        call: "GET /sandbox".to_owned(),
                        reason: format!("the cursor {next:?} came back a second time"),
                    });
                }
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// The sandbox with this id or name, if it exists.
    pub async fn get(&self, id_or_name: &str) -> Result<Option<Sandbox>, DaytonaError> {
        let path = format!("/sandbox/{}", segment(id_or_name));
        unless_missing(
            self.json(Method::GET, (&self.base, &path), Retry::Transient, |r| r)
                .await,
        )
    }

    /// Starts a stopped or archived sandbox, or resumes a paused one.
    pub async fn start(&self, id: &str) -> Result<(), DaytonaError> {
        self.lifecycle(id, "start").await
    }

    /// Stops a sandbox: every process in it ends, its files stay.
    pub async fn stop(&self, id: &str) -> Result<(), DaytonaError> {
        self.lifecycle(id, "stop").await
    }

    async fn lifecycle(&self, id: &str, action: &str) -> Result<(), DaytonaError> {
        let path = format!("/sandbox/{}/{action}", segment(id));
        self.json::<Sandbox>(Method::POST, (&self.base, &path), Retry::Transient, |r| r)
            .await
            .map(drop)
    }

    /// Replaces the sandbox's labels.
    pub async fn set_labels(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DaytonaError> {
        #[derive(Serialize, Deserialize)]
        struct SandboxLabels {
            labels: BTreeMap<String, String>,
        }
        let body = SandboxLabels {
            labels: labels.clone(),
        };
        let path = format!("/sandbox/{}/labels", segment(id));
        self.json::<SandboxLabels>(Method::PUT, (&self.base, &path), Retry::Transient, |r| {
            r.json(&body)
        })
        .await
        .map(drop)
    }

    /// Deletes the sandbox; one already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), DaytonaError> {
        let path = format!("/sandbox/{}", segment(id));
        unless_missing(
            self.send(Method::DELETE, (&self.base, &path), Retry::Transient, |r| r)
                .await,
        )
        .map(drop)
    }

    /// Writes `files` (path relative to the sandbox's working directory,
    /// content) into the sandbox in one call.
    pub async fn upload(
        &self,
        sandbox: &Sandbox,
        files: &[(String, Bytes)],
    ) -> Result<(), DaytonaError> {
        let length: u64 = files.iter().map(|(_, content)| content.len() as u64).sum();
        // A large file takes longer than a call: allow for 10 MB/s.
        let timeout = self.timeout + Duration::from_secs(length / 10_000_000);
        let toolbox = sandbox.toolbox();
        let answer: Uploaded = self
            .json(
                Method::POST,
                (&toolbox, "/files/bulk-upload"),
                Retry::Transient,
                |r| {
                    let form = files.iter().enumerate().fold(
                        reqwest::multipart::Form::new(),
                        |form, (i, (path, content))| {
                            let part = reqwest::multipart::Part::stream_with_length(
                                content.clone(),
                                content.len() as u64,
                            )
                            .file_name(path.clone());
                            form.text(format!("files[{i}].path"), path.clone())
                                .part(format!("files[{i}].file"), part)
                        },
                    );
                    r.timeout(timeout).multipart(form)
                },
            )
            .await?;
        match answer.errors.unwrap_or_default() {
            errors if errors.is_empty() => Ok(()),
            errors => Err(DaytonaError::Upload {
                sandbox: sandbox.id.clone(),
                errors: errors.join("; "),
            }),
        }
    }

    /// Creates the process session `session`.
    pub async fn create_session(
        &self,
        sandbox: &Sandbox,
        session: &str,
    ) -> Result<(), DaytonaError> {
        let body = json!({ "sessionId": session });
        self.send(
            Method::POST,
            (&sandbox.toolbox(), "/process/session"),
            Retry::RateLimited,
            |r| r.json(&body),
        )
        .await
        .map(drop)
    }

    /// Starts `command` in `session` without waiting for it; its id.
    pub async fn execute(
        &self,
        sandbox: &Sandbox,
        session: &str,
        command: &str,
    ) -> Result<String, DaytonaError> {
        let body = json!({ "command": command, "runAsync": true });
        let path = format!("/process/session/{}/exec", segment(session));
        let executed: Executed = self
            .json(
                Method::POST,
                (&sandbox.toolbox(), &path),
                Retry::RateLimited,
                |r| r.json(&body),
            )
            .await?;
        Ok(executed.cmd_id)
    }

    /// The session and its commands, if it exists.
    pub async fn session(
        &self,
        sandbox: &Sandbox,
        session: &str,
    ) -> Result<Option<Session>, DaytonaError> {
        let path = format!("/process/session/{}", segment(session));
        unless_missing(
            self.json(
                Method::GET,
                (&sandbox.toolbox(), &path),
                Retry::Transient,
                |r| r,
            )
            .await,
        )
    }

    /// Everything the command has written so far, stdout and stderr as
    /// they were written.
    pub async fn logs(
        &self,
        sandbox: &Sandbox,
        session: &str,
        command: &str,
    ) -> Result<String, DaytonaError> {
        let path = format!(
            "/process/session/{}/command/{}/logs",
            segment(session),
            segment(command)
        );
        let logs: Logs = self
            .json(
                Method::GET,
                (&sandbox.toolbox(), &path),
                Retry::Transient,
                |r| r,
            )
            .await?;
        Ok(logs.output)
    }

    /// The command's output as the sandbox streams it: everything written so
    /// far, then more as it comes, until the command exits.
    pub async fn follow_logs(
        &self,
        sandbox: &Sandbox,
        session: &str,
        command: &str,
    ) -> Result<LogStream, DaytonaError> {
        let path = format!(
            "/process/session/{}/command/{}/logs",
            segment(session),
            segment(command)
        );
        let call = call_name(&Method::GET, &path);
        let url = format!("{}{path}?follow=true", sandbox.toolbox());
        let url = match url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => {
                return Err(DaytonaError::Garbled {
                    call,
                    reason: format!(
                        "the toolbox URL {:?} is neither http nor https",
                        sandbox.toolbox_proxy_url
                    ),
                });
            }
        };
        let unreachable = |reason: String| DaytonaError::Unreachable {
            call: call.clone(),
            reason,
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| unreachable(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in [
            (
                "authorization",
                format!("Bearer {}", self.key.expose_secret()),
            ),
            ("x-daytona-source", "smolpaws".to_owned()),
            ("x-daytona-sdk-version", API_VERSION.to_owned()),
        ] {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| unreachable(format!("the {name} header is not valid")))?;
            headers.insert(name, value);
        }
        match tokio::time::timeout(self.timeout, tokio_tungstenite::connect_async(request)).await {
            Err(_) => Err(unreachable("timed out".to_owned())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                let status = response.status();
                let text = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                Err(DaytonaError::Api {
                    call,
                    status,
                    message: error_message(&text),
                    retry_after: None,
                })
            }
            Ok(Err(error)) => Err(unreachable(error.to_string())),
            Ok(Ok((stream, _))) => Ok(stream),
        }
    }

    /// Deletes the session, ending its commands; one already gone is fine.
    pub async fn delete_session(
        &self,
        sandbox: &Sandbox,
        session: &str,
    ) -> Result<(), DaytonaError> {
        let path = format!("/process/session/{}", segment(session));
        unless_missing(
            self.send(
                Method::DELETE,
                (&sandbox.toolbox(), &path),
                Retry::Transient,
                |r| r,
            )
            .await,
        )
        .map(drop)
    }
}

/// How errors name a call: its method and path, without the query.
fn call_name(method: &Method, path: &str) -> String {
    format!("{method} {}", path.split('?').next().unwrap_or(path))
}

/// `value` as one path segment: ids and names are Daytona's or ours, but a
/// `/` or `?` in one must not reach another route.
fn segment(value: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

/// `result`, with Daytona's 404 as `None`: for reads of what may be gone,
/// and deletes, for which gone is done.
fn unless_missing<T>(result: Result<T, DaytonaError>) -> Result<Option<T>, DaytonaError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// Daytona's message in an error answer: its JSON `message` when it sent
/// one, else the start of the text.
fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| match &v["message"] {
            serde_json::Value::String(m) => Some(m.clone()),
            serde_json::Value::Array(all) => Some(
                all.iter()
                    .filter_map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        })
        .unwrap_or_else(|| text.chars().take(500).collect())
}

/// Daytona's error answer: its JSON `message` when it sent one.
async fn api_error(call: &str, response: reqwest::Response) -> DaytonaError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let message = error_message(&text);
    DaytonaError::Api {
        call: call.to_owned(),
        status,
        message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(source: Source) -> serde_json::Value {
        let labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        let new = NewSandbox {
            name: "smolpaws-u-1".to_owned(),
            source,
            target: None,
            auto_stop_interval: 15,
            labels,
        };
        serde_json::to_value(CreateBody::from(&new)).expect("a create body serializes")
    }

    #[test]
    fn a_snapshot_brings_its_own_resources() {
        assert_eq!(
            new(Source::Snapshot(Some("base".to_owned()))),
            json!({
                "name": "smolpaws-u-1",
                "snapshot": "base",
                "autoStopInterval": 15,
                "labels": { "a": "b" },
            })
        );
        assert_eq!(
            new(Source::Snapshot(None)),
            json!({ "name": "smolpaws-u-1", "autoStopInterval": 15, "labels": { "a": "b" } })
        );
    }

    #[test]
    fn an_image_is_built_with_the_runs_resources() {
        let image = Source::Image {
            image: "ubuntu:24.04".to_owned(),
            cpu: Some(2),
            memory: Some(4),
        };
        assert_eq!(
            new(image),
            json!({
                "name": "smolpaws-u-1",
                "buildInfo": { "dockerfileContent": "FROM ubuntu:24.04\n" },
                "cpu": 2,
                "memory": 4,
                "autoStopInterval": 15,
                "labels": { "a": "b" },
            })
        );
    }

    #[test]
    fn every_state_is_known_and_a_new_one_is_waited_out() {
        let state = |name: &str| {
            serde_json::from_value::<SandboxState>(json!(name)).expect("a state parses")
        };
        for (name, readiness) in [
            ("started", Readiness::Ready),
            ("paused", Readiness::Startable),
            ("archived", Readiness::Startable),
            ("stopped", Readiness::Startable),
            ("resuming", Readiness::Transitioning),
            ("pausing", Readiness::Transitioning),
            ("snapshotting", Readiness::Transitioning),
            ("forking", Readiness::Transitioning),
            ("resizing", Readiness::Transitioning),
            ("restoring", Readiness::Transitioning),
            ("pulling_snapshot", Readiness::Transitioning),
            ("build_failed", Readiness::Failed),
            ("destroying", Readiness::Gone),
        ] {
            assert_eq!(state(name).readiness(), readiness, "{name}");
            assert_eq!(state(name).to_string(), name);
        }
        assert_eq!(state("hibernating"), SandboxState::Unknown);
        assert_eq!(state("hibernating").readiness(), Readiness::Transitioning);
    }

    #[test]
    fn a_sandbox_without_its_toolbox_url_is_not_understood() {
        let listed = json!({
            "id": "sbx-1", "name": "n", "state": "started", "labels": {},
        });
        let error = serde_json::from_value::<Sandbox>(listed).expect_err("no toolbox URL");
        assert!(error.to_string().contains("toolboxProxyUrl"), "{error}");
    }

    #[test]
    fn ids_and_names_stay_one_path_segment() {
        assert_eq!(segment("smolpaws-u-1"), "smolpaws-u-1");
        assert_eq!(segment("../a/b?c#d"), "..%2Fa%2Fb%3Fc%23d");
    }
}
