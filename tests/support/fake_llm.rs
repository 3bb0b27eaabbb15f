//! A local LLM speaking OpenAI chat completions (`POST /v1/chat/completions`)
//! and Anthropic Messages (`POST /v1/messages`), answering from a script and
//! recording every request body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The model calls a tool.
    Tool {
        name: &'static str,
        arguments: Value,
    },
    /// The model answers in text and stops.
    Text(&'static str),
    /// The provider fails with this status (and `Retry-After` seconds).
    Status(u16, Option<u64>),
    /// The provider refuses with this status and this JSON body, as a real
    /// server words it.
    Refuse(u16, &'static str),
    /// The model calls a tool with these arguments, as sent (OpenAI only:
    /// there arguments are a string, which a model can get wrong).
    RawTool {
        name: &'static str,
        arguments: &'static str,
    },
}

impl Reply {
    /// A model that views `path`, then finishes with `reply`.
    pub fn view_then_finish(path: &str, reply: &str) -> [Reply; 2] {
        [
            Reply::Tool {
                name: "view",
                arguments: json!({ "path": path }),
            },
            finish(reply),
        ]
    }
}

/// The model runs `command` with its bash tool.
pub fn bash(command: &str) -> Reply {
    Reply::Tool {
        name: "bash",
        arguments: json!({ "command": command }),
    }
}

/// The model finishes with `reply`.
pub fn finish(reply: &str) -> Reply {
    Reply::Tool {
        name: "finish",
        arguments: json!({ "reply": reply }),
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<(Instant, Value)>,
    credentials: Vec<String>,
    calls: usize,
}

/// The fake provider; serves until the test ends.
#[derive(Clone)]
pub struct FakeLlm {
    script: Arc<Mutex<Script>>,
    /// The base URL to give as `LLM_BASE_URL` (ends in `/v1`).
    pub base_url: String,
}

impl FakeLlm {
    /// Starts the fake on loopback with `replies`, answered in order.
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST.into(), replies).await
    }

    /// Starts the fake on `host` (for callers outside this process, such as
    /// an operator's pods) with `replies`, answered in order.
    pub async fn start_at(
        host: std::net::IpAddr,
        replies: impl IntoIterator<Item = Reply>,
    ) -> Self {
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into_iter().collect(),
            ..Script::default()
        }));
        let router = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind((host, 0))
            .await
            .expect("a free port");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the fake LLM serves");
        });
        Self { script, base_url }
    }

    /// Adds `replies` to the end of the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("script").replies.extend(replies);
    }

    /// The credential each request presented (`Authorization` or
    /// `x-api-key`), in order.
    pub fn credentials(&self) -> Vec<String> {
        self.script.lock().expect("script").credentials.clone()
    }

    /// Asserts the model was asked `turns` times and its last request held
    /// each of `seen` (what its tools printed).
    pub fn assert_last_turn_saw(&self, turns: usize, seen: &[&str]) {
        let requests = self.bodies();
        assert_eq!(requests.len(), turns, "{turns} model turns");
        let last = &requests[turns - 1];
        assert!(
            seen.iter().all(|s| last.contains(s)),
            "the tools saw {seen:?}: {last}"
        );
    }

    /// The request bodies received, in order, as JSON text.
    pub fn bodies(&self) -> Vec<String> {
        self.requests().iter().map(|(_, b)| b.to_string()).collect()
    }

    /// The request bodies received, with when they arrived.
    pub fn requests(&self) -> Vec<(Instant, Value)> {
        self.script.lock().expect("script").requests.clone()
    }
}

type Shared = Arc<Mutex<Script>>;

fn next(script: &Shared, headers: &HeaderMap, body: Value) -> (Reply, usize) {
    let mut script = script.lock().expect("script");
    let credential = headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    script.credentials.push(credential);
    script.requests.push((Instant::now(), body));
    script.calls += 1;
    let reply = script
        .replies
        .pop_front()
        .unwrap_or(Reply::Text("(the script ran out)"));
    (reply, script.calls)
}

fn refusal(status: u16, body: &'static str) -> Response {
    (
        StatusCode::from_u16(status).expect("a status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

fn failure(status: u16, retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).expect("a status"),
        Json(json!({ "error": { "message": "scripted failure", "type": "rate_limit_error" } })),
    )
        .into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            seconds.to_string().parse().expect("a header"),
        );
    }
    response
}

async fn openai(
    State(script): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].clone();
    let (reply, call) = next(&script, &headers, body);
    let (message, finish) = match reply {
        Reply::Status(status, retry_after) => return failure(status, retry_after),
        Reply::Refuse(status, body) => return refusal(status, body),
        Reply::Text(text) => (json!({ "role": "assistant", "content": text }), "stop"),
        Reply::Tool { name, arguments } => {
            (tool_call(call, name, &arguments.to_string()), "tool_calls")
        }
        Reply::RawTool { name, arguments } => (tool_call(call, name, arguments), "tool_calls"),
    };
    Json(json!({
        "id": format!("chatcmpl-{call}"),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 },
    }))
    .into_response()
}

fn tool_call(call: usize, name: &str, arguments: &str) -> Value {
    json!({ "role": "assistant", "content": null, "tool_calls": [{
        "id": format!("call_{call}"),
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    }]})
}

async fn anthropic(
    State(script): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].clone();
    let (reply, call) = next(&script, &headers, body);
    let (content, stop) = match reply {
        Reply::Status(status, retry_after) => return failure(status, retry_after),
        Reply::Refuse(status, body) => return refusal(status, body),
        Reply::RawTool { .. } => panic!("Anthropic's tool inputs are objects, never raw text"),
        Reply::Text(text) => (json!([{ "type": "text", "text": text }]), "end_turn"),
        Reply::Tool { name, arguments } => (
            json!([{ "type": "tool_use", "id": format!("toolu_{call}"), "name": name, "input": arguments }]),
            "tool_use",
        ),
    };
    Json(json!({
        "id": format!("msg_{call}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": { "input_tokens": 100, "output_tokens": 20 },
    }))
    .into_response()
}
