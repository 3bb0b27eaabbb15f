//! The shared harness of the integration tests: one real etcd and
//! kube-apiserver per test binary, started on first use with the AgentRun CRD
//! installed, and stopped when the binary exits.
//!
//! Tests each get their own client (a client belongs to the tokio runtime that
//! made it, and every `#[tokio::test]` has its own) and their own namespace.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod dev;
pub mod fake_daytona;
pub mod fake_github;
pub mod fake_llm;
pub mod git_http;
pub mod git_remote;
pub mod helm;
pub mod kubelet;
pub mod kubelet_api;
pub mod log;
pub mod node;
pub mod npm;
pub mod operator;
pub mod python;
pub mod runner;
pub mod runs;
pub mod webhook;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, Once, OnceLock};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use smolpaws::api::AgentRun;
use smolpaws::controlplane::{self, ControlPlane, Tools};

/// Runs `start` once per test binary, on a thread and a runtime of its own
/// (a caller's runtime ends with its test), and hands out what it made;
/// panics naming `what` if that failed.
pub fn once<T, F>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    start: impl FnOnce() -> F + Send + 'static,
) -> &'static T
where
    T: Send + Sync + 'static,
    F: Future<Output = Result<T, String>>,
{
    let started = cell.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start())
        })
        .join()
        .unwrap_or_else(|_| Err("its start-up thread panicked".into()))
    });
    match started {
        Ok(started) => started,
        Err(error) => panic!("{what} could not start: {error}"),
    }
}

/// What the test binary drops when it exits, last first.
static AT_EXIT: Mutex<Vec<Box<dyn Send>>> = Mutex::new(Vec::new());

extern "C" fn drop_at_exit_now() {
    let mut values = AT_EXIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    while let Some(value) = values.pop() {
        drop(value);
    }
}

/// Drops `value` (which stops what it runs) when the test binary exits: a
/// test binary's statics are never dropped.
pub fn drop_at_exit(value: impl Send + 'static) {
    static REGISTER: Once = Once::new();
    // SAFETY: registers a plain function with no preconditions; std offers
    // no exit hook.
    #[allow(unsafe_code)]
    REGISTER.call_once(|| unsafe {
        libc::atexit(drop_at_exit_now);
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Box::new(value));
}

/// An apiserver's admin access, for the tests of a binary.
pub struct Access {
    config: kube::Config,
    kubeconfig: PathBuf,
}

impl Access {
    /// The admin access of `plane`.
    pub fn of(plane: &ControlPlane) -> Self {
        Self {
            config: plane.config().clone(),
            kubeconfig: plane.kubeconfig_path().to_owned(),
        }
    }

    /// An admin client, for the calling test's runtime.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("the admin kubeconfig is valid")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }
}

static SHARED: OnceLock<Result<Access, String>> = OnceLock::new();

fn shared() -> &'static Access {
    once(&SHARED, "the test control plane", start)
}

/// A control plane of the caller's own, with the CRDs installed, for tests
/// that stop or break it. Stopped when dropped.
pub async fn private_control_plane() -> ControlPlane {
    start_plane()
        .await
        .unwrap_or_else(|error| panic!("a private control plane could not start: {error}"))
}

async fn start_plane() -> Result<ControlPlane, String> {
    let tools = Tools::locate().await.map_err(|e| e.to_string())?;
    let plane = ControlPlane::start(&tools)
        .await
        .map_err(|e| e.to_string())?;
    install_crds(&plane).await?;
    Ok(plane)
}

/// Installs the CRDs into `plane`, through a client of the calling thread.
pub async fn install_crds(plane: &ControlPlane) -> Result<(), String> {
    let client = plane.client().map_err(|e| e.to_string())?;
    controlplane::install_crds(&client, &[AgentRun::crd()])
        .await
        .map_err(|e| e.to_string())
}

async fn start() -> Result<Access, String> {
    let began = std::time::Instant::now();
    let plane = start_plane().await?;
    // Straight to stderr: the test harness captures only print macros.
    let _ = writeln!(
        std::io::stderr(),
        "test control plane: etcd and kube-apiserver ready in {:.2?}, CRDs Established at {:.2?}; kubeconfig {}",
        plane.started_in(),
        began.elapsed(),
        plane.kubeconfig_path().display()
    );
    let access = Access::of(&plane);
    drop_at_exit(plane);
    Ok(access)
}

/// An admin client of the shared control plane, for the calling test's runtime.
pub fn client() -> Client {
    shared().client()
}

/// The admin kubeconfig of the shared control plane.
pub fn kubeconfig() -> PathBuf {
    shared().kubeconfig()
}

/// `smolpaws logs -n <namespace> <run>` through `kubeconfig`: what it
/// printed, once it succeeded.
pub async fn smolpaws_logs(kubeconfig: &std::path::Path, namespace: &str, run: &str) -> String {
    let logs = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .args(["logs", "-n", namespace, run])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("smolpaws logs runs");
    let log = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert!(
        logs.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    log
}

/// Where the test's servers listen: loopback, or with a real node the
/// node's address, where its pods reach them.
static LISTEN: OnceLock<std::net::IpAddr> = OnceLock::new();

/// The address the test's servers listen on.
pub fn listen_host() -> std::net::IpAddr {
    *LISTEN.get_or_init(|| std::net::Ipv4Addr::LOCALHOST.into())
}

/// Serves `router` on a free port of [`listen_host`] until the test ends (or
/// the handle is aborted); its base URL, `http://<host>:<port>`.
pub async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((listen_host(), 0))
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("a test server serves");
    });
    (url, task)
}

/// A loopback port free now, for a server the test starts as a process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fixture payload from `tests/fixtures/github/` (real GitHub deliveries).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/github/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Creates a namespace named `<prefix>-<random>` with `labels` and
/// returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let mut ns = Namespace::default();
    ns.metadata.generate_name = Some(format!("{prefix}-"));
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a test namespace");
    created
        .metadata
        .name
        .expect("the apiserver names the namespace")
}

/// Creates a namespace of its own for one test and returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = create_namespace(client, prefix, &[]).await;
    // Pods need the namespace's default ServiceAccount, which a
    // controller-manager would create; this control plane runs none.
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("default".into());
    Api::<ServiceAccount>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the default ServiceAccount");
    name
}

/// Sends `signal` to process `pid`, as a user's Ctrl-C or a kubelet's stop
/// would.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = i32::try_from(pid).expect("a pid fits an i32");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

/// What a process printed, its standard output then its error: the story
/// a contract test shows when an official client fails.
pub fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
