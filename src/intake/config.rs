//! The intake's settings, from flags or the environment variables the old
//! webhook worker used.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::delivery::Rules;
use super::policy::Policy;
use super::signature::WebhookSecrets;
use super::throttle::RunRates;
use super::trigger::Mention;
use crate::api::SandboxBackend;

/// What the intake runs with: how deliveries are judged and verified, and
/// where runs go.
#[derive(Clone, Debug)]
pub struct IntakeConfig {
    /// The rules deliveries are judged by.
    pub rules: Rules,
    /// The accepted webhook secrets.
    pub secrets: WebhookSecrets,
    /// The namespace AgentRuns are created in; the client's default when
    /// unset.
    pub namespace: Option<String>,
    /// What one delivery, and all at once, may hold.
    pub limits: IntakeLimits,
}

/// What deliveries may hold before they are authenticated: the memory and
/// time an unsigned client can make the intake spend.
#[derive(Clone, Copy, Debug)]
pub struct IntakeLimits {
    /// The largest body read.
    pub max_body_bytes: usize,
    /// How long a whole body may take to arrive.
    pub body_timeout: Duration,
    /// Deliveries handled at once; more are answered 503 at once.
    pub max_in_flight: usize,
    /// Runs one author, and one repository, may start per hour.
    pub rates: RunRates,
}

/// Comment events are far below GitHub's 25 MiB cap: a comment and an issue
/// or pull request body of 65,536 characters each, every one escaped as a
/// 12-byte surrogate pair, is 1.5 MiB; a review comment's diff hunk adds
/// some more. 4 MiB leaves room and is a sixth of what GitHub allows.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: Duration::from_secs(10),
            // 64 bodies of 4 MiB: 256 MiB at worst, half the chart's limit.
            max_in_flight: 64,
            rates: RunRates::default(),
        }
    }
}

/// Settings of `smolpaws intake`.
#[derive(Args, Clone, Debug)]
pub struct IntakeArgs {
    /// Address the webhook server listens on.
    #[arg(
        long = "listen",
        env = "SMOLPAWS_INTAKE_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// The webhook secret set in the GitHub App (or --webhook-secret-file).
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_SECRET",
        hide_env_values = true,
        required_unless_present = "webhook_secret_file"
    )]
    pub webhook_secret: Option<SecretString>,

    /// A file holding the webhook secret, instead of GITHUB_WEBHOOK_SECRET.
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_SECRET_FILE",
        value_parser = crate::secret_file::read,
        conflicts_with = "webhook_secret"
    )]
    pub webhook_secret_file: Option<SecretString>,

    /// A second accepted webhook secret, while rotating to a new one: set the
    /// new secret here, then in the App, then move it to
    /// GITHUB_WEBHOOK_SECRET and clear this.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET_NEXT", hide_env_values = true)]
    pub webhook_secret_next: Option<SecretString>,

    /// Who and what may trigger runs.
    #[command(flatten)]
    pub rules: RuleArgs,

    /// The largest delivery body read, in bytes.
    #[arg(long, env = "SMOLPAWS_INTAKE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// How long a delivery's body may take to arrive.
    #[arg(long, env = "SMOLPAWS_INTAKE_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Deliveries handled at once; more are answered 503 at once.
    #[arg(long, env = "SMOLPAWS_INTAKE_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// Runs one comment author may start per hour, per intake replica
    /// (0: no limit).
    #[arg(long, env = "SMOLPAWS_RUNS_PER_ACTOR_PER_HOUR", default_value_t = RunRates::default().per_actor)]
    pub runs_per_actor_per_hour: u32,

    /// Runs one repository may start per hour, per intake replica (0: no
    /// limit).
    #[arg(long, env = "SMOLPAWS_RUNS_PER_REPO_PER_HOUR", default_value_t = RunRates::default().per_repository)]
    pub runs_per_repo_per_hour: u32,

    /// The namespace AgentRuns are created in; the client's default
    /// namespace (the pod's own, in a cluster) when unset.
    #[arg(long, env = "SMOLPAWS_NAMESPACE")]
    pub namespace: Option<String>,
}

impl IntakeArgs {
    /// The intake's typed settings.
    pub fn config(&self) -> IntakeConfig {
        IntakeConfig {
            rules: self.rules.rules(),
            secrets: self.secrets(),
            namespace: self.namespace.clone(),
            limits: IntakeLimits {
                max_body_bytes: self.max_body_bytes,
                body_timeout: self.body_timeout,
                max_in_flight: self.max_in_flight,
                rates: RunRates {
                    per_actor: self.runs_per_actor_per_hour,
                    per_repository: self.runs_per_repo_per_hour,
                },
            },
        }
    }

    /// The accepted webhook secrets.
    fn secrets(&self) -> WebhookSecrets {
        WebhookSecrets::new(
            self.webhook_secret
                .iter()
                .chain(&self.webhook_secret_file)
                .chain(&self.webhook_secret_next)
                .cloned(),
        )
    }
}

/// Who and what may trigger runs, from the variables the old webhook worker
/// used.
#[derive(Args, Clone, Debug)]
pub struct RuleArgs {
    /// The mention that asks smolpaws for a run.
    #[arg(long, env = "SMOLPAWS_TRIGGER", default_value = "@smolpaws")]
    pub trigger: Mention,

    /// GitHub logins allowed to trigger runs, comma separated. Empty: nobody.
    #[arg(long, env = "ALLOWED_ACTORS", value_delimiter = ',')]
    pub allowed_actors: Vec<String>,

    /// Repository owners (users or organizations) whose repositories may
    /// trigger runs, comma separated. Empty: none.
    #[arg(long, env = "ALLOWED_OWNERS", value_delimiter = ',')]
    pub allowed_owners: Vec<String>,

    /// If set, only these repositories (owner/name, comma separated).
    #[arg(long, env = "ALLOWED_REPOS", value_delimiter = ',')]
    pub allowed_repos: Vec<String>,

    /// If set, only these App installation ids (comma separated).
    #[arg(long, env = "ALLOWED_INSTALLATIONS", value_delimiter = ',')]
    pub allowed_installations: Vec<u64>,

    /// The App's slug; comments by `<slug>[bot]` never trigger runs.
    #[arg(long, env = "GITHUB_APP_SLUG")]
    pub app_slug: Option<String>,

    /// The sandbox backend runs are created for: `pod` or `daytona` (the
    /// unisolated local backend exists only inside `smolpaws dev`).
    #[arg(
        long,
        env = "SMOLPAWS_SANDBOX_BACKEND",
        default_value = "pod",
        value_parser = cluster_backend
    )]
    pub sandbox_backend: SandboxBackend,

    /// Comments older than this start no run (with five minutes' slack for
    /// clock skew), so a replayed or late redelivered comment is not
    /// answered twice; keep it below SMOLPAWS_RUN_TTL. `0s`: any age.
    #[arg(long, env = "SMOLPAWS_MAX_COMMENT_AGE", default_value = "1h")]
    pub max_comment_age: humantime::Duration,
}

impl RuleArgs {
    /// The rules deliveries are judged by.
    pub fn rules(&self) -> Rules {
        Rules {
            mention: self.trigger.clone(),
            policy: Policy::new(
                self.allowed_actors.iter().cloned(),
                self.allowed_owners.iter().cloned(),
                self.allowed_repos.iter().cloned(),
                self.allowed_installations.iter().copied(),
            ),
            app_login: self.app_slug.as_ref().map(|slug| format!("{slug}[bot]")),
            backend: self.sandbox_backend,
            max_age: Some(Duration::from(self.max_comment_age)).filter(|age| !age.is_zero()),
        }
    }
}

/// A backend a cluster runs; `local` is refused, so no flag or variable
/// can make the intake ask for unisolated sandboxes.
fn cluster_backend(text: &str) -> Result<SandboxBackend, String> {
    match text {
        "pod" => Ok(SandboxBackend::Pod),
        "daytona" => Ok(SandboxBackend::Daytona),
        "local" => Err("the local backend runs only inside `smolpaws dev`".into()),
        other => Err(format!(
            "{other:?} is not a sandbox backend: use pod or daytona"
        )),
    }
}
