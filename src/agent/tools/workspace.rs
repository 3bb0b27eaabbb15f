//! The workspace root and the rule that no tool reaches outside it: no `..`
//! above the root, no absolute path elsewhere, no symlink pointing out.
//!
//! Files are opened beneath the root's directory handle (cap-std: openat2
//! with `RESOLVE_BENEATH` where the kernel has it), so a symlink swapped in
//! between a check and an open still cannot lead out; a write never follows
//! a symlink in its last component.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions};

use super::ToolError;

/// A directory the agent works in.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: Arc<Dir>,
}

impl Workspace {
    /// The workspace at `root`, which must exist.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        Ok(Self {
            root,
            dir: Arc::new(dir),
        })
    }

    /// The workspace root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn outside(&self, path: &str) -> ToolError {
        ToolError::new(format!(
            "{path} is outside the workspace {}",
            self.root.display()
        ))
    }

    /// `path` (relative to the root, or absolute inside it) relative to the
    /// root, `..` resolved without climbing above it; symlinks are left to
    /// whoever opens it. The root itself is `.`.
    fn beneath(&self, path: &str) -> Result<PathBuf, ToolError> {
        let given = Path::new(path);
        let relative = if given.is_absolute() {
            given
                .strip_prefix(&self.root)
                .map_err(|_| self.outside(path))?
        } else {
            given
        };
        let mut lexical = PathBuf::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => lexical.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !lexical.pop() {
                        return Err(self.outside(path));
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(self.outside(path)),
            }
        }
        if lexical.as_os_str().is_empty() {
            lexical.push(".");
        }
        Ok(lexical)
    }

    /// What went wrong opening `path`, in words for the model or caller.
    fn failed(&self, path: &str, what: &str, error: &std::io::Error) -> ToolError {
        // cap-std refuses a path that leads out as permission denied; a
        // symlink a write will not follow is a loop error.
        match error.kind() {
            ErrorKind::PermissionDenied => self.outside(path),
            _ if error.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                ToolError::new(format!(
                    "{path} is a symlink: a write does not follow it (change its target instead)"
                ))
            }
            _ => ToolError::new(format!("cannot {what} {path}: {error}")),
        }
    }

    /// Whether `path` is a directory in the workspace.
    pub fn is_dir(&self, path: &str) -> Result<bool, ToolError> {
        let relative = self.beneath(path)?;
        match self.dir.metadata(&relative) {
            Ok(metadata) => Ok(metadata.is_dir()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.failed(path, "read", &error)),
        }
    }

    /// The entries of directory `path`, directories with a trailing `/`.
    pub fn entries(&self, path: &str) -> Result<Vec<String>, ToolError> {
        let relative = self.beneath(path)?;
        let listing = self
            .dir
            .read_dir(&relative)
            .map_err(|e| self.failed(path, "list", &e))?;
        Ok(listing
            .flatten()
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => format!("{name}/"),
                    _ => name,
                }
            })
            .collect())
    }

    /// File `path`, opened for reading; None when there is no such file.
    pub fn open(&self, path: &str) -> Result<Option<std::fs::File>, ToolError> {
        let relative = self.beneath(path)?;
        match self.dir.open(&relative) {
            Ok(file) => Ok(Some(file.into_std())),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(self.failed(path, "read", &error)),
        }
    }

    /// The text of file `path`.
    pub fn read_to_string(&self, path: &str) -> Result<String, ToolError> {
        let relative = self.beneath(path)?;
        self.dir
            .read_to_string(&relative)
            .map_err(|e| self.failed(path, "read", &e))
    }

    /// Writes `contents` to file `path`, making its directories; with
    /// `new`, only if it does not exist yet.
    pub fn write(&self, path: &str, contents: &[u8], new: bool) -> Result<(), ToolError> {
        use std::io::Write as _;
        let relative = self.beneath(path)?;
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir
                .create_dir_all(parent)
                .map_err(|e| self.failed(path, "create the directory of", &e))?;
        }
        let mut options = OpenOptions::new();
        options.write(true).follow(FollowSymlinks::No);
        if new {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let mut file = self
            .dir
            .open_with(&relative, &options)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => ToolError::new(format!(
                    "{path} exists: change it with str_replace or insert"
                )),
                _ => self.failed(path, "write", &e),
            })?;
        file.write_all(contents)
            .map_err(|e| self.failed(path, "write", &e))
    }

    /// `path` (relative to the root, or absolute inside it) as a path inside
    /// the workspace, following symlinks; refused if it leads outside. For
    /// handing a directory to a process (a command's working directory);
    /// files are opened through the methods above.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ToolError> {
        let outside = || self.outside(path);
        let lexical = self.root.join(self.beneath(path)?);
        // Symlinks: the deepest existing ancestor, resolved, must stay
        // inside. A symlink counts as existing even when its target does not
        // (lstat, not stat): a dangling link is resolved, and refused, rather
        // than skipped over and then followed by the write.
        let mut existing = lexical.as_path();
        while existing.symlink_metadata().is_err() {
            existing = existing.parent().ok_or_else(outside)?;
        }
        let real = existing.canonicalize().map_err(|e| {
            ToolError::new(format!(
                "{path}: {e} (a symlink whose target does not exist is not followed)"
            ))
        })?;
        if !real.starts_with(&self.root) {
            return Err(outside());
        }
        match lexical.strip_prefix(existing) {
            Ok(rest) if !rest.as_os_str().is_empty() && rest != Path::new(".") => {
                Ok(real.join(rest))
            }
            _ => Ok(real),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_resolve_and_escapes_are_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let outside = tempfile::tempdir().expect("another temp dir");
        std::fs::create_dir(dir.path().join("src")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("planted"), dir.path().join("dangling"))
            .expect("symlink");
        let workspace = Workspace::new(dir.path()).expect("a workspace");
        let root = workspace.root().to_owned();

        assert_eq!(workspace.resolve("src/lib.rs"), Ok(root.join("src/lib.rs")));
        assert_eq!(
            workspace.resolve("./src/../README.md"),
            Ok(root.join("README.md"))
        );
        assert_eq!(
            workspace.resolve(&root.join("new/file").display().to_string()),
            Ok(root.join("new/file"))
        );
        for escape in [
            "../etc/passwd",
            "src/../../x",
            "/etc/passwd",
            "link/secret",
            "link",
            "dangling",
            "dangling/below",
        ] {
            assert!(
                workspace.resolve(escape).is_err(),
                "{escape} must be refused"
            );
        }
    }

    #[test]
    fn files_are_opened_beneath_the_root_and_writes_follow_no_symlink() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let outside = tempfile::tempdir().expect("another temp dir");
        std::fs::write(outside.path().join("secret"), "s3cret").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("planted"), dir.path().join("dangling"))
            .expect("symlink");
        std::fs::write(dir.path().join("real.txt"), "inside").expect("write");
        std::os::unix::fs::symlink("real.txt", dir.path().join("alias")).expect("symlink");
        let workspace = Workspace::new(dir.path()).expect("a workspace");

        assert_eq!(workspace.read_to_string("alias"), Ok("inside".to_owned()));
        assert!(workspace.read_to_string("link/secret").is_err());
        assert!(workspace.open("../x").is_err());
        assert!(matches!(workspace.open("missing"), Ok(None)));
        for (path, new) in [("dangling", false), ("dangling", true), ("alias", false)] {
            let refused = workspace
                .write(path, b"x", new)
                .expect_err("a write through a symlink");
            assert!(
                refused.0.contains("symlink") || refused.0.contains("exists"),
                "{path}: {refused}"
            );
        }
        assert!(
            !outside.path().join("planted").exists(),
            "nothing was written outside"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real.txt")).expect("read"),
            "inside"
        );
        workspace
            .write("deep/new/file.txt", b"made", true)
            .expect("a new file in new directories");
        assert_eq!(workspace.entries("deep"), Ok(vec!["new/".to_owned()]));
        assert!(workspace.is_dir(".").expect("the root"));
    }

    #[test]
    fn a_symlink_swapped_in_during_a_write_still_cannot_lead_out() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let outside = tempfile::tempdir().expect("another temp dir");
        let workspace = Workspace::new(dir.path()).expect("a workspace");
        let flip = dir.path().join("flip");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (flip, target, stop) = (flip.clone(), outside.path().to_owned(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::create_dir(&flip);
                    let _ = std::fs::remove_dir(&flip);
                    let _ = std::os::unix::fs::symlink(&target, &flip);
                    let _ = std::fs::remove_file(&flip);
                }
            })
        };
        for _ in 0..500 {
            let _ = workspace.write("flip/planted", b"x", false);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().expect("the flipper");
        assert!(
            !outside.path().join("planted").exists(),
            "a write raced out of the workspace"
        );
    }
}
