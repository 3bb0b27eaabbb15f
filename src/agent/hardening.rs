//! What every process the agent starts gets: a cleared environment with an
//! allowlist (the agent's own credentials never reach a tool), and git told
//! to ignore the system and global config, hooks and fsmonitor, so a
//! `.gitconfig` or hook planted by an earlier run, the image or the model
//! never runs.
//!
//! The agent itself becomes non-dumpable, so a tool running as the same uid
//! cannot read its environment or memory through `/proc`.

use std::ffi::OsString;

use tokio::process::Command;

/// Variables a tool keeps from the agent's environment: what programs
/// need to find things and to reach the network the way the cluster allows.
const KEPT: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// git settings every invocation gets: no hooks, no fsmonitor program, and
/// any owner for the repository. A kubelet makes a pod's workspace volume
/// owned by root while the agent runs as a non-root uid, which git's
/// ownership check refuses; that check exists so that a stranger's
/// repository cannot run its hooks or fsmonitor, which the first two
/// settings already forbid.
const GIT_SETTINGS: &[(&str, &str)] = &[
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("safe.directory", "*"),
];

/// The environment of a process the agent starts: the allowlisted
/// variables of its own, git's hardening, then `git_extra` settings (such
/// as a token header, which only the agent's own git calls pass).
pub fn environment(git_extra: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = KEPT
        .iter()
        .filter_map(|name| Some((OsString::from(name), std::env::var_os(name)?)))
        .collect();
    vars.push(("GIT_CONFIG_NOSYSTEM".into(), "1".into()));
    vars.push(("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()));
    vars.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    let settings = GIT_SETTINGS
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .chain(git_extra.iter().cloned());
    let mut count = 0;
    for (index, (key, value)) in settings.enumerate() {
        vars.push((format!("GIT_CONFIG_KEY_{index}").into(), key.into()));
        vars.push((format!("GIT_CONFIG_VALUE_{index}").into(), value.into()));
        count = index + 1;
    }
    vars.push(("GIT_CONFIG_COUNT".into(), count.to_string().into()));
    vars
}

/// `command` with only [`environment`]'s variables.
pub fn confine<'a>(command: &'a mut Command, git_extra: &[(String, String)]) -> &'a mut Command {
    command.env_clear().envs(environment(git_extra))
}

/// Makes this process non-dumpable: its `/proc` entries (environ, mem,
/// fds) become unreadable to other processes of the same uid.
pub fn make_undumpable() -> Result<(), std::io::Error> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(vars: &'a [(OsString, OsString)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn git_settings_are_numbered_after_the_hardening() {
        let extra = [("http.extraHeader".to_owned(), "Authorization: x".to_owned())];
        let vars = environment(&extra);
        assert_eq!(value(&vars, "GIT_CONFIG_COUNT"), Some("4"));
        assert_eq!(value(&vars, "GIT_CONFIG_KEY_0"), Some("core.hooksPath"));
        assert_eq!(value(&vars, "GIT_CONFIG_KEY_3"), Some("http.extraHeader"));
        assert_eq!(value(&vars, "GIT_CONFIG_GLOBAL"), Some("/dev/null"));
        assert_eq!(value(&vars, "GIT_CONFIG_NOSYSTEM"), Some("1"));
    }

    #[test]
    fn nothing_outside_the_allowlist_is_kept() {
        let vars = environment(&[]);
        for (name, _) in &vars {
            let name = name.to_str().expect("ASCII names");
            assert!(
                KEPT.contains(&name) || name.starts_with("GIT_"),
                "{name} is not allowlisted"
            );
        }
    }

    /// A hook planted through HOME's `.gitconfig` (an earlier run) or the
    /// image's system config never runs, and neither file's settings apply.
    #[tokio::test]
    async fn planted_git_config_and_hooks_do_not_run() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let home = dir.path().join("home");
        let hooks = dir.path().join("hooks");
        let marker = dir.path().join("hook-ran");
        std::fs::create_dir_all(&home).expect("mkdir");
        std::fs::create_dir_all(&hooks).expect("mkdir");
        let planted = format!(
            "[core]\n\thooksPath = {}\n[user]\n\tname = planted\n",
            hooks.display()
        );
        std::fs::write(home.join(".gitconfig"), &planted).expect("write");
        let system = dir.path().join("system-gitconfig");
        std::fs::write(&system, &planted).expect("write");
        for hook in ["post-checkout", "pre-commit", "post-commit"] {
            let path = hooks.join(hook);
            std::fs::write(&path, format!("#!/bin/sh\ntouch {}\n", marker.display()))
                .expect("write");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
        let repo = dir.path().join("repo");
        let git = |args: &[&str]| {
            let mut command = Command::new("git");
            confine(&mut command, &[])
                // What the sandbox's HOME and image would give it.
                .env("HOME", &home)
                .env("GIT_CONFIG_SYSTEM", &system)
                .args(args)
                .output()
        };
        let repo_arg = repo.to_str().expect("a UTF-8 path");
        for args in [
            vec!["init", "-q", repo_arg],
            vec![
                "-C",
                repo_arg,
                "-c",
                "user.email=a@b",
                "-c",
                "user.name=a",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "x",
            ],
            vec!["-C", repo_arg, "checkout", "-q", "-b", "other"],
        ] {
            let output = git(&args).await.expect("git runs");
            assert!(output.status.success(), "git {args:?}: {output:?}");
        }
        assert!(!marker.exists(), "a planted hook ran");
        let name = git(&["-C", repo_arg, "config", "user.name"])
            .await
            .expect("git runs");
        assert!(
            !String::from_utf8_lossy(&name.stdout).contains("planted"),
            "a planted config applied: {name:?}"
        );
    }
}
