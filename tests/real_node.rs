//! Sandbox pods run on a real node: the kubelet, containerd and runc start
//! the pod the controller writes, in a restricted namespace, and what a
//! user's cluster would do with it is what these tests see.
//!
//! They need root, cgroups and overlayfs; without them the node's start
//! fails naming what is missing.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use secrecy::SecretString;
use serde_json::json;
use smolpaws::api::{AgentRun, AgentRunSpec, Phase};
use smolpaws::controller::ControllerArgs;
use support::fake_github::FakeGitHub;
use support::fake_llm::{FakeLlm, Reply, bash, finish};
use support::operator::Operator;
use support::runs::{finished_reason, issue_spec, replied, until};

const REPO: &str = "octo/hello";

fn spec(comment_id: i64) -> AgentRunSpec {
    let mut spec = issue_spec(REPO, comment_id, "maintainer");
    spec.prompt = "what do the notes say?".into();
    spec
}

/// A test namespace on the node with a fake GitHub, a git server holding
/// the repository, and a controller whose sandboxes are the node's images
/// and whose model is `llm`.
struct Setup {
    runs: Api<AgentRun>,
    pods: Api<Pod>,
    github: FakeGitHub,
    _operator: Operator,
    _remote: tempfile::TempDir,
}

impl Setup {
    async fn new(prefix: &str, llm: &FakeLlm, tune: impl FnOnce(&mut ControllerArgs)) -> Self {
        let client = support::node::client();
        let ns = support::node::namespace(&client, prefix).await;
        let github = FakeGitHub::start().await;
        let (remote, _) = support::git_remote::server(&[("notes.md", "the notes say hello\n")]);
        let git = support::git_http::GitHttp::start(remote.path().to_owned(), |_| false)
            .await
            .url;
        let github_url = github.url.clone();
        let operator = Operator::start(client.clone(), &ns, Some(&github.url), |args| {
            support::node::use_node_images(args);
            args.sandbox.llm.model = Some("scripted-model".into());
            args.sandbox.llm.base_url = Some(llm.base_url.clone());
            args.sandbox.llm.api_key = Some(SecretString::from("sk-operator-key"));
            args.sandbox.extra_env = vec![
                ("GITHUB_SERVER_URL".into(), git),
                ("GITHUB_API_URL".into(), github_url),
            ];
            // The binary's tests share one node of two CPUs and a default
            // sandbox asks for a whole one, so a run may wait Unschedulable
            // behind the other tests' pods for longer than the harness's
            // usual pending timeout.
            args.pending_timeout = Duration::from_secs(300).into();
            tune(args);
        })
        .await;
        Self {
            runs: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client, &ns),
            github,
            _operator: operator,
            _remote: remote,
        }
    }

    async fn create(&self, name: &str, spec: AgentRunSpec) {
        self.runs
            .create(&PostParams::default(), &AgentRun::new(name, spec))
            .await
            .expect("the AgentRun is created");
    }

    /// The replies the app posted.
    fn replies(&self) -> Vec<String> {
        self.github
            .comments()
            .into_iter()
            .filter(|c| c.author == "smolpaws[bot]")
            .map(|c| c.body)
            .collect()
    }

    /// What the agent container of pod `name` wrote, through the kubelet.
    async fn log(&self, name: &str) -> String {
        let params = kube::api::LogParams {
            container: Some("agent".into()),
            ..Default::default()
        };
        self.pods
            .logs(name, &params)
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits until no pod is left in the namespace.
    async fn no_pods(&self, within: Duration) {
        let pods = self.pods.clone();
        let gone = async move {
            loop {
                let list = pods.list(&Default::default()).await.expect("a pod list");
                if list.items.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(within, gone)
            .await
            .expect("the sandbox pods are gone");
    }
}

#[test]
fn a_comment_runs_in_a_real_pod_and_is_answered_once() {
    support::node::run(|| async {
        let llm = FakeLlm::start([
            bash("cat notes.md && git log --oneline -1"),
            finish("The notes say hello."),
        ])
        .await;
        let setup = Setup::new("reply", &llm, |args| {
            args.ttl = Duration::from_secs(3).into();
        })
        .await;
        setup.create("answered", spec(5001)).await;

        // The pod runs under containerd, its binary installed by the init
        // container.
        let pod = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                if let Some(pod) = setup.pods.get_opt("answered").await.expect("a pod lookup")
                    && let Some(status) = &pod.status
                    && status
                        .container_statuses
                        .iter()
                        .flatten()
                        .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_none()))
                {
                    return pod;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the sandbox pod starts");
        let status = pod.status.expect("a pod status");
        let init = &status
            .init_container_statuses
            .clone()
            .expect("an init container")[0];
        let installed = init.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(installed.map(|t| t.exit_code), Some(0), "{init:?}");
        support::node::assert_ran_under_containerd(Some(status));

        let run = until(&setup.runs, "answered", "replied", replied).await;
        assert_eq!(
            run.phase(),
            Phase::Succeeded,
            "{:#?}\nthe agent's log:\n{}",
            run.status,
            setup.log("answered").await
        );
        // The agent cloned the repository over HTTP and ran git in it.
        llm.assert_last_turn_saw(2, &["the notes say hello", " main"]);
        let replies = setup.replies();
        assert_eq!(replies.len(), 1, "one reply: {replies:?}");
        assert!(
            replies[0].starts_with("The notes say hello."),
            "{}",
            replies[0]
        );

        // Finished runs are deleted after their TTL, and their pods with them.
        setup.no_pods(Duration::from_secs(60)).await;
        assert_eq!(setup.replies().len(), 1, "still one reply");
    });
}

/// Waits until pod `name` exists and returns it.
async fn pod_of(pods: &Api<Pod>, name: &str) -> Pod {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(pod) = pods.get_opt(name).await.expect("a pod lookup") {
                return pod;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} was never created"))
}

#[test]
fn the_restricted_namespace_admits_the_sandbox_and_refuses_a_privileged_pod() {
    support::node::run(|| async {
        let llm = FakeLlm::start([finish("Admitted.")]).await;
        let setup = Setup::new("restricted", &llm, |_| {}).await;
        setup.create("admitted", spec(5002)).await;
        let admitted = pod_of(&setup.pods, "admitted").await;

        // The same pod, made privileged or given a hostPath, is refused by
        // the apiserver's Pod Security admission.
        let copy = |name: &str| {
            let mut pod = admitted.clone();
            pod.metadata = kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            };
            pod.status = None;
            pod
        };
        let mut privileged = copy("privileged");
        let spec = privileged.spec.as_mut().expect("a pod spec");
        let context = spec.containers[0]
            .security_context
            .as_mut()
            .expect("a security context");
        // Privileged implies escalation; asked for alone, validation refuses
        // it before admission looks.
        context.privileged = Some(true);
        context.allow_privilege_escalation = Some(true);
        let mut host_path = copy("host-path");
        let spec = host_path.spec.as_mut().expect("a pod spec");
        spec.volumes.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({ "name": "host", "hostPath": { "path": "/" } }))
                .expect("a volume"),
        );
        for (pod, violation) in [(privileged, "privileged"), (host_path, "hostPath")] {
            let refused = setup
                .pods
                .create(&PostParams::default(), &pod)
                .await
                .expect_err("the pod is refused");
            let kube::Error::Api(status) = refused else {
                panic!("not an API refusal: {refused}");
            };
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("violates PodSecurity \"restricted:latest\"")
                    && status.message.contains(violation),
                "{}",
                status.message
            );
        }
        until(&setup.runs, "admitted", "replied", replied).await;
    });
}

#[test]
fn inside_the_sandbox_the_agent_is_unprivileged_and_holds_no_credential() {
    support::node::run(|| async {
        let llm = FakeLlm::start([
            bash(
                "echo ids=$(id -u):$(id -g); touch /probe; \
                 grep -E '^(CapEff|Seccomp):' /proc/self/status; \
                 ls /var/run/secrets/kubernetes.io; echo ---; env",
            ),
            finish("Looked around."),
        ])
        .await;
        let setup = Setup::new("inside", &llm, |_| {}).await;
        setup.create("inside", spec(5003)).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
            support::node::client(),
            setup.runs.namespace().expect("namespaced"),
        );
        let secret = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(secret) = secrets.get_opt("inside-run").await.expect("a lookup") {
                    return secret;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the run's Secret");
        let pod = pod_of(&setup.pods, "inside").await;
        let run = until(&setup.runs, "inside", "replied", replied).await;

        let requests = llm.requests();
        assert_eq!(
            requests.len(),
            2,
            "two model turns; {:#?}\nthe agent's log:\n{}",
            run.status,
            setup.log("inside").await
        );
        let seen = requests[1].1.to_string();
        for expected in [
            "ids=65532:65532",
            "touch: cannot touch '/probe': Read-only file system",
            "CapEff:\\t0000000000000000",
            "Seccomp:\\t2",
            "ls: cannot access '/var/run/secrets/kubernetes.io': No such file or directory",
        ] {
            assert!(seen.contains(expected), "{expected} not in: {seen}");
        }
        let pod_json = serde_json::to_string(&pod).expect("JSON");
        let data = secret.data.expect("secret data");
        for (key, value) in &data {
            let value = String::from_utf8(value.0.clone()).expect("UTF-8");
            assert!(!value.is_empty(), "{key} is set");
            assert!(
                !seen.contains(&value),
                "{key} reached the tool's environment"
            );
            assert!(!pod_json.contains(&value), "{key} is in the pod spec");
        }
    });
}

#[test]
fn with_a_limit_of_one_the_second_pod_waits_for_the_first() {
    support::node::run(|| async {
        let llm = FakeLlm::start([
            bash("sleep 2"),
            finish("First."),
            bash("sleep 2"),
            finish("Second."),
        ])
        .await;
        let setup = Setup::new("limit", &llm, |args| args.max_concurrent_runs = 1).await;
        setup.create("first", spec(5004)).await;
        setup.create("second", spec(5005)).await;

        // Whenever the second pod exists, the first run has ended.
        let both = async {
            loop {
                let first = setup.runs.get("first").await.expect("the first run");
                let second = setup.runs.get("second").await.expect("the second run");
                if setup
                    .pods
                    .get_opt("second")
                    .await
                    .expect("a pod lookup")
                    .is_some()
                {
                    assert!(
                        first.phase() == Phase::Succeeded,
                        "the second pod exists while the first run is {:?}",
                        first.phase()
                    );
                }
                if replied(&first) && replied(&second) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), both)
            .await
            .expect("both runs are answered");
        assert_eq!(setup.replies().len(), 2);
    });
}

/// Runs `name` with `spec` against a model answering `replies`, until it is
/// answered, and checks it failed for `reason`, said once in its thread.
async fn fails(name: &str, spec: AgentRunSpec, replies: Vec<Reply>, reason: &str, says: &str) {
    let llm = FakeLlm::start(replies).await;
    let setup = Setup::new(name, &llm, |_| {}).await;
    setup.create(name, spec).await;
    let run = until(&setup.runs, name, "replied", replied).await;
    assert_eq!(run.phase(), Phase::Failed, "{name}");
    assert_eq!(finished_reason(&run), reason, "{name}");
    let replies = setup.replies();
    assert_eq!(replies.len(), 1, "{name}: one answer: {replies:?}");
    assert!(
        replies[0].contains(says),
        "{name}: {:?} lacks {says:?}",
        replies[0]
    );
}

#[test]
fn an_agent_out_of_memory_ends_out_of_memory() {
    support::node::run(|| async {
        let mut spec = spec(5006);
        spec.sandbox.resources = Some(
            serde_json::from_value(json!({
                "requests": { "cpu": "100m", "memory": "48Mi" },
                "limits": { "cpu": "1", "memory": "48Mi" },
            }))
            .expect("resources"),
        );
        // An answer the agent cannot hold within its limit (the gateway
        // passes up to 32 MiB).
        let huge: &'static str = Box::leak("many words ".repeat(2_800_000).into_boxed_str());
        fails(
            "oom",
            spec,
            vec![Reply::Text(huge)],
            "OutOfMemory",
            "ran out of memory",
        )
        .await;
    });
}

#[test]
fn an_agent_past_its_timeout_ends_run_timeout_and_is_stopped() {
    support::node::run(|| async {
        let mut spec = spec(5007);
        spec.sandbox.timeout_seconds = Some(5);
        fails(
            "late",
            spec,
            vec![bash("sleep 300")],
            "RunTimeout",
            "did not finish within 5s",
        )
        .await;
    });
}

#[test]
fn deleting_a_running_agentrun_stops_its_container() {
    support::node::run(|| async {
        let llm = FakeLlm::start([bash("sleep 300")]).await;
        let setup = Setup::new("cancel", &llm, |_| {}).await;
        setup.create("unwanted", spec(5008)).await;
        until(&setup.runs, "unwanted", "Running", |r| {
            r.phase() == Phase::Running
        })
        .await;
        // The agent is at work: the model has asked for its tool.
        tokio::time::timeout(Duration::from_secs(60), async {
            while llm.requests().is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the agent calls the model");

        setup
            .runs
            .delete("unwanted", &Default::default())
            .await
            .expect("delete");
        let grace = pod_of(&setup.pods, "unwanted")
            .await
            .spec
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let runs = setup.runs.clone();
        let gone =
            kube::runtime::wait::await_condition(runs, "unwanted", |run: Option<&AgentRun>| {
                run.is_none()
            });
        tokio::time::timeout(Duration::from_secs(grace.unsigned_abs() + 30), gone)
            .await
            .expect("the run is deleted once cancelled")
            .expect("a watch");
        setup
            .no_pods(Duration::from_secs(grace.unsigned_abs() + 10))
            .await;
        let replies = setup.replies();
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(replies[0].contains("cancelled"), "{}", replies[0]);
    });
}
