//! `smolpaws logs RUN`: a run's sandbox output, followed until the run ends.

#[cfg(feature = "dev")]
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use crate::api::{AgentRun, SandboxBackend, SandboxRef};

/// How often a run is looked at while waiting for its sandbox or its end.
const POLL: Duration = Duration::from_millis(500);

/// Settings of `smolpaws logs`.
#[derive(Args, Clone, Debug)]
pub struct LogsArgs {
    /// The AgentRun's name.
    pub run: String,
    /// The namespace; the kube context's when unset.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Print what is there and stop, rather than follow until the run ends.
    #[arg(long)]
    pub no_follow: bool,
}

/// Prints the run's sandbox output.
pub async fn run(client: kube::Client, args: LogsArgs) -> anyhow::Result<()> {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &namespace);
    let sandbox = sandbox_of(&runs, &args).await?;
    match sandbox.backend {
        SandboxBackend::Pod => {
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            let params = LogParams {
                container: Some("agent".into()),
                follow: !args.no_follow,
                ..LogParams::default()
            };
            let stream = match pods.log_stream(&sandbox.name, &params).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.is_not_found() => anyhow::bail!(
                    "the sandbox pod {} is gone: a sandbox is deleted as soon as its result is \
                     stored, and with its run; `kubectl describe agentrun {}` tells how it ended",
                    sandbox.name,
                    args.run
                ),
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot read the log of pod {}", sandbox.name));
                }
            };
            let mut lines = stream.lines();
            while let Some(line) = lines.try_next().await? {
                println!("{line}");
            }
            Ok(())
        }
        #[cfg(feature = "dev")]
        SandboxBackend::Local => {
            let log = crate::sandbox::local::log_path(std::path::Path::new(&sandbox.name));
            tail(&runs, &args, log).await
        }
        #[cfg(not(feature = "dev"))]
        SandboxBackend::Local => anyhow::bail!(
            "{} ran in a local sandbox of `smolpaws dev`, which this build leaves out",
            args.run
        ),
        SandboxBackend::Daytona => anyhow::bail!(
            "{} runs in Daytona sandbox {}: its output is in the controller's log",
            args.run,
            sandbox.name
        ),
    }
}

/// The run's sandbox, waiting for it when following.
async fn sandbox_of(runs: &Api<AgentRun>, args: &LogsArgs) -> anyhow::Result<SandboxRef> {
    let mut told = false;
    loop {
        let run = runs
            .get_opt(&args.run)
            .await?
            .with_context(|| format!("there is no AgentRun {}", args.run))?;
        let phase = run.phase();
        if let Some(sandbox) = run.status.and_then(|s| s.sandbox) {
            return Ok(sandbox);
        }
        if args.no_follow || phase.is_terminal() {
            anyhow::bail!("{} has no sandbox (it is {phase})", args.run);
        }
        if !told {
            eprintln!("waiting for the sandbox of {} ({phase})...", args.run);
            told = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints a local sandbox's log as it grows, until the run ends.
#[cfg(feature = "dev")]
async fn tail(
    runs: &Api<AgentRun>,
    args: &LogsArgs,
    log: std::path::PathBuf,
) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        // Read the end state before the file: output written before the run
        // ended is then printed by this pass.
        let ended = args.no_follow
            || runs
                .get_opt(&args.run)
                .await?
                .is_none_or(|run| run.phase().is_terminal());
        if let Ok(mut file) = std::fs::File::open(&log) {
            file.seek(SeekFrom::Start(offset))?;
            let mut fresh = Vec::new();
            offset += file.read_to_end(&mut fresh)? as u64;
            out.write_all(&fresh)?;
            out.flush()?;
        }
        if ended {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
