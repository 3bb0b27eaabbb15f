//! The agent's credentials leave its environment before it reads anything.
//!
//! A sandbox hands the agent its credentials as environment variables, and
//! a process's initial environment stays readable in `/proc/<pid>/environ`
//! for its whole life. So the agent, first thing, executes itself again
//! with those variables removed and their values written into a pipe that
//! becomes the new image's stdin; the new image reads them from there. The
//! process keeps its pid (and its place as a pod's PID 1), and no
//! environment it ever exposes holds a secret. The runner
//! (`smolpaws agent serve`) does the same with its token and LLM key.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::api::contract::env;

/// Set in the environment of the image that receives the credentials.
const ON_STDIN: &str = "SMOLPAWS_CREDENTIALS_ON_STDIN";

/// The runner's token (`smolpaws agent serve`).
pub const RUNNER_TOKEN: &str = "SMOLPAWS_RUNNER_TOKEN";

/// The variables that never stay in the agent's environment.
const MOVED: [&str; 4] = [
    env::GITHUB_TOKEN,
    env::REPORT_TOKEN,
    env::LLM_API_KEY,
    RUNNER_TOKEN,
];

/// The credentials a process moves out of its environment.
#[derive(Default)]
pub struct Credentials {
    /// The run's GitHub token.
    pub github_token: Option<SecretString>,
    /// The run credential.
    pub report_token: Option<SecretString>,
    /// An LLM provider's key (outside sandboxes).
    pub llm_api_key: Option<SecretString>,
    /// The runner's token.
    pub runner_token: Option<SecretString>,
}

/// What travels through the pipe.
#[derive(Default, Serialize, Deserialize)]
struct Wire {
    github_token: Option<String>,
    report_token: Option<String>,
    llm_api_key: Option<String>,
    runner_token: Option<String>,
}

/// Whether this image still has credentials in its environment.
fn holds_credentials() -> bool {
    std::env::var_os(ON_STDIN).is_none()
        && MOVED.iter().any(|name| std::env::var_os(name).is_some())
}

/// Executes this program again with `credentials` moved from the
/// environment to stdin. Returns only when that failed.
fn reexecute(credentials: &Credentials) -> std::io::Error {
    let reveal =
        |secret: &Option<SecretString>| secret.as_ref().map(|s| s.expose_secret().to_owned());
    let wire = Wire {
        github_token: reveal(&credentials.github_token),
        report_token: reveal(&credentials.report_token),
        llm_api_key: reveal(&credentials.llm_api_key),
        runner_token: reveal(&credentials.runner_token),
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => return error,
    };
    let (reader, mut writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(error) => return error,
    };
    let json = serde_json::to_vec(&wire).expect("credentials serialize");
    // Far below a pipe's buffer: the write completes before anyone reads.
    if let Err(error) = writer.write_all(&json) {
        return error;
    }
    // The writer is close-on-exec: the new image reads to the end.
    let mut command = Command::new(program);
    command
        .args(std::env::args_os().skip(1))
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| !MOVED.iter().any(|m| name == m)))
        .env(ON_STDIN, "1")
        .stdin(Stdio::from(reader));
    command.exec()
}

/// The credentials an earlier image of this process handed over on stdin;
/// `None` when none were.
fn receive() -> std::io::Result<Option<Credentials>> {
    if std::env::var_os(ON_STDIN).is_none() {
        return Ok(None);
    }
    let mut json = Vec::new();
    std::io::stdin().read_to_end(&mut json)?;
    let wire: Wire = serde_json::from_slice(&json).map_err(std::io::Error::other)?;
    let secret = |value: Option<String>| value.map(SecretString::from);
    Ok(Some(Credentials {
        github_token: secret(wire.github_token),
        report_token: secret(wire.report_token),
        llm_api_key: secret(wire.llm_api_key),
        runner_token: secret(wire.runner_token),
    }))
}

/// Puts this process's credentials out of its tools' reach: executes it
/// again without them in its environment when they are there (not
/// returning then), else takes what an earlier image handed over (or keeps
/// `current`, given some other way), and makes the process non-dumpable.
pub fn isolate(current: Credentials) -> std::io::Result<Credentials> {
    if holds_credentials() {
        return Err(reexecute(&current));
    }
    let credentials = receive()?.unwrap_or(current);
    super::hardening::make_undumpable()?;
    Ok(credentials)
}
