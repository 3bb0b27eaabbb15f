//! From one verified webhook delivery to a decision: ignore it, deny it, or
//! the AgentRun it asks for. No I/O happens here, so the fuzz target and the
//! benchmark exercise exactly what the server runs.

use std::fmt;
use std::time::{Duration, SystemTime};

use octocrab::models::webhook_events::payload::{
    IssueCommentWebhookEventAction, IssueCommentWebhookEventPayload,
    PullRequestReviewCommentWebhookEventAction, PullRequestReviewCommentWebhookEventPayload,
};
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};

use super::policy::{Denial, Policy, Requester};
use super::run::RunRequest;
use super::trigger::Mention;
use crate::api::{
    AgentRun, CommentKind, DiffSide, PullRequestHead, ReviewContext, SandboxBackend, TriggerComment,
};

/// The rules a delivery is judged by.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The mention that asks for a run.
    pub mention: Mention,
    /// Who may ask.
    pub policy: Policy,
    /// The App's own login (`<slug>[bot]`), whose comments never trigger.
    pub app_login: Option<String>,
    /// The sandbox backend the runs ask for.
    pub backend: SandboxBackend,
    /// Comments older than this start no run (plus [`CLOCK_SKEW`]): a
    /// replay, or a redelivery after the run and its record are gone, is
    /// refused rather than answered twice. `None`: any age.
    pub max_age: Option<Duration>,
}

/// How far GitHub's clock and this one may disagree.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// What to do with a delivery.
#[derive(Debug)]
pub enum Decision {
    /// A `ping`: GitHub checking the webhook.
    Pong,
    /// Nothing to do; not an error.
    Ignored(Ignored),
    /// A request the policy refuses.
    Denied(Denial),
    /// A request to run.
    Run(Box<AgentRun>),
}

/// Why a delivery needs nothing done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// An event smolpaws does not act on.
    Event(String),
    /// An action other than `created` (edits and deletions do not trigger).
    Action(String),
    /// The comment comes from a bot.
    Bot(String),
    /// The comment comes from smolpaws itself.
    OwnComment,
    /// The comment does not mention smolpaws.
    NoMention,
    /// The comment mentions smolpaws but asks nothing.
    EmptyRequest,
    /// The comment is older than the rules allow.
    Stale {
        /// Its age.
        age: Duration,
        /// The most allowed.
        max_age: Duration,
    },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event(event) => write!(f, "event {event} is not handled"),
            Self::Action(action) => write!(f, "action {action} does not trigger runs"),
            Self::Bot(login) => write!(f, "comments by bots ({login}) do not trigger runs"),
            Self::OwnComment => f.write_str("comments by smolpaws itself do not trigger runs"),
            Self::NoMention => f.write_str("the comment does not mention smolpaws"),
            Self::EmptyRequest => f.write_str("the mention asks nothing"),
            Self::Stale { age, max_age } => write!(
                f,
                "the comment is {} old, older than SMOLPAWS_MAX_COMMENT_AGE ({}): a delivery this late starts no run",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(*max_age)
            ),
        }
    }
}

/// A payload that does not have the shape GitHub documents for its event.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPayload {
    /// Not JSON, or not the event's JSON.
    #[error("the body is not a valid {event} payload: {source}")]
    Malformed {
        /// The event named in `X-GitHub-Event`.
        event: String,
        /// What the parser found.
        source: serde_json::Error,
    },
    /// A field smolpaws needs is absent or out of range.
    #[error("the {event} payload has no usable {field}")]
    Missing {
        /// The event.
        event: String,
        /// The field.
        field: &'static str,
    },
}

/// The parts of a comment event that decide a run, common to both kinds.
struct CommentEvent {
    action: Option<String>,
    created_at: SystemTime,
    body: String,
    author: String,
    number: u64,
    pull_request: bool,
    comment: TriggerComment,
    head: Option<PullRequestHead>,
}

/// The events that can trigger a run.
pub const TRIGGER_EVENTS: [&str; 2] = ["issue_comment", "pull_request_review_comment"];

/// Judges one delivery received at `now`: `event` is `X-GitHub-Event`,
/// `delivery` is `X-GitHub-Delivery`, `body` the verified raw body.
pub fn decide(
    rules: &Rules,
    event: &str,
    delivery: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Decision, InvalidPayload> {
    if event == "ping" {
        return Ok(Decision::Pong);
    }
    if !TRIGGER_EVENTS.contains(&event) {
        return Ok(Decision::Ignored(Ignored::Event(event.to_owned())));
    }
    let malformed = |source| InvalidPayload::Malformed {
        event: event.to_owned(),
        source,
    };
    let missing = |field| InvalidPayload::Missing {
        event: event.to_owned(),
        field,
    };
    let parsed = match WebhookEvent::try_from_header_and_body(event, body) {
        Ok(parsed) => parsed,
        // An edit or a deletion is ignored whatever else its payload holds,
        // even fields the full event model refuses (an installation without
        // `node_id`, as test tools and some GitHub Enterprise versions send).
        Err(error) => match ignored_action(body) {
            Some(action) => return Ok(Decision::Ignored(Ignored::Action(action))),
            None => return Err(malformed(error)),
        },
    };
    let comment = match parsed.specific {
        WebhookEventPayload::IssueComment(payload) => issue_comment(*payload),
        WebhookEventPayload::PullRequestReviewComment(payload) => review_comment(*payload),
        _ => return Ok(Decision::Ignored(Ignored::Event(event.to_owned()))),
    }
    .ok_or_else(|| missing("comment"))?;

    if let Some(action) = comment.action {
        return Ok(Decision::Ignored(Ignored::Action(action)));
    }
    let sender = parsed.sender.ok_or_else(|| missing("sender"))?;
    if let Some(app) = &rules.app_login
        && (sender.login.eq_ignore_ascii_case(app) || comment.author.eq_ignore_ascii_case(app))
    {
        return Ok(Decision::Ignored(Ignored::OwnComment));
    }
    if sender.r#type == "Bot" || comment.author.ends_with("[bot]") {
        return Ok(Decision::Ignored(Ignored::Bot(sender.login)));
    }
    let Some(prompt) = rules.mention.request(&comment.body) else {
        return Ok(Decision::Ignored(Ignored::NoMention));
    };
    if prompt.is_empty() {
        return Ok(Decision::Ignored(Ignored::EmptyRequest));
    }
    if let Some(max_age) = rules.max_age {
        // A comment dated ahead of this clock is as fresh as can be.
        let age = now.duration_since(comment.created_at).unwrap_or_default();
        if age > max_age + CLOCK_SKEW {
            return Ok(Decision::Ignored(Ignored::Stale { age, max_age }));
        }
    }

    let repository = parsed.repository.ok_or_else(|| missing("repository"))?;
    let repository_id = Some(repository.id.into_inner())
        .filter(|id| *id > 0)
        .ok_or_else(|| missing("repository.id"))?;
    let repository = repository
        .full_name
        .filter(|name| name.split('/').count() == 2)
        .ok_or_else(|| missing("repository.full_name"))?;
    let installation = parsed.installation.map(|i| i.id().into_inner());
    let requester = Requester {
        actor: &comment.author,
        repository: &repository,
        installation,
    };
    if let Err(denial) = rules.policy.check(requester) {
        return Ok(Decision::Denied(denial));
    }

    let request = RunRequest {
        delivery: delivery.to_owned(),
        repository_id,
        installation,
        repository,
        number: i64::try_from(comment.number).map_err(|_| missing("number"))?,
        pull_request: comment.pull_request,
        comment: comment.comment,
        head: comment.head,
        prompt,
    };
    Ok(Decision::Run(Box::new(
        request.into_agent_run(rules.backend),
    )))
}

/// The action of a payload the event model could not read, when it is one
/// that never triggers.
fn ignored_action(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        action: Option<String>,
    }
    let head: Head = serde_json::from_slice(body).ok()?;
    head.action.filter(|action| action != "created")
}

fn id(value: u64) -> Option<i64> {
    i64::try_from(value).ok().filter(|id| *id > 0)
}

fn issue_comment(payload: IssueCommentWebhookEventPayload) -> Option<CommentEvent> {
    let created = matches!(payload.action, IssueCommentWebhookEventAction::Created);
    let comment = payload.comment;
    Some(CommentEvent {
        action: (!created).then(|| format!("{:?}", payload.action).to_lowercase()),
        created_at: comment.created_at.into(),
        body: comment.body.unwrap_or_default(),
        author: comment.user.login.clone(),
        number: payload.issue.number,
        pull_request: payload.issue.pull_request.is_some(),
        comment: TriggerComment {
            id: id(comment.id.into_inner())?,
            kind: CommentKind::IssueComment,
            html_url: comment.html_url.to_string(),
            author: comment.user.login,
            review: None,
        },
        head: None,
    })
}

fn review_comment(payload: PullRequestReviewCommentWebhookEventPayload) -> Option<CommentEvent> {
    let created = matches!(
        payload.action,
        PullRequestReviewCommentWebhookEventAction::Created
    );
    let comment = payload.comment;
    let author = comment.user?.login;
    let head = payload.pull_request.head;
    Some(CommentEvent {
        action: (!created).then(|| format!("{:?}", payload.action).to_lowercase()),
        created_at: comment.created_at.into(),
        body: comment.body,
        author: author.clone(),
        number: payload.pull_request.number,
        pull_request: true,
        comment: TriggerComment {
            id: id(comment.id.into_inner())?,
            kind: CommentKind::ReviewComment,
            html_url: comment.html_url,
            author,
            review: Some(ReviewContext {
                path: comment.path,
                line: comment.line.and_then(|line| i64::try_from(line).ok()),
                side: match comment.side.as_deref() {
                    Some("LEFT") => Some(DiffSide::Left),
                    Some("RIGHT") => Some(DiffSide::Right),
                    _ => None,
                },
                diff_hunk: comment.diff_hunk,
                commit_id: comment.commit_id,
                in_reply_to: comment
                    .in_reply_to_id
                    .and_then(|parent| id(parent.into_inner())),
            }),
        },
        head: Some(PullRequestHead {
            git_ref: head.ref_field,
            sha: head.sha,
        }),
    })
}
