//! A local "GitHub" for git: bare repositories under a directory, reached
//! with a `file://` URL as GITHUB_SERVER_URL.

use std::path::Path;

/// Runs git in `dir`, panicking with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A server directory holding `octo/hello.git`: `main` has README.md
/// ("main") and `files` (extra files); pull request 7's head changes README.md
/// to "feature". Returns the server directory and the head's sha.
pub fn server(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().expect("a temp dir");
    let work = root.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README.md"), "main\n").expect("write");
    for (name, text) in files {
        std::fs::write(work.join(name), text).expect("write");
    }
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "main"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("README.md"), "feature\n").expect("write");
    git(&work, &["commit", "-q", "-am", "feature"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let bare = root.path().join("octo/hello.git");
    std::fs::create_dir_all(&bare).expect("mkdir");
    git(&bare, &["init", "-q", "--bare"]);
    git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8"),
            "main",
            "feature:refs/pull/7/head",
        ],
    );
    git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    (root, head)
}
