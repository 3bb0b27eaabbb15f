//! `smolpaws dev comment`: a comment on a local repository, delivered the
//! way GitHub delivers one (a signed `issue_comment` webhook), so the real
//! intake path runs; then the run is followed to its reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::session::Session;
use crate::api::{AgentRun, Phase};
use crate::intake::signature::sign;

/// The owner of every local repository: `local/<directory name>`.
pub const LOCAL_OWNER: &str = "local";

/// Settings of `smolpaws dev comment`.
#[derive(Args, Clone, Debug)]
pub struct CommentArgs {
    /// The local git checkout the comment is about; the agent works in it.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The issue number the comment is on (it needs no issue to exist).
    #[arg(long, default_value_t = 1)]
    pub issue: i64,
    /// How long to follow the run before giving up (it goes on regardless).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// The comment, e.g. "@smolpaws fix the failing test".
    pub body: String,
}

/// Sends the comment to the dev mode running with `dir` and follows the run
/// it starts.
pub async fn send(dir: &Path, args: CommentArgs) -> anyhow::Result<()> {
    let session = Session::load(dir)?;
    let checkout = std::fs::canonicalize(&args.repo)
        .with_context(|| format!("{} does not exist", args.repo.display()))?;
    if !checkout.join(".git").exists() {
        anyhow::bail!(
            "{} is not a git checkout (it has no .git): the agent works in a repository's checkout",
            checkout.display()
        );
    }
    let repository = format!("{LOCAL_OWNER}/{}", local_name(&checkout));
    link(
        &crate::sandbox::local::link(&session.repositories, &repository),
        &checkout,
    )?;

    let delivery = crate::random::uuid();
    let body = serde_json::to_vec(&payload(
        &repository,
        args.issue,
        &session.author,
        &args.body,
        comment_id(),
    ))?;
    let signature = sign(&SecretString::from(session.webhook_secret.clone()), &body);
    let url = format!("{}/webhooks/github", session.intake);
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", &delivery)
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .with_context(|| {
            format!("the dev intake at {url} did not answer: is `smolpaws dev` still running?")
        })?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!(
        "{repository}#{}: the intake answered {status}: {answer}",
        args.issue
    );
    // The intake names the run it made: `accepted: agentrun NAME`.
    let name = match answer.strip_prefix("accepted: agentrun ") {
        Some(name) if status == reqwest::StatusCode::ACCEPTED => name.trim().to_owned(),
        _ => anyhow::bail!("the comment started no run"),
    };

    let kubeconfig = Kubeconfig::read_from(&session.kubeconfig)
        .with_context(|| format!("cannot read {}", session.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let runs: Api<AgentRun> = Api::namespaced(client.clone(), client.default_namespace());
    let phase = crate::follow::follow(&runs, &name, args.wait).await?;
    if phase != Phase::Succeeded {
        anyhow::bail!("the run ended {phase}");
    }
    Ok(())
}

/// A directory's name as a GitHub repository name.
fn local_name(checkout: &Path) -> String {
    let name: String = checkout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    match name.trim_start_matches('.') {
        "" => "repository".to_owned(),
        name => name.to_owned(),
    }
}

/// Points `link` at `checkout`, replacing what it pointed at.
fn link(link: &Path, checkout: &Path) -> anyhow::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot replace {}", link.display()));
        }
    }
    std::os::unix::fs::symlink(checkout, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), checkout.display()))
}

/// A comment id no other local comment has, in practice.
fn comment_id() -> i64 {
    let hex = crate::random::token();
    i64::from_str_radix(&hex[..12], 16).unwrap_or(1).max(1)
}

/// A GitHub user object, with the URLs GitHub sends.
fn user(login: &str, id: i64) -> Value {
    let api = format!("http://localhost/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_local_{id}"),
        "avatar_url": "http://localhost/avatar.png",
        "gravatar_id": "",
        "url": api,
        "html_url": format!("http://localhost/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": "User",
        "site_admin": false,
    })
}

/// The `issue_comment` `created` payload GitHub would send for `body`,
/// written by `author` on issue `number` of `repository`.
fn payload(repository: &str, number: i64, author: &str, body: &str, comment: i64) -> Value {
    let (owner, name) = repository.split_once('/').unwrap_or((repository, ""));
    let api = format!("http://localhost/repos/{repository}");
    let html = format!("http://localhost/{repository}");
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let author = user(author, 1);
    json!({
        "action": "created",
        "issue": {
            "url": format!("{api}/issues/{number}"),
            "repository_url": api,
            "labels_url": format!("{api}/issues/{number}/labels{{/name}}"),
            "comments_url": format!("{api}/issues/{number}/comments"),
            "events_url": format!("{api}/issues/{number}/events"),
            "html_url": format!("{html}/issues/{number}"),
            "id": number,
            "node_id": format!("I_local_{number}"),
            "number": number,
            "title": format!("Local issue {number}"),
            "user": author,
            "labels": [],
            "state": "open",
            "locked": false,
            "assignee": null,
            "assignees": [],
            "milestone": null,
            "comments": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": null,
            "author_association": "OWNER",
            "body": null,
        },
        "comment": {
            "url": format!("{api}/issues/comments/{comment}"),
            "html_url": format!("{html}/issues/{number}#issuecomment-{comment}"),
            "issue_url": format!("{api}/issues/{number}"),
            "id": comment,
            "node_id": format!("IC_local_{comment}"),
            "user": author,
            "created_at": now,
            "updated_at": now,
            "author_association": "OWNER",
            "body": body,
        },
        "repository": {
            "id": 1,
            "node_id": "R_local",
            "name": name,
            "full_name": repository,
            "private": true,
            "owner": user(owner, 2),
            "html_url": html,
            "url": api,
            "default_branch": "main",
        },
        "sender": author,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::delivery::{Decision, Rules, decide};
    use crate::intake::policy::Policy;

    #[test]
    fn the_payload_is_one_the_intake_turns_into_a_run() {
        let rules = Rules {
            mention: "@smolpaws".parse().expect("a mention"),
            policy: Policy::new(
                ["ada".to_owned()],
                [LOCAL_OWNER.to_owned()],
                Vec::<String>::new(),
                Vec::<u64>::new(),
            ),
            app_login: None,
            backend: crate::api::SandboxBackend::Local,
            max_age: Some(Duration::from_secs(60)),
        };
        let body = payload("local/widgets", 7, "ada", "@smolpaws add a test", 42);
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let decision = decide(
            &rules,
            "issue_comment",
            &crate::random::uuid(),
            &bytes,
            std::time::SystemTime::now(),
        )
        .expect("valid");
        let Decision::Run(run) = decision else {
            panic!("no run: {decision:?}");
        };
        assert_eq!(run.spec.prompt, "add a test");
        assert_eq!(run.spec.github.repository, "local/widgets");
        assert_eq!(run.spec.github.number, 7);
        assert_eq!(run.spec.sandbox.backend, crate::api::SandboxBackend::Local);
        let comment = run.spec.github.comment.as_ref().expect("a comment");
        assert_eq!((comment.id, comment.author.as_str()), (42, "ada"));
    }

    #[test]
    fn directory_names_become_repository_names() {
        assert_eq!(local_name(Path::new("/src/my app")), "my-app");
        assert_eq!(local_name(Path::new("/src/.hidden")), "hidden");
        assert_eq!(local_name(Path::new("/")), "repository");
    }
}
