//! The controller and its result endpoint, run inside a test against the
//! test control plane and a fake GitHub, plus a stand-in agent program that
//! follows the result contract (`docs/result-contract.md`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use serde_json::json;
use smolpaws::controller::{self, ControllerConfig, metrics::ControllerMetrics};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    controller: ControllerConfig,
}

/// A running controller; stopped (killed) when dropped.
pub struct Operator {
    task: JoinHandle<()>,
    results: JoinHandle<()>,
    pub result_url: String,
    pub registry: std::sync::Arc<Registry>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
        self.results.abort();
    }
}

/// The throwaway App key the fake GitHub accepts.
pub fn app_key() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-app-test-key.pem"
    ))
}

impl Operator {
    /// Starts a controller for `namespace` talking to GitHub at `github`
    /// (none: GitHub off), with `extra` flags.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        extra: &[&str],
    ) -> Self {
        Self::spawn(client, namespace, github, extra, None).await
    }

    /// Starts a leader-elected replica named `identity`, its Lease in
    /// `namespace`.
    pub async fn replica(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        identity: &str,
        extra: &[&str],
    ) -> Self {
        Self::spawn(client, namespace, github, extra, Some(identity)).await
    }

    /// The metrics of this controller, as Prometheus text.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("metrics encode");
        text
    }

    async fn spawn(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        extra: &[&str],
        identity: Option<&str>,
    ) -> Self {
        let (result_url, results) = super::serve(controller::report::router(client.clone())).await;
        let key = app_key();
        let mut args = vec![
            "controller".to_owned(),
            format!("--result-url={result_url}"),
            format!("--watch-namespace={namespace}"),
        ];
        if !extra.iter().any(|a| a.starts_with("--pending-timeout")) {
            args.push("--pending-timeout=30s".to_owned());
        }
        if let Some(github) = github {
            args.push("--app-id=1".into());
            args.push(format!("--app-private-key-file={}", key.display()));
            args.push(format!("--api-url={github}"));
        }
        if let Some(identity) = identity {
            args.push(format!("--identity={identity}"));
            args.push(format!("--lease-namespace={namespace}"));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let config = Args::try_parse_from(&args)
            .expect("valid controller flags")
            .controller;
        let mut registry = Registry::default();
        let metrics = ControllerMetrics::register(&mut registry);
        let leader_elected = identity.is_some();
        let task = tokio::spawn(async move {
            let stop = CancellationToken::new();
            if leader_elected {
                controller::leader::lead(client, &config, metrics, stop)
                    .await
                    .expect("the replica leads or follows");
            } else {
                controller::run(client, &config, metrics, stop.cancelled_owned())
                    .await
                    .expect("the controller runs");
            }
        });
        Self {
            task,
            results,
            result_url,
            registry: std::sync::Arc::new(registry),
        }
    }
}

/// What the stand-in agent does.
pub enum Agent<'a> {
    /// Reports this reply, then exits 0.
    Replies(&'a str),
    /// Exits with this code without reporting.
    Exits(i32),
    /// Never finishes.
    Hangs,
    /// Sleeps this long, then reports this reply.
    RepliesAfter(Duration, &'a str),
}

/// Writes an executable stand-in for `smolpaws agent` into `dir`, following
/// the result contract with curl.
pub fn stand_in_agent(dir: &Path, agent: Agent<'_>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("creating the stand-in's directory");
    let report = |reply: &str| {
        let path = dir.join("report.json");
        let body = json!({
            "reply": reply,
            "usage": { "promptTokens": 1200, "completionTokens": 80 },
            "model": "stand-in",
        });
        std::fs::write(&path, serde_json::to_vec(&body).expect("JSON"))
            .expect("writing the report");
        format!(
            "curl -sS --fail-with-body -X POST \\\n  -H \"Authorization: Bearer $SMOLPAWS_REPORT_TOKEN\" \\\n  -H 'Content-Type: application/json' \\\n  --data-binary @{} \\\n  \"$SMOLPAWS_RESULT_URL/v1/runs/$SMOLPAWS_RUN_NAMESPACE/$SMOLPAWS_RUN_NAME/result\"",
            path.display()
        )
    };
    let action = match agent {
        Agent::Replies(reply) => report(reply),
        Agent::Exits(code) => format!("exit {code}"),
        Agent::Hangs => "exec sleep 600".to_owned(),
        Agent::RepliesAfter(delay, reply) => {
            format!("sleep {:.1}\n{}", delay.as_secs_f64(), report(reply))
        }
    };
    let script = format!(
        "#!/bin/sh\nset -eu\n[ \"$1\" = agent ] || exit 64\necho \"stand-in agent working on $SMOLPAWS_RUN_NAME\"\n{action}\n"
    );
    let path = dir.join("agent");
    std::fs::write(&path, script).expect("writing the stand-in agent");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}
