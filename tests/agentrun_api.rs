//! The AgentRun API as the real apiserver serves it: the CRD installs, objects
//! round-trip, the schema and CEL rules refuse bad specs, and `kubectl get`
//! columns are filled.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, Status};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use smolpaws::api::{
    AgentRun, AgentRunSpec, AgentRunStatus, CommentKind, GitHubContext, Phase, SandboxSpec,
    TokenUsage, TriggerComment,
};

fn spec() -> AgentRunSpec {
    AgentRunSpec {
        prompt: "why does the parser drop trailing commas?".into(),
        github: GitHubContext {
            installation_id: Some(42),
            repository: "octo-org/hello-world".into(),
            number: 7,
            pull_request: false,
            comment: Some(TriggerComment {
                id: 1001,
                kind: CommentKind::IssueComment,
                html_url: "https://github.com/octo-org/hello-world/issues/7#issuecomment-1001"
                    .into(),
                author: "octocat".into(),
                review: None,
            }),
            head: None,
            post_reply: true,
            delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            changes: None,
            allow_workflow_changes: false,
        },
        sandbox: SandboxSpec::default(),
        agent: None,
    }
}

fn run(name: &str) -> AgentRun {
    AgentRun::new(name, spec())
}

/// The apiserver's refusal of `result`, which must be a 422 Invalid.
fn invalid<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            assert_eq!(status.reason, "Invalid");
            status
        }
        other => panic!("expected the apiserver to refuse, got {other:?}"),
    }
}

#[tokio::test]
async fn the_crd_is_established_with_its_names() {
    let client = support::client();
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("agentruns.smolpaws.dev")
        .await
        .expect("the CRD is installed");
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "not Established: {conditions:?}"
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["ar".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["smolpaws".to_owned()]));
}

#[tokio::test]
async fn an_agentrun_round_trips_and_status_goes_through_the_subresource() {
    let client = support::client();
    let ns = support::namespace(&client, "roundtrip").await;
    let api: Api<AgentRun> = Api::namespaced(client, &ns);

    let mut sent = run("first");
    sent.status = Some(AgentRunStatus {
        phase: Some(Phase::Succeeded),
        ..Default::default()
    });
    let created = api
        .create(&PostParams::default(), &sent)
        .await
        .expect("a valid AgentRun is accepted");
    assert_eq!(created.spec, spec());
    assert_eq!(created.status, None, "status on create is dropped");

    let fetched = api.get("first").await.expect("get");
    assert_eq!(fetched.spec, spec());
    assert_eq!(fetched.phase(), Phase::Pending);
    let listed = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].spec, spec());

    // A status written through the main resource is ignored...
    let status = json!({ "status": { "phase": "Running", "message": "working" } });
    let patched = api
        .patch("first", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("a merge patch of the main resource");
    assert_eq!(patched.status, None);

    // ...and one written through the status subresource sticks.
    let patched = api
        .patch_status("first", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("a merge patch of the status subresource");
    assert_eq!(patched.phase(), Phase::Running);
    let fetched = api.get("first").await.expect("get");
    assert_eq!(
        fetched.status.and_then(|s| s.message).as_deref(),
        Some("working")
    );
    assert_eq!(fetched.spec, spec(), "a status write leaves the spec alone");
}

#[tokio::test]
async fn enterprise_managed_users_may_ask_in_their_own_repositories() {
    let client = support::client();
    let ns = support::namespace(&client, "emu").await;
    let api: Api<AgentRun> = Api::namespaced(client, &ns);
    let mut managed = spec();
    // An Enterprise Managed User's login is its handle, `_`, and the
    // enterprise's short code.
    managed.github.repository = "mona-lisa_acme/hello-world".into();
    if let Some(comment) = managed.github.comment.as_mut() {
        comment.author = "mona-lisa_acme".into();
    }
    let created = api
        .create(
            &PostParams::default(),
            &AgentRun::new("managed", managed.clone()),
        )
        .await
        .expect("an EMU login is a valid author and owner");
    assert_eq!(created.spec, managed);
}

#[tokio::test]
async fn the_spec_is_immutable() {
    let client = support::client();
    let ns = support::namespace(&client, "immutable").await;
    let api: Api<AgentRun> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &run("fixed"))
        .await
        .expect("create");

    let change = json!({ "spec": { "prompt": "do something else" } });
    let status = invalid(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(&change))
            .await,
    );
    assert!(
        status.message.contains("spec is immutable"),
        "{}",
        status.message
    );
    assert_eq!(
        api.get("fixed").await.expect("get").spec.prompt,
        spec().prompt
    );

    // Metadata stays writable: labels and finalizers are how others work
    // with a run.
    let label = json!({ "metadata": { "labels": { "team": "parsers" } } });
    api.patch("fixed", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("labels can change");
}

#[tokio::test]
async fn malformed_specs_are_refused_with_the_apiservers_reason() {
    let client = support::client();
    let ns = support::namespace(&client, "invalid").await;
    let resource = ApiResource::erase::<AgentRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let valid = serde_json::to_value(spec()).expect("the spec serializes");

    let mut no_owner = valid.clone();
    no_owner["github"]["repository"] = json!("hello-world");
    let mut extra_slash = valid.clone();
    extra_slash["github"]["repository"] = json!("octo-org/hello/world");
    let mut no_prompt = valid.clone();
    no_prompt
        .as_object_mut()
        .expect("an object")
        .remove("prompt");
    let mut empty_prompt = valid.clone();
    empty_prompt["prompt"] = json!("");
    let mut zero_number = valid.clone();
    zero_number["github"]["number"] = json!(0);
    let mut review_without_diff = valid.clone();
    review_without_diff["github"]["pullRequest"] = json!(true);
    review_without_diff["github"]["comment"]["kind"] = json!("ReviewComment");
    let mut review_on_issue = valid.clone();
    review_on_issue["github"]["comment"]["kind"] = json!("ReviewComment");
    review_on_issue["github"]["comment"]["review"] = json!({
        "path": "src/lib.rs",
        "diffHunk": "@@ -1 +1 @@",
        "commitId": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    });
    let mut unknown_backend = valid.clone();
    unknown_backend["sandbox"] = json!({ "backend": "vm" });

    let cases: [(&str, Value, &str); 8] = [
        ("no-owner", no_owner, "spec.github.repository"),
        ("extra-slash", extra_slash, "spec.github.repository"),
        ("no-prompt", no_prompt, "spec.prompt: Required value"),
        ("empty-prompt", empty_prompt, "spec.prompt"),
        ("zero-number", zero_number, "spec.github.number"),
        (
            "review-without-diff",
            review_without_diff,
            "review is required for review comments",
        ),
        (
            "review-on-issue",
            review_on_issue,
            "a review comment belongs to a pull request",
        ),
        ("unknown-backend", unknown_backend, "spec.sandbox.backend"),
    ];
    for (name, spec, expected) in cases {
        let mut object = DynamicObject::new(name, &resource);
        object.data = json!({ "spec": spec });
        let status = invalid(api.create(&PostParams::default(), &object).await);
        assert!(
            status.message.contains(expected),
            "{name}: expected {expected:?} in {:?}",
            status.message
        );
    }
    let left = api.list(&ListParams::default()).await.expect("list");
    assert!(left.items.is_empty(), "nothing invalid was stored");
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let client = support::client();
    let ns = support::namespace(&client, "columns").await;
    let api: Api<AgentRun> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &run("shown"))
        .await
        .expect("create");
    let status = AgentRunStatus {
        phase: Some(Phase::Succeeded),
        duration: Some("2m13s".into()),
        result: Some(smolpaws::api::RunResult {
            reply: "Trailing commas are dropped by the tokenizer.".into(),
            usage: TokenUsage {
                prompt_tokens: 1200,
                completion_tokens: 80,
            },
            model: Some("gpt-4o-mini".into()),
            outcome: smolpaws::api::Outcome::Finished,
            change: None,
        }),
        ..Default::default()
    };
    api.patch_status(
        "shown",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .expect("status patch");

    // What `kubectl get agentruns` asks for: the server-side Table.
    let request = http::Request::get(format!(
        "/apis/smolpaws.dev/v1alpha1/namespaces/{ns}/agentruns"
    ))
    .header(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .expect("a well-formed request");
    let table: Value = client.request(request).await.expect("a Table response");
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("column definitions")
        .iter()
        .map(|c| c["name"].as_str().expect("a column name"))
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Phase",
            "Repository",
            "Issue",
            "Author",
            "Age",
            "Duration"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "shown");
    assert_eq!(cells[1], "Succeeded");
    assert_eq!(cells[2], "octo-org/hello-world");
    assert_eq!(cells[3], 7);
    assert_eq!(cells[4], "octocat");
    assert!(
        cells[5].as_str().is_some_and(|age| age.ends_with('s')),
        "age: {}",
        cells[5]
    );
    assert_eq!(cells[6], "2m13s");

    // kubectl resolves `ar` and the `smolpaws` category through discovery.
    let request = http::Request::get("/apis/smolpaws.dev/v1alpha1")
        .body(Vec::new())
        .expect("a well-formed request");
    let resources: Value = client.request(request).await.expect("discovery");
    let agentruns = resources["resources"]
        .as_array()
        .expect("a resource list")
        .iter()
        .find(|r| r["name"] == "agentruns")
        .expect("agentruns is discoverable");
    assert_eq!(agentruns["shortNames"], json!(["ar"]));
    assert_eq!(agentruns["categories"], json!(["smolpaws"]));
}

#[test]
fn crds_agentrun_yaml_is_what_smolpaws_crd_prints() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .arg("crd")
        .output()
        .expect("running smolpaws crd");
    assert!(output.status.success(), "smolpaws crd failed: {output:?}");
    let generated = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/agentrun.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/agentrun.yaml is out of date: run `cargo run -- crd > crds/agentrun.yaml`"
    );
}
