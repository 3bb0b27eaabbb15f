//! The runner (`smolpaws agent serve`, release build) on loopback:
//!
//! - `POST /run` overhead: 1,000 jobs one after another against a scripted
//!   LLM that answers at once, beside the same LLM called directly;
//! - event fan-out: 100 websocket clients following one conversation whose
//!   agent makes 50 tool calls, each event's delay from its creation to its
//!   arrival at every client.
//!
//! `cargo bench --bench runner`

// Shared with the tests, which use the parts this benchmark does not.
#[allow(dead_code)]
#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;

use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Reply};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const JOBS: usize = 1000;
const CLIENTS: usize = 100;
const TOOL_CALLS: usize = 50;
const TOKEN: &str = "bench-token";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples")),
    );
}

struct Runner {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    url: String,
}

async fn runner(llm: &FakeLlm) -> Runner {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .args(["agent", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SMOLPAWS_RUNNER_TOKEN", TOKEN)
        .env("SMOLPAWS_RUNNER_MAX_RUNS", "8")
        .env("SMOLPAWS_AGENT_MAX_ITERATIONS", "100")
        .env("SMOLPAWS_WORKSPACE_ROOT", dir.path().join("workspaces"))
        .env("SMOLPAWS_PERSISTENCE_DIR", dir.path().join("conversations"))
        .env("LLM_MODEL", "scripted-model")
        .env("LLM_BASE_URL", &llm.base_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the runner starts");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    while http.get(format!("{url}/alive")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Runner {
        _child: child,
        _dir: dir,
        url,
    }
}

async fn run_overhead() {
    let llm = FakeLlm::start(std::iter::repeat_n(Reply::Text("ok"), JOBS + 100)).await;
    let runner = runner(&llm).await;
    let http = reqwest::Client::new();
    let direct_llm = FakeLlm::start(std::iter::repeat_n(Reply::Text("ok"), JOBS)).await;
    let mut direct = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let started = Instant::now();
        let answer = http
            .post(format!("{}/chat/completions", direct_llm.base_url))
            .json(&json!({ "model": "scripted-model", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .expect("the fake LLM answers");
        assert!(answer.status().is_success());
        answer.bytes().await.expect("a body");
        direct.push(started.elapsed());
    }
    let mut jobs = Vec::with_capacity(JOBS);
    let began = Instant::now();
    for _ in 0..JOBS {
        let started = Instant::now();
        let answer: Value = http
            .post(format!("{}/run", runner.url))
            .bearer_auth(TOKEN)
            .json(&json!({ "prompt": "say ok" }))
            .send()
            .await
            .expect("the runner answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(answer["reply"], "ok", "{answer}");
        jobs.push(started.elapsed());
    }
    let total = began.elapsed();
    summary("the scripted LLM alone", direct);
    summary("POST /run (one LLM round trip)", jobs);
    println!(
        "POST /run: {JOBS} jobs in {:.2} s, {:.0} jobs/s",
        total.as_secs_f64(),
        JOBS as f64 / total.as_secs_f64()
    );
}

async fn fan_out() {
    let mut replies: Vec<Reply> = (0..TOOL_CALLS)
        .map(|_| Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "true" }),
        })
        .collect();
    replies.push(Reply::Text("done"));
    let llm = FakeLlm::start(replies).await;
    let runner = runner(&llm).await;
    let http = reqwest::Client::new();
    let info: Value = http
        .post(format!("{}/api/conversations", runner.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "initial_message": { "content": [{ "type": "text", "text": "go" }] } }))
        .send()
        .await
        .expect("a conversation")
        .json()
        .await
        .expect("JSON");
    let id = info["id"].as_str().expect("an id").to_owned();
    let ws = runner.url.replace("http://", "ws://");
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (socket, _) = tokio_tungstenite::connect_async(format!(
            "{ws}/sockets/events/{id}?session_api_key={TOKEN}&resend_mode=all"
        ))
        .await
        .expect("a websocket");
        clients.push(tokio::spawn(async move {
            let mut socket = socket;
            let mut delays: Vec<Duration> = Vec::new();
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let arrived = Timestamp::now();
                let event: Value = serde_json::from_str(&text).expect("an event");
                // Snapshots are made for each client: no delivery to time.
                if event["key"] == "full_state" {
                    continue;
                }
                let created: Timestamp = event["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("a timestamp");
                delays.push(
                    arrived
                        .duration_since(created)
                        .try_into()
                        .unwrap_or_default(),
                );
                if event["value"] == "finished" {
                    break;
                }
            }
            delays
        }));
    }
    let began = Instant::now();
    http.post(format!("{}/api/conversations/{id}/run", runner.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the run starts");
    let mut delays = Vec::new();
    for client in clients {
        delays.extend(client.await.expect("a client"));
    }
    let took = began.elapsed();
    let per_client = delays.len() / CLIENTS;
    summary(
        &format!("event delivery to {CLIENTS} websocket clients ({per_client} events each)"),
        delays,
    );
    println!(
        "fan-out: the run and its delivery to every client took {:.2} s",
        took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    smolpaws::tls::install_default_provider();
    run_overhead().await;
    fan_out().await;
}
