//! The controller's settings, from flags or environment variables.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::github::GitHubConfig;
use crate::sandbox::daytona::DaytonaSettings;
use crate::sandbox::local::LocalSandboxes;
use crate::sandbox::pod::PodSettings;

/// Settings of `smolpaws controller`.
#[derive(Args, Clone, Debug)]
pub struct ControllerConfig {
    /// GitHub App credentials; without them runs get no GitHub token and
    /// replies stay in the AgentRun status.
    #[command(flatten)]
    pub github: GitHubSettings,

    /// Sandbox pods.
    #[command(flatten)]
    pub sandbox: PodSettings,

    /// The Daytona backend.
    #[command(flatten)]
    pub daytona: DaytonaSettings,

    /// Only reconcile AgentRuns in this namespace; all namespaces when unset.
    #[arg(long, env = "SMOLPAWS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

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

    /// Runs with a sandbox at once, across all repositories.
    #[arg(long, env = "SMOLPAWS_MAX_CONCURRENT_RUNS", default_value_t = 10)]
    pub max_concurrent_runs: usize,

    /// Runs with a sandbox at once in one repository.
    #[arg(long, env = "SMOLPAWS_MAX_RUNS_PER_REPO", default_value_t = 2)]
    pub max_runs_per_repo: usize,

    /// Reconciles in flight at once.
    #[arg(long, env = "SMOLPAWS_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,

    /// How long a sandbox may take to start (image pull, scheduling).
    #[arg(long, env = "SMOLPAWS_PENDING_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub pending_timeout: Duration,

    /// How long an agent may run when its AgentRun sets no timeout.
    #[arg(long, env = "SMOLPAWS_RUN_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub run_timeout: Duration,

    /// How long finished AgentRuns are kept before they are deleted.
    #[arg(long = "run-ttl", env = "SMOLPAWS_RUN_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// The namespace of the leader-election Lease; the client's default
    /// namespace when unset.
    #[arg(long, env = "SMOLPAWS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long the leader's Lease lasts without renewal: how long a crashed
    /// leader's runs wait before a follower takes over.
    #[arg(long, env = "SMOLPAWS_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// This replica's name in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Local sandboxes, which only `smolpaws dev` sets up: no flag or
    /// variable can turn unisolated sandboxes on in a cluster.
    #[arg(skip)]
    pub local_sandboxes: Option<Arc<LocalSandboxes>>,
}

/// GitHub App settings, optional as a whole.
#[derive(Args, Clone, Debug)]
pub struct GitHubSettings {
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
}

impl GitHubSettings {
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
