//! `smolpaws dev` as a newcomer runs it: the binary, its embedded control
//! plane, a scripted LLM over local HTTP, a local git checkout, and a comment
//! sent with `smolpaws dev comment`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use smolpaws::api::{AgentRun, Phase};
use smolpaws::dev::session::Session;
use support::fake_llm::{FakeLlm, Reply};
use support::git_remote::git;
use tokio::io::{AsyncBufReadExt, BufReader};

const SMOLPAWS: &str = env!("CARGO_BIN_EXE_smolpaws");

/// Variables of the test's own environment that would change dev mode.
const CLEARED: &[&str] = &[
    "LLM_MODEL",
    "LLM_BASE_URL",
    "LLM_PROVIDER",
    "LLM_API_KEY",
    "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY",
    "GITHUB_APP_PRIVATE_KEY_FILE",
    "ALLOWED_ACTORS",
    "ALLOWED_OWNERS",
    "ALLOWED_REPOS",
    "ALLOWED_INSTALLATIONS",
    "KUBECONFIG",
];

fn smolpaws(dev_dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(SMOLPAWS);
    for name in CLEARED {
        command.env_remove(name);
    }
    command
        .env("SMOLPAWS_DEV_DIR", dev_dir)
        .env("USER", "ada")
        .kill_on_drop(true);
    command
}

/// The processes descended from `pid`, from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        let children = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            });
        found.extend(children);
        i += 1;
    }
    found.remove(0);
    found
}

async fn wait_for_session(dir: &Path, lines: &Mutex<Vec<String>>) -> Session {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(session) = Session::load(dir) {
            return session;
        }
        assert!(
            Instant::now() < deadline,
            "dev mode did not start: {:?}",
            lines.lock().expect("the printed lines")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_on_a_local_repository_is_answered_and_ctrl_c_leaves_nothing_behind() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "str_replace",
            arguments: json!({ "path": "README.md", "old_str": "helo", "new_str": "hello" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Fixed the typo in README.md." }),
        },
    ])
    .await;
    let dev_dir = tempfile::tempdir().expect("a dev dir");
    let repo_root = tempfile::tempdir().expect("a repository");
    let repo = repo_root.path().join("widgets");
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "helo world\n").expect("write");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    let mut dev = smolpaws(dev_dir.path())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("LLM_MODEL", "scripted-model")
        .env("LLM_BASE_URL", &llm.base_url)
        .env("LLM_API_KEY", "sk-dev-test-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("smolpaws dev starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = dev.stdout.take().expect("stdout");
    let collected = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            collected.lock().expect("the printed lines").push(line);
        }
    });
    let session = wait_for_session(dev_dir.path(), &lines).await;

    let comment = smolpaws(dev_dir.path())
        .args(["dev", "comment", "--repo"])
        .arg(&repo)
        .arg("@smolpaws fix the typo in the README")
        .output()
        .await
        .expect("smolpaws dev comment runs");
    let said = String::from_utf8_lossy(&comment.stdout);
    assert!(
        comment.status.success(),
        "the comment's run failed: {said}{}",
        String::from_utf8_lossy(&comment.stderr)
    );
    assert!(said.contains("Fixed the typo in README.md."), "{said}");

    // The working tree is as it was; the change is a new local branch.
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).expect("read"),
        "helo world\n",
        "the agent left the working tree alone"
    );
    let branch = git(
        &repo,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/smolpaws",
        ],
    );
    assert!(branch.starts_with("smolpaws/"), "a branch: {branch}");
    assert_eq!(
        git(&repo, &["show", &format!("{branch}:README.md")]),
        "hello world"
    );
    assert_eq!(
        git(&repo, &["rev-list", "--count", &format!("main..{branch}")]),
        "1"
    );
    assert_eq!(
        git(&repo, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert!(said.contains(&format!("`git merge {branch}`")), "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .lock()
        .expect("the printed lines")
        .iter()
        .any(|l| l.contains("Fixed the typo in README.md."))
    {
        assert!(
            Instant::now() < deadline,
            "dev mode printed no reply: {:?}",
            lines.lock().expect("the printed lines")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let printed = lines.lock().expect("the printed lines").join("\n");
    assert!(
        printed.contains(&session.kubeconfig.display().to_string()),
        "{printed}"
    );

    let kubeconfig = Kubeconfig::read_from(&session.kubeconfig).expect("the printed kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = kube::Client::try_from(config).expect("a client");
    let runs = Api::<AgentRun>::all(client)
        .list(&ListParams::default())
        .await
        .expect("runs are listed");
    assert_eq!(runs.items.len(), 1);
    let run = &runs.items[0];
    assert_eq!(run.phase(), Phase::Succeeded);
    assert_eq!(run.spec.github.repository, "local/widgets");
    let status = run.status.as_ref().expect("a status");
    assert_eq!(
        status.result.as_ref().map(|r| r.reply.as_str()),
        Some(
            format!(
                "Fixed the typo in README.md.\n\n*Files changed: `README.md`.*\n\n*The change is on the local branch `{branch}`: `git log -p HEAD..{branch}` shows it, `git merge {branch}` takes it.*"
            )
            .as_str()
        )
    );

    let name = run.metadata.name.as_deref().expect("a name");
    let log = support::smolpaws_logs(&session.kubeconfig, "default", name).await;
    // The agent logs its last step before it reports; once the result is
    // stored the controller stops the sandbox, so nothing after is certain.
    assert!(log.contains("\"finished\""), "the sandbox's output: {log}");
    assert!(
        !log.contains("sk-dev-test-0123456789"),
        "no key in the log: {log}"
    );

    let pid = dev.id().expect("a pid");
    let children = descendants(pid);
    assert!(
        children.len() >= 2,
        "etcd and kube-apiserver run under dev mode: {children:?}"
    );
    support::signal(pid, nix::sys::signal::Signal::SIGINT);
    let exited = tokio::time::timeout(Duration::from_secs(60), dev.wait())
        .await
        .expect("dev mode stops after Ctrl-C")
        .expect("its exit status");
    assert!(exited.success(), "dev mode exited with {exited}");
    let left: Vec<u32> = children
        .into_iter()
        .filter(|p| smolpaws::process::running(*p))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(
        Session::load(dev_dir.path()).is_err(),
        "the session is removed"
    );
}

#[tokio::test]
async fn without_an_llm_dev_mode_names_the_variable_and_fails() {
    let dev_dir = tempfile::tempdir().expect("a dev dir");
    let output = smolpaws(dev_dir.path())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .output()
        .await
        .expect("smolpaws dev runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("set LLM_MODEL"), "{stderr}");

    let output = smolpaws(dev_dir.path())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("LLM_MODEL", "gpt-4o")
        .output()
        .await
        .expect("smolpaws dev runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("set LLM_API_KEY"), "{stderr}");
}

#[tokio::test]
async fn the_control_plane_s_etcd_serves_only_the_apiserver() {
    let plane = support::private_control_plane().await;
    smolpaws::tls::install_default_provider();
    let ca = std::fs::read(plane.ca_certificate()).expect("the plane's CA");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM certificate"))
        .build()
        .expect("a client");
    // A local user who trusts the CA but holds no client certificate reads
    // nothing: not the keys, not a Secret.
    let read = trusting
        .post(format!("{}/v3/kv/range", plane.etcd_url()))
        .body(r#"{"key":"Lw==","range_end":"AA=="}"#)
        .send()
        .await;
    assert!(
        read.is_err(),
        "etcd answered without a client certificate: {read:?}"
    );
    let plain = reqwest::Client::new()
        .post(format!(
            "{}/v3/kv/range",
            plane.etcd_url().replacen("https://", "http://", 1)
        ))
        .body(r#"{"key":"Lw=="}"#)
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|answer| !answer.status().is_success()),
        "etcd answered plain HTTP"
    );
    // The apiserver, which holds the certificate, still works.
    let client = plane.client().expect("a client");
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .list(&Default::default())
        .await
        .expect("the apiserver reads etcd");
}
