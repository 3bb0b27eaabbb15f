//! The parts of GitHub's comment webhook payloads that a decision reads,
//! borrowed from the body where they need no unescaping. Every other field is
//! skipped unread, so one GitHub adds, drops or shapes differently (an
//! `installation` without `node_id`, as test tools and some GitHub Enterprise
//! versions send) changes nothing, and a 16 KB delivery costs a scan rather
//! than a tree of owned strings.

use std::borrow::Cow;
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

/// An `issue_comment` delivery (on an issue or a pull request's conversation).
#[derive(Deserialize)]
pub(super) struct IssueCommentPayload<'a> {
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub comment: IssueComment<'a>,
    pub issue: Issue,
    #[serde(borrow)]
    pub repository: Option<Repository<'a>>,
    #[serde(borrow)]
    pub sender: Option<User<'a>>,
    pub installation: Option<Installation>,
}

/// A `pull_request_review_comment` delivery (on a line of a diff).
#[derive(Deserialize)]
pub(super) struct ReviewCommentPayload<'a> {
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub comment: ReviewComment<'a>,
    #[serde(borrow)]
    pub pull_request: PullRequest<'a>,
    #[serde(borrow)]
    pub repository: Option<Repository<'a>>,
    #[serde(borrow)]
    pub sender: Option<User<'a>>,
    pub installation: Option<Installation>,
}

#[derive(Deserialize)]
pub(super) struct IssueComment<'a> {
    pub id: u64,
    #[serde(deserialize_with = "timestamp")]
    pub created_at: SystemTime,
    #[serde(borrow)]
    pub body: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(borrow)]
    pub html_url: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct ReviewComment<'a> {
    pub id: u64,
    #[serde(deserialize_with = "timestamp")]
    pub created_at: SystemTime,
    #[serde(borrow)]
    pub body: Cow<'a, str>,
    #[serde(borrow)]
    pub user: Option<User<'a>>,
    #[serde(borrow)]
    pub html_url: Cow<'a, str>,
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    pub line: Option<u64>,
    #[serde(borrow)]
    pub side: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub diff_hunk: Cow<'a, str>,
    #[serde(borrow)]
    pub commit_id: Cow<'a, str>,
    pub in_reply_to_id: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct Issue {
    pub number: u64,
    /// Present (and not null) when the issue is a pull request.
    pub pull_request: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct PullRequest<'a> {
    pub number: u64,
    #[serde(borrow)]
    pub head: Head<'a>,
}

#[derive(Deserialize)]
pub(super) struct Head<'a> {
    #[serde(borrow, rename = "ref")]
    pub git_ref: Cow<'a, str>,
    #[serde(borrow)]
    pub sha: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct Repository<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub full_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct User<'a> {
    #[serde(borrow)]
    pub login: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct Installation {
    pub id: u64,
}

/// An RFC 3339 time, as GitHub dates its objects.
fn timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = Cow::<str>::deserialize(deserializer)?;
    text.parse::<Timestamp>()
        .map(SystemTime::from)
        .map_err(serde::de::Error::custom)
}
