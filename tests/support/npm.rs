//! Node packages for the contract tests that drive a service's official
//! JavaScript client: installed once by `tests/node/env.sh` from
//! `tests/node/NAME/` (pinned by its `package-lock.json`) with `npm ci`, and
//! cached outside the repository.

use std::path::{Path, PathBuf};

/// The directory of `tests/node/`.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The directory holding the `node_modules` of `tests/node/NAME/`,
/// installed on first use. Panics with the script's own words (Node or npm
/// missing, the registry unreachable) when they cannot be installed.
pub fn packages(name: &str) -> PathBuf {
    let output = std::process::Command::new("bash")
        .arg(scripts().join("env.sh"))
        .arg(scripts().join(name))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs tests/node/env.sh");
    assert!(
        output.status.success(),
        "the Node packages of tests/node/{name} could not be installed ({}); \
         these tests need node and npm (Node 20 or newer) on PATH",
        output.status
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}
