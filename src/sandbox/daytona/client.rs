//! Daytona's REST API, the calls the Daytona backend makes: sandboxes
//! (create, find by label, get, start, relabel, delete) and their toolbox
//! (upload a file, run a command in a process session, read its state and
//! logs).
//!
//! Every call has a timeout and is retried with backoff while Daytona answers
//! 429 (after its `Retry-After`) or 5xx, or does not answer; errors quote
//! Daytona's own message.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
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
            Self::Garbled { .. } => false,
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

/// A sandbox as Daytona describes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Daytona's id.
    pub id: String,
    /// `creating`, `starting`, `started`, `stopping`, `stopped`, `error`,
    /// `build_failed`, `archived`, `destroyed`, ...
    #[serde(default)]
    pub state: String,
    /// The labels it was created or relabelled with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Why it is in `error`.
    #[serde(default)]
    pub error_reason: Option<String>,
}

/// What a new sandbox is made of.
#[derive(Clone, Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateSandbox {
    /// A snapshot to start from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// An image to build it from instead of a snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_info: Option<BuildInfo>,
    /// The region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// CPU cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory, GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Minutes without activity before Daytona stops it; 0 never.
    pub auto_stop_interval: u32,
    /// Labels to find it by.
    pub labels: BTreeMap<String, String>,
}

/// An image to build a sandbox from.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// A Dockerfile, e.g. `FROM image`.
    pub dockerfile_content: String,
}

/// A process session and the commands run in it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The session's id.
    pub session_id: String,
    /// Its commands.
    #[serde(default)]
    pub commands: Vec<SessionCommand>,
}

/// A command of a session.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCommand {
    /// The command's id.
    pub id: String,
    /// Its exit code, once it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Executed {
    cmd_id: String,
}

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

    /// Sends the request `build` makes until it succeeds, fails for good or
    /// runs out of attempts; the successful response's body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        retry: Retry,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Bytes, DaytonaError> {
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let request = build(
                self.http
                    .request(method.clone(), format!("{}{path}", self.base))
                    .bearer_auth(self.key.expose_secret()),
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
        path: &str,
        retry: Retry,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, DaytonaError> {
        let body = self.send(method.clone(), path, retry, build).await?;
        serde_json::from_slice(&body).map_err(|e| DaytonaError::Garbled {
            call: format!("{method} {path}"),
            reason: e.to_string(),
        })
    }

    /// Creates a sandbox.
    pub async fn create(&self, sandbox: &CreateSandbox) -> Result<Sandbox, DaytonaError> {
        self.json(Method::POST, "/sandbox", Retry::RateLimited, |r| {
            r.json(sandbox)
        })
        .await
    }

    /// The sandboxes carrying all of `labels`.
    pub async fn find(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Sandbox>, DaytonaError> {
        let query = serde_json::to_string(labels).unwrap_or_default();
        self.json(Method::GET, "/sandbox", Retry::Transient, |r| {
            r.query(&[("labels", &query)])
        })
        .await
    }

    /// The sandbox `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Sandbox>, DaytonaError> {
        unless_missing(
            self.json(
                Method::GET,
                &format!("/sandbox/{id}"),
                Retry::Transient,
                |r| r,
            )
            .await,
        )
    }

    /// Starts a stopped sandbox.
    pub async fn start(&self, id: &str) -> Result<(), DaytonaError> {
        self.send(
            Method::POST,
            &format!("/sandbox/{id}/start"),
            Retry::Transient,
            |r| r,
        )
        .await
        .map(drop)
    }

    /// Stops a sandbox: every process in it ends, its files stay.
    pub async fn stop(&self, id: &str) -> Result<(), DaytonaError> {
        self.send(
            Method::POST,
            &format!("/sandbox/{id}/stop"),
            Retry::Transient,
            |r| r,
        )
        .await
        .map(drop)
    }

    /// Replaces the sandbox's labels.
    pub async fn set_labels(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DaytonaError> {
        let body = json!({ "labels": labels });
        self.send(
            Method::PUT,
            &format!("/sandbox/{id}/labels"),
            Retry::Transient,
            |r| r.json(&body),
        )
        .await
        .map(drop)
    }

    /// Deletes the sandbox; one already gone counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), DaytonaError> {
        unless_missing(
            self.send(
                Method::DELETE,
                &format!("/sandbox/{id}"),
                Retry::Transient,
                |r| r,
            )
            .await,
        )
        .map(drop)
    }

    /// Writes `content` to `path` (relative to the sandbox's working
    /// directory).
    pub async fn upload(&self, id: &str, path: &str, content: Bytes) -> Result<(), DaytonaError> {
        let length = content.len() as u64;
        // A large file takes longer than a call: allow for 10 MB/s.
        let timeout = self.timeout + Duration::from_secs(length / 10_000_000);
        self.send(
            Method::POST,
            &format!("/toolbox/{id}/toolbox/files/upload"),
            Retry::Transient,
            |r| {
                let part = reqwest::multipart::Part::stream_with_length(content.clone(), length)
                    .file_name("file");
                r.timeout(timeout)
                    .query(&[("path", path)])
                    .multipart(reqwest::multipart::Form::new().part("file", part))
            },
        )
        .await
        .map(drop)
    }

    /// Creates the process session `session`.
    pub async fn create_session(&self, id: &str, session: &str) -> Result<(), DaytonaError> {
        let body = json!({ "sessionId": session });
        self.send(
            Method::POST,
            &format!("/toolbox/{id}/toolbox/process/session"),
            Retry::RateLimited,
            |r| r.json(&body),
        )
        .await
        .map(drop)
    }

    /// Starts `command` in `session` without waiting for it; its id.
    pub async fn execute(
        &self,
        id: &str,
        session: &str,
        command: &str,
    ) -> Result<String, DaytonaError> {
        let body = json!({ "command": command, "runAsync": true, "async": true });
        let executed: Executed = self
            .json(
                Method::POST,
                &format!("/toolbox/{id}/toolbox/process/session/{session}/exec"),
                Retry::RateLimited,
                |r| r.json(&body),
            )
            .await?;
        Ok(executed.cmd_id)
    }

    /// The session and its commands, if it exists.
    pub async fn session(&self, id: &str, session: &str) -> Result<Option<Session>, DaytonaError> {
        let path = format!("/toolbox/{id}/toolbox/process/session/{session}");
        unless_missing(self.json(Method::GET, &path, Retry::Transient, |r| r).await)
    }

    /// Everything the command has written so far.
    pub async fn logs(
        &self,
        id: &str,
        session: &str,
        command: &str,
    ) -> Result<String, DaytonaError> {
        let path =
            format!("/toolbox/{id}/toolbox/process/session/{session}/command/{command}/logs");
        let body = self
            .send(Method::GET, &path, Retry::Transient, |r| r)
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Deletes the session, ending its commands; one already gone is fine.
    pub async fn delete_session(&self, id: &str, session: &str) -> Result<(), DaytonaError> {
        let path = format!("/toolbox/{id}/toolbox/process/session/{session}");
        unless_missing(
            self.send(Method::DELETE, &path, Retry::Transient, |r| r)
                .await,
        )
        .map(drop)
    }
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
    let message = serde_json::from_str::<serde_json::Value>(&text)
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
        .unwrap_or_else(|| text.chars().take(500).collect());
    DaytonaError::Api {
        call: call.to_owned(),
        status,
        message,
        retry_after,
    }
}
