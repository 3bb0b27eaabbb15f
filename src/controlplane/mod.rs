//! A local Kubernetes control plane: etcd and kube-apiserver on loopback,
//! with generated certificates and an admin credential.
//!
//! The integration tests run against it, and `smolpaws dev` embeds it, so
//! both see a real apiserver (validation, CEL, RBAC, watches) rather than a
//! mock. It runs no kubelet and no controller-manager; [`crate::node`] adds
//! those beside it, through [`Options`].

mod pki;
mod tools;

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use tempfile::TempDir;

use crate::process::Process;
use pki::Pki;
pub use tools::Tools;
pub(crate) use tools::run_script;

/// The prefix of control plane directories under the temp dir.
const DIR_PREFIX: &str = "smolpaws-control-plane-";
/// The file in a control plane directory naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of control planes whose owner died without
/// cleaning up (SIGKILL leaves no chance to): their processes died with it.
fn remove_abandoned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let alive = crate::process::owner_alive(&path, OWNER_FILE);
        if ours && !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// How long the apiserver may take to become ready before start-up fails.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What can go wrong while starting or using a local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tools/build.sh` could not produce the binaries.
    #[error("building binaries with {script} failed: {reason}")]
    ToolsBuild {
        /// The build script.
        script: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// Generating certificates failed.
    #[error("generating the control plane certificates failed: {0}")]
    Pki(#[from] rcgen::Error),
    /// A file in the control plane's directory could not be written.
    #[error("writing {path} failed: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A binary could not be started.
    #[error("starting {binary} failed: {source} (is the tools build complete?)")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A process exited while the control plane was starting.
    #[error("{name} exited with {status} during start-up; its last output:\n{log}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The tail of its log.
        log: String,
    },
    /// The apiserver did not become ready in time.
    #[error("kube-apiserver was not ready after {0:?}; its last output:\n{1}")]
    NotReady(Duration, String),
    /// The kubeconfig could not be turned into a client configuration.
    #[error("the generated kubeconfig is unusable: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Waiting for a CRD failed.
    #[error("watching the CRD failed: {0}")]
    Wait(#[from] kube::runtime::wait::Error),
    /// No free loopback port could be found.
    #[error("finding a free loopback port failed: {0}")]
    Ports(std::io::Error),
    /// A CRD did not become Established.
    #[error("CRD {0} did not become Established within {1:?}")]
    NotEstablished(String, Duration),
}

/// How a control plane's processes start, beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A command that runs the rest of its arguments, prefixed to each
    /// process's command line (for example `nsenter` into a node's
    /// namespaces).
    pub launcher: Vec<OsString>,
    /// kube-apiserver flags after the defaults (a repeated flag's last
    /// value wins).
    pub apiserver_args: Vec<String>,
}

/// A running etcd and kube-apiserver, stopped when dropped.
pub struct ControlPlane {
    // Fields drop in order: the apiserver stops before etcd, and both before
    // their directory is removed.
    apiserver: Option<Process>,
    etcd: Process,
    apiserver_binary: PathBuf,
    apiserver_args: Vec<String>,
    launcher: Vec<OsString>,
    kubeconfig: PathBuf,
    config: kube::Config,
    etcd_url: String,
    started_in: Duration,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from `tools` on free loopback ports and
    /// waits until the apiserver is ready.
    pub async fn start(tools: &Tools) -> Result<Self, Error> {
        Self::start_with(tools, Options::default()).await
    }

    /// [`ControlPlane::start`], its processes started as `options` say.
    pub async fn start_with(tools: &Tools, options: Options) -> Result<Self, Error> {
        let began = Instant::now();
        remove_abandoned_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let root = dir.path();
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = root.join(name);
            std::fs::write(&path, contents).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        write(OWNER_FILE, &std::process::id().to_string())?;
        let launcher = options.launcher;

        let pki = Pki::generate()?;
        let ca = write("ca.crt", &pki.ca_cert)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let etcd_cert = write("etcd.crt", &pki.etcd_cert)?;
        let etcd_key = write("etcd.key", &pki.etcd_key)?;
        let etcd_client_cert = write("apiserver-etcd-client.crt", &pki.etcd_client_cert)?;
        let etcd_client_key = write("apiserver-etcd-client.key", &pki.etcd_client_key)?;
        let kubelet_client_cert = write("apiserver-kubelet-client.crt", &pki.kubelet_client_cert)?;
        let kubelet_client_key = write("apiserver-kubelet-client.key", &pki.kubelet_client_key)?;
        let sa_key = write("service-account.key", &pki.service_account_key)?;
        let sa_public_key = write("service-account.pub", &pki.service_account_public_key)?;
        let token = crate::random::token();
        let tokens = write(
            "tokens.csv",
            &format!("{token},smolpaws-admin,smolpaws-admin,\"system:masters\"\n"),
        )?;

        let [etcd_client, etcd_peer, apiserver_port] = free_ports()?;
        // TLS with client certificates on both etcd ports: loopback is
        // shared with every local user, and etcd holds every Secret.
        let etcd_url = format!("https://127.0.0.1:{etcd_client}");
        let peer_url = format!("https://127.0.0.1:{etcd_peer}");
        let etcd = spawn(
            "etcd",
            &tools.etcd(),
            &[
                "--name=smolpaws".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=smolpaws={peer_url}"),
                format!("--cert-file={}", etcd_cert.display()),
                format!("--key-file={}", etcd_key.display()),
                "--client-cert-auth".into(),
                format!("--trusted-ca-file={}", ca.display()),
                format!("--peer-cert-file={}", etcd_cert.display()),
                format!("--peer-key-file={}", etcd_key.display()),
                "--peer-client-cert-auth".into(),
                format!("--peer-trusted-ca-file={}", ca.display()),
                // Throwaway data: durability buys nothing and costs latency.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &launcher,
            root,
        )?;

        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--etcd-cafile={}", ca.display()),
            format!("--etcd-certfile={}", etcd_client_cert.display()),
            format!("--etcd-keyfile={}", etcd_client_key.display()),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={apiserver_port}"),
            format!("--cert-dir={}", root.join("certs").display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", sa_public_key.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            format!(
                "--kubelet-client-certificate={}",
                kubelet_client_cert.display()
            ),
            format!("--kubelet-client-key={}", kubelet_client_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            // No kubelet or controller-manager exists to act on these.
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ];
        apiserver_args.extend(options.apiserver_args);
        let apiserver_binary = tools.kube_apiserver();
        let apiserver = spawn(
            "kube-apiserver",
            &apiserver_binary,
            &apiserver_args,
            &launcher,
            root,
        )?;

        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = write("kubeconfig", &kubeconfig_yaml(&server, &ca, &token))?;
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;

        let mut plane = Self {
            apiserver: Some(apiserver),
            etcd,
            apiserver_binary,
            apiserver_args,
            launcher,
            kubeconfig,
            config,
            etcd_url,
            started_in: Duration::ZERO,
            dir,
        };
        plane.wait_ready().await?;
        plane.started_in = began.elapsed();
        Ok(plane)
    }

    /// etcd's client URL (TLS; it serves only clients with a certificate
    /// from the plane's CA).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The plane's CA certificate (PEM), which etcd's and the apiserver's
    /// serving certificates chain to.
    pub fn ca_certificate(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The key that signs service-account tokens (PEM), which a
    /// controller-manager needs to issue them.
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.path().join("service-account.key")
    }

    /// Stops kube-apiserver, leaving etcd and its data: clients now get
    /// connection errors, as in an apiserver outage.
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Starts kube-apiserver again on the same port with the same data, and
    /// waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_none() {
            self.apiserver = Some(spawn(
                "kube-apiserver",
                &self.apiserver_binary,
                &self.apiserver_args,
                &self.launcher,
                self.dir.path(),
            )?);
        }
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.client()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for process in std::iter::once(&mut self.etcd).chain(self.apiserver.as_mut()) {
                still_running(process)?;
            }
            let probe = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("a static request is well-formed");
            if matches!(client.request_text(probe).await, Ok(body) if body == "ok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.apiserver.as_ref().map(|p| p.log_tail(40));
                return Err(Error::NotReady(READY_TIMEOUT, log.unwrap_or_default()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new admin client. Each tokio runtime needs its own: a client's
    /// background tasks live on the runtime that created it.
    pub fn client(&self) -> Result<kube::Client, Error> {
        Ok(kube::Client::try_from(self.config.clone())?)
    }

    /// The admin client configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A kubeconfig file for the admin user, for `kubectl` and other tools.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding the control plane's state, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long [`ControlPlane::start`] took, from nothing to a ready apiserver.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
}

/// Applies `crds` with server-side apply and waits until each is Established.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> Result<(), Error> {
    const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("smolpaws").force(),
            &Patch::Apply(crd),
        )
        .await?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(ESTABLISH_TIMEOUT, established)
            .await
            .map_err(|_| Error::NotEstablished(name.clone(), ESTABLISH_TIMEOUT))??;
    }
    Ok(())
}

/// Fails with the process's last output if it has exited: a server that
/// was being waited for will never be ready.
pub(crate) fn still_running(process: &mut Process) -> Result<(), Error> {
    match process.exited() {
        Some(status) => Err(Error::Exited {
            name: process.name().to_owned(),
            status,
            log: process.log_tail(40),
        }),
        None => Ok(()),
    }
}

/// Starts `binary` with `args` as process `name` (through `launcher`, if
/// any), its output in `<root>/<name>.log`.
pub(crate) fn spawn(
    name: &str,
    binary: &Path,
    args: &[String],
    launcher: &[OsString],
    root: &Path,
) -> Result<Process, Error> {
    let mut command = match launcher.split_first() {
        Some((program, rest)) => {
            let mut command = std::process::Command::new(program);
            command.args(rest).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    command.args(args);
    Process::spawn(name, command, &root.join(format!("{name}.log"))).map_err(|source| {
        Error::Spawn {
            binary: binary.to_owned(),
            source,
        }
    })
}

/// Distinct free loopback ports. The OS may hand a port out again between
/// this call and the server binding it; on loopback in a test run that race
/// is rare and shows up as a clear start-up error.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Ports)?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or_default())
        .collect();
    Ok(ports.try_into().expect("one port per listener"))
}

fn kubeconfig_yaml(server: &str, ca: &Path, token: &str) -> String {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "smolpaws", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{ "name": "smolpaws-admin", "user": { "token": token } }],
        "contexts": [{ "name": "smolpaws", "context": {
            "cluster": "smolpaws",
            "user": "smolpaws-admin",
        }}],
        "current-context": "smolpaws",
    });
    serde_yaml_ng::to_string(&kubeconfig).expect("a JSON value serializes as YAML")
}
