//! GitHub as smolpaws uses it: authenticating as the App, minting per-run
//! tokens, acknowledging a request with a reaction, replying in its thread
//! exactly once, and showing a pull request's run in its checks.
//!
//! Every call answers in one attempt. Rate limits and server errors come back
//! as errors that say when to try again ([`Error::retry_after`]), so the
//! controller requeues instead of sleeping in a reconcile, and re-checks the
//! thread for its reply before posting again.

pub mod checks;
mod identity;
pub mod pulls;
pub mod reply;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use octocrab::service::middleware::retry::RetryConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{CommentKind, GitHubContext, PostedComment, PullRequestHead};

/// How to reach and authenticate to GitHub as the App.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// The GitHub App's id.
    pub app_id: u64,
    /// The App's private key (PEM), given inline.
    pub app_private_key: Option<SecretString>,
    /// A file holding the App's private key (PEM).
    pub app_private_key_file: Option<PathBuf>,
    /// The REST API base URL.
    pub api_url: String,
}

/// A GitHub call that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable private key.
    #[error("the GitHub App private key is unusable: {0}")]
    Key(String),
    /// The client could not be built (a bad API URL, usually).
    #[error("cannot build a GitHub client for {url}: {source}")]
    Client {
        /// The API URL.
        url: String,
        /// The cause.
        source: octocrab::Error,
    },
    /// GitHub answered with an error status.
    #[error("GitHub refused to {action}: {status} {message}")]
    Status {
        /// What smolpaws was doing.
        action: String,
        /// The HTTP status.
        status: StatusCode,
        /// GitHub's message.
        message: String,
        /// When GitHub says to try again, if it says.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer, or the answer was unreadable.
    #[error("could not {action} on GitHub: {source}")]
    Transport {
        /// What smolpaws was doing.
        action: String,
        /// The cause.
        source: octocrab::Error,
    },
    /// GitHub's answer did not have the documented shape.
    #[error("GitHub's answer to {action} is not what its API documents: {source}")]
    Decode {
        /// What smolpaws was doing.
        action: String,
        /// The cause.
        source: serde_json::Error,
    },
}

impl Error {
    /// How long to wait before trying again, when trying again can help:
    /// GitHub's own word for rate limits, `None` for errors that will not
    /// go away by waiting (the caller backs off on its own for the rest).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same call may succeed later (server errors, rate limits,
    /// lost connections), as opposed to a request GitHub will always refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } => status.is_server_error() || retry_after.is_some(),
            Self::Transport { .. } => true,
            Self::Key(_) | Self::Client { .. } | Self::Decode { .. } => false,
        }
    }
}

/// A short-lived installation token scoped to one repository.
#[derive(Debug, Deserialize)]
pub struct RunToken {
    /// The token.
    pub token: SecretString,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

/// An installation's client, and the lock that lets one caller at a time
/// renew its token: runs reconciled at once share the token the first of
/// them mints.
struct Installation {
    client: Arc<Octocrab>,
    renewing: tokio::sync::Mutex<()>,
}

/// How long before its expiry an installation token is renewed: a token
/// handed to a call is good for the whole call (GitHub's live an hour).
const RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The App's view of GitHub.
pub struct GitHub {
    app: Octocrab,
    app_id: u64,
    api_url: String,
    /// One client per installation, shared by every run: octocrab caches
    /// a client's installation token inside it (and drops it on a 401),
    /// and a clone of a client copies that cache rather than sharing it,
    /// so handing out clones would mint a token for every call.
    installations: Mutex<HashMap<u64, Arc<Installation>>>,
    /// The App's bot identity, once read.
    identity: tokio::sync::OnceCell<crate::api::contract::CommitAuthor>,
}

impl GitHub {
    /// A client authenticating as the App described by `config`.
    pub fn new(config: &GitHubConfig) -> Result<Self, Error> {
        let pem = match (&config.app_private_key, &config.app_private_key_file) {
            (Some(key), _) => key.expose_secret().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?,
            (None, None) => {
                return Err(Error::Key(
                    "set GITHUB_APP_PRIVATE_KEY_FILE (or GITHUB_APP_PRIVATE_KEY) to the App's PEM key"
                        .into(),
                ));
            }
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| Error::Key(format!("not an RSA PEM key: {e}")))?;
        let client_error = |source| Error::Client {
            url: config.api_url.clone(),
            source,
        };
        let app = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(client_error)?
            // Retries are the controller's: it re-reads the thread before
            // posting again, which a blind retry of a POST would not.
            .add_retry_config(RetryConfig::None)
            .app(AppId(config.app_id), key)
            .build()
            .map_err(client_error)?;
        Ok(Self {
            app,
            app_id: config.app_id,
            api_url: config.api_url.clone(),
            installations: Mutex::new(HashMap::new()),
            identity: tokio::sync::OnceCell::new(),
        })
    }

    /// Revokes installation token `token` (`DELETE /installation/token`,
    /// authenticated by the token itself). A token already revoked or
    /// expired counts as revoked.
    pub async fn revoke(&self, token: &SecretString) -> Result<(), Error> {
        let action = "revoke a run's installation token".to_owned();
        let client = Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .map_err(|source| Error::Client {
                url: self.api_url.clone(),
                source,
            })?
            .add_retry_config(RetryConfig::None)
            .personal_token(token.expose_secret().to_owned())
            .build()
            .map_err(|source| Error::Client {
                url: self.api_url.clone(),
                source,
            })?;
        let response = client
            ._delete("/installation/token", None::<&()>)
            .await
            .map_err(|source| Error::Transport {
                action: action.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        Err(Error::Status {
            action,
            status,
            retry_after: retry_advice(status, response.headers()),
            message: format!("GitHub answered {status}"),
        })
    }

    /// A client acting as `installation`, the same one for every run of
    /// this controller, holding a token that lives at least
    /// [`RENEW_BEFORE`] more: minted once, and again only when it nears its
    /// expiry or GitHub refuses it.
    pub(crate) async fn installation(&self, installation: u64) -> Result<Arc<Octocrab>, Error> {
        let entry = {
            let mut clients = self
                .installations
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match clients.get(&installation) {
                Some(entry) => Arc::clone(entry),
                None => {
                    let client = self
                        .app
                        .installation(InstallationId(installation))
                        .map_err(|source| Error::Transport {
                            action: format!("authenticate as installation {installation}"),
                            source,
                        })?;
                    let entry = Arc::new(Installation {
                        client: Arc::new(client),
                        renewing: tokio::sync::Mutex::new(()),
                    });
                    clients.insert(installation, Arc::clone(&entry));
                    entry
                }
            }
        };
        let _renewing = entry.renewing.lock().await;
        entry
            .client
            .installation_token_with_buffer(RENEW_BEFORE)
            .await
            .map_err(|source| {
                let action = format!("mint a token for installation {installation}");
                match source {
                    // Refused (the App uninstalled, say): as any refusal,
                    // which waiting may not fix.
                    octocrab::Error::GitHub { source, .. } => refused(
                        &action,
                        source.status_code,
                        &source.headers.unwrap_or_default(),
                        source.message,
                    ),
                    source => Error::Transport { action, source },
                }
            })?;
        Ok(Arc::clone(&entry.client))
    }

    /// The App installation that covers `repository` (`owner/name`).
    pub async fn installation_for(&self, repository: &str) -> Result<u64, Error> {
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        let action = format!("find the App installation of {repository}");
        let found: Installation = send(
            &self.app,
            http::Method::GET,
            &format!("/repos/{repository}/installation"),
            None,
            &action,
        )
        .await?;
        Ok(found.id)
    }

    /// A token for the agent: read access to `repository` only, expiring
    /// within the hour.
    pub async fn run_token(&self, installation: u64, repository: &str) -> Result<RunToken, Error> {
        let permissions = json!({
            "contents": "read",
            "issues": "read",
            "pull_requests": "read",
            "metadata": "read",
        });
        self.token(installation, repository, permissions).await
    }

    /// A token for the controller's push of one change: write access to
    /// `repository`'s contents and pull requests only, expiring within the
    /// hour (and revoked as soon as the change is delivered).
    pub async fn push_token(&self, installation: u64, repository: &str) -> Result<RunToken, Error> {
        let permissions = json!({
            "contents": "write",
            "pull_requests": "write",
            "metadata": "read",
        });
        self.token(installation, repository, permissions).await
    }

    async fn token(
        &self,
        installation: u64,
        repository: &str,
        permissions: Value,
    ) -> Result<RunToken, Error> {
        let name = repository
            .split_once('/')
            .map_or(repository, |(_, name)| name);
        let body = json!({ "repositories": [name], "permissions": permissions });
        let action = format!("mint a token for {repository}");
        send(
            &self.app,
            http::Method::POST,
            &format!("/app/installations/{installation}/access_tokens"),
            Some(&body),
            &action,
        )
        .await
    }

    /// Adds 👀 to the triggering comment, saying the request was seen.
    /// Adding it twice is harmless: GitHub keeps one.
    pub async fn acknowledge(
        &self,
        installation: u64,
        thread: &GitHubContext,
    ) -> Result<(), Error> {
        let Some(comment) = &thread.comment else {
            return Ok(());
        };
        let repo = &thread.repository;
        let path = match comment.kind {
            CommentKind::IssueComment => {
                format!("/repos/{repo}/issues/comments/{}/reactions", comment.id)
            }
            CommentKind::ReviewComment => {
                format!("/repos/{repo}/pulls/comments/{}/reactions", comment.id)
            }
        };
        let action = format!("react to comment {} in {repo}", comment.id);
        let _: Value = send(
            &*self.installation(installation).await?,
            http::Method::POST,
            &path,
            Some(&json!({ "content": "eyes" })),
            &action,
        )
        .await?;
        Ok(())
    }

    /// The head of pull request `number` of `repository` now.
    pub async fn pull_request_head(
        &self,
        installation: u64,
        repository: &str,
        number: i64,
    ) -> Result<PullRequestHead, Error> {
        let head = self.pull_head(installation, repository, number).await?;
        Ok(PullRequestHead {
            git_ref: head.branch,
            sha: head.sha,
        })
    }

    /// The reply carrying `marker` in `thread`, if one was posted since
    /// `since` (RFC 3339).
    pub async fn find_reply(
        &self,
        installation: u64,
        thread: &GitHubContext,
        marker: &str,
        since: &str,
    ) -> Result<Option<PostedComment>, Error> {
        #[derive(Deserialize)]
        struct App {
            id: u64,
        }
        #[derive(Deserialize)]
        struct User {
            #[serde(default, rename = "type")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct Comment {
            id: i64,
            html_url: String,
            #[serde(default)]
            body: Option<String>,
            #[serde(default)]
            performed_via_github_app: Option<App>,
            user: Option<User>,
        }
        const PAGE: usize = 100;
        let client = self.installation(installation).await?;
        let repo = &thread.repository;
        let number = thread.number;
        let list = match reply_kind(thread) {
            CommentKind::IssueComment => format!("/repos/{repo}/issues/{number}/comments"),
            CommentKind::ReviewComment => format!("/repos/{repo}/pulls/{number}/comments"),
        };
        let action = format!("list the comments of {repo}#{number}");
        // Bounded: a run's reply is recent, and `since` skips older comments.
        for page in 1..=10 {
            let url = format!("{list}?since={since}&per_page={PAGE}&page={page}");
            let comments: Vec<Comment> =
                send(&client, http::Method::GET, &url, None, &action).await?;
            // Only what an App posted: a person pasting a marker does not
            // count. Issue comments name the App; review comments carry
            // no such field, so their bot author is what is checked.
            let ours = |c: &&Comment| match &c.performed_via_github_app {
                Some(app) => app.id == self.app_id,
                None => c.user.as_ref().is_some_and(|u| u.kind == "Bot"),
            };
            if let Some(found) = comments
                .iter()
                .filter(ours)
                .find(|c| c.body.as_deref().is_some_and(|body| body.contains(marker)))
            {
                return Ok(Some(PostedComment {
                    id: found.id,
                    html_url: found.html_url.clone(),
                }));
            }
            if comments.len() < PAGE {
                break;
            }
        }
        Ok(None)
    }

    /// Posts `body` in `thread`: a new comment in the conversation, or a reply
    /// in the review thread of a review comment.
    pub async fn post_reply(
        &self,
        installation: u64,
        thread: &GitHubContext,
        body: &str,
    ) -> Result<PostedComment, Error> {
        #[derive(Deserialize)]
        struct Created {
            id: i64,
            html_url: String,
        }
        let repo = &thread.repository;
        let number = thread.number;
        let path = match (reply_kind(thread), &thread.comment) {
            (CommentKind::ReviewComment, Some(comment)) => {
                let first = comment
                    .review
                    .as_ref()
                    .and_then(|review| review.in_reply_to)
                    .unwrap_or(comment.id);
                format!("/repos/{repo}/pulls/{number}/comments/{first}/replies")
            }
            _ => format!("/repos/{repo}/issues/{number}/comments"),
        };
        let action = format!("reply in {repo}#{number}");
        let created: Created = send(
            &*self.installation(installation).await?,
            http::Method::POST,
            &path,
            Some(&json!({ "body": body })),
            &action,
        )
        .await?;
        Ok(PostedComment {
            id: created.id,
            html_url: created.html_url,
        })
    }
}

impl GitHub {
    /// Replaces the body of issue comment `id` of `repository` (one smolpaws
    /// posted: its progress comment).
    pub async fn edit_comment(
        &self,
        installation: u64,
        repository: &str,
        id: i64,
        body: &str,
    ) -> Result<(), Error> {
        let action = format!("edit comment {id} in {repository}");
        let _: Value = send(
            &*self.installation(installation).await?,
            http::Method::PATCH,
            &format!("/repos/{repository}/issues/comments/{id}"),
            Some(&json!({ "body": body })),
            &action,
        )
        .await?;
        Ok(())
    }
}

/// Where the reply goes: a review thread for review comments, else the
/// conversation.
fn reply_kind(thread: &GitHubContext) -> CommentKind {
    thread
        .comment
        .as_ref()
        .map_or(CommentKind::IssueComment, |comment| comment.kind)
}

/// One request, with GitHub's error statuses turned into [`Error::Status`]
/// that carry its retry advice.
pub(crate) async fn send<T: DeserializeOwned>(
    client: &Octocrab,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
    action: &str,
) -> Result<T, Error> {
    let transport = |source| Error::Transport {
        action: action.to_owned(),
        source,
    };
    let response = match method {
        http::Method::POST => client._post(path, body).await,
        http::Method::PATCH => client._patch(path, body).await,
        _ => client._get(path).await,
    }
    .map_err(transport)?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = client.body_to_string(response).await.map_err(transport)?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(refused(action, status, &headers, message));
    }
    serde_json::from_str(&text).map_err(|source| Error::Decode {
        action: action.to_owned(),
        source,
    })
}

/// GitHub's refusal of `action`, with its advice on when to try again.
fn refused(action: &str, status: StatusCode, headers: &http::HeaderMap, message: String) -> Error {
    let secondary = message
        .to_ascii_lowercase()
        .contains("secondary rate limit");
    Error::Status {
        action: action.to_owned(),
        status,
        retry_after: retry_advice(status, headers).or(secondary.then_some(Duration::from_secs(60))),
        message,
    }
}

/// GitHub's advice on when to retry: `Retry-After`, or the reset time of an
/// exhausted primary rate limit.
fn retry_advice(status: StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(seconds) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    let limited = matches!(
        status,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    );
    if limited && header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    v.parse().expect("a header value"),
                )
            })
            .collect()
    }

    #[test]
    fn retry_after_wins() {
        let advice = retry_advice(StatusCode::FORBIDDEN, &headers(&[("retry-after", "7")]));
        assert_eq!(advice, Some(Duration::from_secs(7)));
    }

    #[test]
    fn an_exhausted_primary_limit_waits_for_its_reset() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let reset = (now + 30).to_string();
        let advice = retry_advice(
            StatusCode::FORBIDDEN,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ]),
        )
        .expect("advice");
        assert!((29..=30).contains(&advice.as_secs()), "{advice:?}");
        assert_eq!(
            retry_advice(
                StatusCode::FORBIDDEN,
                &headers(&[("x-ratelimit-remaining", "10")])
            ),
            None
        );
        assert_eq!(retry_advice(StatusCode::BAD_GATEWAY, &headers(&[])), None);
    }
}
