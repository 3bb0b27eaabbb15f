//! The controller's settings: [`ControllerArgs`] from flags or environment
//! variables, resolved into the typed [`ControllerConfig`] the controller
//! runs with (which tests and dev mode build directly).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::admission::Limits;
use super::change::ChangeSettings;
use super::progress::ProgressSettings;
use crate::api::ChangesMode;
use crate::github::GitHubConfig;
use crate::sandbox::args::SandboxArgs;
use crate::sandbox::daytona::DaytonaArgs;

const DEFAULT_MAX_RUNS: usize = 10;
const DEFAULT_MAX_RUNS_PER_REPO: usize = 2;
const DEFAULT_MAX_PENDING_RUNS_PER_REPO: usize = 20;
const DEFAULT_RECONCILE_CONCURRENCY: u16 = 16;
const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_LLM_MAX_REQUESTS: u64 = 200;
const DEFAULT_LLM_MAX_TOKENS: u64 = 2_000_000;
const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(300);

/// How the controller runs: limits, timeouts, and its scope.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Only reconcile AgentRuns in this namespace; all namespaces when unset.
    pub watch_namespace: Option<String>,
    /// The namespaces whose runs are served; any when empty.
    pub allowed_namespaces: Vec<String>,
    /// Runs with a sandbox at once.
    pub limits: Limits,
    /// Reconciles in flight at once.
    pub reconcile_concurrency: u16,
    /// How long a sandbox may take to start.
    pub pending_timeout: Duration,
    /// How long an agent may run when its AgentRun sets no timeout.
    pub run_timeout: Duration,
    /// How long finished AgentRuns are kept.
    pub ttl: Duration,
    /// Leader election; without it this controller reconciles at once and
    /// alone (one process, as in tests).
    pub lease: Option<LeaseConfig>,
    /// How agents' changes are delivered.
    pub changes: ChangeSettings,
    /// How the progress comment behaves.
    pub progress: ProgressSettings,
    /// The operator's own Deployment, in the Lease's namespace: what the
    /// replicas keep beyond any one of them (the run key's Secret) is owned
    /// by it, so removing the Deployment removes that too.
    pub deployment: Option<String>,
}

/// The leader-election Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace; the client's default namespace when unset.
    pub namespace: Option<String>,
    /// How long the Lease lasts without renewal.
    pub duration: Duration,
    /// This replica's name in the Lease; random when unset.
    pub identity: Option<String>,
}

impl Default for ControllerConfig {
    /// The defaults of the flags, without leader election.
    fn default() -> Self {
        Self {
            watch_namespace: None,
            allowed_namespaces: Vec::new(),
            limits: Limits {
                global: DEFAULT_MAX_RUNS,
                per_repository: DEFAULT_MAX_RUNS_PER_REPO,
                pending_per_repository: DEFAULT_MAX_PENDING_RUNS_PER_REPO,
            },
            reconcile_concurrency: DEFAULT_RECONCILE_CONCURRENCY,
            pending_timeout: DEFAULT_PENDING_TIMEOUT,
            run_timeout: DEFAULT_RUN_TIMEOUT,
            ttl: DEFAULT_TTL,
            lease: None,
            changes: ChangeSettings::default(),
            progress: ProgressSettings::default(),
            deployment: None,
        }
    }
}

impl LeaseConfig {
    /// A Lease in `namespace` held as `identity`, with the default duration.
    pub fn new(namespace: Option<String>, identity: Option<String>) -> Self {
        Self {
            namespace,
            duration: DEFAULT_LEASE_DURATION,
            identity,
        }
    }
}

/// Settings of `smolpaws controller`.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// GitHub App credentials; without them runs get no GitHub token and
    /// replies stay in the AgentRun status.
    #[command(flatten)]
    pub github: GitHubArgs,

    /// Sandboxes.
    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// The Daytona backend.
    #[command(flatten)]
    pub daytona: DaytonaArgs,

    /// Only reconcile AgentRuns in this namespace; all namespaces when unset.
    #[arg(long, env = "SMOLPAWS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// The namespaces whose AgentRuns are served, comma separated; a run in
    /// any other is failed before anything acts on it (no GitHub token, no
    /// sandbox, no reply). Empty: every watched namespace. Set it when
    /// watching all namespaces: whoever may create an AgentRun chooses the
    /// repository the App acts on.
    #[arg(long, env = "SMOLPAWS_ALLOWED_NAMESPACES", value_delimiter = ',')]
    pub allowed_namespaces: Vec<String>,

    /// Runs with a sandbox at once, across all repositories.
    #[arg(long, env = "SMOLPAWS_MAX_CONCURRENT_RUNS", default_value_t = DEFAULT_MAX_RUNS)]
    pub max_concurrent_runs: usize,

    /// Runs with a sandbox at once in one repository.
    #[arg(long, env = "SMOLPAWS_MAX_RUNS_PER_REPO", default_value_t = DEFAULT_MAX_RUNS_PER_REPO)]
    pub max_runs_per_repo: usize,

    /// Runs of one repository that may wait for a slot; a run that would
    /// wait behind more fails at once (QueueFull) and says so in its thread.
    #[arg(long, env = "SMOLPAWS_MAX_PENDING_RUNS_PER_REPO", default_value_t = DEFAULT_MAX_PENDING_RUNS_PER_REPO)]
    pub max_pending_runs_per_repo: usize,

    /// Reconciles in flight at once.
    #[arg(long, env = "SMOLPAWS_RECONCILE_CONCURRENCY", default_value_t = DEFAULT_RECONCILE_CONCURRENCY)]
    pub reconcile_concurrency: u16,

    /// How long a sandbox may take to start (image pull, scheduling).
    #[arg(long, env = "SMOLPAWS_PENDING_TIMEOUT", default_value_t = DEFAULT_PENDING_TIMEOUT.into())]
    pub pending_timeout: humantime::Duration,

    /// How long an agent may run when its AgentRun sets no timeout.
    #[arg(long, env = "SMOLPAWS_RUN_TIMEOUT", default_value_t = DEFAULT_RUN_TIMEOUT.into())]
    pub run_timeout: humantime::Duration,

    /// How long finished AgentRuns are kept before they are deleted.
    #[arg(long = "run-ttl", env = "SMOLPAWS_RUN_TTL", default_value_t = DEFAULT_TTL.into())]
    pub ttl: humantime::Duration,

    /// The most LLM requests one run may make through the gateway.
    #[arg(long, env = "SMOLPAWS_LLM_MAX_REQUESTS_PER_RUN", default_value_t = DEFAULT_LLM_MAX_REQUESTS)]
    pub llm_max_requests_per_run: u64,

    /// The most LLM tokens one run may spend through the gateway; a run's
    /// spec.agent.maxTokens may lower it.
    #[arg(long, env = "SMOLPAWS_LLM_MAX_TOKENS_PER_RUN", default_value_t = DEFAULT_LLM_MAX_TOKENS)]
    pub llm_max_tokens_per_run: u64,

    /// How long one LLM request through the gateway may take.
    #[arg(long, env = "SMOLPAWS_LLM_TIMEOUT", default_value_t = DEFAULT_LLM_TIMEOUT.into())]
    pub llm_timeout: humantime::Duration,

    /// The namespace of the leader-election Lease; the client's default
    /// namespace when unset.
    #[arg(long, env = "SMOLPAWS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long the leader's Lease lasts without renewal: how long a crashed
    /// leader's runs wait before a follower takes over.
    #[arg(long, env = "SMOLPAWS_LEASE_DURATION", default_value_t = DEFAULT_LEASE_DURATION.into())]
    pub lease_duration: humantime::Duration,

    /// This replica's name in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The operator's own Deployment, in the Lease's namespace, which owns
    /// what the replicas share (the run key's Secret): uninstalling the
    /// Deployment removes it.
    #[arg(long, env = "SMOLPAWS_DEPLOYMENT")]
    pub deployment: Option<String>,

    /// What becomes of an agent's change when its run does not say:
    /// `reply` (described only), `branch` (pushed to a branch) or
    /// `pullRequest` (pushed, and a draft pull request opened).
    #[arg(long, env = "SMOLPAWS_CHANGES", default_value = "pullRequest")]
    pub changes: ChangesMode,

    /// Branches smolpaws never pushes to, comma separated glob patterns
    /// (`*` matches anything), beside each repository's default branch.
    #[arg(long, env = "SMOLPAWS_PROTECTED_BRANCHES", value_delimiter = ',')]
    pub protected_branches: Vec<String>,

    /// Whether a run keeps one comment in its thread up to date with what
    /// it is doing (waiting, starting, the agent's last steps, done).
    #[arg(long, env = "SMOLPAWS_PROGRESS_COMMENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub progress_comment: bool,

    /// The least time between two edits of a progress comment's steps.
    #[arg(long, env = "SMOLPAWS_PROGRESS_INTERVAL", default_value = "3s")]
    pub progress_interval: humantime::Duration,
}

impl ControllerArgs {
    /// The controller's typed settings, leader-elected as a deployment is.
    pub fn config(&self) -> ControllerConfig {
        ControllerConfig {
            watch_namespace: self.watch_namespace.clone(),
            allowed_namespaces: self.allowed_namespaces.clone(),
            limits: Limits {
                global: self.max_concurrent_runs,
                per_repository: self.max_runs_per_repo,
                pending_per_repository: self.max_pending_runs_per_repo,
            },
            reconcile_concurrency: self.reconcile_concurrency,
            pending_timeout: self.pending_timeout.into(),
            run_timeout: self.run_timeout.into(),
            ttl: self.ttl.into(),
            lease: Some(LeaseConfig {
                namespace: self.lease_namespace.clone(),
                duration: self.lease_duration.into(),
                identity: self.identity.clone(),
            }),
            changes: ChangeSettings {
                mode: self.changes,
                protected: self.protected_branches.clone(),
                server_url: self.github.server_url.clone(),
                ..ChangeSettings::default()
            },
            progress: ProgressSettings {
                enabled: self.progress_comment,
                interval: self.progress_interval.into(),
            },
            deployment: self.deployment.clone(),
        }
    }
}

/// Where the result endpoint listens, and how sandboxes reach it.
#[derive(Args, Clone, Debug)]
pub struct ResultArgs {
    /// Address of the result endpoint that sandboxes report to.
    #[arg(
        long = "result-listen",
        env = "SMOLPAWS_RESULT_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub result_listen: SocketAddr,

    /// The URL sandboxes reach the result endpoint at, e.g.
    /// `http://smolpaws-results.smolpaws.svc:8081`.
    #[arg(long, env = "SMOLPAWS_RESULT_URL")]
    pub result_url: String,
}

/// GitHub App settings, optional as a whole.
#[derive(Args, Clone, Debug)]
pub struct GitHubArgs {
    /// The GitHub App's id; GitHub is off when unset.
    #[arg(long, env = "GITHUB_APP_ID")]
    pub app_id: Option<u64>,

    /// The App's private key (PEM). Prefer --app-private-key-file.
    #[arg(long, env = "GITHUB_APP_PRIVATE_KEY", hide_env_values = true)]
    pub app_private_key: Option<secrecy::SecretString>,

    /// A file holding the App's private key (PEM).
    #[arg(long, env = "GITHUB_APP_PRIVATE_KEY_FILE")]
    pub app_private_key_file: Option<std::path::PathBuf>,

    /// The REST API base URL; for GitHub Enterprise Server,
    /// `https://HOST/api/v3`.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub api_url: String,

    /// Where the controller pushes agents' changes (git over HTTPS), and
    /// the base of the links it posts; for GitHub Enterprise Server,
    /// `https://HOST`.
    #[arg(
        long = "github-server-url",
        env = "GITHUB_SERVER_URL",
        default_value = "https://github.com"
    )]
    pub server_url: String,
}

impl GitHubArgs {
    /// The App configuration, when an App id is set.
    pub fn app(&self) -> Option<GitHubConfig> {
        Some(GitHubConfig {
            app_id: self.app_id?,
            app_private_key: self.app_private_key.clone(),
            app_private_key_file: self.app_private_key_file.clone(),
            api_url: self.api_url.clone(),
        })
    }
}
