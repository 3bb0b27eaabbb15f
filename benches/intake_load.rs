//! End-to-end intake load on loopback: the release `smolpaws intake` binary,
//! pinned to one core, against a local kube-apiserver and etcd, driven by
//! vegeta at fixed rates. Each accepted delivery is a new comment (its own
//! body, signature and run). Prints latency percentiles from request to
//! answer beside the apiserver's own create latency for the same AgentRun,
//! sampled in the same run; the rate of refused (bad signature) deliveries;
//! and the intake's memory.
//!
//! `bash benches/intake_load.sh` installs vegeta and runs this. Knobs:
//! `RATES` (accepted deliveries per second, default "50 500"), `SECONDS`
//! (default 30), `INTAKE_CPU` (the core the intake is pinned to, default 0;
//! vegeta gets the others).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

/// One vegeta target per (delivery id, body file, signature).
fn targets(url: &str, deliveries: impl Iterator<Item = (String, PathBuf, String)>) -> String {
    let mut text = String::new();
    for (delivery, body, signature) in deliveries {
        let _ = write!(
            text,
            "POST {url}\nContent-Type: application/json\nX-GitHub-Event: issue_comment\n\
             X-GitHub-Delivery: {delivery}\nX-Hub-Signature-256: {signature}\n@{}\n\n",
            body.display()
        );
    }
    text
}

/// The apiserver's own create latency for AgentRuns like those the intake
/// stores, sampled `per_second` times a second until `stop` is cancelled;
/// the runs are named after `label`.
async fn sample_creates(
    runs: Api<AgentRun>,
    template: AgentRun,
    label: String,
    per_second: u64,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_second));
    let mut index = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        let mut run = template.clone();
        run.metadata.name = Some(format!("{label}-{index}"));
        index += 1;
        let started = Instant::now();
        runs.create(&PostParams::default(), &run).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// Runs `vegeta attack`, on `cpus`, with `args` on `targets` and returns its JSON report.
fn attack(
    vegeta: &str,
    cpus: &str,
    dir: &Path,
    name: &str,
    targets: &str,
    args: &[&str],
) -> anyhow::Result<Value> {
    let targets_path = dir.join(format!("{name}.targets"));
    std::fs::write(&targets_path, targets)?;
    let results = dir.join(format!("{name}.bin"));
    let mut attacking = Command::new("taskset")
        .args(["-c", cpus, vegeta])
        .arg("attack")
        .arg("-format=http")
        .arg(format!("-targets={}", targets_path.display()))
        .arg(format!("-output={}", results.display()))
        .args(args)
        .spawn()
        .context("running vegeta attack")?;
    // taskset execs vegeta in place: the child is vegeta. Its CPU time is
    // read while it runs (gone once it exits), so the last moments are
    // missed: a floor of what the load generator spent.
    let mut generator = Duration::ZERO;
    let status = loop {
        if let Some(status) = attacking.try_wait()? {
            break status;
        }
        generator = cpu_time(attacking.id()).max(generator);
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(status.success(), "vegeta attack failed: {status}");
    println!(
        "{name}: the load generator (vegeta) used at least {:.1} CPU-seconds",
        generator.as_secs_f64()
    );
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

/// The CPU time all threads of `pid` have run for (the kernel's own
/// account, `/proc/<pid>/task/*/schedstat`); zero once it is gone.
fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(Duration::from_nanos)
        .sum()
}

/// The machine's load average, printed beside a figure taken on shared
/// cores.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vegeta = std::env::var("VEGETA").unwrap_or_else(|_| "vegeta".into());
    let rates: Vec<u64> = std::env::var("RATES")
        .unwrap_or_else(|_| "50 500".into())
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("RATES: deliveries per second, separated by spaces")?;
    let seconds = env_number("SECONDS", 30);
    let intake_cpu = env_number("INTAKE_CPU", 0);
    let cores = std::thread::available_parallelism()?.get() as u64;
    ensure!(cores >= 2, "pinning the intake to one core needs two");
    // vegeta (and only it, of the processes this bench starts) runs beside.
    let load_cpus = (0..cores)
        .filter(|cpu| *cpu != intake_cpu)
        .map(|cpu| cpu.to_string())
        .collect::<Vec<_>>()
        .join(",");

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
    let mut intake = Command::new("taskset");
    intake
        .args([
            "-c",
            &intake_cpu.to_string(),
            env!("CARGO_BIN_EXE_smolpaws"),
        ])
        .args(["intake", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--namespace", NAMESPACE])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("GITHUB_WEBHOOK_SECRET", SECRET)
        .env("ALLOWED_ACTORS", "Codertocat")
        .env("ALLOWED_OWNERS", "Codertocat")
        // One actor sends every delivery here: no hourly cap.
        .env("SMOLPAWS_RUNS_PER_ACTOR_PER_HOUR", "0")
        .env("SMOLPAWS_RUNS_PER_REPO_PER_HOUR", "0")
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
    // Fresh, or the intake ignores it as a stale redelivery.
    payload["comment"]["created_at"] = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .into();
    let secret = SecretString::from(SECRET);
    let url = format!("{base}/webhooks/github");
    let version = client.apiserver_version().await?.git_version;
    println!(
        "intake load on loopback: release smolpaws intake pinned to CPU {intake_cpu}, vegeta on CPU {load_cpus}, kube-apiserver {version} + etcd (unpinned), all on one machine"
    );
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), NAMESPACE);
    let template: AgentRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "smolpaws.dev/v1alpha1", "kind": "AgentRun",
        "metadata": { "name": "floor" },
        "spec": {
            "prompt": "why does the parser drop trailing commas?",
            "github": { "repository": "Codertocat/Hello-World", "number": 1 },
        },
    }))?;
    let mut comment = 1_000_000u64;
    let mut rows = Vec::new();
    for rate in rates {
        // Each delivery a new comment, so each is stored as a new run.
        let bodies = plane.dir().join(format!("bodies-{rate}"));
        std::fs::create_dir_all(&bodies)?;
        let mut deliveries = Vec::new();
        for i in 0..rate * seconds {
            comment += 1;
            payload["comment"]["id"] = comment.into();
            let body = serde_json::to_vec_pretty(&payload)?;
            let path = bodies.join(format!("{comment}.json"));
            std::fs::write(&path, &body)?;
            deliveries.push((
                format!("a0000000-0000-4000-8000-{i:012x}"),
                path,
                sign(&secret, &body),
            ));
        }
        let before = runs
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        let stop = tokio_util::sync::CancellationToken::new();
        let sampling = tokio::spawn(sample_creates(
            runs.clone(),
            template.clone(),
            format!("floor-{rate}"),
            10,
            stop.clone(),
        ));
        let intake_cpu_before = cpu_time(intake.id());
        let accepted = attack(
            &vegeta,
            &load_cpus,
            plane.dir(),
            &format!("accepted-{rate}"),
            &targets(&url, deliveries.into_iter()),
            &[&format!("-rate={rate}/s"), &format!("-duration={seconds}s")],
        )?;
        let intake_busy = cpu_time(intake.id()).saturating_sub(intake_cpu_before);
        stop.cancel();
        let mut floor = sampling.await??;
        floor.sort();
        let stored = runs
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len()
            .saturating_sub(before + floor.len());
        std::fs::remove_dir_all(&bodies)?;
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
        // The intake's own share of a delivery's time: what it computes
        // (signature, parse, policy, the run's JSON, HTTP both ways); the
        // rest of the wait is the apiserver's.
        println!(
            "  the intake spent {:.1} µs of CPU per delivery; the machine's load average {}",
            intake_busy.as_secs_f64() * 1e6 / accepted["requests"].as_f64().unwrap_or(f64::NAN),
            load_average(),
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        rows.push(format!(
            "| accepted webhook → 202 at {rate}/s for {seconds} s, p99 (p50) | {:.1} ms ({:.1} ms) | the apiserver's AgentRun create, {} sampled in the same run (floor) {:.1} ms ({:.1} ms) | {:.1}× | ≤ 20 ms at 500/s |",
            millis(&accepted, "99th"),
            millis(&accepted, "50th"),
            floor.len(),
            ms(percentile(&floor, 0.99)),
            ms(percentile(&floor, 0.5)),
            millis(&accepted, "99th") / ms(percentile(&floor, 0.99)),
        ));
    }

    let body = serde_json::to_vec_pretty(&payload)?;
    let body_path = plane.dir().join("delivery.json");
    std::fs::write(&body_path, &body)?;
    let bad_signature = sign(&SecretString::from("wrong"), &body);
    let rejected_targets = targets(
        &url,
        std::iter::once((
            "b0000000-0000-4000-8000-000000000000".to_owned(),
            body_path,
            bad_signature,
        )),
    );
    let intake_cpu_before = cpu_time(intake.id());
    let rejected = attack(
        &vegeta,
        &load_cpus,
        plane.dir(),
        "rejected",
        &rejected_targets,
        &["-rate=0", "-max-workers=32", "-duration=15s"],
    )?;
    let intake_busy = cpu_time(intake.id()).saturating_sub(intake_cpu_before);
    let answered = rejected["requests"].as_f64().unwrap_or(f64::NAN);
    println!(
        "rejected deliveries (bad signature, 32 workers, 15s): {} requests, status codes {}",
        rejected["requests"], rejected["status_codes"]
    );
    println!(
        "  latency to 401: p50 {:.3} ms, p99 {:.3} ms",
        millis(&rejected, "50th"),
        millis(&rejected, "99th")
    );
    // What the intake's core can do is the deliveries per second of CPU
    // it spent on them: the rate reached is also bounded by whatever else
    // the machine runs on that core, and by the load generator.
    println!(
        "  the intake spent {:.1} CPU-seconds on them: {:.1} µs per delivery, {:.0} per second of one core; the machine's load average {}",
        intake_busy.as_secs_f64(),
        intake_busy.as_secs_f64() * 1e6 / answered,
        answered / intake_busy.as_secs_f64(),
        load_average(),
    );
    rows.push(format!(
        "| rejected (bad signature) deliveries per second, intake on one core | {:.0}/s reached; {:.0}/s per CPU-second of the intake | — | | ≥ 20,000/s |",
        rejected["rate"].as_f64().unwrap_or(f64::NAN),
        answered / intake_busy.as_secs_f64(),
    ));
    if let Some(kib) = resident_kib(intake.id()) {
        println!(
            "intake peak resident memory: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    println!(
        "\n| measure | figure | beside it | ratio | target |\n| --- | --- | --- | --- | --- |"
    );
    for row in rows {
        println!("{row}");
    }
    drop(intake);
    Ok(())
}
