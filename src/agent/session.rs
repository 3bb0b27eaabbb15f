//! One agent session: the conversation with the model, its tool calls, and
//! the limits that end it. At a limit the agent still replies, saying what
//! it found and why it stopped.

use std::time::{Duration, Instant};

use genai::chat::{ChatMessage, ChatOptions, ChatRequest, ToolResponse};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::llm::{Llm, LlmError};
use super::redact::Redactor;
use super::toolbox::{self, FINISH};
use super::tools::workspace::Workspace;
use crate::api::TokenUsage;

/// When a session must stop.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// LLM round trips.
    pub iterations: u32,
    /// Prompt and completion tokens together.
    pub tokens: u64,
    /// Wall clock.
    pub wall_clock: Duration,
    /// One bash command's default timeout.
    pub bash_timeout: Duration,
}

/// How a session ended.
#[derive(Debug)]
pub struct Ending {
    /// The reply, secrets redacted.
    pub reply: String,
    /// Tokens spent.
    pub usage: TokenUsage,
}

const SYSTEM: &str = "You are smolpaws, a coding agent answering a request made in a GitHub \
thread. The repository is checked out in your working directory. Investigate with the tools \
(bash, view, create, str_replace, insert, git_diff), make changes only when asked, and end by \
calling finish with your reply: Markdown for a GitHub comment, concise, citing files and lines.";

/// Something that happened in a session, told as it happens.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// The model said something.
    Said(&'a str),
    /// The model called a tool.
    Called {
        /// The call's id.
        id: &'a str,
        /// The tool.
        tool: &'a str,
        /// Its arguments, secrets redacted.
        arguments: &'a str,
    },
    /// A tool answered.
    Answered {
        /// The call's id.
        id: &'a str,
        /// The tool.
        tool: &'a str,
        /// The exit code of a command.
        exit_code: Option<i32>,
        /// What the model sees, secrets redacted.
        output: &'a str,
    },
}

/// A conversation with the model that can be continued: each
/// [`Session::run`] works until the model finishes, a limit, or `stop`.
pub struct Session {
    chat: ChatRequest,
    usage: TokenUsage,
}

impl Session {
    /// A session whose first user message is `request`.
    pub fn new(request: String) -> Self {
        Self::with_history(vec![ChatMessage::user(request)])
    }

    /// A session that goes on from `history`.
    pub fn with_history(history: Vec<ChatMessage>) -> Self {
        Self {
            chat: ChatRequest::new(history)
                .with_system(SYSTEM)
                .with_tools(toolbox::definitions()),
            usage: TokenUsage::default(),
        }
    }

    /// Adds a user message, for the next run.
    pub fn push_user(&mut self, text: String) {
        let chat = std::mem::take(&mut self.chat);
        self.chat = chat.append_message(ChatMessage::user(text));
    }

    /// Tokens spent by every run so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// Works until the model finishes or a limit (a reply either way), or
    /// until `stop` is cancelled (`None`: paused, to be run again).
    pub async fn run(
        &mut self,
        llm: &Llm,
        workspace: &Workspace,
        limits: Limits,
        redactor: &Redactor,
        observe: &(dyn Fn(Step<'_>) + Send + Sync),
        stop: &CancellationToken,
    ) -> Result<Option<Ending>, LlmError> {
        let started = Instant::now();
        let options = ChatOptions::default().with_max_tokens(4096);
        let mut last_text = String::new();
        let mut steps: Vec<String> = Vec::new();
        let usage_before = self.usage;
        let ended = |why: &str, last_text: &str, steps: &[String], usage: TokenUsage| {
            let found = if last_text.trim().is_empty() {
                format!("Steps taken:\n{}", steps.join("\n"))
            } else {
                last_text.to_owned()
            };
            Ending {
                reply: redactor.redact(&format!(
                    "I stopped before finishing: {why}.\n\nWhat I found so far:\n\n{found}"
                )),
                usage,
            }
        };
        for iteration in 1..=limits.iterations {
            if stop.is_cancelled() {
                return Ok(None);
            }
            if started.elapsed() >= limits.wall_clock {
                return Ok(Some(self.close(ended(
                    "the time limit was reached",
                    &last_text,
                    &steps,
                    self.usage,
                ))));
            }
            let llm_started = Instant::now();
            let response = tokio::select! {
                response = llm.chat(&self.chat, &options) => response?,
                () = stop.cancelled() => return Ok(None),
            };
            self.usage.prompt_tokens += i64::from(response.usage.prompt_tokens.unwrap_or(0));
            self.usage.completion_tokens +=
                i64::from(response.usage.completion_tokens.unwrap_or(0));
            info!(
                step = iteration,
                took_ms = llm_started.elapsed().as_millis() as u64,
                prompt_tokens = self.usage.prompt_tokens - usage_before.prompt_tokens,
                completion_tokens = self.usage.completion_tokens - usage_before.completion_tokens,
                "llm"
            );
            let said = response.first_text().map(str::to_owned);
            if let Some(text) = &said {
                last_text = text.clone();
            }
            let calls = response.into_tool_calls();
            if calls.is_empty() {
                // A plain answer is the reply.
                let reply = redactor.redact(&last_text);
                return Ok(Some(self.close(Ending {
                    reply,
                    usage: self.usage,
                })));
            }
            if let Some(finish) = calls.iter().find(|c| c.fn_name == FINISH) {
                let reply = finish.fn_arguments["reply"]
                    .as_str()
                    .unwrap_or(&last_text)
                    .to_owned();
                info!(step = iteration, tool = FINISH, "finished");
                let reply = redactor.redact(&reply);
                return Ok(Some(self.close(Ending {
                    reply,
                    usage: self.usage,
                })));
            }
            // Words said on the way, not the reply.
            if let Some(text) = said.filter(|t| !t.trim().is_empty()) {
                observe(Step::Said(&redactor.redact(&text)));
            }
            let mut responses = Vec::with_capacity(calls.len());
            for call in &calls {
                let arguments = redactor.redact(&call.fn_arguments.to_string());
                observe(Step::Called {
                    id: &call.call_id,
                    tool: &call.fn_name,
                    arguments: &arguments,
                });
                let tool_started = Instant::now();
                let outcome = tokio::select! {
                    outcome = toolbox::call(
                        workspace,
                        &call.fn_name,
                        call.fn_arguments.clone(),
                        limits.bash_timeout,
                    ) => outcome,
                    // Dropping the call stops its command.
                    () = stop.cancelled() => return Ok(None),
                };
                info!(
                    step = iteration,
                    tool = %call.fn_name,
                    took_ms = tool_started.elapsed().as_millis() as u64,
                    exit_code = outcome.exit_code,
                    "tool"
                );
                // Redacted before anything sees it, the model included: what
                // it reads goes to the LLM provider.
                let output = redactor.redact(&outcome.text);
                observe(Step::Answered {
                    id: &call.call_id,
                    tool: &call.fn_name,
                    exit_code: outcome.exit_code,
                    output: &output,
                });
                steps.push(format!("- {} {arguments}", call.fn_name));
                responses.push(ToolResponse::new(call.call_id.clone(), output));
            }
            let chat = std::mem::take(&mut self.chat);
            self.chat = chat
                .append_message(ChatMessage::from(calls))
                .append_message(ChatMessage::from(responses));
            let spent = (self.usage.prompt_tokens + self.usage.completion_tokens).unsigned_abs();
            if spent >= limits.tokens {
                return Ok(Some(self.close(ended(
                    "the token limit was reached",
                    &last_text,
                    &steps,
                    self.usage,
                ))));
            }
        }
        Ok(Some(self.close(ended(
            "the iteration limit was reached",
            &last_text,
            &steps,
            self.usage,
        ))))
    }

    /// Records the reply as the model's, so a later message follows it.
    fn close(&mut self, ending: Ending) -> Ending {
        let chat = std::mem::take(&mut self.chat);
        self.chat = chat.append_message(ChatMessage::assistant(ending.reply.clone()));
        ending
    }
}

/// Runs a session for `request` until the model finishes or a limit.
pub async fn run(
    llm: &Llm,
    workspace: &Workspace,
    request: String,
    limits: Limits,
    redactor: &Redactor,
) -> Result<Ending, LlmError> {
    let never = CancellationToken::new();
    let ending = Session::new(request)
        .run(llm, workspace, limits, redactor, &|_| {}, &never)
        .await?;
    Ok(ending.expect("a session that is never stopped ends with a reply"))
}
