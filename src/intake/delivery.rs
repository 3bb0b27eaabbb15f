//! From one verified webhook delivery to a decision: ignore it, deny it, or
//! the AgentRun it asks for. No I/O happens here, so the fuzz target and the
//! benchmark exercise exactly what the server runs.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use super::payload::{self, IssueCommentPayload, ReviewCommentPayload};
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
struct CommentEvent<'a> {
    action: Cow<'a, str>,
    created_at: SystemTime,
    body: Cow<'a, str>,
    number: u64,
    pull_request: bool,
    /// `None` when the comment has no usable id or author.
    comment: Option<TriggerComment>,
    head: Option<PullRequestHead>,
    repository: Option<payload::Repository<'a>>,
    sender: Option<payload::User<'a>>,
    installation: Option<u64>,
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
    let missing = |field| InvalidPayload::Missing {
        event: event.to_owned(),
        field,
    };
    let parsed = match event {
        "issue_comment" => serde_json::from_slice(body).map(issue_comment),
        "pull_request_review_comment" => serde_json::from_slice(body).map(review_comment),
        _ => return Ok(Decision::Ignored(Ignored::Event(event.to_owned()))),
    };
    let event_comment = match parsed {
        Ok(parsed) => parsed,
        // An edit or a deletion is ignored whatever else its payload holds.
        Err(source) => match ignored_action(body) {
            Some(action) => return Ok(Decision::Ignored(Ignored::Action(action))),
            None => {
                return Err(InvalidPayload::Malformed {
                    event: event.to_owned(),
                    source,
                });
            }
        },
    };
    if event_comment.action != "created" {
        return Ok(Decision::Ignored(Ignored::Action(
            event_comment.action.into_owned(),
        )));
    }
    let comment = event_comment.comment.ok_or_else(|| missing("comment"))?;
    let sender = event_comment.sender.ok_or_else(|| missing("sender"))?;
    if let Some(app) = &rules.app_login
        && (sender.login.eq_ignore_ascii_case(app) || comment.author.eq_ignore_ascii_case(app))
    {
        return Ok(Decision::Ignored(Ignored::OwnComment));
    }
    if sender.kind == "Bot" || comment.author.ends_with("[bot]") {
        return Ok(Decision::Ignored(Ignored::Bot(sender.login.into_owned())));
    }
    let Some(prompt) = rules.mention.request(&event_comment.body) else {
        return Ok(Decision::Ignored(Ignored::NoMention));
    };
    if prompt.is_empty() {
        return Ok(Decision::Ignored(Ignored::EmptyRequest));
    }
    if let Some(max_age) = rules.max_age {
        // A comment dated ahead of this clock is as fresh as can be.
        let age = now
            .duration_since(event_comment.created_at)
            .unwrap_or_default();
        if age > max_age + CLOCK_SKEW {
            return Ok(Decision::Ignored(Ignored::Stale { age, max_age }));
        }
    }

    let repository = event_comment
        .repository
        .ok_or_else(|| missing("repository"))?;
    let repository_id = Some(repository.id)
        .filter(|id| *id > 0)
        .ok_or_else(|| missing("repository.id"))?;
    let repository = repository
        .full_name
        .filter(|name| name.split('/').count() == 2)
        .ok_or_else(|| missing("repository.full_name"))?;
    let installation = event_comment.installation;
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
        repository: repository.into_owned(),
        number: i64::try_from(event_comment.number).map_err(|_| missing("number"))?,
        pull_request: event_comment.pull_request,
        comment,
        head: event_comment.head,
        prompt,
    };
    Ok(Decision::Run(Box::new(
        request.into_agent_run(rules.backend),
    )))
}

/// The action of a payload that could not be read, when it is one that never
/// triggers.
fn ignored_action(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        action: Option<Cow<'a, str>>,
    }
    let head: Head = serde_json::from_slice(body).ok()?;
    head.action
        .filter(|action| action != "created")
        .map(Cow::into_owned)
}

fn id(value: u64) -> Option<i64> {
    i64::try_from(value).ok().filter(|id| *id > 0)
}

fn issue_comment(payload: IssueCommentPayload<'_>) -> CommentEvent<'_> {
    let comment = payload.comment;
    let author = comment.user.login.into_owned();
    CommentEvent {
        action: payload.action,
        created_at: comment.created_at,
        body: comment.body.unwrap_or_default(),
        number: payload.issue.number,
        pull_request: payload.issue.pull_request.is_some(),
        comment: id(comment.id).map(|id| TriggerComment {
            id,
            kind: CommentKind::IssueComment,
            html_url: comment.html_url.into_owned(),
            author,
            review: None,
        }),
        head: None,
        repository: payload.repository,
        sender: payload.sender,
        installation: payload.installation.map(|i| i.id),
    }
}

fn review_comment(payload: ReviewCommentPayload<'_>) -> CommentEvent<'_> {
    let comment = payload.comment;
    let head = payload.pull_request.head;
    let trigger = |comment_id, author: payload::User<'_>| TriggerComment {
        id: comment_id,
        kind: CommentKind::ReviewComment,
        html_url: comment.html_url.into_owned(),
        author: author.login.into_owned(),
        review: Some(ReviewContext {
            path: comment.path.into_owned(),
            line: comment.line.and_then(|line| i64::try_from(line).ok()),
            side: match comment.side.as_deref() {
                Some("LEFT") => Some(DiffSide::Left),
                Some("RIGHT") => Some(DiffSide::Right),
                _ => None,
            },
            diff_hunk: comment.diff_hunk.into_owned(),
            commit_id: comment.commit_id.into_owned(),
            in_reply_to: comment.in_reply_to_id.and_then(id),
        }),
    };
    CommentEvent {
        action: payload.action,
        created_at: comment.created_at,
        body: comment.body,
        number: payload.pull_request.number,
        pull_request: true,
        comment: id(comment.id)
            .zip(comment.user)
            .map(|(id, user)| trigger(id, user)),
        head: Some(PullRequestHead {
            git_ref: head.git_ref.into_owned(),
            sha: head.sha.into_owned(),
        }),
        repository: payload.repository,
        sender: payload.sender,
        installation: payload.installation.map(|i| i.id),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn rules() -> Rules {
        Rules {
            mention: "@smolpaws".parse().expect("a valid mention"),
            policy: Policy::new(["Codertocat".into()], ["Codertocat".into()], [], []),
            app_login: Some("smolpaws[bot]".into()),
            backend: SandboxBackend::default(),
            max_age: None,
        }
    }

    fn fixture(name: &str, body: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/github/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("the fixture is readable");
        let mut payload: Value = serde_json::from_str(&text).expect("the fixture is JSON");
        payload["comment"]["body"] = json!(body);
        payload
    }

    fn judge(event: &str, payload: &Value) -> Result<Decision, InvalidPayload> {
        let body = serde_json::to_vec(payload).expect("JSON serializes");
        decide(&rules(), event, "d", &body, SystemTime::now())
    }

    #[test]
    fn an_installation_without_node_id_still_makes_a_run() {
        let mut payload = fixture(
            "issue_comment_created.with-installation.json",
            "@smolpaws hi",
        );
        payload["installation"] = json!({ "id": 7 });
        let Ok(Decision::Run(run)) = judge("issue_comment", &payload) else {
            panic!("no run");
        };
        assert_eq!(run.spec.github.installation_id, Some(7));
    }

    #[test]
    fn fields_no_decision_reads_may_be_absent() {
        let mut payload = fixture("pull_request_review_comment_created.json", "@smolpaws look");
        for pointer in ["/comment", "/pull_request", "/repository", "/sender"] {
            let Some(Value::Object(object)) = payload.pointer_mut(pointer) else {
                panic!("{pointer} is an object");
            };
            object.retain(|key, _| {
                [
                    "id",
                    "created_at",
                    "body",
                    "user",
                    "html_url",
                    "path",
                    "diff_hunk",
                    "commit_id",
                    "number",
                    "head",
                    "full_name",
                    "login",
                    "type",
                ]
                .contains(&key.as_str())
            });
        }
        payload["comment"]["user"] = json!({ "login": "Codertocat", "type": "User" });
        let Ok(Decision::Run(run)) = judge("pull_request_review_comment", &payload) else {
            panic!("no run");
        };
        let review = run.spec.github.comment.and_then(|c| c.review);
        assert_eq!(review.map(|r| r.path), Some("README.md".to_owned()));
    }

    #[test]
    fn an_edit_is_only_ignored_whatever_its_payload_lacks() {
        let mut payload = fixture("pull_request_review_comment_edited.json", "@smolpaws x");
        payload["comment"]["user"] = Value::Null;
        payload["comment"]["id"] = json!(0);
        payload["installation"] = json!({ "id": 1 });
        assert!(matches!(
            judge("pull_request_review_comment", &payload),
            Ok(Decision::Ignored(Ignored::Action(action))) if action == "edited"
        ));
        payload
            .as_object_mut()
            .expect("an object")
            .remove("comment");
        assert!(matches!(
            judge("pull_request_review_comment", &payload),
            Ok(Decision::Ignored(Ignored::Action(action))) if action == "edited"
        ));
    }

    #[test]
    fn a_created_comment_without_what_a_decision_needs_is_refused() {
        let payload = fixture("issue_comment_created.json", "@smolpaws hi");
        for (pointer, value) in [
            ("/comment/created_at", json!("yesterday")),
            ("/comment/user", Value::Null),
            ("/sender/type", Value::Null),
            ("/issue/number", json!(-1)),
        ] {
            let mut broken = payload.clone();
            *broken.pointer_mut(pointer).expect("the field exists") = value;
            assert!(
                matches!(
                    judge("issue_comment", &broken),
                    Err(InvalidPayload::Malformed { .. })
                ),
                "{pointer}"
            );
        }
        let mut no_id = payload.clone();
        no_id["comment"]["id"] = json!(0);
        assert!(matches!(
            judge("issue_comment", &no_id),
            Err(InvalidPayload::Missing {
                field: "comment",
                ..
            })
        ));
    }
}
