//! `smolpaws dev`: the whole system on one machine. An embedded control
//! plane (the tests' kube-apiserver and etcd), the operator against it, and
//! sandboxes as local processes, or with `--pods` as real pods on a node
//! beside the control plane; without GitHub App credentials, GitHub itself
//! is replaced by local repositories and `smolpaws dev comment`.

pub mod comment;
mod pods;
pub mod session;
mod terminal;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use crate::node::{NODE_NAME, Parts};
use crate::operator::{self, Operator};
use crate::sandbox::Sandboxes;
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

    /// Run sandboxes as real, isolated pods on a one-node cluster (kubelet,
    /// containerd, runc) beside the control plane, instead of local
    /// processes. Linux, as root; the first start builds the node's parts
    /// (tools/node/build.sh) and images (tools/node/images.sh).
    #[arg(long)]
    pub pods: bool,

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
    require_llm(&args.controller)?;
    let github = args.controller.github.app().is_some();
    // What a node needs is checked before anything starts.
    let parts = if args.pods {
        if github {
            anyhow::bail!(
                "--pods runs sandboxes on a node with no route out of its network namespace, so \
                 they cannot reach GitHub: unset GITHUB_APP_ID to work on local repositories"
            );
        }
        Some(Parts::ready().await?)
    } else {
        None
    };
    let intake = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: pass --listen", args.listen))?;
    let intake_address = intake.local_addr()?;
    let webhook_secret = crate::random::token();
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
    rules.backend = if args.pods {
        SandboxBackend::Pod
    } else {
        SandboxBackend::Local
    };
    let intake_config = IntakeConfig {
        rules,
        secrets: WebhookSecrets::new([SecretString::from(webhook_secret.clone())]),
        namespace: None,
        limits: IntakeLimits::default(),
    };
    let repositories = dir.join("repositories");
    let tools = Tools::locate().await?;
    let mut controller_args = args.controller.clone();
    let cluster = match parts {
        Some(parts) => {
            eprintln!(
                "smolpaws dev: starting a one-node cluster (the first start builds the node's parts \
                 and images, many minutes)"
            );
            node_cluster(tools, parts, &mut controller_args, &repositories).await?
        }
        None => {
            eprintln!(
                "smolpaws dev: starting a local Kubernetes control plane (the first start builds \
                 kube-apiserver and etcd from tools/, about 10 minutes)"
            );
            local_cluster(
                tools,
                &controller_args,
                &dir,
                (!github).then_some(&repositories),
            )
            .await?
        }
    };
    // Logging starts once the apiserver is ready: its start-up answers would
    // fill the terminal with errors that are part of waiting for it.
    telemetry::init(log_format, Output::Stderr);
    let client = cluster.client.clone();
    controlplane::install_crds(&client, &[AgentRun::crd()]).await?;
    let kubeconfig = dir.join("kubeconfig");
    session::write_private(&kubeconfig, cluster.kubeconfig.as_bytes())?;
    let session = Session {
        intake: format!("http://{intake_address}"),
        webhook_secret,
        kubeconfig: kubeconfig.clone(),
        repositories,
        author,
    };
    session.save(&dir)?;

    let parts = operator::controller_parts(&controller_args, cluster.sandboxes)?;
    let mut controller = controller_args.config();
    controller.lease = Some(LeaseConfig::new(None, Some("smolpaws-dev".into())));
    let operator = Operator::new(client.clone())
        .intake(intake_config)
        .controller(controller, parts, cluster.results);
    println!(
        "smolpaws dev is running ({})\n\
         \n  intake:     {}/webhooks/github\n  kubeconfig: {}\n  GitHub:     {}\n\
         \nTry it:\n  smolpaws dev comment --repo /path/to/a/git/checkout \"@smolpaws what does this project do?\"\n  KUBECONFIG={} kubectl get agentruns\n\
         \nCtrl-C stops everything.\n",
        cluster.sandboxes_are,
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
    drop(cluster.running);
    Ok(outcome?)
}

/// Where dev mode's runs go: its cluster, and the sandboxes it runs them in.
struct Cluster {
    client: kube::Client,
    /// The admin kubeconfig (YAML), for the developer's tools.
    kubeconfig: String,
    /// Where sandboxes reach the result endpoint and the LLM gateway.
    results: TcpListener,
    sandboxes: Sandboxes,
    /// What the sandboxes are, for the developer.
    sandboxes_are: String,
    /// Stops the cluster, and whatever it changed, when dropped.
    running: Box<dyn Send>,
}

/// A control plane with sandboxes as local processes; with `repositories`,
/// agents work in the local checkouts linked there.
async fn local_cluster(
    tools: Tools,
    controller: &ControllerArgs,
    dir: &Path,
    repositories: Option<&PathBuf>,
) -> anyhow::Result<Cluster> {
    let results = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port")?;
    let environment =
        operator::agent_environment(controller, &format!("http://{}", results.local_addr()?));
    let local = LocalSandboxes::new(
        std::env::current_exe().context("cannot find the running executable")?,
        dir.join("sandboxes"),
        repositories.cloned(),
        environment.clone(),
    );
    let plane = ControlPlane::start(&tools).await?;
    let client = plane.client()?;
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig_path())?;
    // The unisolated local backend joins the cluster's only here.
    let sandboxes = operator::cluster_sandboxes(&client, controller, &environment)
        .with(SandboxBackend::Local, Arc::new(local));
    Ok(Cluster {
        client,
        kubeconfig,
        results,
        sandboxes,
        sandboxes_are: "sandboxes are local processes: NOT isolated".into(),
        running: Box::new(plane),
    })
}

/// A one-node cluster of `parts` whose pods are the sandboxes, their
/// checkouts from `repositories`; `controller` learns the node's images.
async fn node_cluster(
    tools: Tools,
    parts: Parts,
    controller: &mut ControllerArgs,
    repositories: &Path,
) -> anyhow::Result<Cluster> {
    let started = pods::start(tools, parts, controller, repositories).await?;
    let result_url = format!("http://{}", started.results.local_addr()?);
    let environment = operator::agent_environment(controller, &result_url);
    let client = kube::Client::try_from(started.config)?;
    let sandboxes = operator::cluster_sandboxes(&client, controller, &environment);
    Ok(Cluster {
        client,
        kubeconfig: started.kubeconfig,
        results: started.results,
        sandboxes,
        sandboxes_are: format!(
            "sandboxes are pods on node {NODE_NAME}, Ready in {:.1?}",
            started.pods.started_in()
        ),
        running: Box::new(started.pods),
    })
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
