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
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use smolpaws::api::AgentRun;
use smolpaws::controller::ControllerArgs;
use smolpaws::controlplane::{self, Tools};
use smolpaws::node::{self, Images, Node};

struct Shared {
    config: kube::Config,
    network: PathBuf,
    images: Images,
    kubeconfig: PathBuf,
    /// Taken and dropped at exit, which stops the node and restores the host.
    node: Mutex<Option<Node>>,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

extern "C" fn stop_node() {
    if let Some(Ok(shared)) = SHARED.get() {
        let node = shared
            .node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(node);
    }
}

fn shared() -> &'static Shared {
    let shared = SHARED.get_or_init(|| {
        // Its own thread, which the node moves into its network, and its
        // own runtime: the caller's runtime ends with its test.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start())
        })
        .join()
        .unwrap_or_else(|_| Err("the node start-up thread panicked".into()))
    });
    match shared {
        Ok(shared) => shared,
        Err(error) => panic!("the test node could not start: {error}"),
    }
}

/// The static (musl) smolpaws the images carry, built from this checkout as
/// the Dockerfile builds it; `SMOLPAWS_STATIC_BINARY` names a prebuilt one
/// instead.
fn static_smolpaws() -> Result<PathBuf, String> {
    const TARGET: &str = "x86_64-unknown-linux-musl";
    if let Some(binary) = std::env::var_os("SMOLPAWS_STATIC_BINARY").filter(|b| !b.is_empty()) {
        return Ok(binary.into());
    }
    let manifest = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "--no-default-features"])
        .args(["--target", TARGET, "--bin", "smolpaws"])
        .current_dir(manifest)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the static smolpaws failed ({status}); it needs `rustup target add {TARGET}` and musl-gcc (Debian's musl-tools)"
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(manifest).join("target"));
    Ok(target.join(TARGET).join("release/smolpaws"))
}

async fn start() -> Result<Shared, String> {
    let began = std::time::Instant::now();
    let smolpaws = static_smolpaws()?;
    let tools = Tools::locate().await.map_err(|e| e.to_string())?;
    let node = Node::start(&tools, &smolpaws)
        .await
        .map_err(|e| e.to_string())?;
    let client = node.plane().client().map_err(|e| e.to_string())?;
    controlplane::install_crds(&client, &[AgentRun::crd()])
        .await
        .map_err(|e| e.to_string())?;
    // Straight to stderr: the test harness captures only print macros.
    let _ = writeln!(
        std::io::stderr(),
        "test node: Ready in {:.2?} (all parts built), everything at {:.2?}; kubeconfig {}",
        node.started_in(),
        began.elapsed(),
        node.plane().kubeconfig_path().display()
    );
    // SAFETY: registers a plain function with no preconditions; std offers
    // no exit hook, and a test binary's statics are never dropped.
    #[allow(unsafe_code)]
    unsafe {
        libc::atexit(stop_node)
    };
    let _ = super::LISTEN.set(node::NODE_IP.parse().expect("an IP address"));
    Ok(Shared {
        config: node.plane().config().clone(),
        network: node.network(),
        images: node.images().clone(),
        kubeconfig: node.plane().kubeconfig_path().to_owned(),
        node: Mutex::new(Some(node)),
    })
}

/// Runs `test` on a thread of its own inside the node's network, on a
/// runtime of its own, starting the node first if need be.
pub fn run<F, T>(test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    let network = shared().network.clone();
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
    Client::try_from(shared().config.clone()).expect("the admin kubeconfig is valid")
}

/// The admin kubeconfig of the node's apiserver.
pub fn kubeconfig() -> PathBuf {
    shared().kubeconfig.clone()
}

/// The images the node's runtime holds.
pub fn images() -> Images {
    shared().images.clone()
}

/// Points a controller's sandboxes at the node's images.
pub fn use_node_images(args: &mut ControllerArgs) {
    let images = images();
    args.sandbox.image = images.sandbox;
    args.sandbox.agent_image = images.smolpaws;
}

/// Creates a namespace of its own for one test, enforcing the restricted
/// Pod Security standard, and returns its name once the controller-manager
/// has given it the default ServiceAccount pods need.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let mut ns = Namespace::default();
    ns.metadata.generate_name = Some(format!("{prefix}-"));
    ns.metadata.labels = Some(
        [(
            "pod-security.kubernetes.io/enforce".to_owned(),
            "restricted".to_owned(),
        )]
        .into(),
    );
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a test namespace");
    let name = created
        .metadata
        .name
        .expect("the apiserver names the namespace");
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
