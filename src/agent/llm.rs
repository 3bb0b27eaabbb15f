//! The LLM the agent talks to: any OpenAI-compatible chat-completions
//! endpoint (OpenAI, vLLM, Ollama, LiteLLM, OpenRouter) or Anthropic's
//! Messages API, with tool calls, through genai. Rate limits and server
//! errors are retried with backoff, honouring `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use genai::adapter::AdapterKind;
use genai::chat::{ChatOptions, ChatRequest, ChatResponse};
use genai::resolver::{AuthData, Endpoint};
use genai::{Client, ModelIden, ServiceTarget, WebConfig};
use secrecy::{ExposeSecret, SecretString};
use tracing::warn;

use crate::api::contract;

/// The wire format of the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI chat completions, and every server that speaks them.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    /// `LLM_PROVIDER` when set, else what the model name says (`claude-*`
    /// is Anthropic's), else OpenAI-compatible.
    pub fn choose(explicit: Option<&str>, model: &str) -> Result<Self, LlmError> {
        match explicit.map(str::to_ascii_lowercase).as_deref() {
            Some("anthropic") => Ok(Self::Anthropic),
            Some("openai" | "openai-compatible" | "litellm" | "vllm" | "ollama" | "openrouter") => {
                Ok(Self::OpenAi)
            }
            Some(other) => Err(LlmError::Config(format!(
                "LLM_PROVIDER={other} is not known: use openai (any OpenAI-compatible endpoint) or anthropic"
            ))),
            None if model.starts_with("claude") || model.starts_with("anthropic/") => {
                Ok(Self::Anthropic)
            }
            None => Ok(Self::OpenAi),
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Self::OpenAi => "https://api.openai.com/v1/",
            Self::Anthropic => "https://api.anthropic.com/v1/",
        }
    }

    fn adapter(self) -> AdapterKind {
        match self {
            Self::OpenAi => AdapterKind::OpenAI,
            Self::Anthropic => AdapterKind::Anthropic,
        }
    }
}

/// The LLM settings under the names the old runner used; the controller
/// passes them on to sandboxes (the key through the per-run Secret).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LlmArgs {
    /// The LLM model.
    #[arg(long = "llm-model", env = contract::env::LLM_MODEL)]
    pub model: Option<String>,

    /// The LLM endpoint: any OpenAI-compatible base URL, or Anthropic's.
    #[arg(long = "llm-base-url", env = contract::env::LLM_BASE_URL)]
    pub base_url: Option<String>,

    /// The LLM API flavour: `openai` (default) or `anthropic`.
    #[arg(long = "llm-provider", env = contract::env::LLM_PROVIDER)]
    pub provider: Option<String>,

    /// The LLM API key.
    #[arg(long = "llm-api-key", env = contract::env::LLM_API_KEY, hide_env_values = true)]
    pub api_key: Option<SecretString>,
}

/// How to reach the LLM.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// The model (`LLM_MODEL`).
    pub model: String,
    /// The wire format.
    pub provider: Provider,
    /// The endpoint (`LLM_BASE_URL`); the provider's own when absent.
    pub base_url: Option<String>,
    /// The key (`LLM_API_KEY`); none for local servers that want none.
    pub api_key: Option<SecretString>,
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// The longest one request may take.
    pub request_timeout: Duration,
}

/// An LLM call that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The settings cannot work.
    #[error("{0}")]
    Config(String),
    /// The provider kept failing or refused the request.
    #[error("the LLM call failed after {attempts} attempt(s): {message}")]
    Call {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure, as genai reports it.
        message: String,
    },
}

/// A client for one model.
pub struct Llm {
    client: Client,
    settings: LlmSettings,
}

impl Llm {
    /// A client for `settings`.
    pub fn new(settings: LlmSettings) -> Result<Self, LlmError> {
        crate::tls::install_default_provider();
        let mut base = settings
            .base_url
            .clone()
            .unwrap_or_else(|| settings.provider.default_base_url().to_owned());
        if !base.ends_with('/') {
            base.push('/');
        }
        let endpoint = Endpoint::from_owned(Arc::<str>::from(base));
        let auth = settings
            .api_key
            .as_ref()
            .map(|key| AuthData::from_single(key.expose_secret()))
            // Local servers (Ollama, vLLM) often want no key; genai wants one.
            .unwrap_or_else(|| AuthData::from_single("none"));
        let adapter = settings.provider.adapter();
        let client = Client::builder()
            .with_web_config(WebConfig::default().with_timeout(settings.request_timeout))
            .with_service_target_resolver_fn(move |target: ServiceTarget| {
                Ok(ServiceTarget {
                    endpoint: endpoint.clone(),
                    auth: auth.clone(),
                    model: ModelIden::new(adapter, target.model.model_name),
                })
            })
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the LLM client: {e}")))?;
        Ok(Self { client, settings })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// One chat completion, retried on 429, 5xx and lost connections.
    pub async fn chat(
        &self,
        request: &ChatRequest,
        options: &ChatOptions,
    ) -> Result<ChatResponse, LlmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self
                .client
                .exec_chat(&self.settings.model, request.clone(), Some(options))
                .await
            {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let status = error.status();
            let retryable = status.is_none_or(|s| s.as_u16() == 429 || s.is_server_error());
            if !retryable || attempt >= self.settings.attempts {
                return Err(LlmError::Call {
                    attempts: attempt,
                    message: error.to_string(),
                });
            }
            let advised = error
                .headers()
                .and_then(|h| h.get("retry-after"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let wait = advised
                .unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(attempt - 1)))
                .min(Duration::from_secs(60));
            warn!(attempt, ?status, ?wait, "the LLM call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Provider;

    #[test]
    fn the_provider_comes_from_the_setting_or_the_model() {
        assert_eq!(
            Provider::choose(Some("anthropic"), "gpt-4o").ok(),
            Some(Provider::Anthropic)
        );
        assert_eq!(
            Provider::choose(None, "claude-sonnet-4").ok(),
            Some(Provider::Anthropic)
        );
        assert_eq!(
            Provider::choose(None, "qwen2.5-coder").ok(),
            Some(Provider::OpenAi)
        );
        assert_eq!(
            Provider::choose(Some("OpenAI"), "claude-x").ok(),
            Some(Provider::OpenAi)
        );
        assert!(Provider::choose(Some("bard"), "x").is_err());
    }
}
