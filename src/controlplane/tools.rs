//! The upstream binaries a local control plane runs, built by `tools/build.sh`
//! from pinned Go modules and cached outside the repository.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::Error;

/// A directory holding `etcd`, `kube-apiserver` and `helm`.
#[derive(Clone, Debug)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Finds the binaries, building them first when they are not cached yet
    /// (minutes, once per pinned version set; the build reports progress on
    /// stderr). `SMOLPAWS_TOOLS_DIR` names prebuilt binaries instead.
    pub async fn locate() -> Result<Self, Error> {
        if let Some(dir) = std::env::var_os("SMOLPAWS_TOOLS_DIR").filter(|d| !d.is_empty()) {
            return Ok(Self { dir: dir.into() });
        }
        let output = run_script("build.sh", &[]).await?;
        let dir = PathBuf::from(output.trim());
        Ok(Self { dir })
    }

    /// The `etcd` binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `helm` binary.
    pub fn helm(&self) -> PathBuf {
        self.dir.join("helm")
    }

    /// The `kube-apiserver` binary.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }
}

/// Runs the project's build script `tools/<script>` with `args`, its
/// progress on stderr, and returns what it printed on stdout.
pub(crate) async fn run_script(script: &str, args: &[&OsStr]) -> Result<String, Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(script);
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|source| Error::ToolsBuild {
            script: script.clone(),
            reason: source.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::ToolsBuild {
            script,
            reason: format!("it exited with {} (its output is above)", output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
