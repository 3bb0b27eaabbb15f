//! `smolpaws dev` as a newcomer runs it: the binary, its embedded control
//! plane, a scripted LLM over local HTTP, a local git checkout, and a comment
//! sent with `smolpaws dev comment`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::Signal;
use serde_json::json;
use smolpaws::dev::session::Session;
use support::dev::{LLM_KEY, Running, descendants, dev_client, smolpaws};
use support::fake_llm::{FakeLlm, Reply, bash, finish};
use support::git_remote::git;

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
    let dev = Running::start(
        &[],
        &llm.base_url,
        "widgets",
        &[("README.md", "helo world\n")],
    )
    .await;
    let repo = dev.repo.as_path();
    let said = dev.comment("@smolpaws fix the typo in the README").await;
    assert!(said.contains("Fixed the typo in README.md."), "{said}");

    // The working tree is as it was; the change is a new local branch.
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).expect("read"),
        "helo world\n",
        "the agent left the working tree alone"
    );
    let branch = git(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/smolpaws",
        ],
    );
    assert!(branch.starts_with("smolpaws/"), "a branch: {branch}");
    assert_eq!(
        git(repo, &["show", &format!("{branch}:README.md")]),
        "hello world"
    );
    assert_eq!(
        git(repo, &["rev-list", "--count", &format!("main..{branch}")]),
        "1"
    );
    assert_eq!(
        git(repo, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert!(said.contains(&format!("`git merge {branch}`")), "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dev
        .printed()
        .iter()
        .any(|l| l.contains("Fixed the typo in README.md."))
    {
        assert!(
            Instant::now() < deadline,
            "dev mode printed no reply: {:?}",
            dev.printed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let printed = dev.printed().join("\n");
    let kubeconfig = &dev.session.kubeconfig;
    assert!(
        printed.contains(&kubeconfig.display().to_string()),
        "{printed}"
    );

    let run = dev.only_run().await;
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
    let log = support::smolpaws_logs(kubeconfig, "default", name).await;
    // The agent logs its last step before it reports; once the result is
    // stored the controller stops the sandbox, so nothing after is certain.
    assert!(log.contains("\"finished\""), "the sandbox's output: {log}");
    assert!(!log.contains(LLM_KEY), "no key in the log: {log}");

    let children = descendants(dev.dev.id().expect("a pid"));
    assert!(
        children.len() >= 2,
        "etcd and kube-apiserver run under dev mode: {children:?}"
    );
    dev.stop(Signal::SIGINT).await;
    let left: Vec<u32> = children
        .into_iter()
        .filter(|p| smolpaws::process::running(*p))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
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

/// The kernel settings a node's kubelet changes.
fn sysctls() -> Vec<(&'static str, String)> {
    smolpaws::node::host::settings().expect("the kernel settings are readable")
}

/// The cgroup parents, in every hierarchy, of the node process `owner`
/// started (its directory's owner file names it).
fn node_cgroups(owner: u32) -> Vec<std::path::PathBuf> {
    use smolpaws::node::host::{OWNER_FILE, PREFIX};
    let owned = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join(OWNER_FILE))
            .is_ok_and(|pid| pid.trim() == owner.to_string())
    };
    let names: Vec<std::ffi::OsString> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX) && owned(&e.path()))
        .map(|e| e.file_name())
        .collect();
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|hierarchy| names.iter().map(move |n| hierarchy.path().join(n)))
        .filter(|path| path.exists())
        .collect()
}

/// The processes whose network namespace is `namespace` (a `net:[inode]`).
fn in_network(namespace: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|link| link.to_string_lossy() == namespace)
        })
        .collect()
}

fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_pods_answers_a_comment_from_a_real_pod_and_sigterm_leaves_the_host_as_it_was() {
    let before = sysctls();
    let llm = FakeLlm::start([
        bash("cat notes.md && id -u && git log --oneline -1"),
        finish("The notes say hello."),
    ])
    .await;
    let began = Instant::now();
    let dev = Running::pods_beside_notes(&llm.base_url).await;
    eprintln!("dev --pods: ready in {:.2?}", began.elapsed());

    // The controller deletes a pod once its agent reported: every pod
    // state is recorded as it comes.
    let pods = Api::<Pod>::namespaced(dev_client(&dev.session).await, "default");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let recorder = tokio::spawn(
        watcher(pods, watcher::Config::default())
            .applied_objects()
            .for_each(move |pod| {
                if let Ok(pod) = pod {
                    recorded.lock().expect("the pods seen").push(pod);
                }
                futures::future::ready(())
            }),
    );
    let asked = Instant::now();
    let said = dev.comment("@smolpaws what do the notes say?").await;
    eprintln!("dev --pods: comment answered in {:.2?}", asked.elapsed());
    assert!(said.contains("The notes say hello."), "{said}");
    // The agent cloned the local repository from the node's git daemon and
    // ran as the sandbox's uid.
    llm.assert_last_turn_saw(2, &["the notes say hello", "65532"]);
    assert!(
        !llm.bodies().iter().any(|r| r.contains(LLM_KEY)),
        "the key stays with the gateway"
    );

    // The run's sandbox was a pod the node's containerd ran.
    let run = dev.only_run().await;
    recorder.abort();
    let started = seen
        .lock()
        .expect("the pods seen")
        .iter()
        .rev()
        .find(|pod| {
            pod.metadata.name == run.metadata.name
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.container_id.is_some()))
        })
        .cloned()
        .expect("the run's pod was seen started");
    support::node::assert_ran_under_containerd(started.status);

    // What the node is, to see it gone.
    let pid = dev.dev.id().expect("a pid");
    let processes = descendants(pid);
    let kubelet = processes
        .iter()
        .copied()
        .find(|p| command_name(*p) == "kubelet")
        .expect("a kubelet runs under dev mode");
    let network = std::fs::read_link(format!("/proc/{kubelet}/ns/net"))
        .expect("the kubelet's network")
        .to_string_lossy()
        .into_owned();
    let cgroups = node_cgroups(pid);
    assert!(!cgroups.is_empty(), "the node's cgroup parent exists");

    dev.stop(Signal::SIGTERM).await;
    let left: Vec<(u32, String)> = processes
        .into_iter()
        .filter(|p| smolpaws::process::running(*p))
        .map(|p| (p, command_name(p)))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert_eq!(
        in_network(&network),
        Vec::<u32>::new(),
        "the node's network is gone"
    );
    assert_eq!(sysctls(), before, "the host's settings are restored");
    let kept: Vec<_> = cgroups.into_iter().filter(|c| c.exists()).collect();
    assert!(kept.is_empty(), "cgroups left behind: {kept:?}");
}

#[tokio::test]
async fn dev_pods_without_the_node_s_parts_names_the_missing_one_and_fails() {
    let dev_dir = tempfile::tempdir().expect("a dev dir");
    let parts = tempfile::tempdir().expect("an empty parts directory");
    let output = smolpaws(dev_dir.path())
        .args(["dev", "--pods", "--listen", "127.0.0.1:0"])
        .env("LLM_MODEL", "scripted-model")
        .env("LLM_BASE_URL", "http://127.0.0.1:9/v1")
        .env(smolpaws::node::PARTS_DIR_VAR, parts.path())
        .output()
        .await
        .expect("smolpaws dev runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let kubelet = parts.path().join("kubelet");
    assert!(
        stderr.contains(&format!("{}", kubelet.display()))
            && stderr.contains("tools/node/build.sh"),
        "names the kubelet and what builds it: {stderr}"
    );
    assert!(Session::load(dev_dir.path()).is_err(), "nothing started");
}
