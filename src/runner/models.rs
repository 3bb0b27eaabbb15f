//! The runner's LLM clients, one per model, made once: building a client
//! (its HTTP client, its TLS roots) costs more than a scripted answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::agent::llm::Llm;
use crate::agent::{AgentError, WorkArgs};

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

    /// The client of `model`, made on first use.
    pub fn get(&self, model: Option<&str>) -> Result<Arc<Llm>, AgentError> {
        let key = model.map(str::to_owned);
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(llm) = made.get(&key) {
            return Ok(llm.clone());
        }
        let llm = Arc::new(self.settings.llm(model)?);
        made.insert(key, llm.clone());
        Ok(llm)
    }
}
