//! A one-node Kubernetes cluster on this machine: etcd and kube-apiserver
//! (the [`crate::controlplane`]), kube-scheduler, kube-controller-manager,
//! containerd with runc and the CNI bridge, the kubelet, kube-proxy and
//! CoreDNS, so that sandbox pods run for real.
//!
//! Everything runs inside namespaces of the node's own: a network namespace
//! (the pods' bridge, the node's address, every server the pods reach), a
//! mount namespace (what the kubelet and containerd mount, and their state
//! under `/var/lib`, `/var/log` and `/run`, kept in the node's directory or
//! in memory) and a PID namespace whose first process holds them all. When
//! that process dies, however the node's owner dies, the kernel kills every
//! process of the node, containers included, and the namespaces vanish.
//! What remains on the host is undone by [`host`].
//!
//! A client of the node (its apiserver listens on the node's loopback) runs
//! on a thread inside the node's network (see [`Node::enter`]), or on the
//! host through [`Node::apiserver_on_host`].

mod config;
pub mod host;
mod in_cluster;
mod network;
mod parts;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;
use kube::config::Kubeconfig;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::controlplane::{self, ControlPlane, Tools, spawn, still_running};
use crate::process::{Held, Process};
pub use config::{NODE_IP, NODE_NAME};
pub use in_cluster::ClusterTools;
pub use network::{bind, enter, reachable};
pub use parts::{Images, PARTS_DIR_VAR, Parts, STATIC_BINARY_VAR, static_smolpaws};

/// How long the node may take from its kubelet's start to Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong while starting a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine lacks something a node needs.
    #[error("this machine cannot run a node: {0}")]
    Missing(String),
    /// The control plane failed.
    #[error(transparent)]
    ControlPlane(#[from] controlplane::Error),
    /// A file of the node could not be written.
    #[error("{what} failed: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A step did not finish in time.
    #[error("{what} did not happen within {timeout:?}; {log}")]
    Timeout {
        /// The step.
        what: String,
        /// How long it was given.
        timeout: Duration,
        /// What the logs say.
        log: String,
    },
    /// A command the node ran failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A running node, stopped (and the host restored) when dropped.
pub struct Node {
    /// Stops the apiserver's forward for pods, when it serves one.
    front: Option<tokio_util::sync::DropGuard>,
    // Dropped in order: the node's own processes, the control plane, then
    // the first process of its namespaces, which takes whatever is left.
    processes: Vec<Process>,
    plane: Option<ControlPlane>,
    holder: Option<Process>,
    /// The first process of the node's namespaces (the host's pid).
    first: u32,
    /// That process, held to see it end.
    first_held: Option<Held>,
    images: Images,
    started_in: Duration,
    dir: TempDir,
}

/// How long a killed node's PID namespace may take to empty.
const FIRST_EXIT: Duration = Duration::from_secs(30);

impl Drop for Node {
    fn drop(&mut self) {
        self.front = None;
        self.processes.clear();
        self.plane = None;
        self.holder = None;
        // Killing the holder ends the namespaces' first process, and the
        // kernel completes that exit only once every process of the node's
        // PID namespace (a pod's too) is gone: waiting for it keeps any of
        // them from outliving the node.
        if let Some(first) = &self.first_held {
            let deadline = Instant::now() + FIRST_EXIT;
            while first.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if first.running() {
                eprintln!("the node's PID namespace still runs {FIRST_EXIT:?} after it was killed");
            }
        }
        for left in host::undo(self.dir.path()) {
            // Nothing else can be done at this point but say so.
            eprintln!("the node left behind {left}");
        }
    }
}

impl Node {
    /// Builds the images not cached yet, then starts a node of `parts`
    /// whose sandbox images carry `smolpaws` (a static binary), and waits
    /// until it is Ready. The calling thread joins the node's network (see
    /// [`Node::enter`]): run this on a thread of the node's clients, or
    /// through [`Node::start_apart`].
    pub async fn start(tools: &Tools, parts: &Parts, smolpaws: &Path) -> Result<Self, Error> {
        let began = Instant::now();
        host::sweep();
        let images = Images::build(smolpaws, parts).await?;

        let dir = tempfile::Builder::new()
            .prefix(host::PREFIX)
            .tempdir()
            .map_err(io("creating the node's directory"))?;
        let root = dir.path().to_owned();
        write(
            &root.join(host::OWNER_FILE),
            &std::process::id().to_string(),
        )?;
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a temp dir has a UTF-8 name")
            .to_owned();
        // From here on, a failure drops the node, which undoes what it did.
        let mut node = Self {
            front: None,
            processes: Vec::new(),
            plane: None,
            holder: None,
            first: 0,
            first_held: None,
            images,
            started_in: Duration::ZERO,
            dir,
        };
        host::record_settings().map_err(io("recording the kernel settings"))?;
        host::make_cgroup_parent(&name).map_err(io("making the node's cgroup parent"))?;
        let (holder, first) = hold_namespaces(&root, parts).await?;
        node.holder = Some(holder);
        node.first = first;
        node.first_held =
            Some(Held::new(first).map_err(io("holding the namespaces' first process"))?);
        node.enter().map_err(io("joining the node's network"))?;
        let launcher = node.launcher();

        let plane = ControlPlane::start_with(
            tools,
            controlplane::Options {
                launcher: launcher.clone(),
                apiserver_args: vec![
                    // Never the machine's resolver for the node's name.
                    "--kubelet-preferred-address-types=InternalIP".into(),
                    format!("--service-cluster-ip-range={}", config::SERVICE_CIDR),
                ],
            },
        )
        .await?;
        let kubeconfig = plane.kubeconfig_path().to_owned();
        let ca = plane.ca_certificate();

        let cni = root.join("cni");
        std::fs::create_dir_all(&cni).map_err(io("creating the CNI directory"))?;
        write(&cni.join("10-smolpaws.conflist"), &config::cni())?;
        let containerd_config = root.join("containerd.toml");
        write(
            &containerd_config,
            &config::containerd(&node.images.pause, &cni),
        )?;
        let mut containerd = spawn(
            "containerd",
            Path::new("/usr/bin/containerd"),
            &["--config".into(), path(&containerd_config)],
            &launcher,
            &root,
        )?;
        let socket = node.inside("/run/containerd/containerd.sock");
        wait_for(
            "containerd's socket",
            Duration::from_secs(30),
            &mut containerd,
            || socket.exists(),
        )
        .await?;
        node.processes.push(containerd);
        for archive in node.images.archives() {
            node.run(
                "ctr",
                &["-n", "k8s.io", "images", "import"],
                archive.as_os_str(),
            )
            .await?;
        }

        let kubelet_config = root.join("kubelet.yaml");
        write(&kubelet_config, &config::kubelet(&name, &ca))?;
        let corefile = root.join("Corefile");
        write(&corefile, &config::corefile(&kubeconfig))?;
        let kubeconfig = path(&kubeconfig);
        let flags = |flags: &[&str]| -> Vec<String> {
            flags
                .iter()
                .map(|f| f.replace("{kc}", &kubeconfig))
                .collect()
        };
        let components: [(&str, PathBuf, Vec<String>); 5] = [
            (
                "kubelet",
                parts.kubelet(),
                vec![
                    format!("--config={}", kubelet_config.display()),
                    format!("--kubeconfig={kubeconfig}"),
                    format!("--hostname-override={NODE_NAME}"),
                    format!("--node-ip={NODE_IP}"),
                    "--v=1".into(),
                ],
            ),
            (
                "kube-scheduler",
                parts.scheduler(),
                flags(&[
                    "--kubeconfig={kc}",
                    "--authentication-kubeconfig={kc}",
                    "--authorization-kubeconfig={kc}",
                    "--bind-address=127.0.0.1",
                    "--leader-elect=false",
                ]),
            ),
            (
                "kube-controller-manager",
                parts.controller_manager(),
                [
                    flags(&[
                        "--kubeconfig={kc}",
                        "--authentication-kubeconfig={kc}",
                        "--authorization-kubeconfig={kc}",
                        "--bind-address=127.0.0.1",
                        "--leader-elect=false",
                        "--use-service-account-credentials=false",
                    ]),
                    vec![
                        format!(
                            "--service-account-private-key-file={}",
                            plane.service_account_key().display()
                        ),
                        format!("--root-ca-file={}", ca.display()),
                    ],
                ]
                .concat(),
            ),
            (
                "kube-proxy",
                parts.proxy(),
                [
                    flags(&[
                        "--kubeconfig={kc}",
                        "--proxy-mode=iptables",
                        // Per-core conntrack sizing is a machine-wide setting.
                        "--conntrack-max-per-core=0",
                        "--metrics-bind-address=127.0.0.1:10249",
                        "--healthz-bind-address=127.0.0.1:10256",
                    ]),
                    vec![
                        format!("--hostname-override={NODE_NAME}"),
                        format!("--cluster-cidr={}", config::POD_CIDR),
                    ],
                ]
                .concat(),
            ),
            (
                "coredns",
                parts.coredns(),
                vec!["-conf".into(), path(&corefile)],
            ),
        ];
        node.plane = Some(plane);
        for (name, binary, args) in components {
            let process = spawn(name, &binary, &args, &launcher, &root)?;
            node.processes.push(process);
        }
        node.wait_ready().await?;
        node.started_in = began.elapsed();
        Ok(node)
    }

    /// [`Node::start`] on a thread of its own (which joins the node's
    /// network and ends), for a caller whose threads stay on the host.
    pub async fn start_apart(tools: Tools, parts: Parts, smolpaws: PathBuf) -> Result<Self, Error> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("starting a runtime for the node's start"))
                .and_then(|runtime| runtime.block_on(Self::start(&tools, &parts, &smolpaws)));
            // A caller that gave up drops the node, which stops it.
            let _ = sender.send(started);
        });
        receiver.await.unwrap_or_else(|_| {
            Err(Error::Io {
                what: "starting the node".into(),
                source: std::io::Error::other("its start-up thread panicked"),
            })
        })
    }

    /// Moves the calling thread into the node's network namespace: its new
    /// sockets reach the apiserver on the node's loopback and listen where
    /// pods reach them ([`NODE_IP`]). Threads it then starts are inside too.
    pub fn enter(&self) -> std::io::Result<()> {
        enter(&self.network())
    }

    /// Starts `program` with `args` inside the node, stopped with it, once
    /// `ready` holds (within ten seconds).
    pub async fn start_process(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        ready: impl Fn() -> bool,
    ) -> Result<(), Error> {
        let mut process = spawn(name, program, args, &self.launcher(), self.dir.path())?;
        wait_for(name, Duration::from_secs(10), &mut process, ready).await?;
        self.processes.push(process);
        Ok(())
    }

    /// The node's apiserver reached from the host: a forward from a free
    /// port of the host's loopback into the node's, served until `stop`.
    /// Its admin client configuration and kubeconfig (YAML) name the
    /// forward; the apiserver's certificate holds for any port of
    /// 127.0.0.1.
    pub async fn apiserver_on_host(
        &self,
        stop: CancellationToken,
    ) -> Result<(kube::Config, String), Error> {
        let plane = self.plane();
        let target = self.apiserver_address()?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(io(
                "listening on a loopback port for the apiserver's forward",
            ))?;
        let outside = listener
            .local_addr()
            .map_err(io("reading the forward's address"))?;
        let server = format!("https://{outside}");
        tokio::spawn(network::forward(listener, self.network(), target, stop));

        let mut config = plane.config().clone();
        config.cluster_url = server.parse().expect("an https URL of a socket address");
        let mut kubeconfig = Kubeconfig::read_from(plane.kubeconfig_path())
            .map_err(|e| Error::ControlPlane(e.into()))?;
        for cluster in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            cluster.server = Some(server.clone());
        }
        let yaml = serde_yaml_ng::to_string(&kubeconfig).expect("a kubeconfig serializes");
        Ok((config, yaml))
    }

    /// Where the apiserver listens, on the node's loopback.
    fn apiserver_address(&self) -> Result<SocketAddr, Error> {
        let url = &self.plane().config().cluster_url;
        url.authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
            .ok_or_else(|| Error::Command {
                command: "reading the apiserver's address".into(),
                output: url.to_string(),
            })
    }

    /// The node's network namespace, for [`enter`] on other threads.
    pub fn network(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.first))
    }

    /// The control plane beside the node.
    pub fn plane(&self) -> &ControlPlane {
        self.plane.as_ref().expect("a started node has its plane")
    }

    /// The images imported into the node's runtime.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// How long [`Node::start`] took, the parts and images already built.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The directory holding the node's configuration, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `path` as the node's processes see it (their mount namespace).
    fn inside(&self, path: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.first)).join(path.trim_start_matches('/'))
    }

    /// The command prefix that runs a program inside the node's namespaces.
    fn launcher(&self) -> Vec<OsString> {
        let target = format!("--target={}", self.first);
        ["nsenter", &target]
            .into_iter()
            .map(OsString::from)
            .chain(["--net", "--mount", "--pid", "--"].map(OsString::from))
            .collect()
    }

    /// Runs `program` with `args` and `last` inside the node, to completion.
    async fn run(&self, program: &str, args: &[&str], last: &std::ffi::OsStr) -> Result<(), Error> {
        let launcher = self.launcher();
        let output = tokio::process::Command::new(&launcher[0])
            .args(&launcher[1..])
            .arg(program)
            .args(args)
            .arg(last)
            .output()
            .await
            .map_err(io(format!("running {program}")))?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Command {
            command: format!("{program} {} {}", args.join(" "), last.to_string_lossy()),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.plane().client().map_err(Error::ControlPlane)?;
        let nodes: Api<NodeObject> = Api::all(client);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for process in &mut self.processes {
                still_running(process)?;
            }
            if let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await
                && ready(&node)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let kubelet = self.processes.iter().find(|p| p.name() == "kubelet");
                return Err(Error::Timeout {
                    what: format!("Node {NODE_NAME} becoming Ready"),
                    timeout: READY_TIMEOUT,
                    log: kubelet.map(|p| p.log_tail(40)).unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What a node needs of the machine beyond the packages its build script
/// installs, each named when missing.
fn preflight() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Missing(
            "root: the kubelet, containerd and runc need it (run as root)".into(),
        ));
    }
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        return Err(Error::Missing(
            "cgroups: no memory controller under /sys/fs/cgroup".into(),
        ));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        return Err(Error::Missing(
            "overlayfs: the kernel offers no `overlay` filesystem (containerd's snapshotter needs it)"
                .into(),
        ));
    }
    for tool in ["unshare", "nsenter", "ip"] {
        if which(tool).is_none() {
            return Err(Error::Missing(format!(
                "`{tool}` (util-linux or iproute2) on PATH"
            )));
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// The node's namespaces' setup, run as their first process before it
/// becomes the pause binary that holds them: state under the node's
/// directory (`$1`), the loopback up, the pods' bridge with the node's
/// address, which is also what the kubelet registers, and a route for the
/// Services' addresses, which the kernel needs before kube-proxy's rules
/// rewrite them (the node has no default route).
const SETUP: &str = r#"set -eu
mkdir -p "$1/var-lib" "$1/var-log"
mount --bind "$1/var-lib" /var/lib
mount --bind "$1/var-log" /var/log
mount -t tmpfs -o mode=0755 tmpfs /run
ip link set lo up
ip link add "$3" type bridge
ip addr add "$4" dev "$3"
ip link set "$3" up
ip route add "$5" dev "$3"
touch "$1/namespaces-ready"
exec "$2"
"#;

/// Starts the first process of the node's namespaces and returns it (the
/// `unshare` that started it) and its pid, once the namespaces are set up.
async fn hold_namespaces(root: &Path, parts: &Parts) -> Result<(Process, u32), Error> {
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--fork",
            "--pid",
            "--kill-child",
            "--mount-proc",
            "--net",
            "--mount",
            "--propagation=private",
            "--",
            "sh",
            "-c",
            SETUP,
            "setup",
        ])
        .arg(root)
        .arg(parts.pause())
        .arg(config::BRIDGE)
        .arg(format!("{NODE_IP}/16"))
        .arg(config::SERVICE_CIDR);
    let mut holder = Process::spawn("namespaces", command, &root.join("namespaces.log"))
        .map_err(io("starting unshare"))?;
    let ready = root.join("namespaces-ready");
    wait_for(
        "the node's namespaces",
        Duration::from_secs(10),
        &mut holder,
        || ready.exists(),
    )
    .await?;
    let children = format!("/proc/{0}/task/{0}/children", holder.id());
    let first = std::fs::read_to_string(&children)
        .map_err(io(format!("reading {children}")))?
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| Error::Missing("the namespaces' first process vanished".into()))?;
    Ok((holder, first))
}

/// Waits until `done`, failing if `process` exits first.
async fn wait_for(
    what: &str,
    timeout: Duration,
    process: &mut Process,
    done: impl Fn() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while !done() {
        still_running(process)?;
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                log: process.log_tail(40),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
