//! One agent session: the conversation with the model, its tool calls, and
//! the limits that end it. At a limit the agent still replies, saying what
//! it found and why it stopped.

use std::time::{Duration, Instant};

use genai::chat::{ChatMessage, ChatOptions, ChatRequest, ToolResponse};
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

/// Runs the session for `request` until the model finishes or a limit.
pub async fn run(
    llm: &Llm,
    workspace: &Workspace,
    request: String,
    limits: Limits,
    redactor: &Redactor,
) -> Result<Ending, LlmError> {
    let started = Instant::now();
    let mut chat = ChatRequest::new(vec![ChatMessage::user(request)])
        .with_system(SYSTEM)
        .with_tools(toolbox::definitions());
    let options = ChatOptions::default().with_max_tokens(4096);
    let mut usage = TokenUsage::default();
    let mut last_text = String::new();
    let mut steps: Vec<String> = Vec::new();
    let stop = |why: &str, last_text: &str, steps: &[String], usage: TokenUsage| {
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
        if started.elapsed() >= limits.wall_clock {
            return Ok(stop(
                "the time limit was reached",
                &last_text,
                &steps,
                usage,
            ));
        }
        let llm_started = Instant::now();
        let response = llm.chat(&chat, &options).await?;
        usage.prompt_tokens += i64::from(response.usage.prompt_tokens.unwrap_or(0));
        usage.completion_tokens += i64::from(response.usage.completion_tokens.unwrap_or(0));
        info!(
            step = iteration,
            took_ms = llm_started.elapsed().as_millis() as u64,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "llm"
        );
        if let Some(text) = response.first_text() {
            last_text = text.to_owned();
        }
        let calls = response.into_tool_calls();
        if calls.is_empty() {
            // A plain answer is the reply.
            return Ok(Ending {
                reply: redactor.redact(&last_text),
                usage,
            });
        }
        if let Some(finish) = calls.iter().find(|c| c.fn_name == FINISH) {
            let reply = finish.fn_arguments["reply"]
                .as_str()
                .unwrap_or(&last_text)
                .to_owned();
            info!(step = iteration, tool = FINISH, "finished");
            return Ok(Ending {
                reply: redactor.redact(&reply),
                usage,
            });
        }
        let mut responses = Vec::with_capacity(calls.len());
        for call in &calls {
            let tool_started = Instant::now();
            let outcome = toolbox::call(
                workspace,
                &call.fn_name,
                call.fn_arguments.clone(),
                limits.bash_timeout,
            )
            .await;
            info!(
                step = iteration,
                tool = %call.fn_name,
                took_ms = tool_started.elapsed().as_millis() as u64,
                exit_code = outcome.exit_code,
                "tool"
            );
            steps.push(format!(
                "- {} {}",
                call.fn_name,
                redactor.redact(&call.fn_arguments.to_string())
            ));
            responses.push(ToolResponse::new(call.call_id.clone(), outcome.text));
        }
        chat = chat
            .append_message(ChatMessage::from(calls))
            .append_message(ChatMessage::from(responses));
        let spent = (usage.prompt_tokens + usage.completion_tokens).unsigned_abs();
        if spent >= limits.tokens {
            return Ok(stop(
                "the token limit was reached",
                &last_text,
                &steps,
                usage,
            ));
        }
    }
    Ok(stop(
        "the iteration limit was reached",
        &last_text,
        &steps,
        usage,
    ))
}
