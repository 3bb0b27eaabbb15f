//! The real `helm` from `tools/`, its caches kept out of `$HOME`.

use std::process::Stdio;

use smolpaws::controlplane::Tools;

/// Runs helm with `args`; returns (succeeded, stdout, stderr).
pub async fn helm(args: &[&str]) -> (bool, String, String) {
    let binary = Tools::locate().await.expect("the test tools").helm();
    let home = std::env::temp_dir().join("smolpaws-helm");
    let output = tokio::process::Command::new(binary)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("helm runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs helm with `args` and returns its stdout; panics with its stderr if
/// it fails.
pub async fn helm_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = helm(args).await;
    assert!(ok, "helm {args:?} failed:\n{stderr}");
    stdout
}
