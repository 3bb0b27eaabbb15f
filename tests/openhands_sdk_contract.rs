//! The real OpenHands clients against `smolpaws agent serve`: the drivers in
//! `tests/python/openhands/` use `openhands-sdk` 1.58.2 from PyPI (in a
//! virtual environment made once by `tests/python/env.sh`) exactly as a user
//! would, and fail with what differed. The SDK's own models validate what
//! the runner serves.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use support::fake_llm::{FakeLlm, Reply};
use support::runner::{Runner, TOKEN};

/// Runs the driver `script` against `runner`, working in `workdir`; its
/// report (the last line it prints).
async fn drive(script: &str, runner: &Runner, workdir: &Path) -> Value {
    let local = tempfile::tempdir().expect("a temp dir");
    let python = support::python::interpreter("openhands");
    let output: Output = tokio::process::Command::new(python)
        .arg(support::python::scripts().join("openhands").join(script))
        .current_dir(support::python::scripts().join("openhands"))
        .env("SMOLPAWS_URL", &runner.url)
        .env("SMOLPAWS_TOKEN", TOKEN)
        .env("SMOLPAWS_WORKDIR", workdir)
        .env("SMOLPAWS_LOCAL_DIR", local.path())
        // No network but loopback: LiteLLM must not fetch its price list,
        // and the SDK's banner is noise here.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        // Nothing written into the repository.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} reported {last:?}: {e}"))
}

/// A working directory inside the runner's workspace root.
fn workdir(dir: &Path) -> std::path::PathBuf {
    let workdir = dir.join("workspaces/project");
    std::fs::create_dir_all(&workdir).expect("a working directory");
    workdir
}

#[tokio::test]
async fn remote_workspaces_sync_and_async_make_every_call() {
    let llm = FakeLlm::start([]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(dir.path(), &llm, &[]).await;
    let workdir = workdir(dir.path());

    let report = drive("remote_workspace.py", &runner, &workdir).await;
    // SIGTERM (15) ended the stopped command: its exit code says so.
    assert_eq!(report["stop_exit_code"], json!(-15), "{report}");
    assert_eq!(
        std::fs::read(workdir.join("data/blob.bin"))
            .expect("the upload")
            .len(),
        1 << 20
    );
}

#[tokio::test]
async fn a_remote_conversation_runs_a_tool_call_and_attaches_again() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "pwd" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "I worked where you asked." }),
        },
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "sleep 20" }),
        },
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(dir.path(), &llm, &[]).await;
    let workdir = workdir(dir.path());

    let report = drive("remote_conversation.py", &runner, &workdir).await;
    let kinds: Vec<&str> = report["kinds"]
        .as_array()
        .expect("the stored kinds")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        kinds,
        [
            "MessageEvent",
            "ConversationStateUpdateEvent",
            "ActionEvent",
            "ObservationEvent",
            "MessageEvent",
            "ConversationStateUpdateEvent",
            // The second run, paused in its 20 s command.
            "MessageEvent",
            "ConversationStateUpdateEvent",
            "ActionEvent",
            "ConversationStateUpdateEvent"
        ],
        "{report}"
    );
    // `openai/scripted-model` is the model `scripted-model` behind an
    // OpenAI-compatible API, as the SDK means it.
    let requests = llm.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|(_, body)| body["model"] == "scripted-model"),
        "{:?}",
        requests
            .iter()
            .map(|(_, b)| &b["model"])
            .collect::<Vec<_>>()
    );
    // The runner's own key reached the model; the client's did not.
    assert!(
        llm.credentials()
            .iter()
            .all(|c| !c.contains("sk-client-side"))
    );
}
