//! The runner's LLM clients, one per model, made once: building a client
//! (its HTTP client, its TLS roots) costs more than a scripted answer.
//!
//! A model a client names is read as the OpenHands SDK means it, in
//! LiteLLM's `provider/model` form: `openai/gpt-4o` is the model `gpt-4o`
//! behind an OpenAI-compatible API, `anthropic/claude-...` a Claude model
//! behind Anthropic's. A first segment that names no provider is part of
//! the model's own name (`meta-llama/Llama-3.3-70B` on a vLLM server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::agent::llm::Llm;
use crate::agent::{AgentError, WorkArgs};

/// LiteLLM's provider prefixes, and the `LLM_PROVIDER` each means.
const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("litellm_proxy", "litellm"),
    ("openrouter", "openrouter"),
    ("ollama", "ollama"),
    ("ollama_chat", "ollama"),
    ("vllm", "vllm"),
    ("hosted_vllm", "vllm"),
];

/// The provider `model` names by its prefix, and the model without it.
fn interpret(model: &str) -> (Option<&'static str>, &str) {
    model
        .split_once('/')
        .and_then(|(prefix, rest)| {
            PROVIDERS
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(prefix))
                .map(|(_, provider)| (Some(*provider), rest))
        })
        .unwrap_or((None, model))
}

/// LLM clients by model (`None`: `LLM_MODEL`'s).
pub struct Models {
    settings: WorkArgs,
    made: Mutex<HashMap<Option<String>, Arc<Llm>>>,
}

impl Models {
    /// No client made yet.
    pub fn new(settings: WorkArgs) -> Self {
        Self {
            settings,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// The client of `model` (as a client names it), made on first use.
    pub fn get(&self, model: Option<&str>) -> Result<Arc<Llm>, AgentError> {
        let key = model.map(str::to_owned);
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(llm) = made.get(&key) {
            return Ok(llm.clone());
        }
        let llm = match model.map(interpret) {
            Some((Some(provider), name)) => {
                let mut settings = self.settings.clone();
                settings.llm.provider = Some(provider.to_owned());
                settings.llm(Some(name))?
            }
            _ => self.settings.llm(model)?,
        };
        let llm = Arc::new(llm);
        made.insert(key, llm.clone());
        Ok(llm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_prefix_chooses_the_provider_and_leaves_the_model() {
        assert_eq!(interpret("openai/gpt-4o"), (Some("openai"), "gpt-4o"));
        assert_eq!(
            interpret("anthropic/claude-sonnet-4"),
            (Some("anthropic"), "claude-sonnet-4")
        );
        assert_eq!(
            interpret("openrouter/anthropic/claude"),
            (Some("openrouter"), "anthropic/claude")
        );
        assert_eq!(
            interpret("meta-llama/Llama-3.3-70B"),
            (None, "meta-llama/Llama-3.3-70B")
        );
        assert_eq!(interpret("gpt-4o"), (None, "gpt-4o"));
    }
}
