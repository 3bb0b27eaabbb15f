//! Property tests ("fuzzing") of the parse-and-policy path: whatever a signed
//! delivery holds, judging it never panics, and a run is only ever made for
//! an allowed human who mentioned smolpaws.
//!
//! The normal test run tries a few hundred cases per property. For a long
//! run, give it a time budget and read the case counts it prints:
//!
//! ```sh
//! SMOLPAWS_FUZZ_SECONDS=600 cargo test --release --test delivery_fuzz -- --nocapture --test-threads 1
//! ```

mod support;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use smolpaws::intake::delivery::{Decision, Rules, decide};
use smolpaws::intake::policy::Policy;

fn rules() -> Rules {
    Rules {
        mention: "@smolpaws".parse().expect("a valid mention"),
        policy: Policy::new(
            ["Codertocat".to_owned(), "octocat".to_owned()],
            ["Codertocat".to_owned()],
            [],
            [],
        ),
        app_login: Some("smolpaws[bot]".into()),
        backend: Default::default(),
        max_age: None,
    }
}

/// Runs `test` over `strategy` for `SMOLPAWS_FUZZ_SECONDS` (or one round of
/// proptest's default case count) and reports how many cases ran.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("SMOLPAWS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let mut cases: u64 = 0;
    loop {
        let mut runner = TestRunner::new(config.clone());
        if let Err(failure) = runner.run(&strategy, &test) {
            panic!("{name}: {failure}");
        }
        cases += u64::from(config.cases);
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "{name}: {cases} cases in {:.1?}, no failure",
        started.elapsed()
    );
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Comment bodies that mention, almost mention, quote or fence the trigger.
fn body() -> impl Strategy<Value = String> {
    // Mentions weigh more: random text often reads as markup (code spans,
    // HTML) in which a mention does not count, and the policy invariants
    // need cases that make runs.
    let piece = prop_oneof![
        4 => Just(" @smolpaws ".to_owned()),
        2 => Just("@SmolPaws".to_owned()),
        1 => Just("@smolpawsy".to_owned()),
        1 => Just("me@smolpaws".to_owned()),
        1 => Just("\n> ".to_owned()),
        1 => Just("\n```\n".to_owned()),
        1 => Just(", ".to_owned()),
        1 => Just(": ".to_owned()),
        1 => Just("é👀".to_owned()),
        1 => "\\PC{0,12}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

const EVENTS: [&str; 5] = [
    "issue_comment",
    "pull_request_review_comment",
    "ping",
    "installation",
    "",
];

#[test]
fn arbitrary_bytes_never_panic() {
    let rules = rules();
    fuzz(
        "arbitrary bytes",
        (
            prop::sample::select(EVENTS.to_vec()),
            prop::collection::vec(any::<u8>(), 0..2048),
        ),
        |(event, body)| {
            let _ = decide(&rules, event, "delivery", &body, SystemTime::now());
            Ok(())
        },
    );
}

#[test]
fn a_fixture_with_any_field_replaced_never_panics() {
    let rules = rules();
    let fixtures = [
        (
            "issue_comment",
            support::fixture("issue_comment_created.with-installation.json"),
        ),
        (
            "pull_request_review_comment",
            support::fixture("pull_request_review_comment_created.json"),
        ),
    ];
    let paths = [
        "/action",
        "/comment",
        "/comment/body",
        "/comment/id",
        "/comment/user",
        "/comment/user/login",
        "/comment/line",
        "/comment/side",
        "/comment/diff_hunk",
        "/issue",
        "/issue/number",
        "/issue/pull_request",
        "/pull_request/head",
        "/pull_request/number",
        "/repository",
        "/repository/full_name",
        "/sender",
        "/sender/type",
        "/installation",
        "/installation/id",
    ];
    fuzz(
        "fixture field replaced",
        (
            0..fixtures.len(),
            prop::sample::select(paths.to_vec()),
            json_value(),
            any::<bool>(),
        ),
        |(which, path, value, remove)| {
            let (event, fixture) = &fixtures[which];
            let mut payload = fixture.clone();
            if let Some(slot) = payload.pointer_mut(path) {
                *slot = value;
            }
            if remove
                && let Some((parent, key)) = path.rsplit_once('/')
                && let Some(Value::Object(object)) = payload.pointer_mut(parent)
            {
                object.remove(key);
            }
            let body = serde_json::to_vec(&payload).expect("JSON serializes");
            let _ = decide(&rules, event, "delivery", &body, SystemTime::now());
            Ok(())
        },
    );
}

#[test]
fn runs_are_made_only_for_allowed_humans_who_asked() {
    let rules = rules();
    let fixture = support::fixture("issue_comment_created.with-installation.json");
    let actions = prop::sample::select(vec!["created", "edited", "deleted", "pinned"]);
    let logins = prop::sample::select(vec![
        "Codertocat",
        "codertocat",
        "octocat",
        "mallory",
        "smolpaws[bot]",
        "dependabot[bot]",
    ]);
    let kinds = prop::sample::select(vec!["User", "Bot", "Organization"]);
    let owners = prop::sample::select(vec!["Codertocat", "CODERTOCAT", "octo-org"]);
    let made = std::sync::atomic::AtomicU64::new(0);
    fuzz(
        "policy invariants",
        (actions, logins, kinds, owners, body(), "[0-9a-f-]{1,40}"),
        |(action, login, kind, owner, body, delivery)| {
            let mut payload = fixture.clone();
            payload["action"] = json!(action);
            payload["comment"]["body"] = json!(body);
            payload["comment"]["user"]["login"] = json!(login);
            payload["sender"]["login"] = json!(login);
            payload["sender"]["type"] = json!(kind);
            payload["repository"]["full_name"] = json!(format!("{owner}/Hello-World"));
            let bytes = serde_json::to_vec(&payload).expect("JSON serializes");
            let decision = decide(
                &rules,
                "issue_comment",
                &delivery,
                &bytes,
                SystemTime::now(),
            );
            if let Ok(Decision::Run(run)) = decision {
                prop_assert_eq!(action, "created");
                prop_assert_ne!(kind, "Bot");
                prop_assert!(["codertocat", "octocat"].contains(&login.to_lowercase().as_str()));
                prop_assert!(owner.eq_ignore_ascii_case("codertocat"));
                prop_assert!(body.to_lowercase().contains("@smolpaws"));
                prop_assert!(!run.spec.prompt.is_empty());
                prop_assert_eq!(
                    run.spec.github.delivery_id.as_deref(),
                    Some(delivery.as_str())
                );
                // The same signed body under another delivery id is the
                // same run: a replay collides with it.
                let again = decide(
                    &rules,
                    "issue_comment",
                    "replayed",
                    &bytes,
                    SystemTime::now(),
                );
                let Ok(Decision::Run(again)) = again else {
                    return Err(TestCaseError::fail("the same comment decided differently"));
                };
                prop_assert_eq!(
                    run.metadata.name,
                    again.metadata.name,
                    "names derive from signed fields alone"
                );
                made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        },
    );
    assert!(
        made.into_inner() > 0,
        "no case made a run, so the invariants were never checked"
    );
}
