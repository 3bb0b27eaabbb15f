//! The controller and its result endpoint, run inside a test against the
//! test control plane and a fake GitHub, plus a stand-in agent program that
//! follows the result contract (`docs/result-contract.md`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use smolpaws::controller::{ControllerArgs, LeaseConfig};
use smolpaws::operator::{self, Operator as Composed};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The controller's flags at their defaults (and the test process's
/// environment), for a test to change as typed fields.
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    controller: ControllerArgs,
}

/// A running controller; stopped (killed) when dropped.
pub struct Operator {
    task: JoinHandle<()>,
    pub result_url: String,
    admin: String,
}

impl Drop for Operator {
    /// Killed, not stopped: as a crashed process would end.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The throwaway App key the fake GitHub accepts.
pub fn app_key() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-app-test-key.pem"
    ))
}

async fn loopback() -> (TcpListener, String) {
    let listener = TcpListener::bind((super::listen_host(), 0))
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    (listener, url)
}

impl Operator {
    /// Starts a controller for `namespace` talking to GitHub at `github`
    /// (none: GitHub off), its settings changed by `tune`.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        tune: impl FnOnce(&mut ControllerArgs),
    ) -> Self {
        Self::spawn(client, namespace, github, tune, None, None).await
    }

    /// Starts a leader-elected replica named `identity`, its Lease in
    /// `namespace`.
    pub async fn replica(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        identity: &str,
        tune: impl FnOnce(&mut ControllerArgs),
    ) -> Self {
        Self::spawn(client, namespace, github, tune, Some(identity), None).await
    }

    /// Kills this controller and starts another whose result endpoint (and
    /// LLM gateway) answers at the same address, as a restarted pod behind
    /// the same Service: sandboxes it started still reach it.
    pub async fn restart(
        self,
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        tune: impl FnOnce(&mut ControllerArgs),
    ) -> Self {
        let address = self.result_url.trim_start_matches("http://").to_owned();
        drop(self);
        let mut wait = Duration::from_millis(10);
        let results = loop {
            // The killed task lets go of the port once the runtime drops it.
            match TcpListener::bind(&address).await {
                Ok(listener) => break listener,
                Err(_) if wait < Duration::from_secs(5) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(error) => panic!("{address} stayed taken: {error}"),
            }
        };
        Self::spawn(
            client,
            namespace,
            github,
            tune,
            None,
            Some((results, format!("http://{address}"))),
        )
        .await
    }

    /// The metrics of this controller, as Prometheus text from its
    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("the admin server answers")
            .text()
            .await
            .expect("metrics text")
    }

    async fn spawn(
        client: kube::Client,
        namespace: &str,
        github: Option<&str>,
        tune: impl FnOnce(&mut ControllerArgs),
        identity: Option<&str>,
        results: Option<(TcpListener, String)>,
    ) -> Self {
        let (results, result_url) = match results {
            Some(results) => results,
            None => loopback().await,
        };
        let (front, admin) = loopback().await;
        let mut args = Defaults::try_parse_from(["controller"])
            .expect("the defaults parse")
            .controller;
        args.watch_namespace = Some(namespace.to_owned());
        args.pending_timeout = Duration::from_secs(30).into();
        // The stories about replies count the thread's comments; the
        // progress comment's own are in tests/change_to_pull_request.rs.
        args.progress_comment = false;
        if let Some(github) = github {
            args.github.app_id = Some(1);
            args.github.app_private_key_file = Some(app_key());
            args.github.api_url = github.to_owned();
        }
        tune(&mut args);
        let mut config = args.config();
        config.lease = identity.map(|identity| LeaseConfig {
            namespace: Some(namespace.to_owned()),
            duration: args.lease_duration.into(),
            identity: Some(identity.to_owned()),
        });
        let environment = operator::agent_environment(&args, &result_url);
        let sandboxes = operator::cluster_sandboxes(&client, &args, &environment);
        let parts = operator::controller_parts(&args, sandboxes).expect("valid GitHub settings");
        let composed = Composed::new(client).controller(config, parts, results);
        let task = tokio::spawn(async move {
            composed
                .run(front, CancellationToken::new())
                .await
                .expect("the replica leads or follows");
        });
        Self {
            task,
            result_url,
            admin,
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
    /// Reports this report (a JSON body of the result route), then exits 0.
    Reports(&'a serde_json::Value),
}

/// Writes an executable stand-in for `smolpaws agent` into `dir`, following
/// the result contract with curl.
pub fn stand_in_agent(dir: &Path, agent: Agent<'_>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("creating the stand-in's directory");
    let send = |body: &serde_json::Value| {
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_vec(&body).expect("JSON"))
            .expect("writing the report");
        format!(
            "curl -sS --fail-with-body --retry 60 --retry-all-errors --retry-delay 1 -X POST \\\n  -H \"Authorization: Bearer $SMOLPAWS_REPORT_TOKEN\" \\\n  -H 'Content-Type: application/json' \\\n  --data-binary @{} \\\n  \"$SMOLPAWS_RESULT_URL/v1/runs/$SMOLPAWS_RUN_NAMESPACE/$SMOLPAWS_RUN_NAME/result\"",
            path.display()
        )
    };
    let report = |reply: &str| {
        send(&json!({
            "reply": reply,
            "usage": { "promptTokens": 1200, "completionTokens": 80 },
            "model": "stand-in",
        }))
    };
    let action = match agent {
        Agent::Replies(reply) => report(reply),
        Agent::Exits(code) => format!("exit {code}"),
        Agent::Hangs => "exec sleep 600".to_owned(),
        Agent::Reports(body) => send(body),
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

/// A controller (GitHub at `github`) whose sandboxes run this build's real
/// agent: it talks to the model server at `llm_base_url` and checks out from
/// the git server directory `remote` (see `git_remote::server`); its own
/// GitHub API calls go nowhere. The kubelet stand-in is returned with it.
pub async fn with_real_agent(
    client: &kube::Client,
    namespace: &str,
    github: Option<&str>,
    llm_base_url: &str,
    remote: &Path,
) -> (super::kubelet::Kubelet, Operator) {
    use super::kubelet::{Behaviour, Kubelet};
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_smolpaws"));
    let kubelet = Kubelet::start(client.clone(), namespace, move |_| {
        Behaviour::Run(agent.clone())
    });
    let server_url = format!("file://{}", remote.display());
    let operator = Operator::start(client.clone(), namespace, github, |args| {
        args.sandbox.llm.model = Some("scripted-model".into());
        args.sandbox.llm.base_url = Some(llm_base_url.to_owned());
        args.sandbox.extra_env = vec![
            ("GITHUB_SERVER_URL".into(), server_url),
            ("GITHUB_API_URL".into(), "http://127.0.0.1:9".into()),
        ];
    })
    .await;
    (kubelet, operator)
}
