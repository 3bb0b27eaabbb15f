//! The fake Daytona of the tests is Daytona as far as the official Python
//! SDK (`daytona`, pinned in `tests/python/daytona/requirements.txt`) can
//! tell: the SDK goes through every step smolpaws takes against it, parses
//! every answer into its generated models without a field to spare, and
//! calls every route the fake serves. A fake that drifts from Daytona fails
//! here, not in production.
//!
//! Re-check against a newer Daytona by raising the pins and running
//! `cargo test --test daytona_sdk_contract -- --nocapture`, which also
//! prints the SDK's requests.

mod support;

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::json;
use support::fake_daytona::{FakeDaytona, Fault, KEY, SERVED};
use support::printed;

/// Runs `tests/python/daytona/contract.py` against `fake`.
async fn drive(fake: &FakeDaytona) -> Output {
    let python = support::python::interpreter("daytona");
    let script = support::python::scripts().join("daytona/contract.py");
    // Away from any `.env` the SDK would read.
    let place = tempfile::tempdir().expect("a working directory");
    tokio::process::Command::new(python)
        .arg(script)
        .current_dir(place.path())
        .env_remove("DAYTONA_TARGET")
        .env_remove("DAYTONA_JWT_TOKEN")
        .env("DAYTONA_API_URL", &fake.url)
        .env("DAYTONA_API_KEY", KEY)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the SDK's Python runs")
}

#[tokio::test]
async fn the_official_sdk_understands_every_answer_and_uses_every_route() {
    let fake = FakeDaytona::start().await;
    let output = drive(&fake).await;
    assert!(output.status.success(), "{}", printed(&output));
    assert!(printed(&output).contains("contract kept"));

    let used: BTreeSet<String> = fake.routes().into_iter().collect();
    let served: BTreeSet<String> = SERVED.iter().map(|route| (*route).to_owned()).collect();
    assert_eq!(
        used, served,
        "the fake serves exactly the routes the SDK calls"
    );
    // The SDK also tries Daytona's event socket, which the fake does not
    // serve: it then polls, as it does whenever the socket is down.
    let refused = fake.refused();
    assert!(
        refused
            .iter()
            .all(|call| call.starts_with("GET /socket.io/")),
        "the SDK called routes the fake does not serve: {refused:?}"
    );
    assert_eq!(fake.unauthorized(), 0);
    assert_eq!(fake.live(), 0, "the SDK deleted what it made");
    println!("the SDK's requests:\n{}", fake.calls().join("\n"));
}

#[tokio::test]
async fn an_answer_the_sdk_cannot_parse_fails_the_contract() {
    // The list as Daytona answered before its cursor pagination.
    let fake = FakeDaytona::start().await;
    fake.fail_next_exactly("GET /sandbox", Fault::Answer(json!([])));
    let output = drive(&fake).await;
    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("validation error for ListSandboxesResponse"),
        "{}",
        printed(&output)
    );
}

#[tokio::test]
async fn a_field_the_sdk_does_not_know_fails_the_contract() {
    let fake = FakeDaytona::start().await;
    fake.fail_next_exactly(
        "GET /sandbox",
        Fault::Answer(json!({ "items": [], "nextCursor": null, "total": 0 })),
    );
    let output = drive(&fake).await;
    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("fields ListSandboxesResponse does not know: ['total']"),
        "{}",
        printed(&output)
    );
}
