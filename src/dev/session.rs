//! What a running `smolpaws dev` tells the other dev commands: where its
//! intake listens, its webhook secret, its kubeconfig. Kept in `dev.json` in
//! the dev directory, readable by its owner only, and removed at exit.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

const FILE: &str = "dev.json";

/// A running dev mode.
#[derive(Serialize, Deserialize, Debug)]
pub struct Session {
    /// The intake's base URL.
    pub intake: String,
    /// The secret webhooks are signed with.
    pub webhook_secret: String,
    /// The kubeconfig of the embedded control plane.
    pub kubeconfig: PathBuf,
    /// Where local repositories are linked, as `<owner>/<name>.git`.
    pub repositories: PathBuf,
    /// The login local comments are made as.
    pub author: String,
}

impl Session {
    /// Writes the session into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        write_private(&dir.join(FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// The session of the dev mode running with `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no `smolpaws dev` is running with {} (no {}): start it first, in another terminal",
                dir.display(),
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is garbled", path.display()))
    }
}

/// Removes the session of `dir`: the dev mode is gone.
pub fn remove(dir: &Path) {
    // Already gone is what we want.
    let _ = std::fs::remove_file(dir.join(FILE));
}

/// Writes `bytes` to `path`, readable and writable by this user only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The GitHub-style login local comments are made as: the user's name with
/// what GitHub logins cannot hold replaced.
pub fn local_author() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let login: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(39)
        .collect();
    let login = login.trim_matches('-').to_owned();
    if login.is_empty() {
        "developer".to_owned()
    } else {
        login
    }
}
