//! Python virtual environments for the contract tests that drive a service's
//! official client (or a real model server) from PyPI: made once by
//! `tests/python/env.sh` from `tests/python/NAME/requirements.txt` and cached
//! outside the repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The directory of `tests/python/`.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The environment for `tests/python/NAME/`, made on first use. Panics with
/// the script's own words when it cannot be made.
pub fn environment(name: &str) -> PathBuf {
    static MADE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(venv) = made.get(name) {
        return venv.clone();
    }
    let output = std::process::Command::new("bash")
        .arg(scripts().join("env.sh"))
        .arg(name)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs tests/python/env.sh");
    assert!(
        output.status.success(),
        "the Python environment {name} could not be made ({})",
        output.status
    );
    let venv = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    made.insert(name.to_owned(), venv.clone());
    venv
}

/// The interpreter of the environment for `tests/python/NAME/`.
pub fn interpreter(name: &str) -> PathBuf {
    environment(name).join("bin/python")
}
