//! What workloads that run on the node as a cluster's own need of it, beyond
//! running pods: the apiserver reached the way in-cluster clients reach it,
//! and NetworkPolicy enforced. Both are opt-in; `dev --pods` and the plain
//! real-node tests use neither, so their sandboxes cannot reach the
//! apiserver at all.
//!
//! The apiserver listens on the node's loopback. Pods reach it through the
//! `kubernetes` Service, whose one endpoint is a forward in a network
//! namespace of its own behind the node, as a cluster's control plane sits
//! off its nodes: a pod's packets to it are forwarded by the node, as they
//! are in a cluster, and NetworkPolicy judges them on the way.
//!
//! NetworkPolicy is enforced by kube-router's network policy controller
//! (iptables and ipset, in the node's network namespace). This kernel lacks
//! the nftables `queue` expression, which kube-network-policies needs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

use super::{Error, Node, config, io, network};
use crate::controlplane::run_script;

/// The apiserver's address as pods reach it: the `kubernetes` Service's
/// endpoint.
const APISERVER_FRONT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 89, 0, 2)), 443);
/// The node's side of the link to the front.
const FRONT_GATEWAY: &str = "10.89.0.1";
/// The node's end of that link.
const FRONT_LINK: &str = "front0";
/// Where kube-router answers health checks: the node's loopback.
const ENFORCER_HEALTH: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 20244);

/// The front's namespace setup, run inside its new network namespace (and
/// the node's mount and PID namespaces, where pid 1 holds the node's
/// network) before it becomes the process that holds it: a link to the
/// node, the front's address on it, a route back to the pods, and its pid
/// written to `$1` for the host to find the namespace.
const FRONT_SETUP: &str = r#"set -eu
ip link set lo up
ip link add eth0 type veth peer name "$2" netns 1
ip addr add "$3/30" dev eth0
ip link set eth0 up
ip route add "$5" via "$4"
nsenter --net=/proc/1/ns/net ip addr add "$4/30" dev "$2"
nsenter --net=/proc/1/ns/net ip link set "$2" up
echo $$ >"$1.tmp"
mv "$1.tmp" "$1"
exec sleep infinity
"#;

/// `kubectl` and kube-router, built by `tools/cluster/build.sh`
/// from pinned Go modules and cached outside the repository.
#[derive(Clone, Debug)]
pub struct ClusterTools {
    dir: PathBuf,
}

impl ClusterTools {
    /// Finds the binaries, building them first when they are not cached yet
    /// (minutes, once per pinned version set).
    pub async fn locate() -> Result<Self, Error> {
        let output = run_script("cluster/build.sh", &[]).await?;
        Ok(Self {
            dir: PathBuf::from(output.trim()),
        })
    }

    /// The `kubectl` binary.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }

    /// The `kube-router` binary.
    pub fn kube_router(&self) -> PathBuf {
        self.dir.join("kube-router")
    }
}

impl Node {
    /// Builds (or finds cached) the operator's image, the static
    /// `smolpaws` over the sandbox image's root filesystem as the
    /// Dockerfile lays it out, imports it into the node's runtime and
    /// returns its reference.
    pub async fn import_operator_image(&self, smolpaws: &Path) -> Result<String, Error> {
        let script = "cluster/operator-image.sh";
        let args = [
            smolpaws.as_os_str(),
            self.images.sandbox_archive().as_os_str(),
        ];
        let output = run_script(script, &args).await?;
        let (reference, archive) = output
            .trim()
            .split_once(' ')
            .ok_or_else(|| Error::Command {
                command: format!("tools/{script}"),
                output: output.clone(),
            })?;
        self.run(
            "ctr",
            &["-n", "k8s.io", "images", "import"],
            OsStr::new(archive),
        )
        .await?;
        Ok(reference.to_owned())
    }

    /// Lets pods reach the apiserver as in-cluster clients do, through the
    /// `kubernetes` Service (its certificate names the Service's address),
    /// until the node stops.
    pub async fn serve_apiserver_to_pods(&mut self) -> Result<(), Error> {
        let pid_file = self.dir().join("front.pid");
        let args = [
            "--net",
            "--",
            "sh",
            "-c",
            FRONT_SETUP,
            "front",
            &pid_file.display().to_string(),
            FRONT_LINK,
            &APISERVER_FRONT.ip().to_string(),
            FRONT_GATEWAY,
            config::POD_CIDR,
        ]
        .map(String::from);
        let written = pid_file.clone();
        self.start_process("apiserver-front", Path::new("unshare"), &args, move || {
            written.exists()
        })
        .await?;
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(io("reading the front's pid"))?
            .trim()
            .to_owned();
        let front = self.inside(&format!("/proc/{pid}/ns/net"));
        let stop = CancellationToken::new();
        // Held before the forward starts: a forward that starts late, after
        // its start is given up, still stops with the node.
        self.front = Some(stop.clone().drop_guard());
        serve_forward(front, self.network(), self.apiserver_address()?, stop).await?;

        let client = self.plane().client()?;
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/service-name".into(), "kubernetes".into()),
                    (
                        "endpointslice.kubernetes.io/managed-by".into(),
                        "smolpaws-node".into(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec![APISERVER_FRONT.ip().to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: Some(APISERVER_FRONT.port().into()),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        };
        Api::<EndpointSlice>::namespaced(client, "default")
            .create(&PostParams::default(), &slice)
            .await
            .map_err(|e| Error::Command {
                command: "creating the kubernetes Service's EndpointSlice".into(),
                output: e.to_string(),
            })?;
        Ok(())
    }

    /// Enforces NetworkPolicy on the node's pods with kube-router's network
    /// policy controller alone (`binary`), run beside kube-proxy as the
    /// node's admin. Returns once it answers health checks, before its first
    /// sync: a policy, or a pod, is enforced once the controller has seen it
    /// (within a second here), as with kube-router in any cluster.
    pub async fn enforce_network_policies(&mut self, binary: &Path) -> Result<(), Error> {
        let args = [
            format!("--kubeconfig={}", self.plane().kubeconfig_path().display()),
            format!("--hostname-override={}", config::NODE_NAME),
            "--run-firewall=true".into(),
            "--run-router=false".into(),
            "--run-service-proxy=false".into(),
            // The node's CNI network is its own; kube-router must not
            // write one.
            "--enable-cni=false".into(),
            "--enable-ipv6=false".into(),
            format!("--service-cluster-ip-range={}", config::SERVICE_CIDR),
            format!("--health-addr={}", ENFORCER_HEALTH.ip()),
            format!("--health-port={}", ENFORCER_HEALTH.port()),
            "--v=2".into(),
        ];
        let network = self.network();
        self.start_process("kube-router", binary, &args, move || {
            network::reachable(&network, ENFORCER_HEALTH)
        })
        .await
    }
}

/// Serves, on a thread and runtime of its own until `stop`, a forward from
/// the front's address inside `front` to `target` inside `node`.
async fn serve_forward(
    front: PathBuf,
    node: PathBuf,
    target: SocketAddr,
    stop: CancellationToken,
) -> Result<(), Error> {
    let (bound, listening) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        runtime.block_on(async move {
            match network::bind(&front, APISERVER_FRONT) {
                Ok(listener) => {
                    let _ = bound.send(Ok(()));
                    network::forward(listener, node, target, stop).await;
                }
                Err(error) => {
                    let _ = bound.send(Err(error));
                }
            }
        });
    });
    let waited = tokio::time::timeout(Duration::from_secs(10), listening).await;
    match waited {
        Ok(Ok(bound)) => bound.map_err(io(format!("listening on {APISERVER_FRONT} in the front"))),
        _ => Err(Error::Io {
            what: "starting the apiserver's front".into(),
            source: std::io::Error::other("its thread never answered"),
        }),
    }
}
