//! `smolpaws dev`: the whole system on one machine. An embedded control
//! plane (the tests' kube-apiserver and etcd), the operator against it, and
//! sandboxes as local processes; without GitHub App credentials, GitHub
//! itself is replaced by local repositories and `smolpaws dev comment`.

pub mod comment;
pub mod session;
mod terminal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kube::CustomResourceExt;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AgentRun, SandboxBackend};
use crate::controller::{ControllerArgs, LeaseConfig};
use crate::controlplane::{self, ControlPlane, Tools};
use crate::intake::signature::WebhookSecrets;
use crate::intake::{IntakeConfig, IntakeLimits, RuleArgs};
use crate::operator::{self, Operator};
use crate::sandbox::local::LocalSandboxes;
use crate::telemetry::{self, LogFormat, Output};
use session::Session;

/// Settings of `smolpaws dev`.
#[derive(Args, Clone, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    /// Send a comment instead of starting dev mode.
    #[command(subcommand)]
    pub command: Option<DevCommand>,

    /// Where dev mode keeps its state: the kubeconfig, local sandboxes and
    /// links to local repositories.
    #[arg(long, env = "SMOLPAWS_DEV_DIR", global = true)]
    pub dir: Option<PathBuf>,

    /// Where the intake listens.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Who may trigger runs; with no App, the local author on local
    /// repositories unless set.
    #[command(flatten)]
    pub rules: RuleArgs,

    /// The controller's settings (the LLM, limits, timeouts).
    #[command(flatten)]
    pub controller: ControllerArgs,
}

/// What else `smolpaws dev` does.
#[derive(Clone, Debug, Subcommand)]
pub enum DevCommand {
    /// Comment on an issue of a local repository, as GitHub would: a signed
    /// `issue_comment` webhook to the running dev intake.
    Comment(comment::CommentArgs),
}

/// The default state directory.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: pass --dir")?;
    Ok(PathBuf::from(home).join(".cache/smolpaws/dev"))
}

/// Runs `smolpaws dev` until Ctrl-C (or SIGTERM).
pub async fn run(
    args: DevArgs,
    log_format: LogFormat,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let dir = match args.dir.clone() {
        Some(dir) => dir,
        None => default_dir()?,
    };
    if let Some(DevCommand::Comment(comment)) = args.command {
        return comment::send(&dir, comment).await;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let intake = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: pass --listen", args.listen))?;
    let results = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port")?;
    let intake_address = intake.local_addr()?;
    let results_address = results.local_addr()?;
    let webhook_secret = crate::random::token();
    require_llm(&args.controller)?;
    let github = args.controller.github.app().is_some();
    let author = session::local_author();
    let mut rules = args.rules.clone();
    if !github {
        // Local repositories have one owner and one commenter: let them in
        // unless the allowlists say otherwise.
        if rules.allowed_owners.is_empty() {
            rules.allowed_owners = vec![comment::LOCAL_OWNER.to_owned()];
        }
        if rules.allowed_actors.is_empty() {
            rules.allowed_actors = vec![author.clone()];
        }
    }
    let mut rules = rules.rules();
    rules.backend = SandboxBackend::Local;
    let intake_config = IntakeConfig {
        rules,
        secrets: WebhookSecrets::new([SecretString::from(webhook_secret.clone())]),
        namespace: None,
        limits: IntakeLimits::default(),
    };
    let repositories = dir.join("repositories");
    let environment =
        operator::agent_environment(&args.controller, &format!("http://{results_address}"));
    let local = LocalSandboxes::new(
        std::env::current_exe().context("cannot find the running executable")?,
        dir.join("sandboxes"),
        (!github).then(|| repositories.clone()),
        environment.clone(),
    );

    eprintln!(
        "smolpaws dev: starting a local Kubernetes control plane (the first start builds kube-apiserver and etcd from tools/, about 10 minutes)"
    );
    let tools = Tools::locate().await?;
    let plane = ControlPlane::start(&tools).await?;
    // Logging starts once the apiserver is ready: its start-up answers would
    // fill the terminal with errors that are part of waiting for it.
    telemetry::init(log_format, Output::Stderr);
    let client = plane.client()?;
    controlplane::install_crds(&client, &[AgentRun::crd()]).await?;
    let kubeconfig = dir.join("kubeconfig");
    session::write_private(&kubeconfig, &std::fs::read(plane.kubeconfig_path())?)?;
    let session = Session {
        intake: format!("http://{intake_address}"),
        webhook_secret,
        kubeconfig: kubeconfig.clone(),
        repositories,
        author,
    };
    session.save(&dir)?;

    // The unisolated local backend joins the cluster's only here.
    let sandboxes = operator::cluster_sandboxes(&client, &args.controller, &environment)
        .with(SandboxBackend::Local, Arc::new(local));
    let parts = operator::controller_parts(&args.controller, sandboxes)?;
    let mut controller = args.controller.config();
    controller.lease = Some(LeaseConfig::new(None, Some("smolpaws-dev".into())));
    let operator = Operator::new(client.clone())
        .intake(intake_config)
        .controller(controller, parts, results);
    println!(
        "smolpaws dev is running (sandboxes are local processes: NOT isolated)\n\
         \n  intake:     {}/webhooks/github\n  kubeconfig: {}\n  GitHub:     {}\n\
         \nTry it:\n  smolpaws dev comment --repo /path/to/a/git/checkout \"@smolpaws what does this project do?\"\n  KUBECONFIG={} kubectl get agentruns\n\
         \nCtrl-C stops everything.\n",
        session.intake,
        kubeconfig.display(),
        if github {
            "the GitHub App from GITHUB_APP_ID"
        } else {
            "local repositories (replies are printed here)"
        },
        kubeconfig.display(),
    );
    let printer = tokio::spawn(terminal::print_runs(client.clone(), stop.clone()));
    let outcome = operator.run(intake, stop.clone()).await;
    stop.cancel();
    let _ = printer.await;
    session::remove(&dir);
    drop(plane);
    Ok(outcome?)
}

/// Dev mode needs an LLM; it says which variable to set rather than start
/// runs that can only fail.
fn require_llm(controller: &ControllerArgs) -> anyhow::Result<()> {
    let llm = &controller.sandbox.llm;
    if llm.model.is_none() {
        anyhow::bail!(
            "set LLM_MODEL to the model the agent uses. Any OpenAI-compatible endpoint works, \
             e.g. a local Ollama: LLM_MODEL=qwen2.5-coder:7b LLM_BASE_URL=http://localhost:11434/v1; \
             for OpenAI or Anthropic set LLM_API_KEY too"
        );
    }
    if llm.base_url.is_none() && llm.api_key.is_none() && llm.api_key_file.is_none() {
        anyhow::bail!(
            "set LLM_API_KEY for the provider's hosted API, or LLM_BASE_URL for a local \
             OpenAI-compatible endpoint (e.g. http://localhost:11434/v1 for Ollama)"
        );
    }
    Ok(())
}
