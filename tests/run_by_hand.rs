//! `smolpaws run` creates an AgentRun in the current kube context and
//! follows it to its reply.

mod support;

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use smolpaws::api::{AgentRun, Phase};
use support::fake_github::FakeGitHub;
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, Operator, stand_in_agent};

/// `smolpaws run` in `namespace` about octo/hello#3, with `extra` flags.
async fn smolpaws_run(namespace: &str, extra: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .args([
            "run",
            "--repo",
            "octo/hello",
            "--issue",
            "3",
            "-n",
            namespace,
        ])
        .args(extra)
        .arg("why is it slow?")
        .env("KUBECONFIG", support::kubeconfig())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("smolpaws run ends")
        .expect("smolpaws run starts");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn a_run_started_by_hand_is_followed_to_its_reply() {
    let client = support::client();
    let ns = support::namespace(&client, "by-hand").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(
        dir.path(),
        Agent::RepliesAfter(Duration::from_secs(2), "Answered by hand."),
    );
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, None, |_| {}).await;

    let started = tokio::spawn({
        let ns = ns.clone();
        async move { smolpaws_run(&ns, &[]).await }
    });
    // The sandbox pod's output, through the apiserver's log endpoint, while
    // the agent works: the pod goes once the result is stored.
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let run = loop {
        let listed = runs.list(&ListParams::default()).await.expect("runs list");
        if let Some(run) = listed.items.iter().find(|r| r.phase() == Phase::Running) {
            break run.name_any();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = support::smolpaws_logs(&support::kubeconfig(), &ns, &run).await;
    assert!(
        log.contains(&format!("stand-in agent working on {run}")),
        "{log}"
    );

    let output = started.await.expect("smolpaws run ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in ["created in", "Pending", "Succeeded", "Answered by hand."] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("agentrun/{run}")),
        "{run} is the run followed:\n{stdout}"
    );
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    assert!(
        pods.get_opt(&run).await.expect("a pod lookup").is_none(),
        "the sandbox pod is deleted once its result is stored"
    );
}

#[tokio::test]
async fn no_post_keeps_the_reply_off_github() {
    let client = support::client();
    let ns = support::namespace(&client, "no-post").await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("Kept off the thread."));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |_| {}).await;

    let output = smolpaws_run(&ns, &["--no-post"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Kept off the thread."), "{stdout}");
    assert!(
        !github.token_requests().is_empty(),
        "the run had GitHub: a token was minted for it"
    );
    assert!(
        github.comments().is_empty(),
        "nothing was posted: {:?}",
        github
            .comments()
            .iter()
            .map(|c| &c.body)
            .collect::<Vec<_>>()
    );
}
