//! The two refusals of an LLM server the agent can do something about: a
//! request larger than the model's context, and a `tool_choice` the server
//! was not started to honour. Providers word them differently; this reads
//! them all, and the operator's gateway passes them on to the sandbox in one
//! canonical wording (numbers only: a provider's own words can echo the
//! prompt) that reads back the same.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A refusal the agent can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The prompt and the completion asked for do not fit the context.
    ContextExceeded {
        /// The model's context, in tokens, when the server said.
        limit: Option<u32>,
        /// The prompt's size, in tokens, when the server said.
        prompt: Option<u32>,
        /// The prompt, the tool definitions and the answer asked for
        /// together, when the server said.
        requested: Option<u32>,
    },
    /// The server refuses `tool_choice` (vLLM started without
    /// `--enable-auto-tool-choice`, and others).
    ToolChoiceUnsupported,
}

/// The error `type`/`code` the gateway answers each refusal with, as OpenAI
/// names the first.
pub const CONTEXT_EXCEEDED_CODE: &str = "context_length_exceeded";
/// See [`CONTEXT_EXCEEDED_CODE`].
pub const TOOL_CHOICE_CODE: &str = "tool_choice_unsupported";

impl Refusal {
    /// The gateway's error code for this refusal.
    pub fn code(self) -> &'static str {
        match self {
            Self::ContextExceeded { .. } => CONTEXT_EXCEEDED_CODE,
            Self::ToolChoiceUnsupported => TOOL_CHOICE_CODE,
        }
    }

    /// Reads a refusal out of an error answer's status and text (the body,
    /// or an error message that quotes it).
    pub fn read(status: u16, text: &str) -> Option<Self> {
        // Some servers answer an overflow with 413 or 422 rather than 400. A
        // 500 is never read as one: its text can be an echoed prompt, and a
        // server error is worth a retry.
        if !matches!(status, 400 | 413 | 422) {
            return None;
        }
        let lower = text.to_ascii_lowercase();
        if OVERFLOW_WORDS.iter().any(|w| lower.contains(w)) {
            return Some(Self::ContextExceeded {
                limit: first_number(&LIMIT, &lower),
                prompt: first_number(&PROMPT, &lower),
                requested: first_number(&REQUESTED, &lower),
            });
        }
        if lower.contains("tool_choice") || lower.contains("tool choice") {
            return Some(Self::ToolChoiceUnsupported);
        }
        None
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ContextExceeded {
                limit,
                prompt,
                requested,
            } => {
                f.write_str(
                    "context_length_exceeded: the request does not fit the model's context",
                )?;
                if let Some(limit) = limit {
                    write!(f, "; maximum context length is {limit} tokens")?;
                }
                if let Some(prompt) = prompt {
                    write!(f, "; {prompt} tokens in your prompt")?;
                }
                if let Some(requested) = requested {
                    write!(f, "; you requested {requested} tokens")?;
                }
                Ok(())
            }
            Self::ToolChoiceUnsupported => {
                f.write_str("tool_choice_unsupported: the server refuses tool_choice")
            }
        }
    }
}

/// Words only an overflow answer uses: OpenAI and vLLM ("maximum context
/// length"), llama.cpp ("exceeds the available context size",
/// "exceed_context_size"), llama-cpp-python and OpenAI's code, Anthropic
/// ("prompt is too long", "exceed context limit").
const OVERFLOW_WORDS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context size",
    "exceed_context_size",
    "prompt is too long",
    "exceed context limit",
];

static LIMIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"maximum context length is (\d+)",
        r"|context window of (\d+)",
        r"|n_ctx\W+(\d+)",
        r"|> (\d+) maximum",
        r"|exceed context limit: \d+ \+ \d+ > (\d+)",
    ))
    .expect("a valid pattern")
});

static PROMPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(\d+) tokens? in (?:your|the) (?:prompt|messages)",
        r"|(\d+) in (?:your|the) (?:prompt|messages)",
        r"|request has (\d+) input tokens",
        r"|prompt is too long: (\d+)",
        r"|n_prompt_tokens\W+(\d+)",
        r"|exceed context limit: (\d+)",
    ))
    .expect("a valid pattern")
});

static REQUESTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"you requested (\d+) tokens").expect("a valid pattern"));

fn first_number(pattern: &Regex, text: &str) -> Option<u32> {
    pattern
        .captures(text)?
        .iter()
        .skip(1)
        .flatten()
        .find_map(|m| m.as_str().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceeded(limit: u32, prompt: u32, requested: Option<u32>) -> Option<Refusal> {
        Some(Refusal::ContextExceeded {
            limit: Some(limit),
            prompt: Some(prompt),
            requested,
        })
    }

    #[test]
    fn every_provider_s_overflow_reads_with_its_numbers() {
        let table = [
            (
                r#"{"error":{"message":"This model's maximum context length is 2048 tokens. However, you requested 5644 tokens (1548 in the messages, 4096 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                exceeded(2048, 1548, Some(5644)),
            ),
            (
                r#"{"error":{"message":"'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length is 2048 tokens and your request has 904 input tokens (4096 > 2048 - 904).","type":"BadRequestError","code":400}}"#,
                exceeded(2048, 904, None),
            ),
            (
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":3120,"n_ctx":2048}}"#,
                exceeded(2048, 3120, None),
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210012 tokens > 200000 maximum"}}"#,
                exceeded(200_000, 210_012, None),
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}"#,
                exceeded(200_000, 197_000, None),
            ),
        ];
        for (body, expected) in table {
            assert_eq!(Refusal::read(400, body), expected, "{body}");
        }
    }

    #[test]
    fn the_gateway_s_wording_reads_back_the_same() {
        for refusal in [
            Refusal::ContextExceeded {
                limit: Some(2048),
                prompt: Some(1548),
                requested: Some(5644),
            },
            Refusal::ContextExceeded {
                limit: None,
                prompt: None,
                requested: None,
            },
            Refusal::ToolChoiceUnsupported,
        ] {
            assert_eq!(Refusal::read(400, &refusal.to_string()), Some(refusal));
        }
    }

    #[test]
    fn a_refused_tool_choice_reads_and_other_errors_do_not() {
        assert_eq!(
            Refusal::read(
                400,
                r#"{"object":"error","message":"\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set","type":"BadRequestError","code":400}"#
            ),
            Some(Refusal::ToolChoiceUnsupported)
        );
        assert_eq!(
            Refusal::read(401, "maximum context length is 2048 tokens"),
            None
        );
        assert_eq!(
            Refusal::read(400, r#"{"error":{"message":"invalid model"}}"#),
            None
        );
    }
}
