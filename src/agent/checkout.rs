//! The checkout: the run's repository at the commit the request is about, in
//! the workspace, shallow.
//!
//! The token reaches git through the environment (`GIT_CONFIG_*`), so it
//! appears in no command line, no `.git/config` and no log.

use std::path::Path;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;

use super::hardening;
use super::redact::Redactor;

/// What to check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The default branch (an issue).
    DefaultBranch,
    /// A pull request's head: its commit when known, else `refs/pull/N/head`.
    PullRequest {
        /// The pull request number.
        number: i64,
        /// The head commit.
        sha: Option<String>,
    },
}

/// Why the checkout failed, in words for the person who asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckoutError {
    /// The repository does not exist, or the token cannot see it.
    #[error("the repository {0} was not found (or the App cannot see it)")]
    NotFound(String),
    /// The token was refused.
    #[error("GitHub refused the run's token for {0}; the App installation may lack access")]
    BadToken(String),
    /// The commit or ref is gone (force-pushed, deleted branch).
    #[error("{0} is not in the repository (was it force-pushed or deleted?)")]
    MissingRef(String),
    /// git failed otherwise.
    #[error("git {step} failed: {message}")]
    Git {
        /// The git step.
        step: &'static str,
        /// git's own words, secrets redacted.
        message: String,
    },
}

/// The commit that was checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedOut {
    /// Its sha.
    pub sha: String,
}

/// The git setting that presents installation token `token` to `server`
/// only, as GitHub takes it (basic auth as `x-access-token`): passed
/// through `GIT_CONFIG_*`, it is in no command line and no file.
pub fn auth_header(server: &str, token: &SecretString) -> (String, String) {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("x-access-token:{}", token.expose_secret()));
    (
        format!("http.{}/.extraHeader", server.trim_end_matches('/')),
        format!("Authorization: Basic {basic}"),
    )
}

/// Checks `repository` (`owner/name`) out of `server` (e.g.
/// `https://github.com`) into `dir` at `target`.
pub async fn checkout(
    server: &str,
    repository: &str,
    token: Option<&SecretString>,
    target: &Target,
    dir: &Path,
) -> Result<CheckedOut, CheckoutError> {
    let redactor = Redactor::new(token.map(|t| t.expose_secret()));
    let url = format!("{}/{repository}.git", server.trim_end_matches('/'));
    let wanted = match target {
        Target::DefaultBranch => "HEAD".to_owned(),
        Target::PullRequest { sha: Some(sha), .. } => sha.clone(),
        Target::PullRequest { number, sha: None } => format!("refs/pull/{number}/head"),
    };
    let header: Vec<(String, String)> = token
        .map(|token| auth_header(server, token))
        .into_iter()
        .collect();
    let git = |step: &'static str, args: &[&str]| {
        let mut command = Command::new("git");
        hardening::confine(&mut command, &header)
            .arg("-C")
            .arg(dir)
            .args(args)
            .kill_on_drop(true);
        (step, command)
    };
    std::fs::create_dir_all(dir).map_err(|e| CheckoutError::Git {
        step: "init",
        message: format!("cannot create {}: {e}", dir.display()),
    })?;
    run(git("init", &["init", "-q"]), &redactor, repository, &wanted).await?;
    run(
        git("remote", &["remote", "add", "origin", &url]),
        &redactor,
        repository,
        &wanted,
    )
    .await?;
    run(
        git(
            "fetch",
            &["fetch", "-q", "--depth=1", "--no-tags", "origin", &wanted],
        ),
        &redactor,
        repository,
        &wanted,
    )
    .await?;
    run(
        git("checkout", &["checkout", "-q", "--detach", "FETCH_HEAD"]),
        &redactor,
        repository,
        &wanted,
    )
    .await?;
    let sha = run(
        git("rev-parse", &["rev-parse", "HEAD"]),
        &redactor,
        repository,
        &wanted,
    )
    .await?;
    Ok(CheckedOut {
        sha: sha.trim().to_owned(),
    })
}

/// The commit an existing checkout in `dir` is at (a local repository in
/// `smolpaws dev`, worked on as it is).
pub async fn existing(dir: &Path) -> Result<CheckedOut, CheckoutError> {
    let mut command = Command::new("git");
    hardening::confine(&mut command, &[])
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .kill_on_drop(true);
    let redactor = Redactor::new(None::<&str>);
    let where_ = dir.display().to_string();
    let sha = run(("rev-parse", command), &redactor, &where_, "HEAD").await?;
    Ok(CheckedOut {
        sha: sha.trim().to_owned(),
    })
}

/// Runs one git step; its stdout, or the error its stderr describes.
async fn run(
    (step, mut command): (&'static str, Command),
    redactor: &Redactor,
    repository: &str,
    wanted: &str,
) -> Result<String, CheckoutError> {
    let output = command.output().await.map_err(|e| CheckoutError::Git {
        step,
        message: format!("cannot run git: {e}"),
    })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = redactor.redact(String::from_utf8_lossy(&output.stderr).trim());
    let lower = stderr.to_lowercase();
    Err(
        if lower.contains("not found") || lower.contains("does not appear to be a git repository") {
            CheckoutError::NotFound(repository.to_owned())
        } else if lower.contains("authentication failed")
            || lower.contains("could not read username")
            || lower.contains("403")
            || lower.contains("401")
        {
            CheckoutError::BadToken(repository.to_owned())
        } else if lower.contains("couldn't find remote ref")
            || lower.contains("not our ref")
            || lower.contains("unadvertised object")
        {
            CheckoutError::MissingRef(wanted.to_owned())
        } else {
            CheckoutError::Git {
                step,
                message: stderr,
            }
        },
    )
}
