//! The node's parts and images, made ready by the project's scripts:
//! `tools/node/build.sh` (Debian's containerd, runc and CNI plugins; the
//! kubelet and its companions, CoreDNS and the pause binary built from
//! pinned Go modules) and `tools/node/images.sh` (OCI archives, without a
//! Docker engine), both cached outside the repository.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::Error;
use crate::controlplane::run_script;
use crate::sandbox::args::SandboxArgs;

/// The directory of the node's built binaries.
#[derive(Clone, Debug)]
pub struct Parts {
    dir: PathBuf,
}

/// Parts a node takes from the host's packages, installed by the build
/// script.
const PACKAGED: [&str; 6] = [
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/bin/ctr",
    "/usr/sbin/runc",
    "/usr/lib/cni/bridge",
    "/usr/lib/cni/host-local",
];

/// Names a directory of prebuilt node parts instead of the build script's.
pub const PARTS_DIR_VAR: &str = "SMOLPAWS_NODE_TOOLS_DIR";

impl Parts {
    /// The parts, once the machine is found able to run a node: installs
    /// and builds what is missing (minutes, once per input set), or takes
    /// the prebuilt ones [`PARTS_DIR_VAR`] names. Fails naming the first
    /// thing missing and how to get it.
    pub async fn ready() -> Result<Self, Error> {
        super::preflight()?;
        let dir = match std::env::var_os(PARTS_DIR_VAR).filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(run_script("node/build.sh", &[]).await?.trim()),
        };
        let parts = Self { dir };
        parts.check()?;
        Ok(parts)
    }

    /// Fails naming the first part the host lacks.
    fn check(&self) -> Result<(), Error> {
        let built = [
            self.kubelet(),
            self.scheduler(),
            self.controller_manager(),
            self.proxy(),
            self.coredns(),
            self.pause(),
        ];
        let missing = PACKAGED
            .iter()
            .map(PathBuf::from)
            .chain(built)
            .find(|p| !p.exists());
        match missing {
            Some(path) if path.starts_with(&self.dir) => Err(Error::Missing(format!(
                "{} (tools/node/build.sh builds it into its cache; {PARTS_DIR_VAR}, if set, names \
                 a directory of prebuilt parts instead)",
                path.display()
            ))),
            Some(path) => Err(Error::Missing(format!(
                "{} (tools/node/build.sh installs it with apt-get)",
                path.display()
            ))),
            None => Ok(()),
        }
    }

    /// The kubelet.
    pub fn kubelet(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// kube-scheduler.
    pub fn scheduler(&self) -> PathBuf {
        self.dir.join("kube-scheduler")
    }

    /// kube-controller-manager.
    pub fn controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }

    /// kube-proxy.
    pub fn proxy(&self) -> PathBuf {
        self.dir.join("kube-proxy")
    }

    /// CoreDNS.
    pub fn coredns(&self) -> PathBuf {
        self.dir.join("coredns")
    }

    /// The pause binary, first process of pods and of the node itself.
    pub fn pause(&self) -> PathBuf {
        self.dir.join("pause")
    }
}

/// The node's images, by reference, and the OCI archives they come from.
#[derive(Clone, Debug)]
pub struct Images {
    /// The smolpaws image (the static binary on an empty base).
    pub smolpaws: String,
    /// The default sandbox image (Debian with git and bash).
    pub sandbox: String,
    /// The pods' pause image.
    pub pause: String,
    /// The archives, in the order images.sh prints them: smolpaws, pause,
    /// sandbox.
    archives: Vec<PathBuf>,
}

impl Images {
    /// Writes (or finds cached) the images, the smolpaws one carrying the
    /// static binary `smolpaws`.
    pub async fn build(smolpaws: &Path, parts: &Parts) -> Result<Self, Error> {
        let pause = parts.pause();
        let args: [&OsStr; 2] = [smolpaws.as_os_str(), pause.as_os_str()];
        let output = run_script("node/images.sh", &args).await?;
        let mut refs = Vec::new();
        let mut archives = Vec::new();
        for line in output.lines() {
            if let Some((reference, archive)) = line.split_once(' ') {
                refs.push(reference.to_owned());
                archives.push(PathBuf::from(archive));
            }
        }
        let [smolpaws, pause, sandbox] =
            <[String; 3]>::try_from(refs).map_err(|refs| Error::Command {
                command: "tools/node/images.sh".into(),
                output: format!("printed {} images, not 3", refs.len()),
            })?;
        Ok(Self {
            smolpaws,
            sandbox,
            pause,
            archives,
        })
    }

    /// The sandbox image's archive, the base of the operator's.
    pub(super) fn sandbox_archive(&self) -> &Path {
        &self.archives[2]
    }

    /// The OCI archives to import into the node's runtime.
    pub fn archives(&self) -> &[PathBuf] {
        &self.archives
    }

    /// Points sandboxes configured by `sandbox` at these images.
    pub fn use_in(&self, sandbox: &mut SandboxArgs) {
        sandbox.image.clone_from(&self.sandbox);
        sandbox.agent_image.clone_from(&self.smolpaws);
    }
}

/// The Rust target of the static smolpaws the images carry.
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";
/// Names a prebuilt static smolpaws instead of building one.
pub const STATIC_BINARY_VAR: &str = "SMOLPAWS_STATIC_BINARY";

/// The static (musl) smolpaws the node's images carry: the one
/// [`STATIC_BINARY_VAR`] names, or built from this checkout as the
/// Dockerfile builds it (a no-op when it is up to date).
pub async fn static_smolpaws() -> Result<PathBuf, Error> {
    if let Some(binary) = std::env::var_os(STATIC_BINARY_VAR).filter(|b| !b.is_empty()) {
        let binary = PathBuf::from(binary);
        if !binary.is_file() {
            return Err(Error::Missing(format!(
                "{} ({STATIC_BINARY_VAR} names it)",
                binary.display()
            )));
        }
        return Ok(binary);
    }
    let manifest = env!("CARGO_MANIFEST_DIR");
    let args = [
        "build",
        "--release",
        "--locked",
        "--no-default-features",
        "--target",
        STATIC_TARGET,
        "--bin",
        "smolpaws",
    ];
    let command = format!("cargo {}", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let how = format!(
        "run `{command}` in {manifest} (it needs `rustup target add {STATIC_TARGET}` and musl-gcc, \
         Debian's musl-tools) and set {STATIC_BINARY_VAR} to the binary"
    );
    let status = tokio::process::Command::new(cargo)
        .args(args)
        .current_dir(manifest)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| Error::Missing(format!("cargo, to build the static smolpaws ({e}): {how}")))?;
    if !status.success() {
        return Err(Error::Missing(format!(
            "a static smolpaws: building it failed ({status}); {how}"
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(manifest).join("target"));
    Ok(target.join(STATIC_TARGET).join("release/smolpaws"))
}
