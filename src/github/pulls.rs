//! Pull requests: reading the one a run came from (where its head lives,
//! where it is now), and opening one for a pushed change exactly once.

use serde::Deserialize;
use serde_json::json;

use super::{Error, GitHub, send};
use crate::api::PullRequestRef;

/// A pull request's head as GitHub has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The branch.
    pub branch: String,
    /// The commit it points at.
    pub sha: String,
    /// The repository it lives in (`owner/name`); `None` when the fork was
    /// deleted.
    pub repository: Option<String>,
}

#[derive(Deserialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    repo: Option<Repo>,
}

#[derive(Deserialize)]
struct Pull {
    number: i64,
    html_url: String,
    head: Branch,
}

/// What a new pull request says.
pub struct NewPull<'a> {
    /// The branch with the change.
    pub head: &'a str,
    /// The branch it would merge into.
    pub base: &'a str,
    /// Its title.
    pub title: &'a str,
    /// Its description, Markdown.
    pub body: &'a str,
    /// Whether it opens as a draft.
    pub draft: bool,
}

impl GitHub {
    /// The head of pull request `number` of `repository`.
    pub async fn pull_head(
        &self,
        installation: u64,
        repository: &str,
        number: i64,
    ) -> Result<Head, Error> {
        let action = format!("read pull request {repository}#{number}");
        let pull: Pull = send(
            &*self.installation(installation).await?,
            http::Method::GET,
            &format!("/repos/{repository}/pulls/{number}"),
            None,
            &action,
        )
        .await?;
        Ok(Head {
            branch: pull.head.branch,
            sha: pull.head.sha,
            repository: pull.head.repo.map(|r| r.full_name),
        })
    }

    /// The pull request from `repository`'s branch `head` onto `base`,
    /// opened now, or found when an earlier attempt opened it (a restart
    /// between opening and recording must not open a second).
    pub async fn open_pull(
        &self,
        installation: u64,
        repository: &str,
        pull: &NewPull<'_>,
    ) -> Result<PullRequestRef, Error> {
        let client = self.installation(installation).await?;
        let owner = repository.split('/').next().unwrap_or_default();
        let action = format!("find the pull request of {repository}:{}", pull.head);
        let found: Vec<Pull> = send(
            &client,
            http::Method::GET,
            &format!(
                "/repos/{repository}/pulls?head={owner}:{}&state=all",
                percent_encoding::utf8_percent_encode(
                    pull.head,
                    percent_encoding::NON_ALPHANUMERIC
                )
            ),
            None,
            &action,
        )
        .await?;
        if let Some(found) = found.into_iter().find(|p| p.head.branch == pull.head) {
            return Ok(PullRequestRef {
                number: found.number,
                html_url: found.html_url,
            });
        }
        let action = format!("open a pull request from {repository}:{}", pull.head);
        let body = json!({
            "title": pull.title,
            "head": pull.head,
            "base": pull.base,
            "body": pull.body,
            "draft": pull.draft,
        });
        let opened: Pull = send(
            &client,
            http::Method::POST,
            &format!("/repos/{repository}/pulls"),
            Some(&body),
            &action,
        )
        .await?;
        Ok(PullRequestRef {
            number: opened.number,
            html_url: opened.html_url,
        })
    }
}
