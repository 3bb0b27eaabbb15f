//! The soak: signed comment deliveries, GitHub's redeliveries and hostile
//! requests against a real `smolpaws operator` process, which is SIGKILLed at
//! random moments and restarted (as a Deployment would), while the fake
//! GitHub fails one call in ten with a server error or a secondary rate
//! limit. Every comment must get exactly one run and one reply.
//!
//! `cargo test` runs it reduced (100 deliveries over 10 s, 2 kills). The
//! full soak (1,000 deliveries over 60 s, 5 kills) is
//! `SMOLPAWS_SOAK=full cargo test --release --test soak -- --nocapture`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use secrecy::SecretString;
use serde_json::Value;
use smolpaws::api::AgentRun;
use smolpaws::intake::signature::sign;
use support::fake_github::FakeGitHub;
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, app_key, stand_in_agent};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "soak-webhook-secret";
const AUTHORS: usize = 50;
const REPOSITORIES: usize = 10;

/// How big a soak to run.
struct Size {
    deliveries: usize,
    over: Duration,
    kills: usize,
    drain_limit: Duration,
}

impl Size {
    fn chosen() -> Self {
        match std::env::var("SMOLPAWS_SOAK").as_deref() {
            Ok("full") => Self {
                deliveries: 1_000,
                over: Duration::from_secs(60),
                kills: 5,
                drain_limit: Duration::from_secs(600),
            },
            _ => Self {
                deliveries: 100,
                over: Duration::from_secs(10),
                kills: 2,
                drain_limit: Duration::from_secs(240),
            },
        }
    }

    /// Comments that must each get one run: 70% of the deliveries; 20% are
    /// redeliveries of them and 10% are hostile.
    fn comments(&self) -> usize {
        self.deliveries * 7 / 10
    }

    fn redeliveries(&self) -> usize {
        self.deliveries / 5
    }

    fn hostile(&self) -> usize {
        self.deliveries - self.comments() - self.redeliveries()
    }
}

/// A small deterministic generator: the soak's order and kill moments are
/// the same on every run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("fits")
    }
}

/// One delivery to send.
#[derive(Clone)]
enum Delivery {
    /// A comment's delivery (or GitHub's redelivery of it: same id).
    Comment { body: Vec<u8>, id: String },
    /// A signed body sent again under a new delivery id.
    Replayed { body: Vec<u8>, id: String },
    /// A comment whose only mention is hidden in an HTML comment.
    HiddenMention { body: Vec<u8>, id: String },
    /// A body signed with the wrong secret.
    WrongSignature { body: Vec<u8>, id: String },
    /// A body over the intake's limit.
    Oversized,
    /// A body that never finishes arriving.
    SlowBody,
}

fn comment_payload(index: usize, text: &str) -> Vec<u8> {
    let mut payload = support::fixture("issue_comment_created.with-installation.json");
    let repository = index % REPOSITORIES;
    let author = format!("soaker-{}", index % AUTHORS);
    payload["comment"]["id"] = Value::from(9_000_000 + index);
    payload["comment"]["body"] = Value::from(text);
    payload["comment"]["user"]["login"] = Value::from(author.clone());
    payload["sender"]["login"] = Value::from(author);
    payload["comment"]["created_at"] = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .into();
    payload["issue"]["number"] = Value::from(index + 1);
    payload["repository"]["id"] = Value::from(700_000 + repository);
    payload["repository"]["name"] = Value::from(format!("soak-{repository}"));
    payload["repository"]["full_name"] = Value::from(format!("Codertocat/soak-{repository}"));
    serde_json::to_vec(&payload).expect("JSON")
}

fn delivery_id(index: usize, kind: u8) -> String {
    format!("5a0c0000-{kind:04}-4000-8000-{index:012}")
}

/// The deliveries of a soak of `size`, in the order they are sent.
fn deliveries(size: &Size, dice: &mut Dice) -> Vec<Delivery> {
    let comments: Vec<Delivery> = (0..size.comments())
        .map(|i| Delivery::Comment {
            body: comment_payload(i, &format!("@smolpaws look at thread {}", i + 1)),
            id: delivery_id(i, 0),
        })
        .collect();
    let mut sends = comments.clone();
    for _ in 0..size.redeliveries() {
        sends.push(comments[dice.below(comments.len())].clone());
    }
    for h in 0..size.hostile() {
        let i = dice.below(comments.len());
        let hostile = match h % 5 {
            0 => Delivery::Oversized,
            1 => Delivery::SlowBody,
            2 => Delivery::WrongSignature {
                body: comment_payload(i, "@smolpaws forged"),
                id: delivery_id(h, 2),
            },
            3 => Delivery::Replayed {
                body: comment_payload(i, &format!("@smolpaws look at thread {}", i + 1)),
                id: delivery_id(h, 3),
            },
            _ => Delivery::HiddenMention {
                body: comment_payload(size.comments() + h, "<!-- @smolpaws run -->"),
                id: delivery_id(h, 4),
            },
        };
        sends.push(hostile);
    }
    // Shuffled, but each comment before its redeliveries: GitHub redelivers
    // only what it delivered.
    for i in (size.comments()..sends.len()).rev() {
        let j = size.comments() / 2 + dice.below(i - size.comments() / 2 + 1);
        sends.swap(i, j);
    }
    sends
}

/// The operator process, killed and restarted on the same addresses.
struct OperatorProcess {
    env: Vec<(String, String)>,
    logs: PathBuf,
    child: tokio::process::Child,
    incarnation: usize,
}

impl OperatorProcess {
    fn spawn(env: &[(String, String)], logs: &Path, incarnation: usize) -> tokio::process::Child {
        let log = std::fs::File::create(logs.join(format!("operator-{incarnation}.log")))
            .expect("a log file");
        tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
            .arg("operator")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the operator starts")
    }

    fn start(env: Vec<(String, String)>, logs: &Path) -> Self {
        let child = Self::spawn(&env, logs, 0);
        Self {
            env,
            logs: logs.to_owned(),
            child,
            incarnation: 0,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn kill_and_restart(&mut self) {
        self.child.kill().await.expect("SIGKILL");
        self.incarnation += 1;
        self.child = Self::spawn(&self.env, &self.logs, self.incarnation);
    }

    /// Lines of every incarnation's log that report a panic.
    fn panics(&self) -> Vec<String> {
        (0..=self.incarnation)
            .flat_map(|i| {
                let log = std::fs::read_to_string(self.logs.join(format!("operator-{i}.log")))
                    .unwrap_or_default();
                log.lines()
                    .filter(|line| line.contains("panicked"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sends `body` as a delivery until the intake answers (a refused
/// connection or a 503 is retried, as GitHub's redelivery would); the
/// answer's status, and how many tries it took.
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    id: &str,
    secret: &str,
) -> (u16, u32) {
    let signature = sign(&SecretString::from(secret.to_owned()), body);
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = http
            .post(format!("{url}/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", &signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status() != 503 => return (answer.status().as_u16(), tries),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A raw request that claims `length` bytes and sends `sent` of them, then
/// waits for the answer (or the intake closing the connection).
async fn partial(address: &str, length: usize, sent: usize) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return "refused".into();
    };
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         x-github-event: issue_comment\r\nx-github-delivery: 5a0c0000-0009-4000-8000-000000000000\r\n\
         x-hub-signature-256: sha256={}\r\ncontent-length: {length}\r\n\r\n",
        "0".repeat(64)
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).await.is_err() {
            return "closed while sending".into();
        }
        left -= n;
    }
    let mut answer = vec![0; 256];
    let read = tokio::io::AsyncReadExt::read(&mut stream, &mut answer);
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n])
            .lines()
            .next()
            .unwrap_or("closed")
            .to_owned(),
        Ok(Err(_)) => "reset".into(),
        Err(_) => "held open for 30 s".into(),
    }
}

#[tokio::test]
async fn comments_get_one_run_and_one_reply_through_kills_chaos_and_attacks() {
    let size = Size::chosen();
    let client = support::client();
    let ns = support::namespace(&client, "soak").await;
    let github = FakeGitHub::start().await;
    github.chaos(10);
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("soaked"));
    let _kubelet = Kubelet::start(client.clone(), &ns, move |_| Behaviour::Run(agent.clone()));

    let (intake_port, result_port) = (support::free_port(), support::free_port());
    let intake = format!("127.0.0.1:{intake_port}");
    let authors: Vec<String> = (0..AUTHORS).map(|i| format!("soaker-{i}")).collect();
    let env: Vec<(String, String)> = [
        ("KUBECONFIG", support::kubeconfig().display().to_string()),
        ("SMOLPAWS_NAMESPACE", ns.clone()),
        ("SMOLPAWS_WATCH_NAMESPACE", ns.clone()),
        ("SMOLPAWS_INTAKE_ADDR", intake.clone()),
        ("SMOLPAWS_RESULT_ADDR", format!("127.0.0.1:{result_port}")),
        (
            "SMOLPAWS_RESULT_URL",
            format!("http://127.0.0.1:{result_port}"),
        ),
        (
            "SMOLPAWS_METRICS_ADDR",
            format!("127.0.0.1:{}", support::free_port()),
        ),
        ("GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("GITHUB_APP_ID", "1".to_owned()),
        (
            "GITHUB_APP_PRIVATE_KEY_FILE",
            app_key().display().to_string(),
        ),
        ("GITHUB_API_URL", github.url.clone()),
        ("ALLOWED_ACTORS", authors.join(",")),
        ("ALLOWED_OWNERS", "Codertocat".to_owned()),
        ("SMOLPAWS_INTAKE_BODY_TIMEOUT", "2s".to_owned()),
        ("SMOLPAWS_MAX_CONCURRENT_RUNS", "20".to_owned()),
        ("SMOLPAWS_MAX_RUNS_PER_REPO", "4".to_owned()),
        ("SMOLPAWS_MAX_PENDING_RUNS_PER_REPO", "200".to_owned()),
        ("SMOLPAWS_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut operator = OperatorProcess::start(env, dir.path());

    // Resident memory, sampled across every incarnation.
    let peak = Arc::new(AtomicU64::new(0));
    let pid = Arc::new(AtomicU64::new(u64::from(operator.pid().unwrap_or(0))));
    let sampler = {
        let (peak, pid) = (peak.clone(), pid.clone());
        tokio::spawn(async move {
            loop {
                let now = u32::try_from(pid.load(Ordering::Relaxed))
                    .ok()
                    .and_then(rss_kib);
                peak.fetch_max(now.unwrap_or(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut dice = Dice(0x5eed_cafe_f00d_d00d);
    let sends = deliveries(&size, &mut dice);
    let gap = size.over / u32::try_from(sends.len()).expect("fits");
    let kill_at: Vec<usize> = {
        let mut at: Vec<usize> = (0..size.kills)
            .map(|_| sends.len() / 10 + dice.below(sends.len() * 8 / 10))
            .collect();
        at.sort_unstable();
        at
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let url = format!("http://{intake}");
    let started = Instant::now();
    let mut answers: Vec<tokio::task::JoinHandle<(&'static str, u16, u32)>> = Vec::new();
    let mut last_kill = started;
    for (n, send) in sends.into_iter().enumerate() {
        if kill_at.contains(&n) {
            operator.kill_and_restart().await;
            pid.store(u64::from(operator.pid().unwrap_or(0)), Ordering::Relaxed);
            last_kill = Instant::now();
        }
        let (http, url, intake) = (http.clone(), url.clone(), intake.clone());
        answers.push(tokio::spawn(async move {
            match send {
                Delivery::Comment { body, id } => {
                    let (status, tries) = deliver(&http, &url, &body, &id, SECRET).await;
                    ("comment", status, tries)
                }
                Delivery::Replayed { body, id } => {
                    let (status, tries) = deliver(&http, &url, &body, &id, SECRET).await;
                    ("replayed", status, tries)
                }
                Delivery::HiddenMention { body, id } => {
                    let (status, tries) = deliver(&http, &url, &body, &id, SECRET).await;
                    ("hidden mention", status, tries)
                }
                Delivery::WrongSignature { body, id } => {
                    let (status, tries) = deliver(&http, &url, &body, &id, "not-the-secret").await;
                    ("wrong signature", status, tries)
                }
                Delivery::Oversized => {
                    let answer = partial(&intake, 30 << 20, 2 << 20).await;
                    ("oversized", status_of(&answer), 1)
                }
                Delivery::SlowBody => {
                    let answer = partial(&intake, 60_000, 1_000).await;
                    ("slow body", status_of(&answer), 1)
                }
            }
        }));
        tokio::time::sleep(gap).await;
    }
    let mut tally: HashMap<(&'static str, u16), usize> = HashMap::new();
    let mut retries = 0;
    for answer in answers {
        let (kind, status, tries) = answer.await.expect("a sender");
        *tally.entry((kind, status)).or_default() += 1;
        retries += tries - 1;
    }
    let sent_in = started.elapsed();

    // Drained: every comment has its reply.
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    let comments = size.comments();
    let drained = tokio::time::timeout(size.drain_limit, async {
        loop {
            let replied = github.comments().iter().filter(|c| is_reply(c)).count();
            if replied >= comments {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let drain = last_kill.elapsed();
    // Anything late would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sampler.abort();
    let listed = runs.list(&ListParams::default()).await.expect("list");
    let replies: Vec<_> = github.comments().into_iter().filter(is_reply).collect();
    let mut per_thread: HashMap<(String, i64), usize> = HashMap::new();
    for reply in &replies {
        *per_thread
            .entry((reply.repository.clone(), reply.number))
            .or_default() += 1;
    }
    let duplicated = per_thread.values().filter(|n| **n > 1).count();
    let panics = operator.panics();
    let mut tallied: Vec<_> = tally.iter().collect();
    tallied.sort();
    println!(
        "soak: {} deliveries ({comments} comments, {} redeliveries, {} hostile) in {:.1?}, \
         {} operator kills, {} GitHub calls failed by chaos, {retries} deliveries retried",
        size.deliveries,
        size.redeliveries(),
        size.hostile(),
        sent_in,
        operator.incarnation,
        github.chaos_failures(),
    );
    println!("soak: answers {tallied:?}");
    println!(
        "soak: {} AgentRuns, {} replies in {} threads, {duplicated} threads with more than one, \
         {} panics, peak operator RSS {:.1} MiB, drained {:.1?} after the last kill",
        listed.items.len(),
        replies.len(),
        per_thread.len(),
        panics.len(),
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        drain,
    );

    assert!(
        drained.is_ok(),
        "not every comment was answered in {:?}",
        size.drain_limit
    );
    assert_eq!(listed.items.len(), comments, "one run per comment");
    assert_eq!(replies.len(), comments, "one reply per comment");
    assert_eq!(per_thread.len(), comments, "in its own thread");
    assert_eq!(duplicated, 0);
    assert!(panics.is_empty(), "{panics:?}");
    for ((kind, status), count) in &tally {
        let expected: &[u16] = match *kind {
            "comment" => &[200, 202],
            "replayed" => &[200, 202],
            "hidden mention" => &[200],
            "wrong signature" => &[401],
            _ => &[400, 408, 413, 0],
        };
        assert!(
            expected.contains(status),
            "{count} {kind} deliveries were answered {status}"
        );
    }
}

/// Whether `comment` is a run's reply: the App's, and not the progress
/// comment it keeps up to date beside it.
fn is_reply(comment: &support::fake_github::Comment) -> bool {
    comment.author == "smolpaws[bot]" && !comment.body.contains("<!-- smolpaws:progress")
}

/// The status in an HTTP status line; 0 when the intake closed the
/// connection without one.
fn status_of(line: &str) -> u16 {
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
