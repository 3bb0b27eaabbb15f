//! The fake GitHub of the tests is GitHub as far as the official client can
//! tell: `@octokit/rest`, authenticating with `@octokit/auth-app` (pinned in
//! `tests/node/octokit/package-lock.json`), calls every route smolpaws uses
//! against it, and each answer parses into the fields a client reads (the
//! App and its bot user, token mints and revocation, reactions, comments
//! and review-thread replies, pull requests, check runs). A fake that
//! drifts from GitHub fails here, not in production.
//!
//! Needs node and npm (Node 20 or newer); the packages are installed once
//! into `~/.cache/smolpaws/node/` by `tests/node/env.sh`.

mod support;

use std::collections::BTreeSet;
use std::process::Output;

use support::fake_github::{BOT_USER_ID, FakeGitHub};
use support::printed;

const HEAD: &str = "889bfabba62b5fa6d17b2c4304d430a597f0f68c";

/// Every route smolpaws calls, as the fake records them with ids, numbers
/// and commits in braces.
const ROUTES: &[&str] = &[
    "GET /app",
    "GET /repos/octo/hello/installation",
    "POST /app/installations/{id}/access_tokens",
    "DELETE /installation/token",
    "GET /users/smolpaws%5Bbot%5D",
    "GET /repos/octo/hello/issues/{id}",
    "POST /repos/octo/hello/issues/comments/{id}/reactions",
    "POST /repos/octo/hello/pulls/comments/{id}/reactions",
    "POST /repos/octo/hello/issues/{id}/comments",
    "GET /repos/octo/hello/issues/{id}/comments",
    "PATCH /repos/octo/hello/issues/comments/{id}",
    "GET /repos/octo/hello/pulls/{id}",
    "GET /repos/octo/hello/pulls/{id}/comments",
    "POST /repos/octo/hello/pulls/{id}/comments/{id}/replies",
    "GET /repos/octo/hello/pulls",
    "POST /repos/octo/hello/pulls",
    "POST /repos/octo/hello/check-runs",
    "PATCH /repos/octo/hello/check-runs/{id}",
    "GET /repos/octo/hello/commits/{sha}/check-runs",
];

/// Runs `tests/node/octokit/contract.mjs` against `fake`, in `mode`.
async fn drive(fake: &FakeGitHub, mode: Option<&str>) -> Output {
    let packages = support::npm::packages("octokit");
    let script = support::npm::scripts().join("octokit/contract.mjs");
    tokio::process::Command::new("node")
        .arg(script)
        .arg(packages)
        .arg(support::operator::app_key())
        .args(mode)
        .env("GITHUB_API_URL", &fake.url)
        .env("HEAD_SHA", HEAD)
        .env("BOT_USER_ID", BOT_USER_ID.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs: these tests need Node 20 or newer on PATH")
}

/// `call` with its ids and numbers as `{id}` and its commits as `{sha}`.
fn shape(call: &str) -> String {
    call.split('/')
        .map(|part| {
            if part.len() == 40 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                "{sha}"
            } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A fake with pull request 7 of `octo/hello`, its head `feature` at
/// [`HEAD`].
async fn fake() -> FakeGitHub {
    let fake = FakeGitHub::start().await;
    fake.seed_pull("octo/hello", 7, "feature", HEAD, "octo/hello");
    fake
}

#[tokio::test]
async fn the_official_client_understands_every_answer_of_every_route_smolpaws_uses() {
    let fake = fake().await;
    let output = drive(&fake, None).await;
    assert!(output.status.success(), "{}", printed(&output));
    assert!(printed(&output).contains("contract kept"));

    let used: BTreeSet<String> = fake.calls().iter().map(|call| shape(call)).collect();
    let expected: BTreeSet<String> = ROUTES.iter().map(|route| (*route).to_owned()).collect();
    assert_eq!(
        used, expected,
        "the client called every route smolpaws uses, and only those"
    );
    assert!(fake.unauthorized().is_empty(), "{:?}", fake.unauthorized());

    // What the client did is what the fake recorded.
    let checks = fake.check_runs();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].state(), ("completed", Some("success")));
    assert_eq!(checks[0].external_id.as_deref(), Some("run-uid"));
    assert_eq!(fake.reactions().len(), 2);
    let comments = fake.comments();
    assert_eq!(comments.len(), 2);
    assert!(comments[0].body.starts_with("✅ done"), "{comments:#?}");
    assert_eq!(comments[1].in_reply_to, Some(909));
    assert_eq!(fake.pulls().len(), 2, "the seeded one and the draft");
    assert_eq!(fake.revoked().len(), 1);
    println!("the client's requests:\n{}", fake.calls().join("\n"));
}

#[tokio::test]
async fn without_checks_write_the_client_sees_githubs_refusal() {
    let fake = fake().await;
    fake.forbid_checks();
    let output = drive(&fake, Some("forbidden")).await;
    assert!(output.status.success(), "{}", printed(&output));
    assert!(printed(&output).contains("contract kept"));
    assert!(fake.check_runs().is_empty());
}
