//! The agent's credentials leave its environment before it reads anything.
//!
//! A sandbox hands the agent its credentials as environment variables, and
//! a process's initial environment stays readable in `/proc/<pid>/environ`
//! for its whole life. So the agent, first thing, executes itself again
//! with those variables removed and their values written into a pipe that
//! becomes the new image's stdin; the new image reads them from there. The
//! process keeps its pid (and its place as a pod's PID 1), and no
//! environment it ever exposes holds a secret.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{AgentArgs, AgentError};
use crate::api::contract::env;

/// Set in the environment of the image that receives the credentials.
const ON_STDIN: &str = "SMOLPAWS_CREDENTIALS_ON_STDIN";

/// The variables that never stay in the agent's environment.
const MOVED: [&str; 3] = [env::GITHUB_TOKEN, env::REPORT_TOKEN, env::LLM_API_KEY];

/// What travels through the pipe.
#[derive(Default, Serialize, Deserialize)]
struct Credentials {
    github_token: Option<String>,
    report_token: Option<String>,
    llm_api_key: Option<String>,
}

/// Whether this image still has credentials in its environment.
pub fn holds_credentials() -> bool {
    std::env::var_os(ON_STDIN).is_none()
        && MOVED.iter().any(|name| std::env::var_os(name).is_some())
}

/// Executes this program again with `args`' credentials moved from the
/// environment to stdin. Returns only when that failed.
pub fn reexecute(args: &AgentArgs) -> AgentError {
    let reveal = |secret: Option<&SecretString>| secret.map(|s| s.expose_secret().to_owned());
    let credentials = Credentials {
        github_token: reveal(args.github_token.as_ref()),
        report_token: reveal(args.report_token.as_ref()),
        llm_api_key: reveal(args.settings.llm.api_key.as_ref()),
    };
    let failed = |what: &str, error: std::io::Error| {
        AgentError::Config(format!(
            "could not move the agent's credentials out of its environment ({what}): {error}"
        ))
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => return failed("finding this program", error),
    };
    let (reader, mut writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(error) => return failed("making a pipe", error),
    };
    let json = serde_json::to_vec(&credentials).expect("credentials serialize");
    // Far below a pipe's buffer: the write completes before anyone reads.
    if let Err(error) = writer.write_all(&json) {
        return failed("writing the pipe", error);
    }
    // The writer is close-on-exec: the new image reads to the end.
    let mut command = Command::new(program);
    command
        .args(std::env::args_os().skip(1))
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| !MOVED.iter().any(|m| name == m)))
        .env(ON_STDIN, "1")
        .stdin(Stdio::from(reader));
    failed("executing", command.exec())
}

/// Takes the credentials an earlier image of this process handed over on
/// stdin into `args`; nothing when none were handed over.
pub fn receive(args: &mut AgentArgs) -> Result<(), AgentError> {
    if std::env::var_os(ON_STDIN).is_none() {
        return Ok(());
    }
    let mut json = Vec::new();
    std::io::stdin().read_to_end(&mut json).map_err(|e| {
        AgentError::Config(format!("could not read the handed-over credentials: {e}"))
    })?;
    let credentials: Credentials = serde_json::from_slice(&json).map_err(|e| {
        AgentError::Config(format!("the handed-over credentials are not readable: {e}"))
    })?;
    let secret = |value: Option<String>| value.map(SecretString::from);
    args.github_token = secret(credentials.github_token);
    args.report_token = secret(credentials.report_token);
    args.settings.llm.api_key = secret(credentials.llm_api_key);
    Ok(())
}
