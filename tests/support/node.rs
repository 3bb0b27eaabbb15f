//! The real node of a test binary: a one-node cluster (`smolpaws::node`)
//! started on first use and stopped when the binary exits, its sandbox
//! images carrying a static smolpaws built from this checkout.
//!
//! The node's apiserver and pods live in the node's network namespace, so a
//! test runs on a thread inside it ([`run`]), and the test's servers listen
//! on the node's address, where pods reach them.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodStatus, ServiceAccount};
use kube::Client;
use kube::api::Api;
use smolpaws::controller::ControllerArgs;
use smolpaws::controlplane::Tools;
use smolpaws::node::{self, ClusterTools, Images, Node, Parts};

use super::Access;

struct Shared {
    access: Access,
    network: PathBuf,
    /// The node's directory: its configuration, state and logs.
    dir: PathBuf,
    images: Images,
    /// Set on a node serving a cluster's own workloads: its tools and the
    /// operator's image.
    cluster: Option<(ClusterTools, String)>,
}

/// What a binary's node serves beyond sandbox pods; one kind per binary.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Serves {
    /// Sandbox pods only: the apiserver is out of their reach.
    Sandboxes,
    /// Also workloads of the cluster's own (an operator's pods): the
    /// apiserver reached through the `kubernetes` Service, and NetworkPolicy
    /// enforced by kube-router.
    Cluster,
}

static KIND: OnceLock<Serves> = OnceLock::new();
static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// The binary's node, started as `serves` says by its first user.
fn node(serves: Serves) -> &'static Shared {
    let kind = *KIND.get_or_init(|| serves);
    assert_eq!(kind, serves, "a test binary runs one kind of node");
    // The start-up thread moves into the node's network.
    super::once(&SHARED, "the test node", move || start(kind))
}

/// The binary's node, of whichever kind it runs.
fn shared() -> &'static Shared {
    node(*KIND.get_or_init(|| Serves::Sandboxes))
}

async fn start(serves: Serves) -> Result<Shared, String> {
    let began = std::time::Instant::now();
    let parts = Parts::ready().await.map_err(|e| e.to_string())?;
    let smolpaws = node::static_smolpaws().await.map_err(|e| e.to_string())?;
    let tools = Tools::locate().await.map_err(|e| e.to_string())?;
    // Before the node's start moves this thread into its network, where
    // no package or module can be fetched.
    let cluster_tools = match serves {
        Serves::Sandboxes => None,
        Serves::Cluster => Some(ClusterTools::locate().await.map_err(|e| e.to_string())?),
    };
    let mut node = Node::start(&tools, &parts, &smolpaws)
        .await
        .map_err(|e| e.to_string())?;
    super::install_crds(node.plane()).await?;
    let cluster = match cluster_tools {
        None => None,
        Some(cluster) => {
            node.serve_apiserver_to_pods()
                .await
                .map_err(|e| e.to_string())?;
            node.enforce_network_policies(&cluster.kube_router())
                .await
                .map_err(|e| e.to_string())?;
            let operator = node
                .import_operator_image(&smolpaws)
                .await
                .map_err(|e| e.to_string())?;
            Some((cluster, operator))
        }
    };
    // Straight to stderr: the test harness captures only print macros.
    let _ = writeln!(
        std::io::stderr(),
        "test node: Ready in {:.2?} (all parts built), everything at {:.2?}; kubeconfig {}",
        node.started_in(),
        began.elapsed(),
        node.plane().kubeconfig_path().display()
    );
    let _ = super::LISTEN.set(node::NODE_IP.parse().expect("an IP address"));
    let shared = Shared {
        access: Access::of(node.plane()),
        network: node.network(),
        dir: node.dir().to_owned(),
        images: node.images().clone(),
        cluster,
    };
    super::drop_at_exit(node);
    Ok(shared)
}

/// Runs `test` on a thread of its own inside the node's network, on a
/// runtime of its own, starting the node first if need be.
pub fn run<F, T>(test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    run_on(node(Serves::Sandboxes), test)
}

/// [`run`] on a node that also serves the cluster's own workloads: pods
/// reach the apiserver as in-cluster clients, and NetworkPolicy is
/// enforced.
pub fn run_in_cluster<F, T>(test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    run_on(node(Serves::Cluster), test)
}

fn run_on<F, T>(shared: &'static Shared, test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    let network = shared.network.clone();
    let thread = std::thread::spawn(move || {
        node::enter(&network).expect("joining the node's network");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(test())
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// An admin client of the node's apiserver, for the calling test's runtime
/// (which [`run`] put in the node's network).
pub fn client() -> Client {
    shared().access.client()
}

/// The admin kubeconfig of the node's apiserver.
pub fn kubeconfig() -> PathBuf {
    shared().access.kubeconfig()
}

/// The last `lines` lines of the node's process `name`'s log.
pub fn log_tail(name: &str, lines: usize) -> String {
    smolpaws::process::tail(&shared().dir.join(format!("{name}.log")), lines)
}

/// The node's images.
pub fn images() -> Images {
    shared().images.clone()
}

/// `kubectl`, built from the node's Kubernetes release.
pub fn kubectl() -> PathBuf {
    cluster_parts().0.kubectl()
}

/// The operator's image, as the Dockerfile lays it out.
pub fn operator_image() -> String {
    cluster_parts().1.clone()
}

fn cluster_parts() -> &'static (ClusterTools, String) {
    node(Serves::Cluster)
        .cluster
        .as_ref()
        .expect("a cluster node has its tools")
}

/// Asserts the first container of a pod with `status` ran under containerd.
pub fn assert_ran_under_containerd(status: Option<PodStatus>) {
    let agent = &status
        .and_then(|s| s.container_statuses)
        .expect("container statuses")[0];
    assert!(
        agent
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{agent:?}"
    );
}

/// Points a controller's sandboxes at the node's images.
pub fn use_node_images(args: &mut ControllerArgs) {
    shared().images.use_in(&mut args.sandbox);
}

/// Creates a namespace of its own for one test, enforcing the restricted
/// Pod Security standard, and returns its name once the controller-manager
/// has given it the default ServiceAccount pods need.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = super::create_namespace(
        client,
        prefix,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &name);
    for _ in 0..300 {
        if accounts
            .get_opt("default")
            .await
            .expect("a ServiceAccount lookup")
            .is_some()
        {
            return name;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace {name} never got its default ServiceAccount");
}
