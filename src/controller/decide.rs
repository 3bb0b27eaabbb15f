//! The pure decisions of a run's state machine: how an ended sandbox reads
//! as an outcome, what the thread is told, and when to look again. No I/O,
//! so each is table-tested beside the reconciler that acts on it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::api::{Phase, RunResult};

/// Time since `time`, or zero for a time in the future.
pub fn since(time: Timestamp) -> Duration {
    Timestamp::now()
        .duration_since(time)
        .try_into()
        .unwrap_or_default()
}

/// `duration` in whole seconds, for people: `2m13s`.
pub fn human(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
        .to_string()
        .replace(' ', "")
}

/// When to look again at something allowed `limit` that has taken
/// `elapsed`, polled every `poll`; `None` once the limit is spent.
pub fn next_look(elapsed: Duration, limit: Duration, poll: Duration) -> Option<Duration> {
    (elapsed < limit).then(|| (limit - elapsed).min(poll))
}

/// The Finished reason of a run whose agent did not finish in time.
pub const RUN_TIMEOUT: &str = "RunTimeout";

/// The Finished reason of a run whose sandbox did not start in time.
pub const PENDING_TIMEOUT: &str = "PendingTimeout";

/// How a run ends whose sandbox exited without a stored result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The Finished condition's reason.
    pub reason: &'static str,
    /// What happened, for the thread.
    pub message: String,
}

/// The outcome of an agent that exited with `code` for the backend's
/// `reason`, allowed `timeout`; `logs` is the command that shows its log.
pub fn exit_outcome(code: i32, reason: Option<&str>, timeout: Duration, logs: &str) -> Outcome {
    let (reason, message) = match (code, reason) {
        (_, Some("OOMKilled")) => (
            "OutOfMemory",
            "the agent ran out of memory; give the run more memory in spec.sandbox.resources"
                .to_owned(),
        ),
        (_, Some("DeadlineExceeded")) => (
            RUN_TIMEOUT,
            format!("the agent did not finish within {}", human(timeout)),
        ),
        (0, _) => (
            "NoReply",
            "the agent exited without reporting a reply".to_owned(),
        ),
        (code, _) => (
            "AgentFailed",
            format!("the agent exited with code {code}; its log: {logs}"),
        ),
    };
    Outcome { reason, message }
}

/// What to say in the thread about a run that ended in `phase` with
/// `result`, its Finished condition `finished`.
pub fn reply_text(
    phase: Phase,
    result: Option<&RunResult>,
    finished: Option<&Condition>,
) -> String {
    let why = finished.map_or("no reason was recorded", |c| c.message.as_str());
    match (phase, result) {
        // The agent's own reply, whether the run succeeded or the agent
        // failed partway and said so.
        (Phase::Succeeded | Phase::Failed, Some(result)) => result.reply.clone(),
        (Phase::Cancelled, _) => {
            format!("This request was cancelled before smolpaws finished it: {why}.")
        }
        _ => format!(
            "smolpaws could not finish this request: {why}.\n\nAsk again with a new comment once that is fixed (reason: `{}`).",
            finished.map_or("Unknown", |c| c.reason.as_str())
        ),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{Outcome, TokenUsage};

    const LOGS: &str = "smolpaws logs -n ns run-1";

    #[test]
    fn exits_read_as_outcomes() {
        let timeout = Duration::from_secs(1800);
        let table: [(i32, Option<&str>, &str, &str); 6] = [
            (137, Some("OOMKilled"), "OutOfMemory", "ran out of memory"),
            (
                0,
                Some("OOMKilled"),
                "OutOfMemory",
                "spec.sandbox.resources",
            ),
            (-1, Some("DeadlineExceeded"), "RunTimeout", "within 30m"),
            (0, Some("Completed"), "NoReply", "without reporting"),
            (0, None, "NoReply", "without reporting"),
            (
                2,
                Some("Error"),
                "AgentFailed",
                "code 2; its log: smolpaws logs -n ns run-1",
            ),
        ];
        for (code, reason, expected, says) in table {
            let outcome = exit_outcome(code, reason, timeout, LOGS);
            assert_eq!(outcome.reason, expected, "exit {code} {reason:?}");
            assert!(
                outcome.message.contains(says),
                "exit {code} {reason:?}: {:?} lacks {says:?}",
                outcome.message
            );
        }
    }

    #[test]
    fn looks_come_no_later_than_the_limit() {
        let s = Duration::from_secs;
        let table = [
            (s(0), s(300), s(10), Some(s(10))),
            (s(295), s(300), s(10), Some(s(5))),
            (s(299), s(300), s(30), Some(s(1))),
            (s(300), s(300), s(10), None),
            (s(301), s(300), s(10), None),
        ];
        for (elapsed, limit, poll, expected) in table {
            assert_eq!(
                next_look(elapsed, limit, poll),
                expected,
                "{elapsed:?} of {limit:?}"
            );
        }
    }

    fn finished(reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Finished".into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn the_thread_hears_the_reply_or_the_reason() {
        let result = RunResult {
            reply: "the parser drops them in lexer.rs".into(),
            usage: TokenUsage::default(),
            model: None,
            outcome: Outcome::Finished,
            change: None,
        };
        let timeout = finished("RunTimeout", "the agent did not finish within 30m");
        let deleted = finished("Cancelled", "the AgentRun was deleted");
        assert_eq!(
            reply_text(Phase::Succeeded, Some(&result), None),
            result.reply
        );
        assert_eq!(
            reply_text(Phase::Failed, None, Some(&timeout)),
            "smolpaws could not finish this request: the agent did not finish within 30m.\n\n\
             Ask again with a new comment once that is fixed (reason: `RunTimeout`)."
        );
        assert_eq!(
            reply_text(Phase::Cancelled, None, Some(&deleted)),
            "This request was cancelled before smolpaws finished it: the AgentRun was deleted."
        );
        let failed_partway = RunResult {
            reply: "I stopped before finishing: the LLM failed.".into(),
            outcome: Outcome::LlmFailed,
            change: None,
            ..result.clone()
        };
        assert_eq!(
            reply_text(
                Phase::Failed,
                Some(&failed_partway),
                Some(&finished("LLMFailed", "the LLM failed"))
            ),
            failed_partway.reply,
            "an agent that failed partway says so itself"
        );
        assert!(
            reply_text(Phase::Succeeded, None, None).contains("reason: `Unknown`"),
            "a success without a result is not a reply"
        );
    }

    #[test]
    fn durations_read_in_whole_seconds() {
        assert_eq!(human(Duration::from_millis(133_900)), "2m13s");
        assert_eq!(human(Duration::from_secs(86_400)), "1day");
    }
}
