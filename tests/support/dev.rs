//! `smolpaws dev` driven as a developer drives it: the binary started as a
//! child process, comments sent with `smolpaws dev comment` on local git
//! checkouts, and the cluster read through the kubeconfig it writes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nix::sys::signal::Signal;
use smolpaws::api::{AgentRun, Phase};
use smolpaws::dev::session::Session;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::git_remote::git;

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

/// The smolpaws binary, told to keep its dev state in `dev_dir`.
pub fn smolpaws(dev_dir: &Path) -> Command {
    let mut command = Command::new(SMOLPAWS);
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
pub fn descendants(pid: u32) -> Vec<u32> {
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

/// A git checkout `<root>/<name>` on branch main holding `files`, committed.
fn local_repository(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let repo = root.join(name);
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    for (path, text) in files {
        std::fs::write(repo.join(path), text).expect("write");
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    repo
}

/// Starts `command` (a `smolpaws dev`), collecting what it prints.
fn spawn_dev(mut command: Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut dev = command
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
    (dev, lines)
}

/// `smolpaws dev comment` on `repo`: what it printed, once it succeeded.
async fn comment(dev_dir: &Path, repo: &Path, body: &str) -> String {
    let comment = smolpaws(dev_dir)
        .args(["dev", "comment", "--repo"])
        .arg(repo)
        .arg(body)
        .output()
        .await
        .expect("smolpaws dev comment runs");
    let said = String::from_utf8_lossy(&comment.stdout).into_owned();
    assert!(
        comment.status.success(),
        "the comment's run failed: {said}{}",
        String::from_utf8_lossy(&comment.stderr)
    );
    said
}

/// An admin client through the kubeconfig dev mode wrote.
pub async fn dev_client(session: &Session) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&session.kubeconfig).expect("the printed kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

/// The session of the dev mode `dev` running with `dir`, once it is ready.
async fn wait_for_session(dir: &Path, dev: &mut Child, lines: &Mutex<Vec<String>>) -> Session {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(session) = Session::load(dir) {
            return session;
        }
        if let Ok(Some(status)) = dev.try_wait() {
            panic!(
                "dev mode exited with {status} before it was ready: {:?}",
                lines.lock().expect("the printed lines")
            );
        }
        assert!(
            Instant::now() < deadline,
            "dev mode did not start: {:?}",
            lines.lock().expect("the printed lines")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The LLM key dev mode is given in these tests, to look for where it must
/// not be.
pub const LLM_KEY: &str = "sk-dev-test-0123456789";

/// A `smolpaws dev` that is ready, with a local repository to comment on.
pub struct Running {
    /// The dev process.
    pub dev: Child,
    /// What it printed so far.
    pub lines: Arc<Mutex<Vec<String>>>,
    /// Its session.
    pub session: Session,
    /// The local repository.
    pub repo: PathBuf,
    dir: TempDir,
    _repo_root: TempDir,
}

impl Running {
    /// Starts `smolpaws dev` with `flags`, the model at `llm` (a base URL),
    /// beside local repository `name` holding `files`, and waits until it
    /// serves.
    pub async fn start(flags: &[&str], llm: &str, name: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a dev dir");
        let repo_root = tempfile::tempdir().expect("a repository");
        let repo = local_repository(repo_root.path(), name, files);
        let mut command = smolpaws(dir.path());
        command
            .arg("dev")
            .args(flags)
            .args(["--listen", "127.0.0.1:0"])
            .env("LLM_MODEL", "scripted-model")
            .env("LLM_BASE_URL", llm)
            .env("LLM_API_KEY", LLM_KEY);
        let (mut dev, lines) = spawn_dev(command);
        let session = wait_for_session(dir.path(), &mut dev, &lines).await;
        Self {
            dev,
            lines,
            session,
            repo,
            dir,
            _repo_root: repo_root,
        }
    }

    /// `smolpaws dev --pods` with the model at `llm`, beside a repository
    /// whose `notes.md` says "the notes say hello".
    pub async fn pods_beside_notes(llm: &str) -> Self {
        Self::start(
            &["--pods"],
            llm,
            "gadgets",
            &[("notes.md", "the notes say hello\n")],
        )
        .await
    }

    /// The dev directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `smolpaws dev comment` with `body` on the local repository.
    pub async fn comment(&self, body: &str) -> String {
        comment(self.dir(), &self.repo, body).await
    }

    /// The printed lines so far.
    pub fn printed(&self) -> Vec<String> {
        self.lines.lock().expect("the printed lines").clone()
    }

    /// The one run dev mode holds, which succeeded.
    pub async fn only_run(&self) -> AgentRun {
        let runs = Api::<AgentRun>::all(dev_client(&self.session).await)
            .list(&ListParams::default())
            .await
            .expect("runs are listed");
        assert_eq!(runs.items.len(), 1);
        let run = runs.items.into_iter().next().expect("one run");
        assert_eq!(run.phase(), Phase::Succeeded);
        run
    }

    /// Sends `signal` to dev mode, as a user would stop it, and waits until
    /// it exited successfully.
    pub async fn stop(mut self, signal: Signal) {
        let pid = self.dev.id().expect("a pid");
        super::signal(pid, signal);
        let exited = tokio::time::timeout(Duration::from_secs(120), self.dev.wait())
            .await
            .unwrap_or_else(|_| panic!("dev mode stops after {signal}"))
            .expect("its exit status");
        assert!(exited.success(), "dev mode exited with {exited}");
        assert!(Session::load(self.dir()).is_err(), "the session is removed");
    }
}
