//! A stand-in for the kubelet, since the test control plane has none: it
//! watches a namespace's pods, runs each pod's agent container as a local
//! process (the pod's own command and env, Secret references resolved, with
//! the in-image agent path mapped to a local program), and writes the pod's
//! status as a kubelet would. It registers a Node for itself, binds the pods
//! it runs to it, and serves their output to the apiserver (`kubectl logs`)
//! through [`super::kubelet_api`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use smolpaws::sandbox::pod::AGENT_BINARY;
use tokio_util::sync::CancellationToken;

use super::kubelet_api::{self, Logs};

/// What the "node" does with a pod.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Runs the pod's command with the agent binary mapped to this program.
    Run(PathBuf),
    /// Never starts the container: the pod waits with this reason.
    Waiting(&'static str),
    /// Starts, then is killed for exceeding its memory limit.
    OomKilled,
}

/// The stand-in kubelet of one namespace; stops when dropped.
pub struct Kubelet {
    stop: CancellationToken,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
    logs: Arc<Logs>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Kubelet {
    /// The most agent processes that ran at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// How many pods were started.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// What pod `pod`'s agent container wrote, so far.
    pub fn log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.logs.path(pod)).unwrap_or_default()
    }

    /// Starts serving `namespace`, deciding each pod's fate with `behaviour`.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        behaviour: impl Fn(&Pod) -> Behaviour + Send + Sync + 'static,
    ) -> Self {
        let stop = CancellationToken::new();
        let logs = Logs::new();
        let kubelet = Self {
            stop: stop.clone(),
            running: Arc::default(),
            most: Arc::default(),
            started: Arc::default(),
            logs: logs.clone(),
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let node = format!("stand-in-{namespace}");
        let behaviour = Arc::new(behaviour);
        let (running, most, started) = (
            kubelet.running.clone(),
            kubelet.most.clone(),
            kubelet.started.clone(),
        );
        tokio::spawn(async move {
            let port = kubelet_api::serve(logs.clone()).await;
            register(&client, &node, port).await;
            // By uid, as a kubelet tracks pods: a pod made again under a
            // deleted one's name is a new pod.
            let live: Arc<Mutex<HashMap<String, CancellationToken>>> = Arc::default();
            let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if pod.metadata.deletion_timestamp.is_some() {
                            // A bound pod is deleted gracefully: its kubelet
                            // stops the container, then confirms at once.
                            if let Some(token) = live.lock().expect("kubelet state").get(&uid) {
                                token.cancel();
                            }
                            let now = DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::default()
                            };
                            let _ = pods.delete(&name, &now).await;
                            continue;
                        }
                        let token = {
                            let mut live = live.lock().expect("kubelet state");
                            if live.contains_key(&uid) {
                                continue;
                            }
                            let token = stop.child_token();
                            live.insert(uid, token.clone());
                            token
                        };
                        started.fetch_add(1, Ordering::SeqCst);
                        let fate = behaviour(&pod);
                        let gauge = Gauge {
                            running: running.clone(),
                            most: most.clone(),
                        };
                        tokio::spawn(run_pod(
                            Host {
                                pods: pods.clone(),
                                secrets: secrets.clone(),
                                name: node.clone(),
                                logs: logs.clone(),
                            },
                            pod,
                            fate,
                            token,
                            gauge,
                        ));
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        let uid = pod.metadata.uid.unwrap_or_default();
                        if let Some(token) = live.lock().expect("kubelet state").remove(&uid) {
                            token.cancel();
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
        kubelet
    }
}

/// Registers the Node `name`, its kubelet API at 127.0.0.1:`port`.
async fn register(client: &kube::Client, name: &str, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = Node::default();
    node.metadata.name = Some(name.to_owned());
    // A Node left by an earlier run of the same namespace name is reused.
    let _ = nodes.create(&PostParams::default(), &node).await;
    let status = json!({ "status": {
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": port } },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the stand-in Node's status");
}

/// What a pod needs of the node it runs on.
struct Host {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    name: String,
    logs: Arc<Logs>,
}

/// Counts agent processes running at once.
struct Gauge {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Gauge {
    fn up(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn down(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn write_status(pods: &Api<Pod>, name: &str, status: Value) {
    // The pod may be gone (deleted by the controller); nothing to report then.
    let _ = pods
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await;
}

fn agent_status(image: &str, state: Value, ready: bool) -> Value {
    json!([{
        "name": "agent",
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": ready,
        "state": state,
    }])
}

/// The container's environment with Secret references resolved, as the
/// kubelet hands it to the container.
async fn resolve_env(secrets: &Api<Secret>, pod: &Pod) -> Vec<(String, String)> {
    let container = &pod.spec.as_ref().expect("a pod spec").containers[0];
    let mut resolved = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            resolved.push((var.name.clone(), value.clone()));
        } else if let Some(selector) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let secret = secrets
                .get(&selector.name)
                .await
                .expect("the referenced Secret exists");
            let value = secret.data.unwrap_or_default().remove(&selector.key);
            match value {
                Some(bytes) => resolved.push((
                    var.name.clone(),
                    String::from_utf8(bytes.0).expect("UTF-8 secret"),
                )),
                None => assert_eq!(
                    selector.optional,
                    Some(true),
                    "required key {} missing",
                    selector.key
                ),
            }
        }
    }
    resolved
}

async fn run_pod(node: Host, pod: Pod, fate: Behaviour, stop: CancellationToken, gauge: Gauge) {
    let Host {
        pods,
        secrets,
        name: node,
        logs,
    } = node;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": name },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    // A pod deleted before it was bound needs no node.
    let _ = pods
        .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
        .await;
    let spec = pod.spec.clone().expect("a pod spec");
    let container = &spec.containers[0];
    let image = container.image.clone().unwrap_or_default();
    let program = match fate {
        Behaviour::Waiting(reason) => {
            let waiting = json!({ "waiting": { "reason": reason, "message": format!("{reason} (stand-in kubelet)") } });
            write_status(
                &pods,
                &name,
                json!({
                    "phase": "Pending",
                    "containerStatuses": agent_status(&image, waiting, false),
                }),
            )
            .await;
            return;
        }
        Behaviour::OomKilled => None,
        Behaviour::Run(program) => Some(program),
    };
    let started = now();
    write_status(&pods, &name, json!({
        "phase": "Running",
        "startTime": started,
        "containerStatuses": agent_status(&image, json!({ "running": { "startedAt": started } }), true),
    })).await;
    gauge.up();
    let (code, reason) = match program {
        None => {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            (137, "OOMKilled")
        }
        Some(program) => {
            let command = container.command.clone().expect("a command");
            assert_eq!(
                command[0], AGENT_BINARY,
                "the agent runs from the copied binary"
            );
            let workspace = tempfile::tempdir().expect("a workspace");
            let output = std::fs::File::create(logs.path(&name)).expect("a container log");
            let mut child = tokio::process::Command::new(&program)
                .stdout(output.try_clone().expect("a log handle"))
                .stderr(output)
                .args(&command[1..])
                .env_clear()
                .envs(resolve_env(&secrets, &pod).await)
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .current_dir(workspace.path())
                .kill_on_drop(true)
                .spawn()
                .expect("the stand-in agent starts");
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
                    (code, if code == 0 { "Completed" } else { "Error" })
                }
                () = stop.cancelled() => {
                    // Deleted: the process is killed with the pod.
                    gauge.down();
                    logs.ended(&name);
                    return;
                }
            }
        }
    };
    gauge.down();
    logs.ended(&name);
    let finished = now();
    let terminated = json!({ "terminated": {
        "exitCode": code,
        "reason": reason,
        "startedAt": started,
        "finishedAt": finished,
    }});
    write_status(
        &pods,
        &name,
        json!({
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": agent_status(&image, terminated, false),
        }),
    )
    .await;
}
