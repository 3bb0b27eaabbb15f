//! The workspace root and the rule that no tool reaches outside it: no `..`
//! above the root, no absolute path elsewhere, no symlink pointing out.

use std::path::{Component, Path, PathBuf};

use super::ToolError;

/// A directory the agent works in.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace at `root`, which must exist.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: root.canonicalize()?,
        })
    }

    /// The workspace root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (relative to the root, or absolute inside it) as a path inside
    /// the workspace, following symlinks; refused if it leads outside.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ToolError> {
        let outside = || {
            ToolError::new(format!(
                "{path} is outside the workspace {}",
                self.root.display()
            ))
        };
        let given = Path::new(path);
        let relative = if given.is_absolute() {
            given.strip_prefix(&self.root).map_err(|_| outside())?
        } else {
            given
        };
        let mut lexical = self.root.clone();
        for component in relative.components() {
            match component {
                Component::Normal(part) => lexical.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if lexical == self.root {
                        return Err(outside());
                    }
                    lexical.pop();
                }
                Component::RootDir | Component::Prefix(_) => return Err(outside()),
            }
        }
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
            Ok(rest) if !rest.as_os_str().is_empty() => Ok(real.join(rest)),
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
}
