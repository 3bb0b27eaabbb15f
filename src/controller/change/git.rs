//! git as the controller runs it on a sandbox's change: in a bare
//! repository of a temporary directory it owns, with nothing that could
//! execute (no hooks, no fsmonitor, no system or global config), only the
//! transports it needs (the server's scheme, and files for the bundle),
//! every object checked as it arrives, and a timeout on each command.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use tokio::process::Command;

use crate::agent::checkout::auth_header;
use crate::agent::hardening;

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started (is it installed in the operator's image?).
    #[error("cannot run git for {step}: {message}")]
    Start {
        /// What it was for.
        step: &'static str,
        /// The cause.
        message: String,
    },
    /// It ran past its timeout and was killed.
    #[error("git {step} did not finish within {0:?}", timeout)]
    Timeout {
        /// What it was for.
        step: &'static str,
        /// Its timeout.
        timeout: Duration,
    },
    /// It exited non-zero.
    #[error("git {step} failed: {stderr}")]
    Failed {
        /// What it was for.
        step: &'static str,
        /// git's own words (no token is ever in them: it travels in the
        /// environment).
        stderr: String,
    },
}

/// A throwaway bare repository and the way to run git in it.
pub struct Git {
    dir: tempfile::TempDir,
    settings: Vec<(String, String)>,
    timeout: Duration,
}

impl Git {
    /// A new bare repository that talks to `server` with `token`.
    pub async fn new(
        server: &str,
        token: &SecretString,
        timeout: Duration,
    ) -> Result<Self, GitError> {
        let dir = tempfile::Builder::new()
            .prefix("smolpaws-change-")
            .tempdir()
            .map_err(|e| GitError::Start {
                step: "init",
                message: format!("no temporary directory: {e}"),
            })?;
        let scheme = server
            .split_once("://")
            .map_or("https", |(scheme, _)| scheme);
        let settings = [
            ("protocol.allow", "never"),
            // The bundle is read as a file.
            ("protocol.file.allow", "always"),
            ("transfer.fsckObjects", "true"),
            ("fetch.fsckObjects", "true"),
            ("core.symlinks", "false"),
            ("gc.auto", "0"),
            ("advice.detachedHead", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([(format!("protocol.{scheme}.allow"), "always".to_owned())])
        .chain([auth_header(server, token)])
        .collect();
        let git = Self {
            dir,
            settings,
            timeout,
        };
        git.run("init", &["init", "-q", "--bare"]).await?;
        Ok(git)
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git with `args`; its stdout.
    pub async fn run(&self, step: &'static str, args: &[&str]) -> Result<String, GitError> {
        let mut command = Command::new("git");
        hardening::confine(&mut command, &self.settings)
            .arg("--git-dir")
            .arg(self.dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| GitError::Timeout {
                step,
                timeout: self.timeout,
            })?
            .map_err(|e| GitError::Start {
                step,
                message: e.to_string(),
            })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        // A porcelain push reports its refusal on stdout.
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !stdout.trim().is_empty() {
            stderr = format!("{}\n{stderr}", stdout.trim());
        }
        Err(GitError::Failed { step, stderr })
    }
}
