//! Controller figures on the local control plane (kube-apiserver + etcd on
//! loopback, GitHub off):
//! - time from an AgentRun being created to its sandbox pod being created,
//!   p50/p99 over 200 runs created back to back, with the apiserver's own
//!   account of the calls it served meanwhile (how many per run, of which
//!   kind, how long each took there) beside the floor's;
//! - with 10,000 AgentRuns stored, the release controller's initial sync time
//!   and resident memory.
//!
//! `cargo bench --bench controller`

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use smolpaws::api::{AgentRun, AgentRunSpec, GitHubContext};
use smolpaws::controller::ControllerArgs;
use smolpaws::controller::reconcile::FINALIZER;
use smolpaws::controlplane::{self, ControlPlane, Tools};
use smolpaws::operator::{self, Operator};
use smolpaws::process::Process;

const LATENCY_RUNS: usize = 200;
const STORED_RUNS: usize = 10_000;

/// The controller's flags at their defaults, changed below as typed fields.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    controller: ControllerArgs,
}

fn spec(number: i64) -> AgentRunSpec {
    AgentRunSpec {
        prompt: "why does the parser drop trailing commas?".into(),
        github: GitHubContext {
            installation_id: None,
            repository: "octo-org/hello-world".into(),
            number,
            pull_request: false,
            comment: None,
            head: None,
            post_reply: true,
            delivery_id: None,
            changes: None,
            allow_workflow_changes: false,
        },
        sandbox: Default::default(),
        agent: None,
    }
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("default".into());
    Api::<ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &account)
        .await?;
    Ok(())
}

/// The apiserver's own record of the requests it served (its
/// `apiserver_request_duration_seconds` metric, watches left out): by verb
/// and resource, how many and their summed time in seconds.
async fn served(client: &Client) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut served: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (sum, labels) = if let Some(l) =
            series.strip_prefix("apiserver_request_duration_seconds_sum{")
        {
            (true, l)
        } else if let Some(l) = series.strip_prefix("apiserver_request_duration_seconds_count{") {
            (false, l)
        } else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if matches!(verb.as_str(), "WATCH" | "CONNECT") {
            continue;
        }
        let mut resource = label("resource");
        let subresource = label("subresource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        let entry = served.entry(format!("{verb} {resource}")).or_default();
        let value: f64 = value.parse().unwrap_or(0.0);
        if sum {
            entry.1 += value;
        } else {
            entry.0 += value;
        }
    }
    Ok(served)
}

/// What the apiserver served between `before` and `after`, per object made:
/// the calls by verb and resource, with their mean time, busiest first.
fn per_object(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    objects: usize,
) -> String {
    let mut calls: Vec<(String, f64, f64)> = after
        .iter()
        .filter_map(|(call, (count, sum))| {
            let (count_before, sum_before) = before.get(call).copied().unwrap_or_default();
            let count = count - count_before;
            (count >= 1.0).then(|| (call.clone(), count, sum - sum_before))
        })
        .collect();
    calls.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = calls.iter().map(|c| c.1).sum();
    let parts: Vec<String> = calls
        .iter()
        .map(|(call, count, sum)| {
            format!(
                "{call} {:.2}/object, mean {:.1} ms",
                count / objects as f64,
                sum / count * 1e3
            )
        })
        .collect();
    format!(
        "{:.1} apiserver calls per object: {}",
        total / objects as f64,
        parts.join("; ")
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// For each of [`LATENCY_RUNS`] objects made back to back by `create` (given
/// a name), the time from its creation returning to a pod of the same name
/// appearing in `namespace`.
async fn to_pod<F, Fut>(
    client: &Client,
    namespace: &str,
    create: F,
) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = tokio::spawn({
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let seen = seen.clone();
        async move {
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(pod) = event {
                    let name = pod.metadata.name.unwrap_or_default();
                    seen.lock()
                        .expect("seen")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    // Let the watches settle before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut created = HashMap::new();
    for index in 0..LATENCY_RUNS {
        let name = format!("run-{index:03}");
        create(name.clone()).await?;
        created.insert(name, Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().expect("seen").len() < LATENCY_RUNS {
        if Instant::now() > deadline {
            bail!(
                "only {} of {LATENCY_RUNS} pods appeared in {namespace}",
                seen.lock().expect("seen").len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.abort();
    let seen = seen.lock().expect("seen").clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, at)| seen[name].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    Ok(latencies)
}

async fn created_to_pod(client: &Client) -> anyhow::Result<()> {
    namespace(client, "latency").await?;
    let mut args = Args::try_parse_from(["controller"])?.controller;
    args.watch_namespace = Some("latency".into());
    args.max_concurrent_runs = 100_000;
    args.max_runs_per_repo = 100_000;
    args.max_pending_runs_per_repo = 100_000;
    let mut config = args.config();
    config.lease = None;
    let environment = operator::agent_environment(&args, "http://127.0.0.1:9");
    let sandboxes = operator::cluster_sandboxes(client, &args, &environment);
    let parts = operator::controller_parts(&args, sandboxes)?;
    let results = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let composed = Operator::new(client.clone()).controller(config, parts, results);
    let controller = tokio::spawn(composed.run(admin, tokio_util::sync::CancellationToken::new()));
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), "latency");
    let before = served(client).await?;
    let latencies = to_pod(client, "latency", |name| {
        let runs = runs.clone();
        async move {
            let number = name.trim_start_matches("run-").parse::<i64>()? + 1;
            runs.create(&PostParams::default(), &AgentRun::new(&name, spec(number)))
                .await?;
            Ok(())
        }
    })
    .await?;
    let ours = per_object(&before, &served(client).await?, LATENCY_RUNS);
    controller.abort();

    // The floor: a stand-in controller that only turns each watched
    // ConfigMap into a pod of its name: one watch event delivered, one Pod
    // created, on the same apiserver in the same run.
    namespace(client, "floor").await?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "floor");
    let standin = tokio::spawn({
        let maps = maps.clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "floor");
        async move {
            let mut events = watcher(maps, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(map)) = events.next().await {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": { "name": map.metadata.name },
                    "spec": { "containers": [{ "name": "agent", "image": "smolpaws" }] },
                }))
                .expect("a pod");
                let _ = pods.create(&PostParams::default(), &pod).await;
            }
        }
    });
    let before = served(client).await?;
    let floor = to_pod(client, "floor", |name| {
        let maps = maps.clone();
        async move {
            let mut map = ConfigMap::default();
            map.metadata.name = Some(name);
            maps.create(&PostParams::default(), &map).await?;
            Ok(())
        }
    })
    .await?;
    let floor_calls = per_object(&before, &served(client).await?, LATENCY_RUNS);
    standin.abort();
    println!("while the controller made its {LATENCY_RUNS} pods, {ours}");
    println!("while the stand-in made its {LATENCY_RUNS} pods (floor), {floor_calls}");

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| AgentRun created → sandbox Pod created, {LATENCY_RUNS} back to back, p99 (p50) | {:.1} ms ({:.1} ms) | watch event + Pod create (floor) {:.1} ms ({:.1} ms) | {:.1}× | ≤ 100 ms |",
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&floor, 0.99)),
        ms(percentile(&floor, 0.5)),
        percentile(&latencies, 0.99).as_secs_f64() / percentile(&floor, 0.99).as_secs_f64(),
    );
    Ok(())
}

async fn initial_sync(plane: &ControlPlane, client: &Client) -> anyhow::Result<()> {
    namespace(client, "stored").await?;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), "stored");
    let began = Instant::now();
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    futures::stream::iter(0..STORED_RUNS)
        .map(|index| {
            let runs = runs.clone();
            let now = now.clone();
            async move {
                let name = format!("run-{index:05}");
                let mut run = AgentRun::new(&name, spec(index as i64 + 1));
                // As a previous controller would have left them.
                run.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
                runs.create(&PostParams::default(), &run).await?;
                // Finished and answered: the controller has nothing to do
                // but hold them in its store.
                let status = json!({ "status": {
                    "phase": "Succeeded",
                    "finishedAt": now,
                    "reply": { "id": index + 1, "htmlUrl": "https://github.com/octo-org/hello-world/issues/1" },
                    "result": { "reply": "done", "usage": { "promptTokens": 1200, "completionTokens": 80 } },
                }});
                runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "stored {STORED_RUNS} finished AgentRuns in {:.1?}",
        began.elapsed()
    );
    // The apiserver's watch cache digests those writes after answering
    // them; the controller starts once a cached list is current.
    let settled = Instant::now();
    loop {
        let current = runs.list_metadata(&ListParams::default().limit(1)).await?;
        let version = current.metadata.resource_version.unwrap_or_default();
        let cached = ListParams::default()
            .limit(1)
            .at(&version)
            .matching(VersionMatch::NotOlderThan);
        let caught_up =
            tokio::time::timeout(Duration::from_secs(2), runs.list_metadata(&cached)).await;
        if matches!(caught_up, Ok(Ok(_))) {
            break;
        }
        if settled.elapsed() > Duration::from_secs(600) {
            bail!("the apiserver's watch cache did not catch up in 10 minutes");
        }
    }
    println!(
        "the apiserver's watch cache caught up {:.1?} later",
        settled.elapsed()
    );

    let log = plane.dir().join("controller.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"));
    command
        .args([
            "controller",
            "--result-url=http://127.0.0.1:9",
            "--watch-namespace=stored",
        ])
        .args([
            "--lease-namespace=stored",
            "--metrics-listen=127.0.0.1:0",
            "--result-listen=127.0.0.1:0",
        ])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("SMOLPAWS_LOG_FORMAT", "json")
        // kube-runtime says "store is ready" once its initial list is in.
        .env("RUST_LOG", "info,kube_runtime::controller=debug");
    let started = Instant::now();
    let mut process = Process::spawn("smolpaws controller", command, &log)?;
    let synced = loop {
        if let Some(status) = process.exited() {
            bail!(
                "the controller exited with {status}: {}",
                process.log_tail(20)
            );
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines = || {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        };
        let time = |message: &str| {
            lines().find(|l| l["message"] == message).and_then(|l| {
                l["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            })
        };
        if let (Some(leading), Some(ready)) = (
            time("leading: reconciling AgentRuns"),
            time("store is ready, starting runner"),
        ) {
            break ready.duration_since(leading);
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("no initial sync after 5 minutes: {}", process.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to_sync = started.elapsed();
    let rss_at_sync = memory(process.id(), "VmRSS:");
    // Every run is reconciled once after the sync (its finalizer added).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss = memory(process.id(), "VmRSS:");
    println!(
        "controller with {STORED_RUNS} AgentRuns: initial sync {:.2} s after it began leading ({:.2} s from process start, incl. leader election); resident memory {:.1} MiB at sync, {:.1} MiB after reconciling all, peak {:.1} MiB",
        synced.as_secs_f64(),
        to_sync.as_secs_f64(),
        rss_at_sync,
        rss,
        memory(process.id(), "VmHWM:"),
    );
    let (objects, managed) = json_size(&runs).await?;
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "| controller RSS, {STORED_RUNS} finished AgentRuns, after sync and reconcile | {rss:.1} MiB | the runs' JSON as listed {:.1} MiB, {:.1} MiB of it managedFields | {:.1}× | ≤ 64 MiB |",
        mib(objects),
        mib(managed),
        rss / mib(objects),
    );
    Ok(())
}

/// The JSON size of every run in `runs` as the apiserver lists them, and
/// how much of it is their managedFields.
async fn json_size(runs: &Api<AgentRun>) -> anyhow::Result<(usize, usize)> {
    let (mut objects, mut managed) = (0, 0);
    let mut params = ListParams::default().limit(500);
    loop {
        let page = runs.list(&params).await?;
        for run in &page.items {
            objects += serde_json::to_vec(run)?.len();
            managed += serde_json::to_vec(&run.metadata.managed_fields)?.len();
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok((objects, managed)),
        }
    }
}

/// A memory figure of `pid` from /proc, in MiB.
fn memory(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tools = Tools::locate().await?;
    let plane = ControlPlane::start(&tools).await?;
    let client = plane.client()?;
    controlplane::install_crds(&client, &[AgentRun::crd()]).await?;
    let version = client.apiserver_version().await?.git_version;
    println!("controller benchmarks: kube-apiserver {version} + etcd on loopback, GitHub off");
    created_to_pod(&client).await?;
    initial_sync(&plane, &client).await?;
    Ok(())
}
