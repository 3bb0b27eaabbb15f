//! The node's parts and images, made ready by the project's scripts:
//! `tools/node/build.sh` (Debian's containerd, runc and CNI plugins; the
//! kubelet and its companions, CoreDNS and the pause binary built from
//! pinned Go modules) and `tools/node/images.sh` (OCI archives, without a
//! Docker engine), both cached outside the repository.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::Error;
use crate::controlplane::run_script;

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

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/node")
        .join(name)
}

impl Parts {
    /// Installs and builds what is missing (minutes, once per input set),
    /// then finds the parts.
    pub async fn locate() -> Result<Self, Error> {
        let output = run_script(&script("build.sh"), &[]).await?;
        Ok(Self {
            dir: PathBuf::from(output.trim()),
        })
    }

    /// Fails naming the first part the host lacks.
    pub fn check(&self) -> Result<(), Error> {
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
            Some(path) => Err(Error::Missing(format!(
                "{} (tools/node/build.sh installs or builds it)",
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
    archives: Vec<PathBuf>,
}

impl Images {
    /// Writes (or finds cached) the images, the smolpaws one carrying the
    /// static binary `smolpaws`.
    pub async fn build(smolpaws: &Path, parts: &Parts) -> Result<Self, Error> {
        let pause = parts.pause();
        let args: [&OsStr; 2] = [smolpaws.as_os_str(), pause.as_os_str()];
        let output = run_script(&script("images.sh"), &args).await?;
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

    /// The OCI archives to import into the node's runtime.
    pub fn archives(&self) -> &[PathBuf] {
        &self.archives
    }
}
