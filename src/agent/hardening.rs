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

/// git settings every invocation gets: no hooks, no fsmonitor program.
const GIT_SETTINGS: &[(&str, &str)] =
    &[("core.hooksPath", "/dev/null"), ("core.fsmonitor", "false")];

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
        assert_eq!(value(&vars, "GIT_CONFIG_COUNT"), Some("3"));
        assert_eq!(value(&vars, "GIT_CONFIG_KEY_0"), Some("core.hooksPath"));
        assert_eq!(value(&vars, "GIT_CONFIG_KEY_2"), Some("http.extraHeader"));
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
}
