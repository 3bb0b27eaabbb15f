//! End-to-end intake load on loopback: the release `smolpaws intake` binary
//! against a local kube-apiserver and etcd, driven by vegeta at a fixed rate.
//! Prints latency percentiles from request to answer, throughput, and the
//! intake's memory.
//!
//! `bash benches/intake_load.sh` installs vegeta and runs this. Knobs:
//! `RATE` (accepted deliveries per second, default 50), `SECONDS` (default 60).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, PostParams};
use secrecy::SecretString;
use serde_json::Value;
use smolpaws::api::AgentRun;
use smolpaws::controlplane::{self, ControlPlane, Tools};
use smolpaws::intake::signature::sign;
use smolpaws::process::Process;

const SECRET: &str = "load-secret";
const NAMESPACE: &str = "load";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One vegeta target per delivery id; the body (and so the signature) is the
/// same for all, as GitHub's redeliveries are.
fn targets(
    url: &str,
    body: &Path,
    signature: &str,
    deliveries: impl Iterator<Item = String>,
) -> String {
    let mut text = String::new();
    for delivery in deliveries {
        let _ = write!(
            text,
            "POST {url}\nContent-Type: application/json\nX-GitHub-Event: issue_comment\n\
             X-GitHub-Delivery: {delivery}\nX-Hub-Signature-256: {signature}\n@{}\n\n",
            body.display()
        );
    }
    text
}

/// Runs `vegeta attack` with `args` on `targets` and returns its JSON report.
fn attack(
    vegeta: &str,
    dir: &Path,
    name: &str,
    targets: &str,
    args: &[&str],
) -> anyhow::Result<Value> {
    let targets_path = dir.join(format!("{name}.targets"));
    std::fs::write(&targets_path, targets)?;
    let results = dir.join(format!("{name}.bin"));
    let status = Command::new(vegeta)
        .arg("attack")
        .arg("-format=http")
        .arg(format!("-targets={}", targets_path.display()))
        .arg(format!("-output={}", results.display()))
        .args(args)
        .status()
        .context("running vegeta attack")?;
    ensure!(status.success(), "vegeta attack failed: {status}");
    let report = Command::new(vegeta)
        .args(["report", "-type=json"])
        .arg(&results)
        .stderr(Stdio::inherit())
        .output()
        .context("running vegeta report")?;
    ensure!(report.status.success(), "vegeta report failed");
    let histogram = Command::new(vegeta)
        .args(["report", "-type=hist[0,5ms,10ms,50ms,100ms,500ms,1s,2s,5s]"])
        .arg(&results)
        .output()
        .context("running vegeta report")?;
    println!(
        "{name}: latency histogram\n{}",
        String::from_utf8_lossy(&histogram.stdout)
    );
    Ok(serde_json::from_slice(&report.stdout)?)
}

fn millis(report: &Value, field: &str) -> f64 {
    report["latencies"][field].as_f64().unwrap_or(f64::NAN) / 1e6
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vegeta = std::env::var("VEGETA").unwrap_or_else(|_| "vegeta".into());
    let rate = env_number("RATE", 50);
    let seconds = env_number("SECONDS", 60);

    let tools = Tools::locate().await?;
    let plane = ControlPlane::start(&tools).await?;
    let client = plane.client()?;
    controlplane::install_crds(&client, &[AgentRun::crd()]).await?;
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(NAMESPACE.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;

    // The first AgentRun write after the CRD is established sets up its
    // storage in the apiserver (seconds); measure the steady state after it.
    let warm = Instant::now();
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), NAMESPACE);
    let mut probe: AgentRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "smolpaws.dev/v1alpha1", "kind": "AgentRun",
        "metadata": { "name": "warm-up" },
        "spec": { "prompt": "warm up", "github": { "repository": "octo-org/warm-up", "number": 1 } },
    }))?;
    probe = runs.create(&PostParams::default(), &probe).await?;
    runs.delete(
        &probe.metadata.name.unwrap_or_default(),
        &Default::default(),
    )
    .await?;
    println!(
        "first AgentRun write after the CRD was established: {:.0?} (excluded below)",
        warm.elapsed()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut intake = Command::new(env!("CARGO_BIN_EXE_smolpaws"));
    intake
        .args(["intake", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--namespace", NAMESPACE])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("GITHUB_WEBHOOK_SECRET", SECRET)
        .env("ALLOWED_ACTORS", "Codertocat")
        .env("ALLOWED_OWNERS", "Codertocat")
        .env("RUST_LOG", "warn");
    let log = plane.dir().join("intake.log");
    let mut intake = Process::spawn("smolpaws intake", intake, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    smolpaws::tls::install_default_provider();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Some(status) = intake.exited() {
            bail!("the intake exited with {status}: {}", intake.log_tail(20));
        }
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        ready,
        "the intake never became ready: {}",
        intake.log_tail(20)
    );

    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/issue_comment_created.with-installation.json"
    );
    let mut payload: Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;
    payload["comment"]["body"] = "@smolpaws why does the parser drop trailing commas?".into();
    let body = serde_json::to_vec_pretty(&payload)?;
    let body_path = plane.dir().join("delivery.json");
    std::fs::write(&body_path, &body)?;
    let signature = sign(&SecretString::from(SECRET), &body);
    let url = format!("{base}/webhooks/github");

    let total = rate * seconds;
    let accepted_targets = targets(
        &url,
        &body_path,
        &signature,
        (0..total).map(|i| format!("a0000000-0000-4000-8000-{i:012x}")),
    );
    let accepted = attack(
        &vegeta,
        plane.dir(),
        "accepted",
        &accepted_targets,
        &[&format!("-rate={rate}/s"), &format!("-duration={seconds}s")],
    )?;
    let stored = Api::<AgentRun>::namespaced(client.clone(), NAMESPACE)
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();

    let bad_signature = sign(&SecretString::from("wrong"), &body);
    let rejected_targets = targets(
        &url,
        &body_path,
        &bad_signature,
        std::iter::once("b0000000-0000-4000-8000-000000000000".to_owned()),
    );
    let rejected = attack(
        &vegeta,
        plane.dir(),
        "rejected",
        &rejected_targets,
        &["-rate=0", "-max-workers=32", "-duration=15s"],
    )?;

    let version = client.apiserver_version().await?.git_version;
    println!(
        "intake load on loopback: release smolpaws intake, kube-apiserver {version} + etcd, vegeta, all on one machine"
    );
    println!(
        "accepted deliveries: {} sent at {rate}/s for {seconds}s, status codes {}, {stored} AgentRuns stored",
        accepted["requests"], accepted["status_codes"]
    );
    println!(
        "  latency to 202: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        millis(&accepted, "50th"),
        millis(&accepted, "90th"),
        millis(&accepted, "99th"),
        millis(&accepted, "max")
    );
    println!(
        "rejected deliveries (bad signature, 32 workers, 15s): {} requests, {:.0} requests/s, status codes {}",
        rejected["requests"],
        rejected["rate"].as_f64().unwrap_or(f64::NAN),
        rejected["status_codes"]
    );
    println!(
        "  latency to 401: p50 {:.3} ms, p99 {:.3} ms",
        millis(&rejected, "50th"),
        millis(&rejected, "99th")
    );
    if let Some(kib) = resident_kib(intake.id()) {
        println!(
            "intake peak resident memory: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    drop(intake);
    Ok(())
}
