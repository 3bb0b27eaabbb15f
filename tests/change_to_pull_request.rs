//! The agent's change lands on GitHub without the sandbox ever holding a
//! token that can write: it hands its commits over as a bundle, and the
//! controller checks them and pushes them (a branch and a draft pull
//! request for an issue, a commit on a pull request's own branch) to a
//! git server over HTTP that takes pushes only from tokens with
//! `contents: write`. Refusals are explained in the thread.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use smolpaws::api::{
    AgentRun, AgentRunSpec, ChangeDelivery, CheckRunState, CommentKind, DeliveryOutcome, Phase,
    PullRequestHead, ReviewContext,
};
use smolpaws::controller::ControllerArgs;
use support::fake_github::{BOT_USER_ID, FakeGitHub, Scripted};
use support::fake_llm::{FakeLlm, Reply, finish};
use support::git_http::GitHttp;
use support::git_remote::git;
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, Operator, stand_in_agent};
use support::runs::{issue_spec, replied, until};

const REPO: &str = "octo/hello";

/// A repository on a git server, a fake GitHub that mints its tokens, and
/// a controller whose sandboxes run this build's agent.
struct Scene {
    client: kube::Client,
    ns: String,
    runs: Api<AgentRun>,
    github: FakeGitHub,
    git: GitHttp,
    llm: FakeLlm,
    /// The bare repository `octo/hello.git`.
    bare: PathBuf,
    /// `main`'s commit.
    main: String,
    /// `feature`'s commit (pull request 7's head).
    feature: String,
    _remote: tempfile::TempDir,
    _kubelet: Kubelet,
    operator: Option<Operator>,
    progress: bool,
}

fn tune(args: &mut ControllerArgs, git_url: &str, llm_url: &str, api_url: &str, progress: bool) {
    args.progress_comment = progress;
    args.progress_interval = Duration::ZERO.into();
    args.sandbox.llm.model = Some("scripted-model".into());
    args.sandbox.llm.base_url = Some(llm_url.to_owned());
    args.sandbox.extra_env = vec![
        ("GITHUB_SERVER_URL".into(), git_url.to_owned()),
        ("GITHUB_API_URL".into(), api_url.to_owned()),
    ];
    args.github.server_url = git_url.to_owned();
}

impl Scene {
    async fn new(prefix: &str, replies: Vec<Reply>, agent: Option<PathBuf>) -> Self {
        Self::build(prefix, replies, agent, false).await
    }

    /// A scene whose runs keep a progress comment, edited at every step.
    async fn build(
        prefix: &str,
        replies: Vec<Reply>,
        agent: Option<PathBuf>,
        progress: bool,
    ) -> Self {
        let client = support::client();
        let ns = support::namespace(&client, prefix).await;
        let github = FakeGitHub::start().await;
        let (remote, feature) = support::git_remote::server(&[("parser.rs", "fn parse() {}\n")]);
        let bare = remote.path().join("octo/hello.git");
        git(&bare, &["update-ref", "refs/heads/feature", &feature]);
        let main = git(&bare, &["rev-parse", "main"]);
        let pushers = github.clone();
        let git = GitHttp::start(remote.path().to_owned(), move |token| {
            pushers.may_push(token)
        })
        .await;
        let llm = FakeLlm::start(replies).await;
        let agent = agent.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_smolpaws")));
        let kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
        let runs = Api::namespaced(client.clone(), &ns);
        let mut scene = Self {
            client,
            ns,
            runs,
            github,
            git,
            llm,
            bare,
            main,
            feature,
            _remote: remote,
            _kubelet: kubelet,
            operator: None,
            progress,
        };
        scene.start_operator().await;
        scene
    }

    async fn start_operator(&mut self) {
        let progress = self.progress;
        let (git_url, llm_url, api_url) = (
            self.git.url.clone(),
            self.llm.base_url.clone(),
            self.github.url.clone(),
        );
        self.operator = Some(
            Operator::start(
                self.client.clone(),
                &self.ns,
                Some(&self.github.url),
                |args| tune(args, &git_url, &llm_url, &api_url, progress),
            )
            .await,
        );
    }

    async fn create(&self, name: &str, spec: AgentRunSpec) {
        self.runs
            .create(&PostParams::default(), &AgentRun::new(name, spec))
            .await
            .expect("the AgentRun is created");
    }

    /// A scene where the model edits pull request 7's README.
    async fn reviewed(prefix: &str) -> Self {
        Self::new(prefix, edits("README.md", "feature", "reviewed"), None).await
    }

    /// What became of run `name`'s change, once it replied.
    async fn delivered(&self, name: &str) -> ChangeDelivery {
        let run = until(&self.runs, name, "replied", replied).await;
        run.status.and_then(|s| s.change).expect("a delivery")
    }

    /// The branches under `smolpaws/` on the server.
    fn smolpaws_branches(&self) -> Vec<String> {
        let listed = git(
            &self.bare,
            &[
                "for-each-ref",
                "--format=%(refname:short)",
                "refs/heads/smolpaws",
            ],
        );
        listed.lines().map(str::to_owned).collect()
    }
}

/// Waits (up to 90 s) until `done`, described as `what`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(90), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("never: {what}"));
}

/// The installation tokens the controller minted for its own calls: the
/// ones without a repository scope (each run's own token has one).
fn installation_mints(github: &FakeGitHub) -> usize {
    github
        .token_requests()
        .iter()
        .filter(|(_, body)| body.get("permissions").is_none())
        .count()
}

/// The model edits `path` (`old` → `new`), then finishes.
fn edits(path: &str, old: &str, new: &str) -> Vec<Reply> {
    vec![
        Reply::Tool {
            name: "str_replace",
            arguments: json!({ "path": path, "old_str": old, "new_str": new }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Fixed it." }),
        },
    ]
}

/// A run asked for in review comment 909 on line 1 of README.md in pull
/// request 7, whose head the agent checks out at `sha`.
fn review_spec(sha: &str) -> AgentRunSpec {
    let mut spec = issue_spec(REPO, 909, "Codertocat");
    spec.prompt = "Say reviewed in the README".into();
    spec.github.pull_request = true;
    spec.github.head = Some(PullRequestHead {
        git_ref: "feature".into(),
        sha: sha.to_owned(),
    });
    let comment = spec.github.comment.as_mut().expect("a comment");
    comment.kind = CommentKind::ReviewComment;
    comment.review = Some(ReviewContext {
        path: "README.md".into(),
        line: Some(1),
        side: None,
        diff_hunk: "@@ -1 +1 @@".into(),
        commit_id: sha.to_owned(),
        in_reply_to: None,
    });
    spec
}

/// `git push` of `main` to a new branch with `token`, as something in the
/// sandbox holding the run's token would try; whether it succeeded. Not
/// blocking: the git server answers on this test's runtime.
async fn push_with(server: &str, bare: &Path, token: &str) -> bool {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args([
            "-c",
            &format!("http.extraHeader=Authorization: Basic {basic}"),
            "push",
            &format!("{server}/{REPO}.git"),
            "main:refs/heads/sandbox-was-here",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .expect("git runs");
    output.status.success()
}

#[tokio::test]
async fn an_issue_comment_becomes_a_branch_and_a_draft_pull_request() {
    let scene = Scene::new("change-issue", edits("README.md", "main", "fixed"), None).await;
    let mut spec = issue_spec(REPO, 4242, "Codertocat");
    spec.prompt = "Fix the README\n\nIt says main.".into();
    scene.create("fix", spec).await;

    // Time from the agent's report to the pull request on GitHub.
    let mut reported: Option<Instant> = None;
    let opened = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if reported.is_none()
                && let Ok(run) = scene.runs.get("fix").await
                && run.status.is_some_and(|s| s.result.is_some())
            {
                reported = Some(Instant::now());
            }
            if !scene.github.pulls().is_empty() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a pull request is opened");
    let run = until(&scene.runs, "fix", "replied", replied).await;
    if let Some(reported) = reported {
        eprintln!(
            "the agent's report to an open pull request: {:?}",
            opened - reported
        );
    }
    let status = run.status.expect("a status");
    let change = status.change.expect("the change was delivered");
    assert_eq!(
        change.outcome,
        DeliveryOutcome::Pushed,
        "{}",
        change.summary
    );
    let branch = change.branch.expect("a branch");
    let uid = run.metadata.uid.expect("a uid");
    assert_eq!(branch, format!("smolpaws/7-{}", &uid[..8]));

    // One commit on main whose diff is the agent's edit, by the bot.
    assert_eq!(
        git(&scene.bare, &["rev-parse", &format!("{branch}^")]),
        scene.main
    );
    assert_eq!(
        change.commit.as_deref(),
        Some(git(&scene.bare, &["rev-parse", &branch]).as_str())
    );
    let diff = git(&scene.bare, &["diff", "--name-status", "main", &branch]);
    assert_eq!(diff, "M\tREADME.md");
    assert_eq!(
        git(&scene.bare, &["show", &format!("{branch}:README.md")]),
        "fixed"
    );
    // By the App's bot, as GitHub shows its commits: its slug and its bot
    // user's id, read from the fake's `/app` and `/users`.
    let log = git(
        &scene.bare,
        &["log", "-1", "--format=%an%n%ae%n%cn%n%s%n%b", &branch],
    );
    let bot = format!(
        "smolpaws[bot]\n{BOT_USER_ID}+smolpaws[bot]@users.noreply.github.com\nsmolpaws[bot]\nFix the README\n"
    );
    assert!(log.starts_with(&bot), "{log}");
    assert!(log.contains("issuecomment-4242"), "{log}");

    // A draft pull request onto main that references the issue.
    let pulls = scene.github.pulls();
    assert_eq!(pulls.len(), 1);
    let pull = &pulls[0];
    assert!(pull.draft);
    assert_eq!(
        (pull.head.as_str(), pull.base.as_str()),
        (branch.as_str(), "main")
    );
    assert_eq!(pull.title, "Fix the README");
    assert!(pull.body.contains("#7"), "{}", pull.body);
    assert_eq!(change.pull_request.map(|p| p.number), Some(pull.number));

    // The reply links both.
    let comments = scene.github.comments();
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(body.starts_with("Fixed it."), "{body}");
    assert!(body.contains(&format!("/pull/{}", pull.number)), "{body}");
    assert!(
        body.contains(&format!("{}/{REPO}/tree/{branch}", scene.git.url)),
        "{body}"
    );

    // The sandbox's token reads, and cannot push; the controller's push
    // token was revoked once the change was delivered.
    let requests = scene.github.token_requests();
    let tokens = scene.github.issued_tokens();
    let with = |contents: &str| -> Vec<_> {
        tokens
            .iter()
            .zip(&requests)
            .filter(|(_, (_, body))| body["permissions"]["contents"] == contents)
            .collect()
    };
    let (read, write) = (with("read"), with("write"));
    assert_eq!(read.len(), 1);
    assert_eq!(write.len(), 1);
    let write_request = &write[0].1.1;
    assert_eq!(write_request["repositories"], json!(["hello"]));
    assert_eq!(write_request["permissions"]["pull_requests"], "write");
    let sandbox_token = read[0].0;
    assert!(!push_with(&scene.git.url, &scene.bare, sandbox_token).await);
    assert_eq!(scene.git.refused_pushes(), vec![sandbox_token.clone()]);
    assert!(scene.github.revoked().contains(write[0].0));
    assert_eq!(scene.git.pushes(), 1);
    assert!(
        scene.github.check_runs().is_empty(),
        "an issue's run has no check run"
    );
    let calls = scene.github.calls();
    eprintln!(
        "GitHub API calls of a run with a branch and a pull request: {} {calls:#?}",
        calls.len()
    );
}

#[tokio::test]
async fn a_run_without_a_change_only_replies() {
    let finish = vec![Reply::Tool {
        name: "finish",
        arguments: json!({ "reply": "The parser is fine." }),
    }];
    let scene = Scene::new("change-none", finish, None).await;
    scene
        .create("asked", issue_spec(REPO, 4343, "Codertocat"))
        .await;
    let run = until(&scene.runs, "asked", "replied", replied).await;
    assert!(run.status.expect("a status").change.is_none());
    assert!(scene.github.pulls().is_empty());
    assert!(scene.smolpaws_branches().is_empty());
    assert!(scene.github.check_runs().is_empty());
    assert!(
        scene
            .github
            .token_requests()
            .iter()
            .all(|(_, body)| body["permissions"]["contents"] != "write"),
        "no write token is minted without a change"
    );
    let calls = scene.github.calls();
    eprintln!(
        "GitHub API calls of a reply-only run: {} {calls:#?}",
        calls.len()
    );
}

#[tokio::test]
async fn a_review_comment_on_a_same_repository_pull_request_adds_a_commit_to_its_branch() {
    let scene = Scene::reviewed("change-review").await;
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
    scene.create("review", review_spec(&scene.feature)).await;
    let change = scene.delivered("review").await;
    assert_eq!(
        change.outcome,
        DeliveryOutcome::Pushed,
        "{}",
        change.summary
    );
    assert_eq!(change.branch.as_deref(), Some("feature"));
    let tip = git(&scene.bare, &["rev-parse", "feature"]);
    assert_eq!(change.commit.as_deref(), Some(tip.as_str()));
    assert_eq!(git(&scene.bare, &["rev-parse", "feature^"]), scene.feature);
    assert_eq!(git(&scene.bare, &["show", "feature:README.md"]), "reviewed");
    assert!(
        scene.github.pulls().iter().all(|p| p.number == 7),
        "no new pull request"
    );
    assert!(scene.smolpaws_branches().is_empty());
    let comments = scene.github.comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].kind, "review");
    assert!(
        comments[0].body.contains(&format!("/commit/{tip}")),
        "{}",
        comments[0].body
    );
}

#[tokio::test]
async fn a_branch_that_moved_gets_a_new_branch_and_a_pull_request_onto_it() {
    let scene = Scene::reviewed("change-moved").await;
    // Someone pushed to the pull request's branch after the comment.
    let tree = format!("{}^{{tree}}", scene.feature);
    let moved = git(
        &scene.bare,
        &["commit-tree", &tree, "-p", &scene.feature, "-m", "later"],
    );
    git(&scene.bare, &["update-ref", "refs/heads/feature", &moved]);
    scene.github.seed_pull(REPO, 7, "feature", &moved, REPO);
    scene.create("moved", review_spec(&scene.feature)).await;
    let change = scene.delivered("moved").await;
    assert_eq!(
        change.outcome,
        DeliveryOutcome::Pushed,
        "{}",
        change.summary
    );
    assert_eq!(
        git(&scene.bare, &["rev-parse", "feature"]),
        moved,
        "never a force push"
    );
    let branch = change.branch.expect("a branch");
    assert!(branch.starts_with("smolpaws/7-"), "{branch}");
    assert_eq!(
        git(&scene.bare, &["rev-parse", &format!("{branch}^")]),
        scene.feature
    );
    let opened: Vec<_> = scene
        .github
        .pulls()
        .into_iter()
        .filter(|p| p.number != 7)
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(
        (opened[0].head.as_str(), opened[0].base.as_str()),
        (branch.as_str(), "feature")
    );
    let body = &scene.github.comments()[0].body;
    assert!(body.contains("`feature` moved"), "{body}");
    assert!(
        body.contains(&format!("/pull/{}", opened[0].number)),
        "{body}"
    );
}

#[tokio::test]
async fn a_fork_pull_request_is_never_pushed_to() {
    let scene = Scene::reviewed("change-fork").await;
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, "stranger/hello");
    scene.create("fork", review_spec(&scene.feature)).await;
    let change = scene.delivered("fork").await;
    assert_eq!(
        change.outcome,
        DeliveryOutcome::Pushed,
        "{}",
        change.summary
    );
    assert_eq!(git(&scene.bare, &["rev-parse", "feature"]), scene.feature);
    let branch = change.branch.expect("a branch in the base repository");
    assert_eq!(scene.smolpaws_branches(), vec![branch.clone()]);
    assert!(
        scene.github.pulls().iter().all(|p| p.number == 7),
        "the branch is offered only"
    );
    let body = &scene.github.comments()[0].body;
    assert!(body.contains("fork"), "{body}");
    assert!(body.contains(&branch), "{body}");
}

#[tokio::test]
async fn a_workflow_change_is_refused_with_the_reason_in_the_thread() {
    let replies = vec![
        Reply::Tool {
            name: "create",
            arguments: json!({ "path": ".github/workflows/leak.yml", "content": "on: push\n" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Added a workflow." }),
        },
    ];
    let scene = Scene::new("change-workflow", replies, None).await;
    scene
        .create("workflow", issue_spec(REPO, 4444, "Codertocat"))
        .await;
    let change = scene.delivered("workflow").await;
    assert_eq!(change.outcome, DeliveryOutcome::Refused);
    assert!(scene.smolpaws_branches().is_empty());
    assert!(scene.github.pulls().is_empty());
    assert_eq!(scene.git.pushes(), 0);
    let body = &scene.github.comments()[0].body;
    assert!(body.starts_with("Added a workflow."), "{body}");
    assert!(
        body.contains("`.github/workflows/leak.yml`") && body.contains("allowWorkflowChanges"),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_and_malformed_bundles_are_refused_and_nothing_is_pushed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    // Written once the scene's repository exists: the stand-ins report on
    // its main commit.
    let agents = dir.path().join("agent");
    let scene = Scene::new("change-bad", Vec::new(), Some(agents.clone())).await;
    let base = scene.main.clone();
    let malformed = json!({
        "reply": "Here is my change.",
        "change": { "base": base, "bundle": encode(b"# v2 git bundle\nnot really\n") },
    });
    let oversized = json!({
        "reply": "Here is my big change.",
        "change": { "base": base, "bundle": encode(&vec![7u8; 600 * 1024]) },
    });
    let malformed = stand_in_agent(&dir.path().join("malformed"), Agent::Reports(&malformed));
    let oversized = stand_in_agent(&dir.path().join("oversized"), Agent::Reports(&oversized));
    std::fs::write(
        &agents,
        format!(
            "#!/bin/sh\ncase \"$SMOLPAWS_RUN_NAME\" in\n  malformed) exec {} \"$@\";;\n  *) exec {} \"$@\";;\nesac\n",
            malformed.display(),
            oversized.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&agents, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    scene
        .create("malformed", issue_spec(REPO, 4545, "Codertocat"))
        .await;
    scene
        .create("oversized", issue_spec(REPO, 4646, "Codertocat"))
        .await;
    for (name, reason) in [
        ("malformed", "not a git bundle"),
        ("oversized", "larger than 512 KiB"),
    ] {
        let run = until(&scene.runs, name, "replied", replied).await;
        let change = run.status.and_then(|s| s.change).expect("a delivery");
        assert_eq!(change.outcome, DeliveryOutcome::Refused, "{name}");
        assert!(
            change.summary.contains(reason),
            "{name}: {}",
            change.summary
        );
    }
    assert!(scene.smolpaws_branches().is_empty());
    assert!(scene.github.pulls().is_empty());
    assert_eq!(scene.git.pushes(), 0);
    let comments = scene.github.comments();
    assert_eq!(comments.len(), 2);
    assert!(
        comments
            .iter()
            .all(|c| c.body.contains("The change was not pushed"))
    );
    // The controller's own installation token was minted once for both
    // runs (each run's token is its own, scoped to the repository).
    assert_eq!(
        installation_mints(&scene.github),
        1,
        "{:#?}",
        scene.github.token_requests()
    );
    // The App's bot identity was read once for both runs.
    let calls = scene.github.calls();
    let reads = |call: &str| calls.iter().filter(|c| *c == call).count();
    assert_eq!(reads("GET /app"), 1, "{calls:#?}");
    assert_eq!(reads("GET /users/smolpaws%5Bbot%5D"), 1, "{calls:#?}");
}

#[tokio::test]
async fn a_push_the_server_refuses_is_explained_and_the_reply_still_posted() {
    let scene = Scene::reviewed("change-protected").await;
    // The server protects the branch, as a GitHub branch protection rule.
    let hook = scene.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'feature is protected' >&2\nexit 1\n",
    )
    .expect("write");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
    scene.create("protected", review_spec(&scene.feature)).await;
    let change = scene.delivered("protected").await;
    assert_eq!(change.outcome, DeliveryOutcome::Rejected);
    assert_eq!(git(&scene.bare, &["rev-parse", "feature"]), scene.feature);
    let body = &scene.github.comments()[0].body;
    assert!(body.starts_with("Fixed it."), "{body}");
    assert!(body.contains("refused the push to `feature`"), "{body}");
}

#[tokio::test]
async fn a_controller_killed_between_push_and_reply_pushes_and_opens_once() {
    let mut scene = Scene::new("change-crash", edits("README.md", "main", "fixed"), None).await;
    // The pull request is opened, but the answer comes too late for the
    // controller, which is killed meanwhile.
    scene.github.delay_pull_answers(Duration::from_secs(3));
    scene
        .create("crashy", issue_spec(REPO, 4747, "Codertocat"))
        .await;
    eventually("the pull request is opened", || {
        !scene.github.pulls().is_empty()
    })
    .await;
    drop(scene.operator.take());
    let run = scene.runs.get("crashy").await.expect("get");
    assert!(
        run.status.and_then(|s| s.change).is_none(),
        "the delivery was never recorded"
    );

    scene.start_operator().await;
    let change = scene.delivered("crashy").await;
    assert_eq!(
        change.outcome,
        DeliveryOutcome::Pushed,
        "{}",
        change.summary
    );
    assert_eq!(scene.github.pulls().len(), 1, "one pull request");
    assert_eq!(scene.git.pushes(), 1, "one push");
    assert_eq!(scene.smolpaws_branches().len(), 1);
    let comments = scene.github.comments();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .contains(&format!("/pull/{}", scene.github.pulls()[0].number))
    );
}

#[tokio::test]
async fn the_progress_comment_is_edited_in_order_and_created_once_across_a_restart() {
    let replies = vec![
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "cat README.md" }),
        },
        Reply::Tool {
            name: "str_replace",
            arguments: json!({ "path": "README.md", "old_str": "main", "new_str": "fixed" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Fixed it." }),
        },
    ];
    let mut scene = Scene::build("progress", replies, None, true).await;
    // The progress comment is stored, but its answer comes too late for the
    // controller, which is killed meanwhile.
    scene
        .github
        .script([Scripted::SlowSuccess(Duration::from_secs(3))]);
    scene
        .create("shown", issue_spec(REPO, 4848, "Codertocat"))
        .await;
    eventually("the progress comment is posted", || {
        !scene.github.comments().is_empty()
    })
    .await;
    drop(scene.operator.take());
    scene.start_operator().await;
    let run = until(&scene.runs, "shown", "replied", replied).await;

    let marker = "<!-- smolpaws:progress ";
    let comments = scene.github.comments();
    let progress: Vec<_> = comments
        .iter()
        .filter(|c| c.body.contains(marker))
        .collect();
    assert_eq!(progress.len(), 1, "one progress comment: {comments:#?}");
    let progress = progress[0];
    assert!(
        progress.body.starts_with("✅ smolpaws finished"),
        "{}",
        progress.body
    );
    // The answer is its own comment, after it.
    assert_eq!(comments.len(), 2);
    let reply = comments
        .iter()
        .find(|c| !c.body.contains(marker))
        .expect("a reply");
    assert!(reply.body.starts_with("Fixed it.") && reply.id > progress.id);
    assert_eq!(
        run.status
            .and_then(|s| s.progress)
            .and_then(|p| p.comment)
            .map(|c| c.id),
        Some(progress.id)
    );

    // Every edit went to that comment, and the story reads in order.
    let edits = scene.github.edits();
    assert!(edits.iter().all(|(id, _)| *id == progress.id), "{edits:#?}");
    let shown: Vec<&str> = edits.iter().map(|(_, body)| body.as_str()).collect();
    let first = |needle: &str| {
        shown
            .iter()
            .position(|body| body.contains(needle))
            .unwrap_or_else(|| panic!("never shown: {needle} in {shown:#?}"))
    };
    let story = [
        first("starting a sandbox"),
        first("ran `cat README.md` (exit 0)"),
        first("edited `README.md`"),
        first("✅ smolpaws finished"),
    ];
    assert!(
        story.windows(2).all(|w| w[0] < w[1]),
        "{story:?} in {shown:#?}"
    );
    let calls = scene.github.calls();
    eprintln!(
        "GitHub API calls of a run with a branch, a pull request and a progress comment (one controller restart): {} {calls:#?}",
        calls.len()
    );
}

/// A run asked for in conversation comment `comment_id` on pull request 7:
/// its webhook carries no head, so the controller pins it.
fn pull_request_comment_spec(comment_id: i64) -> AgentRunSpec {
    let mut spec = issue_spec(REPO, comment_id, "Codertocat");
    spec.prompt = "Say reviewed in the README".into();
    spec.github.pull_request = true;
    spec
}

impl Scene {
    /// A scene whose sandboxes run a stand-in agent that behaves as
    /// `agent` (kept in the directory returned beside it), with pull
    /// request 7 open on `feature`.
    async fn stand_in_on_pull_request(prefix: &str, agent: Agent<'_>) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let agent = stand_in_agent(dir.path(), agent);
        let scene = Self::new(prefix, Vec::new(), Some(agent)).await;
        scene
            .github
            .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
        (scene, dir)
    }

    /// The one check run, once it is completed.
    async fn completed_check(&self) -> support::fake_github::CheckRun {
        eventually("the check run completes", || {
            self.github
                .check_runs()
                .iter()
                .any(|c| c.state().0 == "completed")
        })
        .await;
        let checks = self.github.check_runs();
        assert_eq!(checks.len(), 1, "one check run: {checks:#?}");
        checks.into_iter().next().expect("a check run")
    }
}

#[tokio::test]
async fn a_pull_request_run_shows_one_check_run_on_its_pinned_head_until_it_succeeds() {
    let scene = Scene::reviewed("check-success").await;
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
    scene
        .create("checked", pull_request_comment_spec(5151))
        .await;
    let run = until(&scene.runs, "checked", "replied", replied).await;
    let check = scene.completed_check().await;
    let status = scene
        .runs
        .get("checked")
        .await
        .expect("the run")
        .status
        .expect("a status");
    assert_eq!(
        status.head.as_ref().map(|h| h.sha.as_str()),
        Some(scene.feature.as_str()),
        "the head was pinned"
    );
    assert_eq!(check.head_sha, scene.feature);
    assert_eq!(check.name, "smolpaws");
    assert_eq!(check.external_id, run.metadata.uid);
    assert_eq!(status.check.map(|c| c.id), Some(check.id));
    let states: Vec<(&str, Option<&str>)> = check
        .states
        .iter()
        .map(|(status, conclusion)| (status.as_str(), conclusion.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            ("queued", None),
            ("in_progress", None),
            ("completed", Some("success"))
        ]
    );
    // It links the reply and the commit pushed to the pull request.
    let reply = status.reply.expect("a reply");
    let tip = git(&scene.bare, &["rev-parse", "feature"]);
    assert_eq!(check.title, "Pushed the change and replied");
    assert!(check.summary.contains(&reply.html_url), "{}", check.summary);
    assert!(
        check.summary.contains(&format!("/commit/{tip}")),
        "{}",
        check.summary
    );
    assert_eq!(check.details_url.as_deref(), Some(reply.html_url.as_str()));
    assert!(check.completed_at.is_some());
    let calls = scene.github.calls();
    eprintln!(
        "GitHub API calls of a pull request's run with a check run and a commit: {} {calls:#?}",
        calls.len()
    );
}

#[tokio::test]
async fn a_failing_pull_request_run_completes_its_check_run_as_a_failure() {
    let (scene, _agent) = Scene::stand_in_on_pull_request("check-failure", Agent::Exits(3)).await;
    scene
        .create("broken", pull_request_comment_spec(5252))
        .await;
    until(&scene.runs, "broken", "replied", replied).await;
    let check = scene.completed_check().await;
    assert_eq!(check.state(), ("completed", Some("failure")));
    assert_eq!(check.title, "Could not finish");
    assert!(check.summary.contains("exit"), "{}", check.summary);
    assert_eq!(scene.github.comments().len(), 1);
}

#[tokio::test]
async fn an_app_without_checks_write_gets_no_check_run_and_still_one_reply() {
    let scene = Scene::reviewed("check-forbidden").await;
    scene.github.forbid_checks();
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
    scene
        .create("unchecked", pull_request_comment_spec(5353))
        .await;
    let run = until(&scene.runs, "unchecked", "replied", replied).await;
    let status = run.status.expect("a status");
    assert!(status.check.is_none());
    let skipped = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CheckRun")
        .expect("the skipped check run is noted");
    assert_eq!(
        (skipped.status.as_str(), skipped.reason.as_str()),
        ("False", "CheckRunSkipped")
    );
    assert!(
        skipped
            .message
            .contains("Resource not accessible by integration"),
        "{}",
        skipped.message
    );
    assert!(scene.github.check_runs().is_empty());
    // Asked once, never again for this run.
    let calls = scene.github.calls();
    let checks: Vec<_> = calls.iter().filter(|c| c.contains("check-runs")).collect();
    assert_eq!(checks.len(), 1, "{calls:#?}");
    let comments = scene.github.comments();
    assert_eq!(comments.len(), 1, "one reply: {comments:#?}");
    assert!(comments[0].body.starts_with("Fixed it."));
    assert_eq!(
        status.change.map(|c| c.outcome),
        Some(DeliveryOutcome::Pushed)
    );
}

#[tokio::test]
async fn a_controller_restarted_after_creating_the_check_run_creates_no_second() {
    let mut scene = Scene::reviewed("check-restart").await;
    scene
        .github
        .seed_pull(REPO, 7, "feature", &scene.feature, REPO);
    // The check run is created, but the answer comes too late for the
    // controller, which is killed meanwhile.
    scene.github.delay_check_answers(Duration::from_secs(3));
    scene
        .create("restarted", pull_request_comment_spec(5454))
        .await;
    eventually("the check run is created", || {
        !scene.github.check_runs().is_empty()
    })
    .await;
    drop(scene.operator.take());
    let run = scene.runs.get("restarted").await.expect("get");
    assert!(
        run.status.and_then(|s| s.check).is_none(),
        "the check run was never recorded"
    );
    scene.start_operator().await;
    let run = until(&scene.runs, "restarted", "replied", replied).await;
    let check = scene.completed_check().await;
    assert_eq!(check.state(), ("completed", Some("success")));
    assert_eq!(check.external_id, run.metadata.uid);
    let recorded = scene
        .runs
        .get("restarted")
        .await
        .expect("get")
        .status
        .and_then(|s| s.check)
        .map(|c| c.id);
    assert_eq!(recorded, Some(check.id));
}

#[tokio::test]
async fn deleting_a_pull_request_run_completes_its_check_run_as_cancelled() {
    let (scene, _agent) = Scene::stand_in_on_pull_request("check-cancel", Agent::Hangs).await;
    scene
        .create("dropped", pull_request_comment_spec(5555))
        .await;
    until(
        &scene.runs,
        "dropped",
        "running, its check in progress",
        |run| {
            run.phase() == Phase::Running
                && run
                    .status
                    .as_ref()
                    .and_then(|s| s.check.as_ref())
                    .is_some_and(|c| c.state == CheckRunState::InProgress)
        },
    )
    .await;
    scene
        .runs
        .delete("dropped", &DeleteParams::default())
        .await
        .expect("the run is deleted");
    let check = scene.completed_check().await;
    assert_eq!(check.state(), ("completed", Some("cancelled")));
    assert_eq!(check.title, "Cancelled");
}

#[tokio::test]
async fn an_installation_token_github_refuses_is_minted_again_and_the_run_goes_on() {
    let replies = vec![finish("First."), finish("Second.")];
    let scene = Scene::new("token-refused", replies, None).await;
    scene
        .create("first", issue_spec(REPO, 5656, "Codertocat"))
        .await;
    until(&scene.runs, "first", "replied", replied).await;
    // The controller's cached token now answers 401, as one GitHub revoked.
    scene.github.expire_tokens();
    scene
        .create("second", issue_spec(REPO, 5757, "Codertocat"))
        .await;
    until(&scene.runs, "second", "replied", replied).await;
    assert!(
        !scene.github.unauthorized().is_empty(),
        "the old token was refused"
    );
    assert_eq!(
        installation_mints(&scene.github),
        2,
        "minted once, and once more after the 401"
    );
    let replies: Vec<String> = scene
        .github
        .comments()
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert_eq!(replies.len(), 2, "{replies:#?}");
    assert!(replies[1].starts_with("Second."), "{replies:#?}");
}
