//! The checks a sandbox's bundle passes before anything is pushed: one
//! branch, a single chain of commits on the checked-out base, and no
//! change that reaches beyond the repository's own files (a submodule, a
//! symlink out of the tree, `.git` paths) or into its CI workflows unless
//! the run allows it. git reads the bundle with every object checked.

use super::git::{Git, GitError};

/// The most commits one change may hold.
pub const MAX_COMMITS: usize = 20;

/// Where the change is fetched to inside the controller's repository.
pub const TIP_REF: &str = "refs/smolpaws/tip";

/// A change that passed.
#[derive(Debug)]
pub struct Verified {
    /// Its last commit.
    pub tip: String,
    /// How many commits it has.
    pub commits: usize,
    /// The last commit's subject.
    pub subject: String,
}

/// Why a change is refused, in words for the thread.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// git could not read it as a bundle on the base.
    #[error("it is not a git bundle of commits on the checked-out commit ({0})")]
    Malformed(String),
    /// More or fewer than one branch.
    #[error("it must hold exactly one branch, and holds {0}")]
    Branches(usize),
    /// Merges, or commits that do not sit on the base.
    #[error("it must be a single chain of commits on the checked-out commit")]
    NotAChain,
    /// Nothing to push.
    #[error("it holds no commit")]
    Empty,
    /// Too many commits.
    #[error("it holds {0} commits, more than {MAX_COMMITS}")]
    TooManyCommits(usize),
    /// A CI workflow changed without the run allowing it.
    #[error(
        "it changes `{0}`, and workflow changes are not allowed for this run (spec.github.allowWorkflowChanges)"
    )]
    Workflow(String),
    /// A submodule.
    #[error("it adds or changes a submodule (`{0}`)")]
    Submodule(String),
    /// A symlink pointing out of the repository.
    #[error("the symlink `{0}` points outside the repository")]
    SymlinkEscapes(String),
    /// A path git itself would treat as its own.
    #[error("the path `{0}` is not allowed")]
    ForbiddenPath(String),
}

/// What failed: the change, or git.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The change is refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// git failed on something other than the change.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// Checks `bundle` against `base` (already fetched into `git`), and leaves
/// its tip at [`TIP_REF`].
pub async fn verify(
    git: &Git,
    bundle: &[u8],
    base: &str,
    allow_workflows: bool,
) -> Result<Verified, VerifyError> {
    let file = git.path().join("change.bundle");
    std::fs::write(&file, bundle).map_err(|e| GitError::Start {
        step: "bundle",
        message: format!("cannot write the bundle: {e}"),
    })?;
    let file = file.to_string_lossy().into_owned();
    let malformed = |error: GitError| match error {
        GitError::Failed { stderr, .. } => VerifyError::Refused(Refusal::Malformed(
            stderr.lines().last().unwrap_or_default().to_owned(),
        )),
        other => VerifyError::Git(other),
    };
    let heads = git
        .run("bundle list-heads", &["bundle", "list-heads", &file])
        .await
        .map_err(malformed)?;
    let heads: Vec<&str> = heads.lines().filter(|l| !l.trim().is_empty()).collect();
    let [head] = heads.as_slice() else {
        return Err(Refusal::Branches(heads.len()).into());
    };
    let name = head.split_whitespace().nth(1).unwrap_or_default();
    git.run(
        "fetch the bundle",
        &[
            "fetch",
            "-q",
            "--no-tags",
            &file,
            &format!("{name}:{TIP_REF}"),
        ],
    )
    .await
    .map_err(malformed)?;
    let tip = git
        .run("rev-parse", &["rev-parse", TIP_REF])
        .await?
        .trim()
        .to_owned();
    let chain = git
        .run(
            "rev-list",
            &["rev-list", "--parents", &format!("{base}..{tip}")],
        )
        .await?;
    let commits: Vec<Vec<&str>> = chain
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    if commits.is_empty() {
        return Err(Refusal::Empty.into());
    }
    if commits.len() > MAX_COMMITS {
        return Err(Refusal::TooManyCommits(commits.len()).into());
    }
    // Newest first: each commit's one parent is the next line's commit,
    // and the oldest one's is the base.
    let parents: Vec<&str> = commits.iter().skip(1).map(|c| c[0]).chain([base]).collect();
    let chained = commits
        .iter()
        .zip(&parents)
        .all(|(commit, parent)| commit.len() == 2 && commit[1] == *parent);
    if !chained {
        return Err(Refusal::NotAChain.into());
    }
    for commit in &commits {
        let diff = git
            .run(
                "diff-tree",
                &[
                    "diff-tree",
                    "-r",
                    "-z",
                    "--raw",
                    "--no-renames",
                    commit[1],
                    commit[0],
                ],
            )
            .await?;
        for (mode, blob, path) in entries(&diff) {
            check(git, mode, blob, path, allow_workflows).await?;
        }
    }
    let subject = git
        .run("log", &["log", "-1", "--format=%s", &tip])
        .await?
        .trim()
        .to_owned();
    Ok(Verified {
        tip,
        commits: commits.len(),
        subject,
    })
}

/// The (new mode, new blob, path) of each entry of a `diff-tree -z --raw`.
fn entries(raw: &str) -> Vec<(&str, &str, &str)> {
    let fields: Vec<&str> = raw.split('\0').collect();
    fields
        .chunks(2)
        .filter_map(|pair| {
            let [meta, path] = pair else { return None };
            let meta: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            Some((*meta.get(1)?, *meta.get(3)?, *path))
        })
        .collect()
}

async fn check(
    git: &Git,
    mode: &str,
    blob: &str,
    path: &str,
    allow_workflows: bool,
) -> Result<(), VerifyError> {
    let components: Vec<&str> = path.split('/').collect();
    if components
        .iter()
        .any(|c| c.eq_ignore_ascii_case(".git") || c.is_empty() || *c == "..")
    {
        return Err(Refusal::ForbiddenPath(path.to_owned()).into());
    }
    if mode == "160000" || path == ".gitmodules" {
        return Err(Refusal::Submodule(path.to_owned()).into());
    }
    if !allow_workflows && path.starts_with(".github/workflows/") {
        return Err(Refusal::Workflow(path.to_owned()).into());
    }
    if mode == "120000" {
        let target = git.run("cat-file", &["cat-file", "blob", blob]).await?;
        if escapes(path, &target) {
            return Err(Refusal::SymlinkEscapes(path.to_owned()).into());
        }
    }
    Ok(())
}

/// Whether a symlink at `path` (repository-relative) to `target` leaves the
/// repository.
fn escapes(path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth = path.split('/').count() - 1;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_tree() {
        assert!(!escapes("a/link", "b"));
        assert!(!escapes("a/link", "../b"));
        assert!(escapes("a/link", "../../b"));
        assert!(escapes("link", "/etc/passwd"));
        assert!(escapes("link", "x/../../y"));
    }

    #[test]
    fn raw_entries_read_their_mode_blob_and_path() {
        let raw = ":000000 100644 0000 abcd A\0src/a b.rs\0:100644 120000 1111 2222 T\0link\0";
        assert_eq!(
            entries(raw),
            vec![("100644", "abcd", "src/a b.rs"), ("120000", "2222", "link")]
        );
    }
}
