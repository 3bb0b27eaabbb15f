//! The agent's LLM client against local servers speaking the OpenAI and
//! Anthropic wire formats: tool calls go out and come back, rate limits are
//! waited out, and a provider that is down is reported.

mod support;

use std::time::Duration;

use genai::chat::{ChatMessage, ChatRequest, Tool, ToolResponse};
use secrecy::SecretString;
use serde_json::json;
use smolpaws::agent::llm::{Llm, LlmError, LlmSettings, Provider, ToolChoiceMode};
use support::fake_llm::{FakeLlm, Reply};

fn settings(provider: Provider, base_url: &str, attempts: u32) -> LlmSettings {
    LlmSettings {
        model: "scripted-model".into(),
        provider,
        base_url: Some(base_url.to_owned()),
        api_key: Some(SecretString::from("sk-test-key-0123456789")),
        attempts,
        request_timeout: Duration::from_secs(10),
        max_answer_tokens: 1024,
        tool_choice: ToolChoiceMode::Auto,
        temperature: None,
        seed: None,
    }
}

fn view_tool() -> Tool {
    Tool::new("view")
        .with_description("Show a file")
        .with_schema(json!({
            "type": "object",
            "properties": { "path": { "type": "string" } },
            "required": ["path"],
        }))
}

async fn tool_round_trip(provider: Provider) -> FakeLlm {
    let fake = FakeLlm::start([
        Reply::Tool {
            name: "view",
            arguments: json!({ "path": "src/lib.rs" }),
        },
        Reply::Text("The parser drops them in tokenize()."),
    ])
    .await;
    let llm = Llm::new(settings(provider, &fake.base_url, 3)).expect("a client");
    let mut request = ChatRequest::new(vec![ChatMessage::user("why are commas dropped?")])
        .with_system("You are smolpaws.")
        .with_tools(vec![view_tool()]);

    let first = llm.chat(&request).await.expect("a tool call");
    assert_eq!(first.usage.prompt_tokens, Some(100));
    let calls = first.into_tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].fn_name, "view");
    assert_eq!(calls[0].fn_arguments, json!({ "path": "src/lib.rs" }));

    let call_id = calls[0].call_id.clone();
    request = request
        .append_message(ChatMessage::from(calls))
        .append_message(ChatMessage::from(ToolResponse::new(
            call_id,
            "fn tokenize() {}",
        )));
    let second = llm.chat(&request).await.expect("an answer");
    assert_eq!(
        second.first_text(),
        Some("The parser drops them in tokenize().")
    );
    fake
}

#[tokio::test]
async fn openai_format_tool_calls_round_trip() {
    let fake = tool_round_trip(Provider::OpenAi).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0].1;
    assert_eq!(first["model"], "scripted-model");
    assert_eq!(first["tools"][0]["function"]["name"], "view");
    assert_eq!(first["messages"][0]["role"], "system");
    let second = &requests[1].1;
    let messages = second["messages"].as_array().expect("messages");
    let tool = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message");
    assert_eq!(tool["content"], "fn tokenize() {}");
    assert_eq!(tool["tool_call_id"], "call_1");
}

#[tokio::test]
async fn anthropic_format_tool_calls_round_trip() {
    let fake = tool_round_trip(Provider::Anthropic).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0].1;
    assert!(first["system"].to_string().contains("You are smolpaws."));
    assert_eq!(first["tools"][0]["name"], "view");
    let second = &requests[1].1;
    let result = second["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|part| part["type"] == "tool_result")
        .expect("a tool_result block");
    assert_eq!(result["tool_use_id"], "toolu_1");
}

#[tokio::test]
async fn a_rate_limit_is_waited_out() {
    let fake = FakeLlm::start([Reply::Status(429, Some(1)), Reply::Text("after the wait")]).await;
    let llm = Llm::new(settings(Provider::OpenAi, &fake.base_url, 3)).expect("a client");
    let request = ChatRequest::new(vec![ChatMessage::user("hi")]);
    let answer = llm.chat(&request).await.expect("an answer");
    assert_eq!(answer.first_text(), Some("after the wait"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].0 - requests[0].0 >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn a_provider_that_is_down_is_reported_after_the_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/v1", closed.local_addr().expect("an address"));
    drop(closed);
    let llm = Llm::new(settings(Provider::OpenAi, &url, 2)).expect("a client");
    let request = ChatRequest::new(vec![ChatMessage::user("hi")]);
    match llm.chat(&request).await {
        Err(LlmError::Call { attempts, .. }) => assert_eq!(attempts, 2),
        other => panic!("expected a failed call, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_request_is_not_retried() {
    let fake = FakeLlm::start([Reply::Status(400, None), Reply::Text("never")]).await;
    let llm = Llm::new(settings(Provider::OpenAi, &fake.base_url, 3)).expect("a client");
    let request = ChatRequest::new(vec![ChatMessage::user("hi")]);
    assert!(llm.chat(&request).await.is_err());
    assert_eq!(fake.requests().len(), 1);
}
