//! In-process cost of one delivery: signature check, parse and policy on the
//! 16 KB `issue_comment` fixture, as the webhook handler runs them, printed
//! beside its floor (the HMAC alone), what the intake did before (octocrab's
//! whole event model) and, when `SMOLPAWS_NODE_PEER` names the installed
//! Node peer, `@octokit/webhooks` `verify` + `JSON.parse` on the same bytes.
//!
//! `bash benches/intake_delivery.sh` (installs the peer, then runs this), or
//! `cargo bench --bench intake_delivery` without the peer.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use octocrab::models::webhook_events::WebhookEvent;
use secrecy::SecretString;
use smolpaws::intake::delivery::{Decision, Rules, decide};
use smolpaws::intake::policy::Policy;
use smolpaws::intake::signature::{WebhookSecrets, sign};

const SECRET: &str = "bench-secret";
const TARGET: Duration = Duration::from_micros(25);

fn payload() -> anyhow::Result<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/issue_comment_created.with-installation.json"
    );
    let mut payload: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    payload["comment"]["body"] = "@smolpaws why does the parser drop trailing commas?".into();
    Ok(serde_json::to_vec_pretty(&payload)?)
}

/// The median time of one `step`, over batches after a warm-up: what the
/// Node peer measures the same way.
fn median(mut step: impl FnMut()) -> Duration {
    const BATCH: u32 = 2000;
    for _ in 0..BATCH {
        step();
    }
    let mut per_op: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..BATCH {
                step();
            }
            started.elapsed() / BATCH
        })
        .collect();
    per_op.sort();
    per_op[per_op.len() / 2]
}

/// The peer's figures: (verify, verify + parse).
fn node_peer(dir: &str, body: &[u8], signature: &str) -> anyhow::Result<(Duration, Duration)> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), body)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/verify_parse.mjs");
    let output = std::process::Command::new("node")
        .arg(script)
        .arg(dir)
        .arg(file.path())
        .args([SECRET, signature])
        .output()
        .context("running node")?;
    anyhow::ensure!(
        output.status.success(),
        "the Node peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let nanos = |key: &str| {
        figures[key]
            .as_f64()
            .map(|ns| Duration::from_nanos(ns as u64))
            .with_context(|| format!("no {key} in {figures}"))
    };
    println!("Node peer: {}", figures["node"]);
    Ok((nanos("verify_ns")?, nanos("verify_parse_ns")?))
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn row(measure: &str, figure: Duration, beside: &str, other: Duration, target: &str) {
    println!(
        "| {measure} | {} | {beside} {} | {:.2}× | {target} |",
        micros(figure),
        micros(other),
        figure.as_secs_f64() / other.as_secs_f64(),
    );
}

fn main() -> anyhow::Result<()> {
    let body = payload()?;
    let secret = SecretString::from(SECRET);
    let signature = sign(&secret, &body);
    let secrets = WebhookSecrets::new([secret]);
    let rules = Rules {
        mention: "@smolpaws".parse()?,
        policy: Policy::new(["Codertocat".into()], ["Codertocat".into()], [], []),
        app_login: Some("smolpaws[bot]".into()),
        backend: Default::default(),
        max_age: None,
    };
    let judge = || {
        secrets
            .verify(Some(signature.as_bytes()), black_box(&body))
            .expect("signed");
        decide(
            &rules,
            "issue_comment",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            black_box(&body),
            SystemTime::now(),
        )
    };
    anyhow::ensure!(matches!(judge(), Ok(Decision::Run(_))), "no run decided");
    // Skipped under `cargo test --benches`, which only checks it runs.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }

    let hmac = median(|| {
        let _ = black_box(secrets.verify(Some(signature.as_bytes()), black_box(&body)));
    });
    let ours = median(|| {
        let _ = black_box(judge());
    });
    let octocrab = median(|| {
        let _ = secrets.verify(Some(signature.as_bytes()), black_box(&body));
        let _ = black_box(WebhookEvent::try_from_header_and_body(
            "issue_comment",
            black_box(&body),
        ));
    });
    let peer = match std::env::var("SMOLPAWS_NODE_PEER") {
        Ok(dir) => Some(node_peer(&dir, &body, &signature)?),
        Err(_) => None,
    };

    println!(
        "\none {} byte issue_comment delivery, median of 21 batches of 2000",
        body.len()
    );
    println!("| measure | figure | beside it | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    row(
        "verify + parse + policy",
        ours,
        "HMAC alone (floor)",
        hmac,
        &format!("≤ {}", micros(TARGET)),
    );
    row(
        "verify + parse + policy",
        ours,
        "verify + octocrab WebhookEvent (before)",
        octocrab,
        "",
    );
    match peer {
        Some((verify, verify_parse)) => {
            row(
                "verify + parse + policy",
                ours,
                "@octokit/webhooks verify + JSON.parse (peer)",
                verify_parse,
                "",
            );
            row(
                "HMAC alone",
                hmac,
                "@octokit/webhooks verify (peer)",
                verify,
                "",
            );
        }
        None => println!("(no Node peer: run `bash benches/intake_delivery.sh` to print it)"),
    }
    Ok(())
}
