//! The LLM the agent talks to: any OpenAI-compatible chat-completions
//! endpoint (OpenAI, vLLM, Ollama, LiteLLM, OpenRouter) or Anthropic's
//! Messages API, with tool calls, through genai. Rate limits and server
//! errors are retried with backoff, honouring `Retry-After`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use genai::adapter::AdapterKind;
use genai::chat::{ChatOptions, ChatRequest, ChatResponse, ToolChoice};
use genai::resolver::{AuthData, Endpoint};
use genai::{Client, ModelIden, ServiceTarget, WebConfig};
use secrecy::{ExposeSecret, SecretString};
use tracing::warn;

use crate::api::contract;
use crate::api::llm_refusal::Refusal;

/// The most tokens one answer may have unless `LLM_MAX_TOKENS` says.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The shortest answer worth asking for: below it a model cannot write a
/// tool call with a file's content, so a context that leaves less is full.
const MIN_ANSWER_TOKENS: u32 = 256;

/// Whether requests that offer tools name `tool_choice`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ToolChoiceMode {
    /// `tool_choice: "auto"`: without it some servers (llama-cpp-python's
    /// function-calling formats) leave the tools out of the prompt.
    #[default]
    Auto,
    /// No `tool_choice`, for servers that refuse it (vLLM without
    /// `--enable-auto-tool-choice`); also chosen by itself after a refusal.
    Omit,
}

impl fmt::Display for ToolChoiceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Omit => "omit",
        })
    }
}

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

    /// A file holding the LLM API key, instead of LLM_API_KEY.
    #[arg(
        long = "llm-api-key-file",
        env = "LLM_API_KEY_FILE",
        value_parser = crate::secret_file::read,
        conflicts_with = "api_key"
    )]
    pub api_key_file: Option<SecretString>,

    /// The most tokens one LLM answer may have [default: 4096]; lowered by
    /// itself when the server says its context is smaller.
    #[arg(long = "llm-max-tokens", env = contract::env::LLM_MAX_TOKENS)]
    pub max_answer_tokens: Option<u32>,

    /// Whether requests carry `tool_choice` [default: auto].
    #[arg(long = "llm-tool-choice", env = contract::env::LLM_TOOL_CHOICE, value_enum)]
    pub tool_choice: Option<ToolChoiceMode>,

    /// The sampling temperature [default: the server's].
    #[arg(long = "llm-temperature", env = contract::env::LLM_TEMPERATURE)]
    pub temperature: Option<f64>,

    /// The sampling seed, for servers that honour one (reproducible runs).
    #[arg(long = "llm-seed", env = contract::env::LLM_SEED)]
    pub seed: Option<u64>,
}

impl LlmArgs {
    /// The key, from LLM_API_KEY or the file LLM_API_KEY_FILE names, taken
    /// out of these settings (for the hand-over that hides it from tools).
    pub fn take_api_key(&mut self) -> Option<SecretString> {
        self.api_key.take().or_else(|| self.api_key_file.take())
    }
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
    /// The most tokens one answer may have.
    pub max_answer_tokens: u32,
    /// Whether requests that offer tools name `tool_choice`.
    pub tool_choice: ToolChoiceMode,
    /// The sampling temperature, when not the server's.
    pub temperature: Option<f64>,
    /// The sampling seed, when set.
    pub seed: Option<u64>,
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
    /// The conversation no longer fits the model's context.
    #[error("the conversation no longer fits the model's context ({0})")]
    ContextExhausted(Refusal),
    /// The answer could not be read, most often a tool call whose arguments
    /// are not JSON: the model can be told and try again.
    #[error("the model's answer could not be read: {0}")]
    Unreadable(String),
}

/// A client for one model.
pub struct Llm {
    client: Client,
    settings: LlmSettings,
    /// Lowered for good once the server says its context is small.
    max_tokens: AtomicU32,
    /// Cleared for good once the server refuses `tool_choice`.
    tool_choice: AtomicBool,
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
        Ok(Self {
            client,
            max_tokens: AtomicU32::new(settings.max_answer_tokens.max(1)),
            tool_choice: AtomicBool::new(settings.tool_choice == ToolChoiceMode::Auto),
            settings,
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// The options of the next request for `request`.
    fn options(&self, request: &ChatRequest) -> ChatOptions {
        let mut options =
            ChatOptions::default().with_max_tokens(self.max_tokens.load(Ordering::Relaxed));
        options.temperature = self.settings.temperature;
        options.seed = self.settings.seed;
        let offers_tools = request.tools.as_ref().is_some_and(|t| !t.is_empty());
        if offers_tools && self.tool_choice.load(Ordering::Relaxed) {
            options.with_tool_choice(ToolChoice::Auto)
        } else {
            options
        }
    }

    /// One chat completion, retried on 429, 5xx and lost connections. A
    /// server that says its context is too small for the answer asked for
    /// is asked again for a shorter one; one that refuses `tool_choice` is
    /// asked again without it.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut attempt = 0;
        let mut shrinks = 0;
        loop {
            attempt += 1;
            let options = self.options(request);
            let error = match self
                .client
                .exec_chat(&self.settings.model, request.clone(), Some(&options))
                .await
            {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if unreadable(&error) {
                return Err(LlmError::Unreadable(error.to_string()));
            }
            let status = error.status();
            let text = error.to_string();
            match status.and_then(|s| Refusal::read(s.as_u16(), &text)) {
                Some(
                    refusal @ Refusal::ContextExceeded {
                        limit,
                        prompt,
                        requested,
                    },
                ) => {
                    let asked = options.max_tokens.unwrap_or(u32::MAX);
                    shrinks += 1;
                    match answer_room(limit, prompt, requested, asked) {
                        Some(room) if room < asked && shrinks <= MAX_SHRINKS => {
                            warn!(
                                max_tokens = room,
                                context = limit,
                                "the model's context is small: asking for shorter answers"
                            );
                            self.max_tokens.store(room, Ordering::Relaxed);
                            continue;
                        }
                        _ => return Err(LlmError::ContextExhausted(refusal)),
                    }
                }
                Some(Refusal::ToolChoiceUnsupported) if options.tool_choice.is_some() => {
                    warn!("the LLM server refuses tool_choice: asking without it");
                    self.tool_choice.store(false, Ordering::Relaxed);
                    continue;
                }
                _ => {}
            }
            let retryable = status.is_none_or(|s| s.as_u16() == 429 || s.is_server_error());
            if !retryable || attempt >= self.settings.attempts {
                return Err(LlmError::Call {
                    attempts: attempt,
                    message: text,
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
            // The provider's words can echo the prompt: the last failure is
            // logged redacted by the session; a retry says only its status.
            warn!(attempt, ?status, ?wait, "the LLM call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether genai failed to read an answer that arrived (rather than to get
/// one): asking again the same way would get the same answer.
fn unreadable(error: &genai::Error) -> bool {
    matches!(
        error,
        genai::Error::SerdeJson(_)
            | genai::Error::InvalidJsonResponseElement { .. }
            | genai::Error::ChatResponseGeneration { .. }
    )
}

/// Answers shortened in a row for one request before the context counts as
/// full: each is one more request to the server.
const MAX_SHRINKS: u32 = 3;

/// How long an answer the context has room for, when the server said enough
/// and the room is worth an answer: the `asked` length less the overflow
/// when the server named what was requested (tool definitions included),
/// else the context less the prompt. A few tokens are kept spare: servers
/// count the chat template's tokens differently.
fn answer_room(
    limit: Option<u32>,
    prompt: Option<u32>,
    requested: Option<u32>,
    asked: u32,
) -> Option<u32> {
    const SPARE: u32 = 16;
    let room = match (limit, requested) {
        (Some(limit), Some(requested)) if requested > limit => {
            asked.checked_sub(requested - limit)?
        }
        _ => limit?.checked_sub(prompt?)?,
    }
    .checked_sub(SPARE)?;
    (room >= MIN_ANSWER_TOKENS).then_some(room)
}

#[cfg(test)]
mod tests {
    use super::{Provider, answer_room};

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

    #[test]
    fn an_answer_is_asked_only_as_long_as_the_context_has_room_for() {
        assert_eq!(answer_room(Some(2048), Some(1548), None, 4096), Some(484));
        // The tool definitions count too when the server names the total.
        assert_eq!(
            answer_room(Some(2048), Some(1548), Some(5740), 4096),
            Some(4096 - (5740 - 2048) - 16)
        );
        assert_eq!(
            answer_room(Some(2048), Some(1900), None, 4096),
            None,
            "too little room to answer"
        );
        assert_eq!(answer_room(Some(2048), Some(3000), None, 4096), None);
        assert_eq!(answer_room(None, Some(100), None, 4096), None);
    }
}
