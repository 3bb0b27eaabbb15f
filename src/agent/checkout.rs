//! The checkout: the run's repository at the commit the request is about, in
//! the workspace, shallow.
//!
//! The token reaches git through the environment (`GIT_CONFIG_*`), so it
//! appears in no command line, no `.git/config` and no log.

use std::path::Path;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;

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
    let git = |step: &'static str, args: &[&str]| {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true);
        if let Some(token) = token {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("x-access-token:{}", token.expose_secret()));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env(
                    "GIT_CONFIG_KEY_0",
                    format!("http.{}/.extraHeader", server.trim_end_matches('/')),
                )
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A "server" holding `octo/hello.git` with a main branch and PR 7.
    fn server() -> (tempfile::TempDir, String) {
        let root = tempfile::tempdir().expect("a temp dir");
        let work = root.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "main\n").expect("write");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "main"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(work.join("README.md"), "feature\n").expect("write");
        git(&work, &["commit", "-q", "-am", "feature"]);
        let head = git(&work, &["rev-parse", "HEAD"]);
        let bare = root.path().join("octo/hello.git");
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(&bare, &["init", "-q", "--bare"]);
        git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        git(
            &work,
            &[
                "push",
                "-q",
                bare.to_str().expect("utf-8"),
                "main",
                "feature:refs/pull/7/head",
            ],
        );
        git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        (root, head)
    }

    #[tokio::test]
    async fn checks_out_the_default_branch_and_pull_request_heads() {
        let (root, head) = server();
        let url = format!("file://{}", root.path().display());
        let token = SecretString::from("ghs_secret_token_value");
        let issue = tempfile::tempdir().expect("a workspace");
        checkout(
            &url,
            "octo/hello",
            Some(&token),
            &Target::DefaultBranch,
            issue.path(),
        )
        .await
        .expect("the default branch");
        assert_eq!(
            std::fs::read_to_string(issue.path().join("README.md")).expect("read"),
            "main\n"
        );

        for target in [
            Target::PullRequest {
                number: 7,
                sha: Some(head.clone()),
            },
            Target::PullRequest {
                number: 7,
                sha: None,
            },
        ] {
            let pr = tempfile::tempdir().expect("a workspace");
            let out = checkout(&url, "octo/hello", Some(&token), &target, pr.path())
                .await
                .expect("the PR head");
            assert_eq!(out.sha, head, "{target:?}");
            let config = std::fs::read_to_string(pr.path().join(".git/config")).expect("read");
            assert!(
                !config.contains("ghs_secret") && !config.contains("extraHeader"),
                "{config}"
            );
        }
    }

    #[tokio::test]
    async fn missing_repositories_and_refs_say_so() {
        let (root, _) = server();
        let url = format!("file://{}", root.path().display());
        let dir = tempfile::tempdir().expect("a workspace");
        let missing = checkout(
            &url,
            "octo/nope",
            None,
            &Target::DefaultBranch,
            &dir.path().join("a"),
        )
        .await;
        assert_eq!(missing, Err(CheckoutError::NotFound("octo/nope".into())));
        let gone = Target::PullRequest {
            number: 8,
            sha: None,
        };
        let missing_ref = checkout(&url, "octo/hello", None, &gone, &dir.path().join("b")).await;
        assert_eq!(
            missing_ref,
            Err(CheckoutError::MissingRef("refs/pull/8/head".into()))
        );
    }
}
