//! Attacks on a running smolpaws, each reproduced against the real control
//! plane: what a hostile commenter, a compromised sandbox or a replaying
//! network can try, and what holds. The intake's own attacks (floods, slow
//! bodies, replays, hidden mentions) are in `webhook_to_agentrun.rs`; the
//! runner's in `runner_api.rs`; the closing note of the issue maps each to
//! its test.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use smolpaws::api::{AgentRun, AgentRunSpec, Phase};
use support::fake_github::FakeGitHub;
use support::fake_llm::{FakeLlm, Reply};
use support::git_remote::git;
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, Operator, stand_in_agent, with_real_agent};
use support::runs::{issue_spec, replied, until};

/// A credential as the run's Secret holds it.
async fn credential_of(client: &kube::Client, namespace: &str, run: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(&format!("{run}-run"))
        .await
        .expect("the run's Secret");
    let data = secret.data.expect("data");
    String::from_utf8(data["SMOLPAWS_REPORT_TOKEN"].0.clone()).expect("UTF-8")
}

/// A report `credential` sends for `namespace/name`: the status answered.
async fn report(result_url: &str, namespace: &str, name: &str, credential: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{result_url}/v1/runs/{namespace}/{name}/result"))
        .bearer_auth(credential)
        .json(&serde_json::json!({ "reply": "forged" }))
        .send()
        .await
        .expect("the result endpoint answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_credential_opens_only_its_own_run_and_not_a_run_made_again_under_its_name() {
    let client = support::client();
    let ns = support::namespace(&client, "credential").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Hangs);
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let operator = Operator::start(client.clone(), &ns, None, |_| {}).await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let spec = || {
        let mut spec = issue_spec("octo/hello", 1, "octocat");
        spec.github.post_reply = false;
        spec
    };
    for name in ["first", "second"] {
        runs.create(&PostParams::default(), &AgentRun::new(name, spec()))
            .await
            .expect("created");
        until(&runs, name, "running", |r| r.phase() == Phase::Running).await;
    }
    let first = credential_of(&client, &ns, "first").await;

    assert_eq!(
        report(&operator.result_url, &ns, "second", &first).await,
        401,
        "one run's credential does not open another"
    );
    let (uid, _) = first.split_once('.').expect("uid.mac");
    let forged = format!("{uid}.{}", "0".repeat(64));
    assert_eq!(
        report(&operator.result_url, &ns, "first", &forged).await,
        401
    );

    // The run is deleted and made again under its name: the old credential
    // is the old run's.
    runs.delete("first", &DeleteParams::default())
        .await
        .expect("deleted");
    let gone = kube::runtime::wait::await_condition(
        runs.clone(),
        "first",
        kube::runtime::conditions::is_deleted(uid),
    );
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("the run is gone within a minute")
        .expect("watch");
    runs.create(&PostParams::default(), &AgentRun::new("first", spec()))
        .await
        .expect("made again");
    until(&runs, "first", "running", |r| r.phase() == Phase::Running).await;
    assert_eq!(
        report(&operator.result_url, &ns, "first", &first).await,
        401,
        "the first run's credential opens nothing of its successor"
    );
    let current = credential_of(&client, &ns, "first").await;
    assert_ne!(current, first);

    // A restarted operator reads the same key: live runs still report.
    let operator = operator.restart(client.clone(), &ns, None, |_| {}).await;
    assert_eq!(
        report(&operator.result_url, &ns, "first", &current).await,
        204,
        "the key outlives the process"
    );
}

#[tokio::test]
async fn a_push_after_the_comment_does_not_change_what_the_agent_works_on() {
    let client = support::client();
    let ns = support::namespace(&client, "pinned-head").await;
    let github = FakeGitHub::start().await;
    let (remote, seen) = support::git_remote::server(&[]);
    // What the commenter saw is `seen`; then someone pushes to the pull
    // request while the run waits for its sandbox.
    let work = remote.path().join("work");
    std::fs::write(work.join("README.md"), "pushed later\n").expect("write");
    git(&work, &["commit", "-q", "-am", "later"]);
    let bare = remote.path().join("octo/hello.git");
    git(
        &work,
        &[
            "push",
            "-q",
            "-f",
            bare.to_str().expect("utf-8"),
            "HEAD:refs/pull/7/head",
        ],
    );
    github.seed_pull("octo/hello", 7, "feature", &seen, "octo/hello");
    let llm = FakeLlm::start(Reply::view_then_finish("README.md", "read it")).await;
    let _running = with_real_agent(
        &client,
        &ns,
        Some(&github.url),
        &llm.base_url,
        remote.path(),
    )
    .await;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    // A conversation comment on the pull request: its webhook carries no
    // head.
    let mut spec: AgentRunSpec = issue_spec("octo/hello", 2222, "octocat");
    spec.github.pull_request = true;
    runs.create(&PostParams::default(), &AgentRun::new("pinned", spec))
        .await
        .expect("created");

    let run = until(&runs, "pinned", "replied", replied).await;
    let status = run.status.expect("a status");
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        status.head.map(|head| (head.git_ref, head.sha)),
        Some(("feature".to_owned(), seen)),
        "the head is pinned when the run is first seen"
    );
    let viewed = llm.requests()[1].1.to_string();
    assert!(
        viewed.contains("feature") && !viewed.contains("pushed later"),
        "the agent read the commit the commenter saw: {viewed}"
    );
}

#[tokio::test]
async fn an_agent_keeps_its_report_until_a_restarting_operator_takes_it() {
    let (remote, _) = support::git_remote::server(&[]);
    let workspace = tempfile::tempdir().expect("a workspace");
    let llm = FakeLlm::start([Reply::Text("all done")]).await;
    // The operator's port, closed while it "restarts".
    let port = support::free_port();
    let spec = serde_json::to_value(issue_spec("octo/hello", 3, "octocat")).expect("JSON");
    let agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SMOLPAWS_RUN_SPEC", spec.to_string())
        .env("SMOLPAWS_RUN_NAMESPACE", "ns")
        .env("SMOLPAWS_RUN_NAME", "patient")
        .env("SMOLPAWS_REPORT_TOKEN", "uid-1.credential")
        .env("SMOLPAWS_RESULT_URL", format!("http://127.0.0.1:{port}"))
        .env("SMOLPAWS_WORKSPACE", workspace.path())
        .env(
            "GITHUB_SERVER_URL",
            format!("file://{}", remote.path().display()),
        )
        .env("GITHUB_API_URL", "http://127.0.0.1:9")
        .env("LLM_MODEL", "scripted-model")
        .env("LLM_BASE_URL", &llm.base_url)
        .env("SMOLPAWS_LOG_FORMAT", "json")
        .kill_on_drop(true)
        .output();
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let operator = {
        let reports = reports.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let router = axum::Router::new().route(
                "/v1/runs/ns/patient/result",
                axum::routing::post(move |axum::Json(report): axum::Json<serde_json::Value>| {
                    let reports = reports.clone();
                    async move {
                        reports.lock().expect("reports").push(report);
                        axum::http::StatusCode::NO_CONTENT
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("the operator's port");
            axum::serve(listener, router).await.expect("serves");
        }
    };
    let output = tokio::select! {
        output = agent => output.expect("the agent runs"),
        () = operator => unreachable!("the operator serves until the test ends"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let reports = reports.lock().expect("reports").clone();
    assert_eq!(reports.len(), 1, "one report, once the operator was back");
    assert!(
        reports[0]["reply"]
            .as_str()
            .is_some_and(|reply| reply.starts_with("all done")),
        "{reports:?}"
    );
    assert!(
        stdout.contains("is unavailable; retrying"),
        "the agent waited for the operator: {stdout}"
    );
}
