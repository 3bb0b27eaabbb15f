//! The agent's change as the controller takes it: what the session left in
//! the workspace, committed on the checked-out commit as the App's bot, and
//! packed into a git bundle (commits only: no hooks, no config) for the
//! result contract. The sandbox cannot push; the controller checks the
//! bundle and pushes it.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tokio::process::Command;

use super::hardening;
use crate::api::AgentRunSpec;
use crate::api::contract::{Change, CommitAuthor, MAX_BUNDLE_BYTES};

/// The branch the bundle carries.
const BRANCH: &str = "refs/heads/smolpaws-change";

/// What became of the workspace's edits.
#[derive(Debug, PartialEq)]
pub enum Packed {
    /// Nothing differs from the checked-out commit.
    Unchanged,
    /// The change, ready to hand over.
    Change(Change),
    /// Larger than a change may be: described in the reply, not handed over.
    TooLarge(usize),
    /// Committed on this new branch of a local repository (`smolpaws dev`).
    Branch(String),
}

/// Commits everything that differs from `base` in checkout `dir` as
/// `author` and bundles the commits since `base`; the commit message names
/// the request.
pub async fn pack(
    dir: &Path,
    base: &str,
    spec: &AgentRunSpec,
    author: &CommitAuthor,
    timeout: Duration,
) -> Result<Packed, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let bundle = scratch.path().join("change.bundle");
    if !commit_all(dir, base, spec, author, timeout).await? {
        return Ok(Packed::Unchanged);
    }
    git(dir, &["update-ref", BRANCH, "HEAD"], timeout).await?;
    let range = format!("{base}..{BRANCH}");
    let path = bundle.to_string_lossy().into_owned();
    git(dir, &["bundle", "create", "-q", &path, &range], timeout).await?;
    let bytes = std::fs::read(&bundle).map_err(|e| format!("cannot read the bundle: {e}"))?;
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Ok(Packed::TooLarge(bytes.len()));
    }
    Ok(Packed::Change(Change {
        base: base.to_owned(),
        bundle: base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}

/// Commits everything that differs in checkout `dir` as `author`;
/// whether it is now ahead of `base`.
async fn commit_all(
    dir: &Path,
    base: &str,
    spec: &AgentRunSpec,
    author: &CommitAuthor,
    timeout: Duration,
) -> Result<bool, String> {
    git(dir, &["add", "-A"], timeout).await?;
    let staged = git(dir, &["diff", "--cached", "--name-only"], timeout).await?;
    if !staged.trim().is_empty() {
        let message = message(spec);
        let name = format!("user.name={}", author.name);
        let email = format!("user.email={}", author.email);
        let args = ["-c", &name, "-c", &email, "-c", "commit.gpgsign=false"];
        let commit = ["commit", "-q", "--no-verify", "-m", &message];
        git(dir, &[&args[..], &commit[..]].concat(), timeout).await?;
    }
    let ahead = git(
        dir,
        &["rev-list", "--count", &format!("{base}..HEAD")],
        timeout,
    )
    .await?;
    Ok(ahead.trim() != "0")
}

/// A worktree of a local repository (`smolpaws dev`) at its `HEAD`, where
/// the agent works instead of in the person's own working tree; removed
/// by [`LocalWork::finish`].
pub struct LocalWork {
    repository: std::path::PathBuf,
    scratch: tempfile::TempDir,
}

impl LocalWork {
    /// A detached worktree of `repository` at its `HEAD`.
    pub async fn add(repository: &Path, timeout: Duration) -> Result<Self, String> {
        let scratch = tempfile::Builder::new()
            .prefix("smolpaws-worktree-")
            .tempdir()
            .map_err(|e| format!("no temporary directory: {e}"))?;
        let path = scratch.path().join("work");
        let path = path.to_string_lossy().into_owned();
        git(
            repository,
            &["worktree", "add", "-q", "--detach", &path, "HEAD"],
            timeout,
        )
        .await?;
        Ok(Self {
            repository: repository.to_owned(),
            scratch,
        })
    }

    /// Where the agent works.
    pub fn path(&self) -> std::path::PathBuf {
        self.scratch.path().join("work")
    }

    /// Commits the agent's edits onto a new branch of the repository named
    /// after the request, and removes the worktree; the branch, when there
    /// was a change.
    pub async fn finish(
        self,
        base: &str,
        spec: &AgentRunSpec,
        author: &CommitAuthor,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let work = self.path();
        let branch = match commit_all(&work, base, spec, author, timeout).await {
            Ok(true) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let branch = format!("smolpaws/{}-{stamp}", spec.github.number);
                git(&work, &["branch", &branch, "HEAD"], timeout)
                    .await
                    .map(|_| Some(branch))
            }
            Ok(false) => Ok(None),
            Err(error) => Err(error),
        };
        let work = work.to_string_lossy().into_owned();
        git(
            &self.repository,
            &["worktree", "remove", "--force", &work],
            timeout,
        )
        .await?;
        branch
    }
}

/// The commit message: the request's first line, then where it was made.
fn message(spec: &AgentRunSpec) -> String {
    let first = spec
        .prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut subject: String = first.trim().chars().take(72).collect();
    if subject.is_empty() {
        subject = "Change requested from smolpaws".into();
    }
    let github = &spec.github;
    let asked = match &github.comment {
        Some(comment) => format!("Requested by @{} in {}", comment.author, comment.html_url),
        None => format!("Requested in {}#{}", github.repository, github.number),
    };
    format!("{subject}\n\n{asked}\n")
}

async fn git(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut command = Command::new("git");
    hardening::confine(&mut command, &[])
        .arg("-C")
        .arg(dir)
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| format!("git {} timed out", args[0]))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
