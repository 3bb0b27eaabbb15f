//! Start-up of `smolpaws agent`: from process spawn to its first LLM request,
//! against a scripted provider on loopback, with the clone (a local `file://`
//! remote) measured apart. Release build, 30 runs.
//!
//! `cargo bench --bench agent_startup`

// Shared with the tests, which use the parts this benchmark does not.
#[allow(dead_code)]
#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;
#[allow(dead_code)]
#[path = "../tests/support/git_remote.rs"]
mod git_remote;

use std::process::Command;
use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Reply};
use serde_json::json;

const RUNS: usize = 30;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let (server, _) = git_remote::server(&[]);
    let spec = json!({
        "prompt": "why?",
        "github": { "repository": "octo/hello", "number": 7 },
    });
    let mut to_request = Vec::new();
    let mut clones = Vec::new();
    for _ in 0..RUNS {
        let llm = FakeLlm::start([Reply::Text("done")]).await;
        let workspace = tempfile::tempdir().expect("a workspace");
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_smolpaws"))
            .arg("agent")
            .env("SMOLPAWS_RUN_SPEC", spec.to_string())
            .env("SMOLPAWS_WORKSPACE", workspace.path())
            .env(
                "GITHUB_SERVER_URL",
                format!("file://{}", server.path().display()),
            )
            .env("GITHUB_API_URL", "http://127.0.0.1:9")
            .env("LLM_MODEL", "scripted-model")
            .env("LLM_BASE_URL", &llm.base_url)
            .env("SMOLPAWS_LOG_FORMAT", "json")
            .output()
            .expect("the agent runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let first = llm.requests()[0].0;
        to_request.push(first - started);
        let log = String::from_utf8_lossy(&output.stdout);
        let clone_ms = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "checked out")
            .and_then(|l| l["took_ms"].as_u64())
            .expect("the checkout is logged");
        clones.push(Duration::from_millis(clone_ms));
    }
    let mut without_clone: Vec<Duration> = to_request
        .iter()
        .zip(&clones)
        .map(|(t, c)| t.saturating_sub(*c))
        .collect();
    to_request.sort();
    clones.sort();
    without_clone.sort();
    println!(
        "smolpaws agent, spawn → first LLM request over {RUNS} runs: p50 {:.1} ms, p90 {:.1} ms; of which the clone (local file:// remote) p50 {:.1} ms; start-up excluding the clone p50 {:.1} ms, p90 {:.1} ms",
        ms(percentile(&to_request, 0.5)),
        ms(percentile(&to_request, 0.9)),
        ms(percentile(&clones, 0.5)),
        ms(percentile(&without_clone, 0.5)),
        ms(percentile(&without_clone, 0.9)),
    );
}
