//! The agent's environment, every backend's: the run, where to report, its
//! LLM gateway and model, the operator's extra variables, and the run's
//! secrets (its GitHub token and its run credential; never the LLM key).
//! A pod refers to the Secret's keys; a backend that starts the agent as a
//! process reads them in, as a kubelet would.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};

use super::args::SandboxArgs;
use super::{Launch, owned, secret};
use crate::api::AgentRun;
use crate::api::contract::{self, CommitAuthor, env};

/// What every sandbox's agent is told, whatever runs it.
#[derive(Clone, Debug)]
pub struct AgentEnvironment {
    /// The operator's sandbox settings (LLM, extra variables, defaults).
    pub settings: SandboxArgs,
    /// The URL sandboxes reach the result endpoint at.
    pub result_url: String,
    /// The controller's GitHub, which the agent clones from and reads, so
    /// that a GitHub Enterprise Server's runs clone from it.
    pub github: GitHubUrls,
}

/// Where a GitHub is reached.
#[derive(Clone, Debug)]
pub struct GitHubUrls {
    /// The REST API.
    pub api: String,
    /// The web and git server.
    pub server: String,
}

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn secret_var(run: &AgentRun, key: &str) -> EnvVar {
    EnvVar {
        name: key.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret::secret_name(run),
                key: key.into(),
                // The GitHub token is absent when GitHub is not configured.
                optional: Some(key != env::REPORT_TOKEN),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

impl AgentEnvironment {
    /// The agent's variables with the Secret's keys as references to it;
    /// its commits are by `author` when the run has one.
    pub fn for_pod(&self, run: &AgentRun, author: Option<&CommitAuthor>) -> Vec<EnvVar> {
        let mut vars = vec![
            var(env::RUN_NAME, owned::run_name(run)),
            var(
                env::RUN_NAMESPACE,
                run.metadata.namespace.clone().unwrap_or_default(),
            ),
            var(
                env::SPEC_URL,
                contract::spec_url(
                    &self.result_url,
                    run.metadata.namespace.as_deref().unwrap_or_default(),
                    &owned::run_name(run),
                ),
            ),
            var(env::RESULT_URL, &self.result_url),
            var(
                env::LLM_GATEWAY,
                contract::gateway_url(
                    &self.result_url,
                    run.metadata.namespace.as_deref().unwrap_or_default(),
                    &owned::run_name(run),
                ),
            ),
            secret_var(run, env::GITHUB_TOKEN),
            secret_var(run, env::REPORT_TOKEN),
        ];
        let llm = &self.settings.llm;
        let model = run
            .spec
            .agent
            .as_ref()
            .and_then(|agent| agent.model.clone())
            .or_else(|| llm.model.clone());
        // The provider's endpoint and key stay with the gateway.
        for (name, value) in [
            (env::LLM_MODEL, model),
            (env::LLM_PROVIDER, llm.provider.clone()),
            (
                env::LLM_MAX_TOKENS,
                llm.max_answer_tokens.map(|n| n.to_string()),
            ),
            (env::LLM_TOOL_CHOICE, llm.tool_choice.map(|c| c.to_string())),
            (env::LLM_TEMPERATURE, llm.temperature.map(|t| t.to_string())),
            (env::LLM_SEED, llm.seed.map(|s| s.to_string())),
            (env::COMMIT_NAME, author.map(|a| a.name.clone())),
            (env::COMMIT_EMAIL, author.map(|a| a.email.clone())),
        ] {
            if let Some(value) = value {
                vars.push(var(name, value));
            }
        }
        // The operator's extra variables may point the agent elsewhere (dev
        // mode's git daemon); a name set twice would only hide one.
        for (name, value) in [
            (env::GITHUB_API_URL, &self.github.api),
            (env::GITHUB_SERVER_URL, &self.github.server),
        ] {
            if !self
                .settings
                .extra_env
                .iter()
                .any(|(extra, _)| extra == name)
            {
                vars.push(var(name, value.clone()));
            }
        }
        vars.extend(
            self.settings
                .extra_env
                .iter()
                .map(|(name, value)| var(name, value.clone())),
        );
        vars
    }

    /// The agent's variables for `launch`, with the Secret's keys read from
    /// its Secret; optional keys the Secret lacks are left out.
    pub fn for_process(&self, launch: &Launch<'_>) -> Vec<(String, String)> {
        resolve(self.for_pod(launch.run, launch.author), launch.secret)
    }
}

/// `vars` with their Secret references read from `secret`, as a kubelet
/// resolves them.
pub fn resolve(vars: Vec<EnvVar>, secret: &Secret) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|var| {
            let value = match (var.value, var.value_from) {
                (Some(value), _) => value,
                (None, Some(source)) => {
                    let key = source.secret_key_ref?.key;
                    String::from_utf8(secret::value(secret, &key)?.to_vec()).ok()?
                }
                (None, None) => String::new(),
            };
            Some((var.name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::api::{Phase, fixtures};

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        sandbox: SandboxArgs,
    }

    /// The environment of an operator whose GitHub is a GitHub Enterprise
    /// Server, with `extra` variables.
    fn environment(extra: &[(&str, &str)]) -> AgentEnvironment {
        let mut settings = Flags::try_parse_from(["smolpaws"])
            .expect("the defaults parse")
            .sandbox;
        settings.extra_env = extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        AgentEnvironment {
            settings,
            result_url: "http://smolpaws-results:8081".into(),
            github: GitHubUrls {
                api: "https://ghe.example/api/v3".into(),
                server: "https://ghe.example".into(),
            },
        }
    }

    fn values(vars: &[EnvVar], name: &str) -> Vec<String> {
        vars.iter()
            .filter(|v| v.name == name)
            .filter_map(|v| v.value.clone())
            .collect()
    }

    #[test]
    fn the_agent_clones_from_and_reads_the_controllers_github() {
        let run = fixtures::run("asked", "octo/hello", Phase::Provisioning);
        let vars = environment(&[]).for_pod(&run, None);
        assert_eq!(
            values(&vars, env::GITHUB_SERVER_URL),
            ["https://ghe.example"]
        );
        assert_eq!(
            values(&vars, env::GITHUB_API_URL),
            ["https://ghe.example/api/v3"]
        );
    }

    #[test]
    fn an_extra_variable_points_the_agent_elsewhere_and_is_set_once() {
        let run = fixtures::run("asked", "octo/hello", Phase::Provisioning);
        let vars = environment(&[(env::GITHUB_SERVER_URL, "git://10.88.0.1")]).for_pod(&run, None);
        assert_eq!(values(&vars, env::GITHUB_SERVER_URL), ["git://10.88.0.1"]);
        assert_eq!(
            values(&vars, env::GITHUB_API_URL),
            ["https://ghe.example/api/v3"]
        );
    }
}
