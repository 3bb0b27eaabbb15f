//! `smolpaws dev --pods`: dev mode's sandboxes as real, isolated pods, on a
//! one-node cluster ([`crate::node`]) whose control plane is dev mode's.
//!
//! The dev process straddles two networks, each socket made where it
//! belongs (see [`crate::node::bind`]). On the host's loopback: the intake,
//! and a forward to the node's apiserver for the operator itself, `smolpaws
//! dev comment` and `kubectl`; the operator's LLM gateway also calls the
//! user's LLM from the host. In the node's network namespace, on
//! [`NODE_IP`], what pods reach: one listener for the result endpoint and
//! the LLM gateway, and a read-only git daemon serving the local
//! repositories for the agent's checkout. Pods have no route out of that
//! namespace, so they reach nothing else.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::controller::ControllerArgs;
use crate::controlplane::Tools;
use crate::node::{self, NODE_IP, Node, Parts};

/// The port of the git daemon in the node's namespace, git's own: nothing
/// else of the namespace listens there.
const GIT_PORT: u16 = 9418;

/// A running node for dev mode; dropping it stops the node and restores
/// the host.
pub struct Pods {
    // Stops the forward before the node it leads into.
    _forward: DropGuard,
    node: Node,
}

/// What dev mode needs of its node.
pub struct Started {
    /// The node.
    pub pods: Pods,
    /// The admin client configuration, through the host's forward.
    pub config: kube::Config,
    /// The admin kubeconfig (YAML), through the host's forward.
    pub kubeconfig: String,
    /// Where pods reach the result endpoint and the LLM gateway.
    pub results: TcpListener,
}

/// Starts the node of `parts`, then what its pods reach, and points the
/// sandboxes of `controller` at the node's images and at `repositories`
/// for their checkouts.
pub async fn start(
    tools: Tools,
    parts: Parts,
    controller: &mut ControllerArgs,
    repositories: &Path,
) -> Result<Started, node::Error> {
    let smolpaws = node::static_smolpaws().await?;
    let mut node = Node::start_apart(tools, parts, smolpaws).await?;
    node.images().use_in(&mut controller.sandbox);
    let node_ip: IpAddr = NODE_IP
        .parse()
        .expect("the node's address is an IP address");
    let network = node.network();
    let results =
        node::bind(&network, SocketAddr::new(node_ip, 0)).map_err(|source| node::Error::Io {
            what: format!("listening on {NODE_IP} in the node's network"),
            source,
        })?;
    serve_repositories(&mut node, repositories, SocketAddr::new(node_ip, GIT_PORT)).await?;
    controller.sandbox.extra_env.push((
        "GITHUB_SERVER_URL".into(),
        format!("git://{NODE_IP}:{GIT_PORT}"),
    ));
    let forward = CancellationToken::new();
    let (config, kubeconfig) = node.apiserver_on_host(forward.clone()).await?;
    Ok(Started {
        pods: Pods {
            _forward: forward.drop_guard(),
            node,
        },
        config,
        kubeconfig,
        results,
    })
}

impl Pods {
    /// How long the node took to become Ready.
    pub fn started_in(&self) -> std::time::Duration {
        self.node.started_in()
    }
}

/// Serves the links under `repositories` (`<owner>/<name>.git`) to pods
/// on `address`, with git's own daemon: fetches only (it refuses pushes
/// unless told otherwise), inside the node's namespace, stopped with it.
async fn serve_repositories(
    node: &mut Node,
    repositories: &Path,
    address: SocketAddr,
) -> Result<(), node::Error> {
    std::fs::create_dir_all(repositories).map_err(|source| node::Error::Io {
        what: format!("creating {}", repositories.display()),
        source,
    })?;
    let args = [
        // The daemon runs as root; the checkouts are the developer's.
        "-c".into(),
        "safe.directory=*".into(),
        "daemon".into(),
        "--reuseaddr".into(),
        "--export-all".into(),
        format!("--base-path={}", repositories.display()),
        format!("--listen={}", address.ip()),
        format!("--port={}", address.port()),
    ];
    let network: PathBuf = node.network();
    node.start_process("git-daemon", Path::new("git"), &args, || {
        node::reachable(&network, address)
    })
    .await
}
