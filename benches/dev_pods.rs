//! `smolpaws dev --pods` as a developer meets it: from the command to dev
//! mode serving (the node Ready, the operator running), then comment →
//! reply through a real sandbox pod, 10 comments one after another (each
//! `smolpaws dev comment` from its start to its exit, the reply printed).
//! Needs what `tests/real_node.rs` needs (root; the first run builds the
//! node's parts and images).
//!
//! `cargo bench --bench dev_pods`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::dev::Running;
use support::fake_llm::{FakeLlm, bash, finish};

const RUNS: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let llm = FakeLlm::start(
        (0..RUNS).flat_map(|_| [bash("cat notes.md"), finish("The notes say hello.")]),
    )
    .await;
    let began = Instant::now();
    let dev = Running::pods_beside_notes(&llm.base_url).await;
    let ready = began.elapsed();
    let mut replies = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let asked = Instant::now();
        let said = dev.comment("@smolpaws what do the notes say?").await;
        replies.push(asked.elapsed());
        assert!(said.contains("The notes say hello."), "{said}");
    }
    replies.sort();
    // The banner, printed once dev mode serves, says how long the node took.
    let node = dev
        .printed()
        .into_iter()
        .find(|l| l.contains("Ready in"))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "dev --pods start → serving         {:>7.0} ms  ({})",
        ready.as_secs_f64() * 1e3,
        node.trim()
    );
    println!(
        "comment → reply through a real pod  p50 {:>7.0} ms  p90 {:>7.0} ms  (n={RUNS})",
        percentile(&replies, 0.5).as_secs_f64() * 1e3,
        percentile(&replies, 0.9).as_secs_f64() * 1e3,
    );
    println!("load average: {}", load.trim());
    let stopped = Instant::now();
    dev.stop(nix::sys::signal::Signal::SIGTERM).await;
    println!(
        "SIGTERM → everything stopped, host restored  {:>7.0} ms",
        stopped.elapsed().as_secs_f64() * 1e3
    );
}
