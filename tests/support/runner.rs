//! `smolpaws agent serve` as its clients meet it: the binary on loopback,
//! with its state in a directory of the test's, talking to a scripted LLM.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::fake_llm::FakeLlm;

/// The token the runner is started with.
pub const TOKEN: &str = "runner-token-0123456789";

/// A running `smolpaws agent serve`, killed when dropped.
pub struct Runner {
    /// The process.
    pub child: tokio::process::Child,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// A client for it.
    pub http: reqwest::Client,
}

impl Runner {
    /// Starts the runner with its state in `dir`, the LLM `llm`, and
    /// `extra` environment.
    pub async fn start(dir: &Path, llm: &FakeLlm, extra: &[(&str, &str)]) -> Self {
        Self::spawn(dir, llm, extra, Stdio::inherit()).await
    }

    /// Like [`Runner::start`], its stderr to `stderr`.
    pub async fn spawn(dir: &Path, llm: &FakeLlm, extra: &[(&str, &str)], stderr: Stdio) -> Self {
        smolpaws::tls::install_default_provider();
        let port = super::free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
            .args(["agent", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("SMOLPAWS_RUNNER_TOKEN", TOKEN)
            .env("SMOLPAWS_WORKSPACE_ROOT", dir.join("workspaces"))
            .env("SMOLPAWS_PERSISTENCE_DIR", dir.join("conversations"))
            .env("LLM_MODEL", "scripted-model")
            .env("LLM_BASE_URL", &llm.base_url)
            .env("LLM_API_KEY", "sk-runner-test-0123456789")
            .env("GITHUB_API_URL", "http://127.0.0.1:9")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("the runner starts");
        let runner = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while runner.http.get(runner.at("/alive")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the runner never answered /alive"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runner
    }

    /// The URL of `path` on the runner.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs `body` with the token; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.at(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the runner answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path` with the token; the status and the JSON answer.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.at(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the runner answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The execution status of conversation `id`.
    pub async fn status_of(&self, id: &str) -> String {
        let (_, info) = self.get(&format!("/api/conversations/{id}")).await;
        info["execution_status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (30 s at most) until conversation `id` is `wanted`.
    pub async fn until_status(&self, id: &str, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status_of(id).await != wanted {
            assert!(
                Instant::now() < deadline,
                "{id} never became {wanted}; it is {}",
                self.status_of(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored events of conversation `id`.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/api/conversations/{id}/events/search?limit=100"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// A websocket of the conversation's events, the token in the query;
    /// `query` is appended.
    pub async fn follow(
        &self,
        id: &str,
        query: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let url = format!(
            "{}/sockets/events/{id}?session_api_key={TOKEN}{query}",
            self.url.replace("http://", "ws://")
        );
        tokio_tungstenite::connect_async(url)
            .await
            .expect("the websocket opens")
            .0
    }
}
