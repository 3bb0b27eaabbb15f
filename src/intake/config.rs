//! The intake's settings, from flags or the environment variables the old
//! webhook worker used.

use std::net::SocketAddr;

use clap::Args;
use secrecy::SecretString;

use super::delivery::Rules;
use super::policy::Policy;
use super::signature::WebhookSecrets;
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

    /// The webhook secret set in the GitHub App.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: SecretString,

    /// A second accepted webhook secret, while rotating to a new one: set the
    /// new secret here, then in the App, then move it to
    /// GITHUB_WEBHOOK_SECRET and clear this.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET_NEXT", hide_env_values = true)]
    pub webhook_secret_next: Option<SecretString>,

    /// Who and what may trigger runs.
    #[command(flatten)]
    pub rules: RuleArgs,

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
        }
    }

    /// The accepted webhook secrets.
    fn secrets(&self) -> WebhookSecrets {
        WebhookSecrets::new(
            std::iter::once(self.webhook_secret.clone()).chain(self.webhook_secret_next.clone()),
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
