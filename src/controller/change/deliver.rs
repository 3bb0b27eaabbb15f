//! The delivery of one run's change: where it goes (a new branch, or the
//! pull request's own head branch), the push, and the pull request; what
//! the thread is told about it. Every step can be repeated after a
//! restart: a push of the same commit to the same branch changes nothing,
//! and an opened pull request is found before another is opened.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use secrecy::SecretString;
use tracing::{info, warn};

use super::git::{Git, GitError};
use super::stored;
use super::verify::{Verified, VerifyError, verify};
use crate::api::{AgentRun, ChangeDelivery, ChangeRef, ChangesMode, DeliveryOutcome};
use crate::controller::{Context, Error};
use crate::github::GitHub;
use crate::github::pulls::NewPull;

/// What `run` does with a change: its own word, or the operator's default.
pub fn mode(run: &AgentRun, ctx: &Context) -> ChangesMode {
    run.spec.github.changes.unwrap_or(ctx.changes.mode)
}

/// Where a change goes.
enum Target {
    /// The pull request's own head branch.
    Head(String),
    /// A new branch, with a pull request onto `onto` when one is asked for;
    /// `why` says why it is not the head branch.
    New {
        onto: Option<String>,
        why: Option<String>,
    },
}

/// Delivers `change` of `run` with `installation`'s push token; what became
/// of it. Errors are the ones worth a retry (GitHub or git unreachable).
pub async fn deliver(
    run: &AgentRun,
    ctx: &Context,
    github: &GitHub,
    installation: u64,
    change: &ChangeRef,
) -> Result<ChangeDelivery, Error> {
    if let Some(reason) = &change.refused {
        return Ok(refused(reason));
    }
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let bundle = match &change.sha256 {
        Some(sha256) => stored::load(&secrets, run, sha256).await?,
        None => None,
    };
    let Some(bundle) = bundle else {
        return Ok(refused("the bundle the agent handed over is gone"));
    };
    let repository = &run.spec.github.repository;
    let token = match github.push_token(installation, repository).await {
        Ok(token) => token.token,
        Err(error) if error.is_transient() => return Err(error.into()),
        Err(error) => {
            return Ok(rejected(format!(
                "smolpaws could not get a token to push to {repository} (does the App have `contents: write`?): {error}"
            )));
        }
    };
    let delivered = push(run, ctx, github, installation, change, &bundle, &token).await;
    if let Err(error) = github.revoke(&token).await {
        warn!(%error, "could not revoke the push token; it expires within the hour");
    }
    delivered
}

async fn push(
    run: &AgentRun,
    ctx: &Context,
    github: &GitHub,
    installation: u64,
    change: &ChangeRef,
    bundle: &[u8],
    token: &SecretString,
) -> Result<ChangeDelivery, Error> {
    let settings = &ctx.changes;
    let thread = &run.spec.github;
    let repository = &thread.repository;
    let server = settings.server_url.trim_end_matches('/');
    let url = format!("{server}/{repository}.git");
    let git = Git::new(server, token, settings.git_timeout).await?;
    git.run(
        "fetch the base",
        &["fetch", "-q", "--depth=1", "--no-tags", &url, &change.base],
    )
    .await?;
    let verified = match verify(&git, bundle, &change.base, thread.allow_workflow_changes).await {
        Ok(verified) => verified,
        Err(VerifyError::Refused(refusal)) => return Ok(refused(&refusal.to_string())),
        Err(VerifyError::Git(error)) => return Err(error.into()),
    };
    let default = default_branch(&git, &url).await?;
    let mode = mode(run, ctx);
    let target = if thread.pull_request {
        let head = github
            .pull_head(installation, repository, thread.number)
            .await?;
        if head.repository.as_deref() != Some(repository.as_str()) {
            Target::New {
                onto: None,
                why: Some(
                    "This pull request's branch lives in a fork, and smolpaws never pushes to a fork."
                        .into(),
                ),
            }
        } else if head.sha == change.base || head.sha == verified.tip {
            Target::Head(head.branch)
        } else {
            let why = format!("`{}` moved while smolpaws worked.", head.branch);
            Target::New {
                onto: (mode == ChangesMode::PullRequest).then_some(head.branch),
                why: Some(why),
            }
        }
    } else {
        Target::New {
            onto: (mode == ChangesMode::PullRequest)
                .then(|| default.clone())
                .flatten(),
            why: None,
        }
    };
    let branch = match &target {
        Target::Head(branch) => branch.clone(),
        Target::New { .. } => new_branch(run),
    };
    if Some(&branch) == default.as_ref() || settings.protects(&branch) {
        return Ok(rejected(format!(
            "`{branch}` is protected: smolpaws never pushes to the default branch or to a branch matching SMOLPAWS_PROTECTED_BRANCHES."
        )));
    }
    // No `+`: never a force push.
    let refspec = format!("{}:refs/heads/{branch}", verified.tip);
    if let Err(error) = git
        .run("push", &["push", "--porcelain", "-q", &url, &refspec])
        .await
    {
        return match error {
            GitError::Failed { stderr, .. } => Ok(rejected(format!(
                "the git server refused the push to `{branch}`: {}",
                refusal_reason(&stderr)
            ))),
            other => Err(other.into()),
        };
    }
    info!(%branch, tip = %verified.tip, commits = verified.commits, "pushed the agent's change");
    let links = Links { server, repository };
    let mut delivery = ChangeDelivery {
        outcome: DeliveryOutcome::Pushed,
        branch: Some(branch.clone()),
        commit: Some(verified.tip.clone()),
        pull_request: None,
        summary: String::new(),
    };
    delivery.summary = match target {
        Target::Head(_) => format!("Pushed {} to `{branch}`.", links.commit(&verified.tip)),
        Target::New { onto, why } => {
            let mut summary = why.map(|why| format!("{why} ")).unwrap_or_default();
            summary.push_str(&format!("Pushed the change to {}", links.branch(&branch)));
            if let Some(onto) = onto {
                let body = description(run, &verified);
                let pull = NewPull {
                    head: &branch,
                    base: &onto,
                    title: &verified.subject,
                    body: &body,
                    draft: true,
                };
                let pull = github.open_pull(installation, repository, &pull).await?;
                summary.push_str(&format!(
                    " and opened draft pull request [#{}]({}) onto `{onto}`",
                    pull.number, pull.html_url
                ));
                delivery.pull_request = Some(pull);
            }
            summary.push('.');
            summary
        }
    };
    Ok(delivery)
}

/// The new branch of `run`: `smolpaws/<issue>-<short run id>`.
fn new_branch(run: &AgentRun) -> String {
    let uid = run.metadata.uid.as_deref().unwrap_or_default();
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("smolpaws/{}-{short}", run.spec.github.number)
}

/// What the pull request of `run`'s change says: the commit's subject, and
/// the issue or pull request it was asked for in.
fn description(run: &AgentRun, verified: &Verified) -> String {
    let thread = &run.spec.github;
    let asked = thread
        .comment
        .as_ref()
        .map_or_else(String::new, |c| format!(" ({})", c.html_url));
    format!(
        "Asked for in #{}{asked}. {} commit(s) by smolpaws; review before merging.",
        thread.number, verified.commits
    )
}

/// The repository's default branch, as its server says (`HEAD`).
async fn default_branch(git: &Git, url: &str) -> Result<Option<String>, GitError> {
    let listing = git
        .run("ls-remote", &["ls-remote", "--symref", url, "HEAD"])
        .await?;
    Ok(listing.lines().find_map(|line| {
        let target = line.strip_prefix("ref: ")?.split('\t').next()?;
        target.strip_prefix("refs/heads/").map(str::to_owned)
    }))
}

/// The reason a porcelain push gives for a refused ref: the text in
/// parentheses of its `!` line, or git's last words.
fn refusal_reason(output: &str) -> String {
    output
        .lines()
        .find(|line| line.starts_with('!'))
        .and_then(|line| line.rsplit('\t').next())
        .or_else(|| output.lines().last())
        .unwrap_or("no reason given")
        .trim()
        .to_owned()
}

fn refused(reason: &str) -> ChangeDelivery {
    ChangeDelivery {
        outcome: DeliveryOutcome::Refused,
        branch: None,
        commit: None,
        pull_request: None,
        summary: format!("The change was not pushed: {reason}."),
    }
}

fn rejected(reason: String) -> ChangeDelivery {
    ChangeDelivery {
        outcome: DeliveryOutcome::Rejected,
        branch: None,
        commit: None,
        pull_request: None,
        summary: format!("The change was not pushed: {reason}"),
    }
}

/// Links into the repository's pages.
struct Links<'a> {
    server: &'a str,
    repository: &'a str,
}

impl Links<'_> {
    fn branch(&self, branch: &str) -> String {
        format!(
            "[`{branch}`]({}/{}/tree/{branch})",
            self.server, self.repository
        )
    }

    fn commit(&self, sha: &str) -> String {
        let short = sha.get(..7).unwrap_or(sha);
        format!(
            "[`{short}`]({}/{}/commit/{sha})",
            self.server, self.repository
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_ref_gives_its_reason() {
        let output = "To http://x/o/r.git\n!\tabc:refs/heads/release\t[remote rejected] (pre-receive hook declined)\nDone";
        assert_eq!(
            refusal_reason(output),
            "[remote rejected] (pre-receive hook declined)"
        );
    }

    #[test]
    fn a_new_branch_names_the_issue_and_the_run() {
        let mut run = crate::api::fixtures::run("r", "octo/hello", crate::api::Phase::Running);
        run.metadata.uid = Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into());
        assert_eq!(
            new_branch(&run),
            format!("smolpaws/{}-0f1e2d3c", run.spec.github.number)
        );
    }
}
