//! `smolpaws run` creates an AgentRun in the current kube context and
//! follows it to its reply, with no GitHub involved.

mod support;

use std::time::Duration;

use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, Operator, stand_in_agent};

#[tokio::test]
async fn a_run_started_by_hand_is_followed_to_its_reply() {
    let client = support::client();
    let ns = support::namespace(&client, "by-hand").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("Answered by hand."));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));
    let _operator = Operator::start(client.clone(), &ns, None, &[]).await;

    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .args([
            "run",
            "--repo",
            "octo/hello",
            "--issue",
            "3",
            "-n",
            &ns,
            "why is it slow?",
        ])
        .env("KUBECONFIG", support::kubeconfig())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("smolpaws run ends")
        .expect("smolpaws run starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in ["created in", "Pending", "Succeeded", "Answered by hand."] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
}
