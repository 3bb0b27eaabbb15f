//! `smolpaws run`: start an AgentRun by hand in the current kube context and
//! follow it to its reply.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::{
    AgentOptions, AgentRun, AgentRunSpec, GitHubContext, Phase, SandboxBackend, SandboxSpec,
};

/// Settings of `smolpaws run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The repository, `owner/name`.
    #[arg(long)]
    pub repo: String,
    /// The issue or pull request number the request is about.
    #[arg(long)]
    pub issue: i64,
    /// The number is a pull request (its head is checked out).
    #[arg(long)]
    pub pr: bool,
    /// Keep the reply off GitHub: it is printed and kept in the run's status.
    #[arg(long)]
    pub no_post: bool,
    /// Where the agent runs.
    #[arg(long, value_enum, default_value = "pod")]
    pub backend: SandboxBackend,
    /// The model, instead of the operator's LLM_MODEL.
    #[arg(long)]
    pub model: Option<String>,
    /// The namespace; the kube context's when unset.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// How long to follow the run before giving up (it goes on regardless).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// The request.
    pub prompt: String,
}

/// Why following failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// A Kubernetes call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The watch failed.
    #[error("watching the run failed: {0}")]
    Watch(#[from] watcher::Error),
    /// Writing to the terminal failed.
    #[error("writing the output failed: {0}")]
    Io(#[from] std::io::Error),
    /// The run did not end in time.
    #[error("{0} did not finish within {1}; follow it with `kubectl get agentrun {0} -w`")]
    Timeout(String, String),
    /// The run was deleted while followed.
    #[error("{0} was deleted")]
    Gone(String),
}

/// Creates the run and prints its phases, then its reply. The run's final
/// phase is returned: the caller's exit code follows it.
pub async fn run(client: kube::Client, args: RunArgs) -> Result<Phase, FollowError> {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<AgentRun> = Api::namespaced(client, &namespace);
    let mut run = AgentRun::new(
        "",
        AgentRunSpec {
            prompt: args.prompt,
            github: GitHubContext {
                installation_id: None,
                repository: args.repo,
                number: args.issue,
                pull_request: args.pr,
                comment: None,
                head: None,
                post_reply: !args.no_post,
                delivery_id: None,
                changes: None,
                allow_workflow_changes: false,
            },
            sandbox: SandboxSpec {
                backend: args.backend,
                ..SandboxSpec::default()
            },
            agent: args.model.map(|model| AgentOptions {
                model: Some(model),
                ..AgentOptions::default()
            }),
        },
    );
    run.metadata.name = None;
    run.metadata.generate_name = Some("run-".into());
    let created = api.create(&PostParams::default(), &run).await?;
    let name = created.metadata.name.unwrap_or_default();
    println!("agentrun/{name} created in {namespace}");
    follow(&api, &name, args.wait).await
}

/// Prints `name`'s phases as they change, then its reply; returns the phase
/// it ended in.
pub async fn follow(api: &Api<AgentRun>, name: &str, wait: Duration) -> Result<Phase, FollowError> {
    let mut out = std::io::stdout();
    let followed = async {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(api.clone(), config).applied_objects().boxed();
        let mut shown = None;
        while let Some(run) = events.next().await {
            let run = run?;
            let phase = run.phase();
            if shown != Some(phase) {
                let message = run
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_default();
                writeln!(out, "{phase:<12} {message}")?;
                shown = Some(phase);
            }
            if phase.is_terminal() {
                if let Some(result) = run.status.and_then(|s| s.result) {
                    writeln!(out, "\n{}", result.reply)?;
                }
                return Ok(phase);
            }
        }
        Err(FollowError::Gone(name.to_owned()))
    };
    match tokio::time::timeout(wait, followed).await {
        Ok(outcome) => outcome,
        Err(_) => Err(FollowError::Timeout(
            name.to_owned(),
            humantime::format_duration(wait).to_string(),
        )),
    }
}
