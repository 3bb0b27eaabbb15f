//! `spec.sandbox.backend: daytona`: the real controller against the real
//! test control plane, a fake Daytona that runs each sandbox's command (the
//! real agent binary) as a local process, a scripted LLM, a local git remote
//! and a fake GitHub.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use secrecy::SecretString;
use serde_json::json;
use smolpaws::api::{
    AgentRun, AgentRunSpec, CommentKind, GitHubContext, Phase, SandboxBackend, SandboxSpec,
    TriggerComment,
};
use smolpaws::controller::ControllerArgs;
use support::fake_daytona::{FakeDaytona, Fault, KEY};
use support::fake_github::FakeGitHub;
use support::fake_llm::{FakeLlm, Reply};
use support::operator::Operator;

const LLM_KEY: &str = "sk-llm-secret-0123456789";

struct Setup {
    runs: Api<AgentRun>,
    namespace: String,
    github: FakeGitHub,
    daytona: FakeDaytona,
    llm: FakeLlm,
    reuse: bool,
    _remote: tempfile::TempDir,
}

impl Setup {
    async fn new(prefix: &str, replies: Vec<Reply>, reuse: bool) -> Self {
        support::log::captured();
        let client = support::client();
        let namespace = support::namespace(&client, prefix).await;
        let github = FakeGitHub::start().await;
        let daytona = FakeDaytona::start().await;
        let llm = FakeLlm::start(replies).await;
        let (remote, _) = support::git_remote::server(&[]);
        Self {
            runs: Api::namespaced(client, &namespace),
            namespace,
            github,
            daytona,
            llm,
            reuse,
            _remote: remote,
        }
    }

    /// The controller's settings for this setup, Daytona on when `daytona`.
    fn tune(&self, args: &mut ControllerArgs, daytona: bool) {
        args.sandbox.llm.model = Some("scripted-model".into());
        args.sandbox.llm.base_url = Some(self.llm.base_url.clone());
        args.sandbox.llm.api_key = Some(SecretString::from(LLM_KEY));
        args.sandbox.extra_env = vec![
            (
                "GITHUB_SERVER_URL".into(),
                format!("file://{}", self._remote.path().display()),
            ),
            ("GITHUB_API_URL".into(), "http://127.0.0.1:9".into()),
        ];
        if daytona {
            args.daytona.daytona_api_key = Some(SecretString::from(KEY));
            args.daytona.daytona_api_url = self.daytona.url.clone();
            args.daytona.daytona_timeout = Duration::from_secs(1);
            args.daytona.daytona_agent_binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_smolpaws")));
            args.daytona.daytona_reuse_sandboxes = self.reuse;
        }
    }

    async fn operator(&self) -> Operator {
        Operator::start(
            support::client(),
            &self.namespace,
            Some(&self.github.url),
            |args| self.tune(args, true),
        )
        .await
    }

    async fn create(&self, name: &str, comment: i64, timeout_seconds: Option<i64>) {
        let spec = AgentRunSpec {
            prompt: "what does the README say?".into(),
            github: GitHubContext {
                installation_id: Some(1),
                repository: "octo/hello".into(),
                number: 7,
                pull_request: false,
                comment: Some(TriggerComment {
                    id: comment,
                    kind: CommentKind::IssueComment,
                    html_url: format!(
                        "https://github.com/octo/hello/issues/7#issuecomment-{comment}"
                    ),
                    author: "octocat".into(),
                    review: None,
                }),
                head: None,
                post_reply: true,
                delivery_id: None,
                changes: None,
                allow_workflow_changes: false,
            },
            sandbox: SandboxSpec {
                backend: SandboxBackend::Daytona,
                timeout_seconds,
                ..SandboxSpec::default()
            },
            agent: None,
        };
        self.runs
            .create(&PostParams::default(), &AgentRun::new(name, spec))
            .await
            .expect("the AgentRun is created");
    }

    async fn until(&self, name: &str, what: &str, done: impl Fn(&AgentRun) -> bool) -> AgentRun {
        let wait = await_condition(self.runs.clone(), name, move |run: Option<&AgentRun>| {
            run.is_some_and(&done)
        });
        match tokio::time::timeout(Duration::from_secs(90), wait).await {
            Ok(Ok(Some(run))) => run,
            _ => panic!(
                "{name} never became {what}: {:#?}\nDaytona calls: {:?}",
                self.runs
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.status),
                self.daytona.calls()
            ),
        }
    }

    /// Creates run `name` for `comment` and waits until it succeeded.
    async fn succeeded(&self, name: &str, comment: i64) -> AgentRun {
        self.create(name, comment, None).await;
        self.until(name, "Succeeded", |run| run.phase() == Phase::Succeeded)
            .await
    }

    async fn replied(&self, name: &str) -> AgentRun {
        self.until(name, "replied", |run| {
            run.status.as_ref().is_some_and(|s| s.reply.is_some())
        })
        .await
    }

    async fn until_no_sandbox(&self) {
        for _ in 0..100 {
            if self.daytona.live() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sandboxes leaked: {:?}", self.daytona.labels());
    }
}

/// The Daytona id of the sandbox `run` ran in.
fn sandbox_of(run: &AgentRun) -> Option<String> {
    run.status
        .as_ref()
        .and_then(|s| s.sandbox.as_ref())
        .map(|s| s.name.clone())
}

fn finish(reply: &'static str) -> Reply {
    Reply::Tool {
        name: "finish",
        arguments: json!({ "reply": reply }),
    }
}

fn sleep(seconds: u32) -> Reply {
    Reply::Tool {
        name: "bash",
        arguments: json!({ "command": format!("sleep {seconds}; echo slept") }),
    }
}

fn bash(command: &str) -> Reply {
    Reply::Tool {
        name: "bash",
        arguments: json!({ "command": command }),
    }
}

/// Whether `command` kills by user or everything it may: a test's fake
/// Daytona runs commands as the developer.
fn kills_widely(command: &str) -> bool {
    [
        "pkill",
        "killall",
        "kill -1",
        "-KILL -1",
        "kill -9 -1",
        " -u ",
    ]
    .iter()
    .any(|wide| command.contains(wide))
}

/// Whether the process `pid` (as the sandbox wrote it) lives.
fn alive(pid: &str) -> bool {
    pid.trim().parse().is_ok_and(smolpaws::process::running)
}

/// Every tool output the model was sent, first seen first.
fn tool_outputs(llm: &FakeLlm) -> Vec<String> {
    let mut outputs = Vec::new();
    for (_, body) in llm.requests() {
        for message in body["messages"].as_array().into_iter().flatten() {
            if message["role"] != "tool" {
                continue;
            }
            let content = match &message["content"] {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if !outputs.contains(&content) {
                outputs.push(content);
            }
        }
    }
    outputs
}

/// What a tool printed on a line `key=value`, the first time.
fn printed(llm: &FakeLlm, key: &str) -> Option<String> {
    let marker = format!("{key}=");
    tool_outputs(llm).iter().find_map(|output| {
        output
            .lines()
            .find_map(|line| line.strip_prefix(&marker).map(str::to_owned))
    })
}

fn position(calls: &[String], wanted: impl Fn(&str) -> bool) -> usize {
    calls
        .iter()
        .position(|c| wanted(c))
        .unwrap_or_else(|| panic!("no such call in {calls:?}"))
}

#[tokio::test]
async fn a_daytona_run_succeeds_replies_once_and_leaves_nothing() {
    let setup = Setup::new("daytona", vec![finish("The README says main.")], false).await;
    let operator = setup.operator().await;
    setup.create("first", 501, None).await;

    let run = setup.replied("first").await;
    let status = run.status.expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let sandbox = status.sandbox.expect("the sandbox is named");
    assert_eq!(sandbox.backend, SandboxBackend::Daytona);
    assert_eq!(sandbox.name, "sbx-1");
    let uid = run.metadata.uid.clone().expect("a uid");
    assert_eq!(
        setup.daytona.names(),
        vec![format!("smolpaws-{uid}")],
        "named after its run"
    );

    assert!(
        status.sandbox_seconds.is_some(),
        "the held time is recorded"
    );
    assert_eq!(
        status.result.map(|r| r.reply),
        Some("The README says main.\n\n*No files were changed.*".to_owned())
    );
    let comments = setup.github.comments();
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.starts_with("The README says main."));

    let calls = setup.daytona.calls();
    let looked_up = position(&calls, |c| *c == format!("GET /sandbox/smolpaws-{uid}"));
    let created = position(&calls, |c| c == "POST /sandbox");
    assert!(looked_up < created, "looked up by name first: {calls:?}");
    let uploaded = position(&calls, |c| c.ends_with("/files/bulk-upload"));
    let executed = position(&calls, |c| c.ends_with("/exec"));
    let deleted = position(&calls, |c| c == "DELETE /sandbox/sbx-1");
    assert!(
        created < uploaded && uploaded < executed && executed < deleted,
        "create → upload → execute → delete: {calls:?}"
    );
    setup.until_no_sandbox().await;
    assert_eq!(setup.daytona.created(), 1);
    assert_eq!(setup.daytona.unauthorized(), 0);
    assert_eq!(
        setup.daytona.refused(),
        Vec::<String>::new(),
        "only routes the SDK's contract test proves"
    );
    assert!(
        setup.daytona.follows() >= 1,
        "the agent's output is followed as it streams"
    );
    println!("smolpaws' requests:\n{}", setup.daytona.calls().join("\n"));
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("smolpaws_sandbox_held_seconds_count{backend=\"daytona\"} 1"),
        "{metrics}"
    );

    let commands = setup.daytona.commands().join("\n");
    let log = support::log::text();
    assert!(
        log.contains("checked out"),
        "the agent's output reaches the controller's log"
    );
    let tokens = setup.github.issued_tokens();
    assert!(!tokens.is_empty());
    for secret in tokens.iter().map(String::as_str).chain([LLM_KEY, KEY]) {
        assert!(!commands.contains(secret), "a secret on a command line");
        assert!(!log.contains(secret), "a secret in the controller's log");
    }
}

#[tokio::test]
async fn with_reuse_runs_of_a_repository_share_a_sandbox_but_never_at_once() {
    let setup = Setup::new(
        "daytona-reuse",
        vec![
            finish("One."),
            finish("Two."),
            sleep(3),
            sleep(3),
            finish("Three."),
            finish("Four."),
        ],
        true,
    )
    .await;
    let _operator = setup.operator().await;
    setup.create("one", 601, None).await;
    let one = setup.replied("one").await;
    setup.create("two", 602, None).await;
    let two = setup.replied("two").await;
    assert_eq!(
        sandbox_of(&one),
        sandbox_of(&two),
        "the warm sandbox is reused"
    );
    assert_eq!(setup.daytona.created(), 1);
    assert_eq!(setup.daytona.live(), 1, "kept warm");
    assert!(
        setup
            .daytona
            .labels()
            .iter()
            .all(|l| !l.contains_key("smolpaws.dev/run-uid")),
        "released: {:?}",
        setup.daytona.labels()
    );

    setup.create("three", 603, None).await;
    setup.create("four", 604, None).await;
    let three = setup.replied("three").await;
    let four = setup.replied("four").await;
    assert_ne!(
        sandbox_of(&three),
        sandbox_of(&four),
        "runs at once never share a sandbox"
    );
    assert_eq!(setup.daytona.created(), 2);
    assert_eq!(setup.daytona.live(), 2, "both kept warm");
    assert_eq!(setup.github.comments().len(), 4);
    let commands = setup.daytona.commands();
    assert!(!commands.iter().any(|c| kills_widely(c)), "{commands:#?}");
    drop(setup.llm);
}

#[tokio::test]
async fn a_reused_sandbox_is_cleaned_and_the_next_run_starts_clean() {
    let setup = Setup::new(
        "daytona-clean",
        vec![
            // A hook for whoever reads HOME next, here and in the sandbox
            // user's own HOME, and a process lying in wait outside the run.
            bash(
                "printf '[core]\\n\\thooksPath = /tmp/planted-hooks\\n' \
                 | tee \"$HOME/.gitconfig\" > \"$HOME/../../../../.gitconfig\"; \
                 cd / && { nohup sleep 300 >/dev/null 2>&1 & echo \"leftover=$!\"; }",
            ),
            finish("One."),
            bash(
                "echo \"home=$HOME\"; echo \"tmpdir=$TMPDIR\"; \
                 echo \"runs=$(ls -A ../.. | tr '\\n' ,)\"; \
                 echo \"inhome=$(ls -A \"$HOME\" | tr '\\n' ,)\"; cat \"$HOME/.gitconfig\"",
            ),
            finish("Two."),
        ],
        true,
    )
    .await;
    let _operator = setup.operator().await;
    setup.succeeded("planter", 1101).await;
    let leftover = printed(&setup.llm, "leftover").expect("the planted process's pid");
    let root = setup.daytona.root("sbx-1").expect("the sandbox is kept");
    assert!(
        root.join(".gitconfig").exists(),
        "the sandbox user's HOME is the model's to write"
    );
    for _ in 0..50 {
        if !alive(&leftover) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive(&leftover), "the run's leftover process was killed");
    assert!(
        !root.join(".smolpaws").exists(),
        "the earlier run's directory is gone"
    );
    let calls = setup.daytona.calls();
    let cleaned = position(&calls, |c| {
        c.contains("/process/session/smolpaws-clean-") && c.ends_with("/exec")
    });
    let released = position(&calls, |c| c == "PUT /sandbox/sbx-1/labels");
    assert!(cleaned < released, "cleaned before handed back: {calls:?}");

    let next = setup.succeeded("next", 1102).await;
    assert_eq!(
        sandbox_of(&next).as_deref(),
        Some("sbx-1"),
        "the warm sandbox is reused"
    );
    let uid = next.metadata.uid.expect("a uid");
    let home = printed(&setup.llm, "home").expect("the second run's HOME");
    assert!(
        home.ends_with(&format!("/.smolpaws/runs/{uid}/home")),
        "a HOME of the run's own: {home}"
    );
    let tmpdir = printed(&setup.llm, "tmpdir").expect("the second run's TMPDIR");
    assert!(
        tmpdir.ends_with(&format!("/.smolpaws/runs/{uid}/tmp")),
        "{tmpdir}"
    );
    assert_eq!(
        printed(&setup.llm, "runs").as_deref(),
        Some(format!("{uid},").as_str()),
        "no earlier run's directory"
    );
    assert_eq!(
        printed(&setup.llm, "inhome").as_deref(),
        Some(""),
        "an empty HOME"
    );
    let outputs = tool_outputs(&setup.llm);
    assert_eq!(outputs.len(), 2, "{outputs:#?}");
    assert!(
        !outputs.iter().any(|o| o.contains("hooksPath")),
        "the planted config is nowhere the next run looks: {outputs:#?}"
    );

    let commands = setup.daytona.commands();
    assert_eq!(
        commands
            .iter()
            .filter(|c| c.contains("kill -KILL") && c.contains("rm -rf .smolpaws"))
            .count(),
        2,
        "one cleanup per release: {commands:#?}"
    );
    assert!(
        commands
            .iter()
            .filter(|c| c.starts_with("setsid sh -c"))
            .all(|c| c.contains("HOME=\"$PWD/home\" TMPDIR=\"$PWD/tmp\"")),
        "{commands:#?}"
    );
    assert!(!commands.iter().any(|c| kills_widely(c)), "{commands:#?}");
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_cleaned_is_deleted_not_reused() {
    let setup = Setup::new(
        "daytona-unclean",
        vec![finish("One."), finish("Two.")],
        true,
    )
    .await;
    setup.daytona.fail_next(
        "POST /toolbox/sbx-1/process/session/smolpaws-clean-",
        Fault::Status(400),
    );
    let _operator = setup.operator().await;
    // Succeeds: the run still ends well.
    setup.succeeded("dirty", 1201).await;
    setup.until_no_sandbox().await;

    let run = setup.succeeded("after", 1202).await;
    assert_eq!(
        sandbox_of(&run).as_deref(),
        Some("sbx-2"),
        "a new sandbox, not the one left uncleaned"
    );
    assert_eq!(setup.daytona.live(), 1, "the clean one is kept warm");
}

#[tokio::test]
async fn a_paused_warm_sandbox_is_resumed_for_the_next_run() {
    let setup = Setup::new("daytona-paused", vec![finish("One."), finish("Two.")], true).await;
    let _operator = setup.operator().await;
    setup.succeeded("before", 1301).await;
    setup.daytona.pause("sbx-1");

    let run = setup.succeeded("after", 1302).await;
    assert_eq!(
        sandbox_of(&run).as_deref(),
        Some("sbx-1"),
        "the paused sandbox is taken and resumed"
    );
    assert_eq!(setup.daytona.created(), 1);
    let calls = setup.daytona.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "POST /sandbox/sbx-1/start")
            .count(),
        1,
        "resumed once: {calls:?}"
    );
}

#[tokio::test]
async fn a_controller_restarted_mid_run_adopts_its_sandbox() {
    let setup = Setup::new(
        "daytona-restart",
        vec![sleep(4), finish("Survived.")],
        false,
    )
    .await;
    let first = setup.operator().await;
    setup.create("restart", 701, None).await;
    setup
        .until("restart", "Running", |run| run.phase() == Phase::Running)
        .await;
    let _second = first
        .restart(
            support::client(),
            &setup.namespace,
            Some(&setup.github.url),
            |args| setup.tune(args, true),
        )
        .await;

    let run = setup.replied("restart").await;
    assert_eq!(run.phase(), Phase::Succeeded, "{:?}", run.status);
    assert_eq!(setup.daytona.created(), 1, "no second sandbox");
    assert_eq!(setup.github.comments().len(), 1);
    setup.until_no_sandbox().await;
}

#[tokio::test]
async fn daytona_errors_are_retried_or_reported_and_nothing_leaks() {
    let setup = Setup::new("daytona-faults", vec![finish("Despite it all.")], false).await;
    // Daytona's list lags: what is found here is found by name.
    setup.daytona.lag_list(Duration::from_secs(600));
    setup
        .daytona
        .fail_next("GET /sandbox", Fault::RateLimited(1));
    setup.daytona.fail_next("POST /sandbox", Fault::Status(500));
    setup
        .daytona
        .fail_next("POST /sandbox", Fault::Slow(Duration::from_millis(1500)));
    // The reads by name after the 429, after the 500 and after the timed-out
    // create miss the sandbox, as a read racing the create could: the next
    // create is refused as a duplicate and the sandbox adopted.
    for _ in 0..3 {
        setup
            .daytona
            .fail_next("GET /sandbox/smolpaws-", Fault::Status(404));
    }
    let _operator = setup.operator().await;
    setup.create("flaky", 801, None).await;
    let run = setup.replied("flaky").await;
    assert_eq!(run.phase(), Phase::Succeeded);
    assert_eq!(
        setup.daytona.created(),
        1,
        "the sandbox whose answer timed out was adopted, not created again"
    );
    let calls = setup.daytona.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "POST /sandbox").count(),
        3,
        "refused, timed out, refused as a duplicate: {calls:?}"
    );
    setup.until_no_sandbox().await;

    setup.daytona.fail_next("POST /sandbox", Fault::Status(400));
    setup.create("refused", 802, None).await;
    let run = setup
        .until("refused", "Failed", |run| run.phase() == Phase::Failed)
        .await;
    let message = run.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("Daytona answered 400 Bad Request to POST /sandbox: scripted failure"),
        "{message}"
    );
    setup.until_no_sandbox().await;
}

#[tokio::test]
async fn deleting_a_run_deletes_its_sandbox_and_a_timeout_stops_it() {
    let setup = Setup::new("daytona-stop", vec![sleep(60), sleep(60)], false).await;
    let _operator = setup.operator().await;
    setup.create("deleted", 901, None).await;
    setup
        .until("deleted", "Running", |run| run.phase() == Phase::Running)
        .await;
    setup
        .runs
        .delete("deleted", &DeleteParams::default())
        .await
        .expect("the run is deleted");
    let gone = await_condition(setup.runs.clone(), "deleted", |run: Option<&AgentRun>| {
        run.is_none()
    });
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("the run is gone")
        .expect("watching");
    setup.until_no_sandbox().await;

    setup.create("slow", 902, Some(3)).await;
    let run = setup
        .until("slow", "Failed", |run| run.phase() == Phase::Failed)
        .await;
    let finished = run
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Finished"))
        .map(|c| c.reason.clone());
    assert_eq!(finished.as_deref(), Some("RunTimeout"));
    setup.until_no_sandbox().await;
}

#[tokio::test]
async fn without_daytona_settings_a_daytona_run_fails_naming_the_variable() {
    let setup = Setup::new("daytona-off", vec![], false).await;
    let _operator = Operator::start(
        support::client(),
        &setup.namespace,
        Some(&setup.github.url),
        |args| setup.tune(args, false),
    )
    .await;
    setup.create("unconfigured", 1001, None).await;
    let run = setup
        .until("unconfigured", "Failed", |run| run.phase() == Phase::Failed)
        .await;
    let message = run.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("DAYTONA_API_KEY"), "{message}");
    assert!(setup.daytona.calls().is_empty());
}
