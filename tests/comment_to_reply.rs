//! An AgentRun becomes a hardened sandbox, its agent's reply lands in the
//! run's status and, once, in the GitHub thread; failures, timeouts and
//! cancellations are answered too.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use smolpaws::api::{AgentRun, AgentRunSpec, CommentKind, Phase};
use smolpaws::controller::ControllerArgs;
use support::fake_github::{FakeGitHub, Scripted};
use support::fake_llm::{FakeLlm, Reply};
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, Operator, stand_in_agent, with_real_agent};
use support::runs::{finished_reason, issue_spec, replied, until};

const REPO: &str = "Codertocat/Hello-World";

fn spec(comment_id: i64, timeout_seconds: Option<i64>) -> AgentRunSpec {
    let mut spec = issue_spec(REPO, comment_id, "Codertocat");
    spec.sandbox.timeout_seconds = timeout_seconds;
    spec
}

async fn create(api: &Api<AgentRun>, name: &str, spec: AgentRunSpec) -> AgentRun {
    api.create(&PostParams::default(), &AgentRun::new(name, spec))
        .await
        .expect("the AgentRun is created")
}

#[tokio::test]
async fn an_agentrun_becomes_a_hardened_pod_and_a_scoped_secret() {
    let client = support::client();
    let ns = support::namespace(&client, "sandbox").await;
    let github = FakeGitHub::start().await;
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "hardened", spec(101, Some(600))).await;

    let run = until(&runs, "hardened", "Provisioning", |r| {
        r.phase() == Phase::Provisioning
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(pod) = pods.get_opt("hardened").await.expect("get pod") {
                return pod;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the sandbox pod is created");
    let uid = run.metadata.uid.clone().expect("a uid");
    let owner = &pod
        .metadata
        .owner_references
        .as_ref()
        .expect("owner references")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("AgentRun", uid.as_str(), Some(true))
    );

    let spec = pod.spec.as_ref().expect("a pod spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let security = spec
        .security_context
        .as_ref()
        .expect("a pod security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        let context = container
            .security_context
            .as_ref()
            .expect("a container security context");
        assert_eq!(
            context.allow_privilege_escalation,
            Some(false),
            "{}",
            container.name
        );
        assert_eq!(context.run_as_non_root, Some(true), "{}", container.name);
        let dropped = context.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(dropped, Some(vec!["ALL".to_owned()]), "{}", container.name);
        let resources = container.resources.as_ref().expect("resources");
        assert!(
            resources.requests.is_some() && resources.limits.is_some(),
            "{}",
            container.name
        );
    }
    let init = &spec.init_containers.as_ref().expect("an init container")[0];
    assert_eq!(
        init.command.as_deref().map(|c| c[1].as_str()),
        Some("install")
    );
    let agent = &spec.containers[0];
    assert_eq!(
        agent.command.as_deref(),
        Some(&["/opt/smolpaws/bin/smolpaws".to_owned(), "agent".to_owned()][..])
    );
    // No emptyDir can fill the node's disk.
    for volume in spec.volumes.iter().flatten() {
        let limit = volume
            .empty_dir
            .as_ref()
            .and_then(|d| d.size_limit.as_ref());
        assert!(limit.is_some(), "{} has no sizeLimit", volume.name);
    }

    // Credentials reach the pod only by reference.
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("hardened-run")
        .await
        .expect("the per-run Secret");
    assert_eq!(
        secret
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].uid.clone()),
        Some(uid)
    );
    let data = secret.data.expect("secret data");
    let token = String::from_utf8(data["GITHUB_TOKEN"].0.clone()).expect("UTF-8");
    let report = String::from_utf8(data["SMOLPAWS_REPORT_TOKEN"].0.clone()).expect("UTF-8");
    assert!(github.issued_tokens().contains(&token));
    let pod_json = serde_json::to_string(&pod).expect("JSON");
    assert!(
        !pod_json.contains(&token) && !pod_json.contains(&report),
        "no token in the pod spec"
    );

    // The agent's token is scoped to the one repository, read only.
    let (installation, request) = github
        .token_requests()
        .into_iter()
        .find(|(_, body)| body.get("repositories").is_some())
        .expect("a scoped token request");
    assert_eq!(installation, 1);
    assert_eq!(request["repositories"], serde_json::json!(["Hello-World"]));
    for permission in ["contents", "issues", "pull_requests", "metadata"] {
        assert_eq!(request["permissions"][permission], "read", "{permission}");
    }
    assert_eq!(github.reactions(), vec![(101, "eyes".to_owned())]);
}

#[tokio::test]
async fn a_run_replies_once_with_its_whole_reply() {
    let client = support::client();
    let ns = support::namespace(&client, "reply").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    // Longer than a GitHub comment: the status keeps it whole.
    let reply = format!(
        "# Trailing commas\n\n{}",
        "The tokenizer drops them. ".repeat(3000)
    );
    let agent = stand_in_agent(dir.path(), Agent::Replies(&reply));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "answered", spec(202, None)).await;

    let run = until(&runs, "answered", "replied", replied).await;
    let status = run.status.clone().expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let result = status.result.expect("a result");
    assert_eq!(
        result.reply,
        reply,
        "the reply arrives intact ({} bytes)",
        reply.len()
    );
    assert!(reply.len() > 64 * 1024);
    assert_eq!(
        (result.usage.prompt_tokens, result.usage.completion_tokens),
        (1200, 80)
    );
    assert!(status.finished_at.is_some() && status.duration.is_some());

    let comments = github.comments();
    assert_eq!(comments.len(), 1, "one reply");
    let posted = &comments[0];
    assert_eq!(status.reply.expect("the posted reply").id, posted.id);
    assert!(posted.body.starts_with("# Trailing commas"));
    assert!(posted.body.chars().count() <= 65_536 && posted.body.contains("reply truncated"));
    assert!(posted.body.contains(&format!("smolpaws:run {ns}/answered")));
    assert!(
        github.unauthorized().is_empty(),
        "{:?}",
        github.unauthorized()
    );

    // Nothing happens twice on later reconciles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(github.comments().len(), 1);
    let reasons: Vec<String> = runs
        .get("answered")
        .await
        .expect("get")
        .status
        .expect("status")
        .conditions
        .iter()
        .map(|c| format!("{}={}", c.type_, c.reason))
        .collect();
    for expected in [
        "Acknowledged=Reacted",
        "Admitted=Admitted",
        "SandboxRunning=SandboxStarted",
        "Finished=Succeeded",
        "Replied=Replied",
    ] {
        assert!(
            reasons.contains(&expected.to_owned()),
            "{expected} in {reasons:?}"
        );
    }
    // The per-run credentials are gone once the run is over.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(
        secrets
            .get_opt("answered-run")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(finished_reason(&run), "Succeeded");
}

#[tokio::test]
async fn a_controller_killed_between_posting_and_recording_still_replies_once() {
    let client = support::client();
    let ns = support::namespace(&client, "crash").await;
    let github = FakeGitHub::start().await;
    // The first reply is stored, but its answer comes too late for the
    // controller, which is killed meanwhile.
    github.script([Scripted::SlowSuccess(Duration::from_secs(3))]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("the answer"));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let first = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "crashy", spec(303, None)).await;

    tokio::time::timeout(Duration::from_secs(60), async {
        while github.comments().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the reply is posted");
    drop(first);
    let run = runs.get("crashy").await.expect("get");
    assert!(
        !replied(&run),
        "the killed controller never recorded its reply"
    );

    let _second = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let run = until(&runs, "crashy", "replied", replied).await;
    let comments = github.comments();
    assert_eq!(
        comments.len(),
        1,
        "the restarted controller found the first reply"
    );
    assert_eq!(
        run.status.and_then(|s| s.reply).map(|r| r.id),
        Some(comments[0].id)
    );
}

#[tokio::test]
async fn failures_and_timeouts_end_in_the_right_phase_and_are_answered() {
    let client = support::client();
    let ns = support::namespace(&client, "failures").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let crashes = stand_in_agent(&dir.path().join("crash"), Agent::Exits(3));
    let silent = stand_in_agent(&dir.path().join("silent"), Agent::Exits(0));
    let hangs = stand_in_agent(&dir.path().join("hang"), Agent::Hangs);
    let _kubelet = Kubelet::start(client.clone(), &ns, move |pod| {
        match pod.metadata.name.as_deref().unwrap_or_default() {
            "crashes" => Behaviour::Run(crashes.clone()),
            "silent" => Behaviour::Run(silent.clone()),
            "hangs" => Behaviour::Run(hangs.clone()),
            "oom" => Behaviour::OomKilled,
            _ => Behaviour::Waiting("ImagePullBackOff"),
        }
    });
    // Long enough for a pod that does start to start on a loaded machine;
    // the one that never starts waits it out.
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |args| {
        args.pending_timeout = Duration::from_secs(10).into();
        args.max_runs_per_repo = 10;
    })
    .await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let cases = [
        ("crashes", None, "AgentFailed", "exited with code 3"),
        ("silent", None, "NoReply", "without reporting a reply"),
        ("hangs", Some(2), "RunTimeout", "did not finish within 2s"),
        ("oom", None, "OutOfMemory", "ran out of memory"),
        ("never-starts", None, "PendingTimeout", "ImagePullBackOff"),
    ];
    for (index, (name, timeout, _, _)) in cases.iter().enumerate() {
        let mut spec = spec(400 + index as i64, *timeout);
        spec.github.number = 100 + index as i64;
        create(&runs, name, spec).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for (index, (name, _, reason, says)) in cases.into_iter().enumerate() {
        let run = until(&runs, name, "replied", replied).await;
        assert_eq!(run.phase(), Phase::Failed, "{name}");
        assert_eq!(finished_reason(&run), reason, "{name}");
        let comment = github
            .comments()
            .into_iter()
            .find(|c| c.number == 100 + index as i64)
            .unwrap_or_else(|| panic!("{name}: no reply in its thread"));
        assert!(
            comment.body.contains("could not finish this request"),
            "{name}: {}",
            comment.body
        );
        assert!(
            comment.body.contains(says),
            "{name}: {:?} lacks {says:?}",
            comment.body
        );
        if matches!(reason, "RunTimeout" | "PendingTimeout") {
            assert!(
                pods.get_opt(name).await.expect("get").is_none(),
                "{name}: the sandbox is stopped"
            );
        }
    }
    assert_eq!(github.comments().len(), 5, "one answer each");
}

#[tokio::test]
async fn deleting_a_running_agentrun_stops_its_sandbox_and_says_so() {
    let client = support::client();
    let ns = support::namespace(&client, "cancel").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Hangs);
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "unwanted", spec(505, None)).await;
    until(&runs, "unwanted", "Running", |r| {
        r.phase() == Phase::Running
    })
    .await;

    runs.delete("unwanted", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = await_condition(runs.clone(), "unwanted", |run: Option<&AgentRun>| {
        run.is_none()
    });
    tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .expect("the run is deleted once cancelled")
        .expect("watch");
    // Deleted gracefully: the pod is gone once the kubelet has stopped it,
    // which on a loaded machine may come after the run is gone.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let stopped = await_condition(pods, "unwanted", |pod: Option<&Pod>| pod.is_none());
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the sandbox is stopped")
        .expect("watch");
    let comments = github.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(
        comments[0].body.contains("cancelled"),
        "{}",
        comments[0].body
    );
}

#[tokio::test]
async fn finished_runs_are_deleted_after_their_ttl() {
    let client = support::client();
    let ns = support::namespace(&client, "ttl").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("done"));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |args| {
        args.ttl = Duration::from_secs(2).into();
    })
    .await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "ephemeral", spec(606, None)).await;
    let gone = await_condition(runs.clone(), "ephemeral", |run: Option<&AgentRun>| {
        run.is_none()
    });
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("the run is deleted after its TTL")
        .expect("watch");
    assert_eq!(github.comments().len(), 1, "it replied before it went");
}

#[tokio::test]
async fn fifty_runs_share_five_sandboxes_and_each_replies_once() {
    let client = support::client();
    let ns = support::namespace(&client, "busy").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(
        dir.path(),
        Agent::RepliesAfter(Duration::from_millis(300), "done"),
    );
    let kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |args| {
        args.max_concurrent_runs = 5;
        args.max_runs_per_repo = 5;
        // All fifty wait in one repository's queue.
        args.max_pending_runs_per_repo = 50;
    })
    .await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    for index in 0..50 {
        let mut spec = spec(1000 + index, None);
        spec.github.number = 1000 + index;
        create(&runs, &format!("run-{index:02}"), spec).await;
    }
    for index in 0..50 {
        until(&runs, &format!("run-{index:02}"), "replied", replied).await;
    }
    assert!(
        kubelet.most_at_once() <= 5,
        "{} sandboxes ran at once",
        kubelet.most_at_once()
    );
    assert_eq!(kubelet.started(), 50);
    let comments = github.comments();
    assert_eq!(comments.len(), 50, "each run replied once");
    let threads: std::collections::HashSet<i64> = comments.iter().map(|c| c.number).collect();
    assert_eq!(threads.len(), 50, "in its own thread");
}

#[tokio::test]
async fn github_errors_and_rate_limits_delay_the_reply_but_never_double_it() {
    let client = support::client();
    let ns = support::namespace(&client, "ratelimit").await;
    let github = FakeGitHub::start().await;
    github.script([
        Scripted::Fail {
            status: 502,
            headers: vec![],
            body: serde_json::json!({ "message": "Server Error" }),
        },
        Scripted::Fail {
            status: 403,
            headers: vec![("retry-after", "2".into())],
            body: serde_json::json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            }),
        },
    ]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("eventually"));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "patient", spec(707, None)).await;
    until(&runs, "patient", "replied", replied).await;

    let attempts = github.post_attempts();
    let statuses: Vec<u16> = attempts.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [502, 403, 201]);
    let waited = attempts[2].0 - attempts[1].0;
    assert!(
        waited >= Duration::from_secs(2),
        "posted {waited:?} after the 403 that said 2s"
    );
    assert_eq!(github.comments().len(), 1);
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_follower_takes_over() {
    let client = support::client();
    let ns = support::namespace(&client, "replicas").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("led"));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let flags = |args: &mut ControllerArgs| args.lease_duration = Duration::from_secs(3).into();
    let mut replicas = vec![
        (
            "replica-a",
            Operator::replica(client.clone(), &ns, Some(&github.url), "replica-a", flags).await,
        ),
        (
            "replica-b",
            Operator::replica(client.clone(), &ns, Some(&github.url), "replica-b", flags).await,
        ),
    ];
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    create(&runs, "first", spec(808, None)).await;
    until(&runs, "first", "replied", replied).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = |lease: Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let leader = holder(leases.get("smolpaws-controller").await.expect("the Lease"));
    let succeeded = r#"smolpaws_runs_total{phase="Succeeded"} 1"#;
    for (name, replica) in &replicas {
        assert_eq!(
            replica.metrics().await.contains(succeeded),
            *name == leader,
            "{name} (leader {leader})"
        );
    }

    // The leader dies; the follower takes the Lease once it expires.
    let position = replicas
        .iter()
        .position(|(name, _)| *name == leader)
        .expect("a leader");
    drop(replicas.remove(position));
    let (follower, survivor) = &replicas[0];
    create(&runs, "second", spec(809, None)).await;
    until(&runs, "second", "replied", replied).await;
    assert_eq!(
        holder(leases.get("smolpaws-controller").await.expect("the Lease")),
        *follower
    );
    assert!(
        survivor.metrics().await.contains(succeeded),
        "{follower} reconciled after taking over"
    );
    assert_eq!(github.comments().len(), 2);
}

#[tokio::test]
async fn a_review_comment_is_answered_in_its_review_thread() {
    let client = support::client();
    let ns = support::namespace(&client, "review").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("Use `?` here."));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let mut review = spec(909, None);
    review.github.pull_request = true;
    let comment = review.github.comment.as_mut().expect("a comment");
    comment.kind = CommentKind::ReviewComment;
    comment.review = Some(smolpaws::api::ReviewContext {
        path: "src/parser.rs".into(),
        line: Some(42),
        side: Some(smolpaws::api::DiffSide::Right),
        diff_hunk: "@@ -40,3 +40,3 @@".into(),
        commit_id: "6dcb09b5b57875f334f61aebed695e2e4193db5e".into(),
        // The trigger is itself a reply: the answer joins the thread's
        // first comment.
        in_reply_to: Some(900),
    });
    create(&runs, "reviewed", review).await;
    until(&runs, "reviewed", "replied", replied).await;

    let comments = github.comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].kind, "review");
    assert_eq!(comments[0].in_reply_to, Some(900));
    assert!(comments[0].body.starts_with("Use `?` here."));
    assert_eq!(github.reactions(), vec![(909, "eyes".to_owned())]);
}

#[tokio::test]
async fn the_real_agent_answers_from_its_sandbox_pod() {
    let client = support::client();
    let ns = support::namespace(&client, "real-agent").await;
    let github = FakeGitHub::start().await;
    let (remote, _) =
        support::git_remote::server(&[("parser.rs", "fn parse() { /* drops commas */ }\n")]);
    let llm = FakeLlm::start(Reply::view_then_finish(
        "parser.rs",
        "`parse()` drops them.",
    ))
    .await;
    // The pod's own command, `/opt/smolpaws/bin/smolpaws agent`, runs this
    // build of smolpaws.
    let _running = with_real_agent(
        &client,
        &ns,
        Some(&github.url),
        &llm.base_url,
        remote.path(),
    )
    .await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let mut spec = spec(1111, None);
    spec.github.repository = "octo/hello".into();
    // The longest prompt the API takes, in a script of three UTF-8 bytes a
    // character: 192 KiB, more than exec lets one environment string be.
    let prompt = "漢".repeat(65_536);
    spec.prompt = prompt.clone();
    create(&runs, "real", spec).await;

    let run = until(&runs, "real", "replied", replied).await;
    let status = run.status.expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let result = status.result.expect("a result");
    assert_eq!(
        result.reply,
        "`parse()` drops them.\n\n*No files were changed.*"
    );
    assert_eq!(result.model.as_deref(), Some("scripted-model"));
    let comments = github.comments();
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.starts_with("`parse()` drops them."));
    // The agent saw the file through its tool.
    assert!(llm.requests()[1].1.to_string().contains("drops commas"));
    assert!(
        llm.requests()[0].1.to_string().contains(&prompt),
        "the whole request reached the model"
    );
}
