//! The chart on the real node, as a user meets it: `helm install` runs the
//! operator as two real pods from the locally imported image, a signed
//! comment sent to the chart's webhook Service becomes a sandbox pod and one
//! reply, the sandbox NetworkPolicy is enforced (kube-router),
//! the leader's pod can be deleted mid-run, `helm upgrade` rolls the pods,
//! and `helm uninstall` leaves only the CRD.
//!
//! Everything runs on one install, in order, as its story does. GitHub and
//! the model are fakes on the node's address, where the operator's pods and
//! the sandboxes reach them.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;
use smolpaws::api::{AgentRun, Phase};
use support::fake_github::FakeGitHub;
use support::fake_llm::{FakeLlm, Reply, bash, finish};
use support::git_http::GitHttp;
use support::helm::helm_ok;
use support::runs::replied;
use support::webhook;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/smolpaws");
const RELEASE: &str = "smolpaws";
const NAMESPACE: &str = "smolpaws";
const WEBHOOK_SECRET: &str = "chart-on-node-webhook-secret";
/// The pods' labels, as the chart sets them.
const SELECTOR: &str = "app.kubernetes.io/instance=smolpaws,app.kubernetes.io/name=smolpaws";
/// How long a step of the install may take on a loaded two-core machine.
const STEP: Duration = Duration::from_secs(180);

/// The install under test and the fakes it talks to.
struct Install {
    client: Client,
    github: FakeGitHub,
    llm: FakeLlm,
    runs: Api<AgentRun>,
    pods: Api<Pod>,
    kubeconfig: PathBuf,
    /// The next comment's id.
    next_comment: i64,
    git: GitHttp,
    _remote: tempfile::TempDir,
    values: tempfile::TempDir,
}

impl Install {
    async fn fakes() -> Self {
        let client = support::node::client();
        let github = FakeGitHub::start().await;
        let llm = FakeLlm::start_at(support::listen_host(), []).await;
        let (remote, _) = support::git_remote::server(&[("notes.md", "the notes say hello\n")]);
        let git = GitHttp::start(remote.path().to_owned(), |_| false).await;
        let values = tempfile::tempdir().expect("a temp dir");
        let install = Self {
            runs: Api::namespaced(client.clone(), NAMESPACE),
            pods: Api::namespaced(client.clone(), NAMESPACE),
            client,
            github,
            llm,
            kubeconfig: support::node::kubeconfig(),
            next_comment: 9001,
            git,
            _remote: remote,
            values,
        };
        install.write_values();
        install
    }

    /// The values this machine needs beside the README's: the image is the
    /// node's own (as the Dockerfile builds it), GitHub and the model are
    /// the fakes, and two cores hold the operator's two pods, a rollout's
    /// third and two sandboxes at once.
    fn write_values(&self) {
        let images = support::node::images();
        let operator = support::node::operator_image();
        let (repository, tag) = operator
            .rsplit_once(':')
            .expect("an image reference with a tag");
        let port = |url: &str| -> u16 {
            let port = url.rsplit_once(':').expect("a URL with a port").1;
            port.trim_end_matches("/v1").parse().expect("a port")
        };
        // The node serves DNS itself, as NodeLocal DNSCache would, and the
        // fake GitHub stands where GitHub's addresses would be: sandboxes
        // may reach both, and nothing else on the node.
        let node = format!("{}/32", smolpaws::node::NODE_IP);
        let egress = json!([{
            "to": [{ "ipBlock": { "cidr": node } }],
            "ports": [
                { "protocol": "UDP", "port": 53 },
                { "protocol": "TCP", "port": 53 },
                { "protocol": "TCP", "port": port(&self.github.url) },
                { "protocol": "TCP", "port": port(&self.git.url) },
            ],
        }]);
        let values = json!({
            "image": { "repository": repository, "tag": tag },
            "github": { "apiUrl": self.github.url, "serverUrl": self.git.url },
            "llm": { "baseUrl": self.llm.base_url },
            "sandbox": { "image": images.sandbox, "cpu": "250m", "memory": "512Mi" },
            "networkPolicy": { "extraEgress": egress },
        });
        let yaml = serde_yaml_ng::to_string(&values).expect("values serialize");
        std::fs::write(self.values_file(), yaml).expect("the values file");
    }

    fn values_file(&self) -> PathBuf {
        self.values.path().join("values.yaml")
    }

    /// Runs helm `args` against the node.
    async fn helm(&self, args: &[&str]) -> String {
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig]);
        helm_ok(&all).await
    }

    /// `helm upgrade` of the release as the README's section 3 does it,
    /// keeping the values and setting `values`.
    async fn upgrade(&self, values: &[&str]) {
        let mut args = vec!["upgrade", RELEASE, CHART, "-n", NAMESPACE, "--reuse-values"];
        for value in values {
            args.extend(["--set", value]);
        }
        self.helm(&args).await;
    }

    /// Runs the real kubectl against the node; its stdout, or a panic with
    /// its stderr.
    async fn kubectl(&self, args: &[&str]) -> String {
        let output = kubectl(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            support::printed(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The operator's pods, Ready or not.
    async fn operator_pods(&self) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .expect("a pod list")
            .items
    }

    /// Waits until the Deployment has `replicas` Ready pods, all of its
    /// current template, and no others; returns their names.
    async fn ready(&self, replicas: i32) -> Vec<String> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        eventually("the operator's pods becoming Ready", async || {
            let deployment = deployments.get(RELEASE).await.ok()?;
            let status = deployment.status?;
            let settled = status.observed_generation == deployment.metadata.generation
                && status.ready_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.replicas == Some(replicas);
            if !settled {
                return None;
            }
            let pods = self.operator_pods().await;
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == usize::try_from(replicas).ok()? && live.iter().all(|p| pod_ready(p)))
                .then(|| {
                    live.iter()
                        .filter_map(|p| p.metadata.name.clone())
                        .collect()
                })
        })
        .await
    }

    /// The pod holding the operator's Lease, once one does.
    async fn leader(&self, among: &[String]) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        eventually("one operator pod holding the Lease", async || {
            let lease = leases.get_opt("smolpaws-controller").await.ok()??;
            let holder = lease.spec?.holder_identity?;
            among.contains(&holder).then_some(holder)
        })
        .await
    }

    /// The webhook Service's URL, as the NOTES print it (its ClusterIP).
    async fn webhook_url(&self) -> String {
        let services: Api<Service> = Api::namespaced(self.client.clone(), NAMESPACE);
        let service = services.get(RELEASE).await.expect("the webhook Service");
        let spec = service.spec.expect("a Service spec");
        let ip = spec.cluster_ip.expect("a ClusterIP");
        let port = spec.ports.expect("ports")[0].port;
        format!("http://{ip}:{port}")
    }

    /// Sends a signed real `issue_comment` delivery mentioning smolpaws on
    /// octo/hello to the chart's webhook Service; returns the run it made.
    async fn comment(&mut self, body: &str) -> String {
        let id = self.next_comment;
        self.next_comment += 1;
        let mut payload = webhook::comment(
            "issue_comment_created.with-installation.json",
            id,
            &format!("@smolpaws {body}"),
        );
        payload["repository"]["full_name"] = "octo/hello".into();
        payload["repository"]["name"] = "hello".into();
        payload["repository"]["owner"]["login"] = "octo".into();
        webhook::deliver(&self.webhook_url().await, WEBHOOK_SECRET, &payload).await
    }

    /// Waits until run `name` has its reply stored, and returns it.
    async fn finished(&self, name: &str) -> AgentRun {
        eventually(&format!("run {name} being answered"), async || {
            let run = self.runs.get_opt(name).await.ok()??;
            replied(&run).then_some(run)
        })
        .await
    }

    /// The App's comments whose body starts with `reply`.
    fn replies(&self, reply: &str) -> usize {
        self.github
            .comments()
            .iter()
            .filter(|c| c.author == "smolpaws[bot]" && c.body.starts_with(reply))
            .count()
    }

    /// Waits until the model has been asked `count` times in all.
    async fn asked(&self, count: usize) {
        eventually("the model being asked", async || {
            (self.llm.requests().len() >= count).then_some(())
        })
        .await;
    }

    /// The pod of run `name`, once it runs and has its address.
    async fn sandbox_ip(&self, name: &str) -> String {
        eventually(&format!("run {name}'s pod running"), async || {
            let pod = self.pods.get_opt(name).await.ok()??;
            let status = pod.status?;
            (status.phase.as_deref() == Some("Running"))
                .then_some(status.pod_ip)
                .flatten()
        })
        .await
    }
}

async fn assert_succeeded(run: &AgentRun) {
    if run.phase() != Phase::Succeeded {
        panic!("{:#?}\n{}", run.status, explain().await);
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Polls `check` until it yields, for up to [`STEP`]; panics naming `what`
/// and showing the release's pods and logs when it never does.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what} did not happen within {STEP:?}\n{}", explain().await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real kubectl run against the node with `args`.
async fn kubectl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(support::node::kubectl())
        .arg("--kubeconfig")
        .arg(support::node::kubeconfig())
        .args(args)
        .output()
        .await
        .expect("kubectl runs")
}

/// What the release's pods are and say, as kubectl shows them.
async fn explain() -> String {
    let mut told = String::new();
    for args in [
        &["get", "pods,agentruns", "-o", "wide"][..],
        &["describe", "pods", "-l", SELECTOR],
        &["logs", "-l", SELECTOR, "--tail=40", "--prefix"],
        &[
            "logs",
            "-l",
            "smolpaws.dev/run",
            "--all-containers",
            "--tail=40",
            "--prefix",
        ],
    ] {
        let args = [&["-n", NAMESPACE][..], args].concat();
        let output = kubectl(&args).await;
        told.push_str(&format!(
            "$ kubectl {}\n{}\n",
            args.join(" "),
            support::printed(&output)
        ));
    }
    told.push_str("kube-router:\n");
    told.push_str(&support::node::log_tail("kube-router", 60));
    told
}

/// What a sandbox tries, each line `<tag>:<name>=open|closed`: the
/// operator's webhook and metrics port, the apiserver's ClusterIP, another
/// sandbox, then the cluster DNS and the result endpoint.
fn probes(tag: &str, operator: &str, sandbox: &str) -> String {
    let results = format!("{RELEASE}-results.{NAMESPACE}.svc.cluster.local");
    // The lines are made at run time ("$t"): the command itself goes back
    // to the model with its output, and must not hold what it prints.
    format!(
        "t={tag}; \
         probe() {{ if timeout 4 bash -c \"exec 3<>/dev/tcp/$2/$3\" 2>/dev/null; \
         then echo \"$t:$1=open\"; else echo \"$t:$1=closed\"; fi; }}; \
         probe webhook {operator} 8080; \
         probe apiserver 10.96.0.1 443; \
         probe sandbox {sandbox} 9418; \
         if getent hosts {results} >/dev/null; then echo \"$t:dns=open\"; else echo \"$t:dns=closed\"; fi; \
         probe results {results} 8081"
    )
}

/// What the probes printed, as the model was told it.
fn probed(llm: &FakeLlm, tag: &str) -> Vec<String> {
    let seen = llm.bodies().join("\n");
    let mut found: Vec<String> = ["webhook", "apiserver", "sandbox", "dns", "results"]
        .iter()
        .filter_map(|name| {
            ["open", "closed"]
                .iter()
                .map(|state| format!("{tag}:{name}={state}"))
                .find(|line| seen.contains(line.as_str()))
        })
        .collect();
    found.sort();
    found
}

/// A sandbox serving git on 9418 (the other sandbox the probes try), then
/// the probing sandbox; returns what the probes printed.
async fn probe_from_a_sandbox(install: &mut Install, tag: &str) -> Vec<String> {
    let asked = install.llm.requests().len();
    // Longer than the bash tool's default timeout, so that this run never
    // asks the model again (and takes the prober's scripted turns) before
    // it is cancelled.
    install.llm.push([Reply::Tool {
        name: "bash",
        arguments: json!({
            "command": "git daemon --reuseaddr --listen=0.0.0.0 --port=9418 --base-path=/tmp \
                        --export-all --detach --pid-file=/tmp/daemon.pid && sleep 900",
            "timeout_seconds": 900,
        }),
    }]);
    let target = install.comment("serve git for a moment").await;
    let target_ip = install.sandbox_ip(&target).await;
    install.asked(asked + 1).await;
    // The daemon binds its port right after it writes its pid file; the
    // prober's pod, started after this wait, takes longer than that again.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let operator = install.operator_pods().await[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("an operator pod's address");
    install
        .llm
        .push([bash(&probes(tag, &operator, &target_ip)), finish("Probed.")]);
    let prober = install.comment("probe the network").await;
    let run = install.finished(&prober).await;
    assert_succeeded(&run).await;

    install
        .runs
        .delete(&target, &Default::default())
        .await
        .expect("the serving run is cancelled");
    eventually("the serving run going away", async || {
        install
            .runs
            .get_opt(&target)
            .await
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .await;
    probed(&install.llm, tag)
}

fn expect(tag: &str, states: [(&str, &str); 5]) -> Vec<String> {
    let mut lines: Vec<String> = states
        .iter()
        .map(|(name, state)| format!("{tag}:{name}={state}"))
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_chart_on_a_real_node_serves_comments_enforces_its_policy_rolls_and_uninstalls() {
    support::node::run_in_cluster(|| async {
        let mut install = Install::fakes().await;
        let values = install.values_file().display().to_string();
        let app_key = format!("private-key.pem={}", support::operator::app_key().display());

        // 1. Install, with the README's commands: two replicas Ready through
        // their /readyz probes, one holding the Lease.
        let began = Instant::now();
        install.kubectl(&["create", "namespace", NAMESPACE]).await;
        install
            .kubectl(&[
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                "smolpaws-github",
                &format!("--from-literal=webhook-secret={WEBHOOK_SECRET}"),
                &format!("--from-file={app_key}"),
            ])
            .await;
        install
            .kubectl(&[
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                "smolpaws-llm",
                "--from-literal=api-key=sk-chart-key",
            ])
            .await;
        let notes = install
            .helm(&[
                "install",
                RELEASE,
                CHART,
                "-n",
                NAMESPACE,
                "--set",
                "github.appId=1",
                "--set",
                "github.appSlug=smolpaws",
                "--set",
                "github.existingSecret=smolpaws-github",
                "--set",
                "llm.model=scripted-model",
                "--set",
                "llm.existingSecret=smolpaws-llm",
                "--set",
                "allowedActors={Codertocat}",
                "--set",
                "allowedOwners={octo}",
                "--values",
                &values,
            ])
            .await;
        assert!(
            notes.contains("kubectl -n smolpaws get agentruns -w"),
            "{notes}"
        );
        let replicas = install.ready(2).await;
        let installed_in = began.elapsed();
        let leader = install.leader(&replicas).await;
        eprintln!("helm install -> both replicas Ready: {installed_in:.2?}; leader {leader}");

        // 2. A comment through the webhook Service: a sandbox pod, one reply,
        // and the run as `kubectl get agentruns` prints it.
        install
            .llm
            .push([bash("cat notes.md"), finish("The notes say hello.")]);
        let name = install.comment("what do the notes say?").await;
        let run = install.finished(&name).await;
        assert_succeeded(&run).await;
        assert!(
            install
                .llm
                .bodies()
                .join("\n")
                .contains("the notes say hello"),
            "the agent read the clone"
        );
        assert_eq!(install.replies("The notes say hello."), 1);
        let table = install
            .kubectl(&["get", "agentruns", "--namespace", NAMESPACE])
            .await;
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "PHASE",
                "REPOSITORY",
                "ISSUE",
                "AUTHOR",
                "AGE",
                "DURATION"
            ],
            "{table}"
        );
        let row: Vec<&str> = lines
            .find(|l| l.starts_with(&name))
            .unwrap_or_else(|| panic!("{name} not in {table}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            row[1..5],
            ["Succeeded", "octo/hello", "1", "Codertocat"],
            "{table}"
        );

        // Ten comments, one after another: comment -> reply.
        let mut took = Vec::new();
        for n in 0..10 {
            let reply = format!("Answer {n}.");
            install.llm.push([finish(&reply)]);
            let sent = Instant::now();
            let name = install.comment("a quick question").await;
            eventually("the reply being posted", async || {
                (install.replies(&reply) == 1).then_some(())
            })
            .await;
            took.push(sent.elapsed());
            install.finished(&name).await;
        }
        took.sort();
        eprintln!(
            "comment -> reply through the chart, 10 comments: p50 {:.2?}, p90 {:.2?}, max {:.2?}",
            took[4], took[8], took[9]
        );

        // 3. The sandbox NetworkPolicy, enforced: then the same probes with
        // it turned off, so what refused them was the policy.
        let policies: Api<NetworkPolicy> = Api::namespaced(install.client.clone(), NAMESPACE);
        assert_eq!(
            policies
                .list(&ListParams::default())
                .await
                .expect("a list")
                .items
                .len(),
            2
        );
        let enforced = probe_from_a_sandbox(&mut install, "on").await;
        assert_eq!(
            enforced,
            expect(
                "on",
                [
                    ("webhook", "closed"),
                    ("apiserver", "closed"),
                    ("sandbox", "closed"),
                    ("dns", "open"),
                    ("results", "open"),
                ]
            )
        );
        install.upgrade(&["networkPolicy.enabled=false"]).await;
        eventually("the NetworkPolicies going away", async || {
            let list = policies.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        })
        .await;
        let open = probe_from_a_sandbox(&mut install, "off").await;
        assert_eq!(
            open,
            expect(
                "off",
                [
                    ("webhook", "open"),
                    ("apiserver", "open"),
                    ("sandbox", "open"),
                    ("dns", "open"),
                    ("results", "open"),
                ]
            )
        );

        // 4. The leader's pod deleted mid-run: the other replica takes the
        // Lease, and the run ends with one reply.
        let replicas = install.ready(2).await;
        let leader = install.leader(&replicas).await;
        let asked = install.llm.requests().len();
        install
            .llm
            .push([bash("sleep 8"), finish("Survived the leader.")]);
        let name = install.comment("take your time").await;
        install.asked(asked + 1).await;
        install
            .pods
            .delete(&leader, &Default::default())
            .await
            .expect("the leader's pod is deleted");
        let deleted = Instant::now();
        // Another replica: the one left, or the one started in its place,
        // whichever asks first.
        let others = eventually("another operator pod", async || {
            let pods: Vec<String> = install
                .operator_pods()
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .filter(|p| *p != leader)
                .collect();
            (pods.len() == 2).then_some(pods)
        })
        .await;
        let new_leader = install.leader(&others).await;
        eprintln!(
            "leader {leader} deleted -> {new_leader} holds the Lease: {:.2?}",
            deleted.elapsed()
        );
        let run = install.finished(&name).await;
        assert_succeeded(&run).await;
        assert_eq!(install.replies("Survived the leader."), 1);

        // `helm upgrade` changing a value rolls the Deployment, and the new
        // pods serve.
        let before = install.ready(2).await;
        install
            .upgrade(&["networkPolicy.enabled=true", "limits.maxConcurrentRuns=4"])
            .await;
        install
            .kubectl(&[
                "rollout",
                "status",
                "deployment/smolpaws",
                "--namespace",
                NAMESPACE,
                "--timeout=180s",
            ])
            .await;
        let after = install.ready(2).await;
        assert!(
            after.iter().all(|p| !before.contains(p)),
            "{before:?} -> {after:?}"
        );
        for pod in install.operator_pods().await {
            if !after.contains(pod.metadata.name.as_ref().expect("a name")) {
                continue;
            }
            let env = serde_json::to_value(&pod.spec.expect("a pod spec").containers[0].env)
                .expect("JSON");
            assert!(
                env.as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v == &json!({"name": "SMOLPAWS_MAX_CONCURRENT_RUNS", "value": "4"})),
                "{env}"
            );
        }
        install.leader(&after).await;
        install.llm.push([finish("Served after the upgrade.")]);
        let name = install.comment("still there?").await;
        install.finished(&name).await;
        assert_eq!(install.replies("Served after the upgrade."), 1);

        // 5. Uninstall, as the README says: the runs deleted while the
        // operator runs, then the release. Everything the chart made is gone
        // but the CRD, and so is what the operator made: no sandbox pod or
        // Secret, no run key, no Lease. The user's own two Secrets stay.
        let deployments: Api<Deployment> = Api::namespaced(install.client.clone(), NAMESPACE);
        let owner = deployments
            .get(RELEASE)
            .await
            .expect("the Deployment")
            .metadata
            .uid;
        let secrets: Api<Secret> = Api::namespaced(install.client.clone(), NAMESPACE);
        let leases: Api<Lease> = Api::namespaced(install.client.clone(), NAMESPACE);
        let key = secrets.get("smolpaws-run-key").await.expect("the run key");
        let lease = leases.get("smolpaws-controller").await.expect("the Lease");
        for (what, owners) in [
            ("the run key", key.metadata.owner_references),
            ("the Lease", lease.metadata.owner_references),
        ] {
            let owners: Vec<_> = owners
                .into_iter()
                .flatten()
                .map(|o| (o.kind, Some(o.uid)))
                .collect();
            assert_eq!(
                owners,
                [("Deployment".to_owned(), owner.clone())],
                "{what}'s owners"
            );
        }
        let manifest = install
            .helm(&["get", "manifest", RELEASE, "-n", NAMESPACE])
            .await;
        let made = install.values.path().join("manifest.yaml");
        std::fs::write(&made, &manifest).expect("the manifest");
        install
            .kubectl(&[
                "-n",
                NAMESPACE,
                "delete",
                "agentruns",
                "--all",
                "--timeout=120s",
            ])
            .await;
        let uninstalled = install
            .helm(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait"])
            .await;
        assert!(uninstalled.contains("uninstalled"), "{uninstalled}");
        let left = install
            .kubectl(&[
                "get",
                "--filename",
                &made.display().to_string(),
                "--ignore-not-found",
                "--output",
                "name",
            ])
            .await;
        assert_eq!(left.trim(), "", "objects the chart made outlived it");
        install
            .kubectl(&["get", "crd", "agentruns.smolpaws.dev"])
            .await;
        eventually(
            "the operator's and sandboxes' pods going away",
            async || {
                let pods = install.pods.list(&ListParams::default()).await.ok()?;
                pods.items.is_empty().then_some(())
            },
        )
        .await;
        // The garbage collector removes what the Deployment owned.
        eventually("the run key and the Lease going away", async || {
            let mut left: Vec<String> = secrets
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            left.sort();
            let lease = leases.get_opt("smolpaws-controller").await.ok()?;
            (left == ["smolpaws-github", "smolpaws-llm"] && lease.is_none()).then_some(())
        })
        .await;
        let runs = install
            .runs
            .list(&ListParams::default())
            .await
            .expect("a run list");
        assert!(runs.items.is_empty(), "runs left: {}", runs.items.len());
    });
}
