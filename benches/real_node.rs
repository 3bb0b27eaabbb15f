//! A sandbox pod's life on the real node, 20 runs one after another: from
//! the AgentRun's creation to its pod Running, to the agent's first LLM
//! request, and to the reply stored in the run's status. Needs what
//! `tests/real_node.rs` needs (root; the first run builds the node's parts).
//!
//! `cargo bench --bench real_node`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use secrecy::SecretString;
use serde_json::json;
use smolpaws::api::AgentRun;
use support::fake_github::FakeGitHub;
use support::fake_llm::{FakeLlm, Reply};
use support::operator::Operator;
use support::runs::{issue_spec, replied, until};

const RUNS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<34} p50 {:>7.0} ms  p90 {:>7.0} ms  (n={})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        samples.len()
    );
}

async fn running(pods: &Api<Pod>, name: &str) {
    loop {
        let phase = pods
            .get_opt(name)
            .await
            .expect("a pod lookup")
            .and_then(|p| p.status)
            .and_then(|s| s.phase);
        if matches!(phase.as_deref(), Some("Running" | "Succeeded")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    support::node::run(|| async {
        let replies = (0..RUNS).map(|i| Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": format!("Reply {i}.") }),
        });
        let llm = FakeLlm::start(replies).await;
        let client = support::node::client();
        let ns = support::node::namespace(&client, "bench").await;
        let github = FakeGitHub::start().await;
        let (remote, _) = support::git_remote::server(&[]);
        let git = support::git_http::GitHttp::start(remote.path().to_owned(), |_| false)
            .await
            .url;
        let github_url = github.url.clone();
        let _operator = Operator::start(client.clone(), &ns, Some(&github.url), |args| {
            support::node::use_node_images(args);
            args.sandbox.llm.model = Some("scripted-model".into());
            args.sandbox.llm.base_url = Some(llm.base_url.clone());
            args.sandbox.llm.api_key = Some(SecretString::from("sk-bench"));
            args.sandbox.extra_env = vec![
                ("GITHUB_SERVER_URL".into(), git),
                ("GITHUB_API_URL".into(), github_url),
            ];
        })
        .await;
        let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let (mut to_running, mut to_request, mut to_reply) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..RUNS {
            let name = format!("bench-{i}");
            let spec = issue_spec("octo/hello", 9000 + i as i64, "maintainer");
            let created = Instant::now();
            runs.create(&PostParams::default(), &AgentRun::new(&name, spec))
                .await
                .expect("the AgentRun is created");
            running(&pods, &name).await;
            to_running.push(created.elapsed());
            until(&runs, &name, "replied", replied).await;
            to_reply.push(created.elapsed());
            let requests = llm.requests();
            let (first, _) = requests.get(i).expect("the run's LLM request");
            to_request.push(first.duration_since(created));
        }
        println!("real node, {RUNS} runs one after another:");
        report("AgentRun created -> pod Running", to_running);
        report("-> agent's first LLM request", to_request);
        report("-> reply stored", to_reply);
    });
}
