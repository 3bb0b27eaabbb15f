//! What a node changes on its host, and undoing it.
//!
//! Most of a node's changes stay inside namespaces of its own and vanish with
//! them (its network, its mounts, its processes). Two kinds cannot: kernel
//! settings the kubelet insists on, which are global, and cgroup directories,
//! which live in the host's hierarchies. The settings found before the first
//! node started are recorded once for the machine and put back when the last
//! node stops; each node's cgroups sit under a parent named after it, removed
//! when it stops. A node whose test process was killed leaves both behind:
//! the next node to start sweeps them up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of node directories under the temp dir, and of their cgroup
/// parents in each hierarchy.
pub const PREFIX: &str = "smolpaws-node-";
/// The file in a node directory naming the process that owns it.
pub const OWNER_FILE: &str = "owner.pid";
/// The kernel settings a kubelet sets to its liking at start (its
/// `setupKernelTunables`): a later kernel oops would then reboot the machine,
/// so they are put back.
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
const CGROUPS: &str = "/sys/fs/cgroup";

/// Where the machine's own kernel settings are recorded while nodes run.
fn record() -> PathBuf {
    std::env::temp_dir().join("smolpaws-node-host.sysctl")
}

/// The machine-wide lock on the record, held until the file is dropped.
fn lock() -> std::io::Result<std::fs::File> {
    let file = std::fs::File::create(std::env::temp_dir().join("smolpaws-node-host.lock"))?;
    file.lock()?;
    Ok(file)
}

/// The directories of nodes whose owner still runs, `except` one.
fn live_nodes(except: Option<&Path>) -> Vec<PathBuf> {
    node_dirs()
        .into_iter()
        .filter(|dir| Some(dir.as_path()) != except && owner_alive(dir))
        .collect()
}

fn node_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && name(p).is_some_and(|n| n.starts_with(PREFIX)))
        .collect()
}

fn name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn owner_alive(dir: &Path) -> bool {
    crate::process::owner_alive(dir, OWNER_FILE)
}

/// The kernel settings a kubelet changes, as they are now.
pub fn settings() -> std::io::Result<Vec<(&'static str, String)>> {
    SYSCTLS
        .iter()
        .map(|key| {
            let value = std::fs::read_to_string(Path::new("/proc/sys").join(key))?;
            Ok((*key, value.trim().to_owned()))
        })
        .collect()
}

/// Records the machine's kernel settings unless a running node already has
/// (then they are the kubelet's, not the machine's).
pub fn record_settings() -> std::io::Result<()> {
    let _lock = lock()?;
    if record().exists() {
        return Ok(());
    }
    let mut text = String::new();
    for (key, value) in settings()? {
        text.push_str(&format!("{key}={value}\n"));
    }
    let partial = record().with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, record())
}

/// Puts the recorded kernel settings back once no node but `stopping` runs.
fn restore_settings(stopping: Option<&Path>) -> std::io::Result<()> {
    let _lock = lock()?;
    if !live_nodes(stopping).is_empty() {
        return Ok(());
    }
    let text = match std::fs::read_to_string(record()) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
        if SYSCTLS.contains(&key) {
            std::fs::write(Path::new("/proc/sys").join(key), value)?;
        }
    }
    std::fs::remove_file(record())
}

/// The cgroup hierarchies of this host (one directory per v1 controller
/// mount), where a node's cgroup parent is made.
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUPS) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        // Symlinks (`cpu,cpuacct`) name a hierarchy twice.
        .filter(|p| p.is_dir() && !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect()
}

/// Makes cgroup parent `name` in every hierarchy, for the kubelet's
/// `cgroupRoot`: the node's pods live under it, beside the host's cgroups.
pub fn make_cgroup_parent(name: &str) -> std::io::Result<()> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(name);
        std::fs::create_dir_all(&dir)?;
        // A new cpuset has no CPUs or memory nodes until given its parent's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                std::fs::write(dir.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

/// Removes cgroup parent `name` and everything under it from every
/// hierarchy, once the processes in it have died (the kernel refuses to
/// remove a cgroup that still holds one; a killed process leaves it soon).
fn remove_cgroup_parent(name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = Vec::new();
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(name);
        while dir.exists() {
            match remove_tree(&dir) {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => {
                    left.push(format!("{}: {error}", dir.display()));
                    break;
                }
            }
        }
    }
    left
}

/// Removes a cgroup directory tree, deepest first (cgroup directories are
/// removed with rmdir, their files never).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Undoes what node `dir` changed on the host, once its processes are gone:
/// its cgroups, and the kernel settings if no other node runs. Returns what
/// could not be undone.
pub fn undo(dir: &Path) -> Vec<String> {
    let mut left = name(dir).map(remove_cgroup_parent).unwrap_or_default();
    if let Err(error) = restore_settings(Some(dir)) {
        left.push(format!("restoring the kernel settings: {error}"));
    }
    left
}

/// Undoes what nodes killed without a chance to clean up left behind, and
/// removes their directories.
pub fn sweep() {
    for dir in node_dirs() {
        if !owner_alive(&dir) {
            undo(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // Cgroup parents whose directory is already gone.
    for hierarchy in hierarchies() {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(n) = name(&path).filter(|n| n.starts_with(PREFIX))
                && !std::env::temp_dir().join(n).exists()
            {
                remove_cgroup_parent(n);
            }
        }
    }
    let _ = restore_settings(None);
}
