//! In-process cost of one delivery: signature check, parse and policy on the
//! 16 KB `issue_comment` fixture, as the webhook handler runs them.
//!
//! `cargo bench --bench intake_delivery`

use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use smolpaws::intake::delivery::{Decision, Rules, decide};
use smolpaws::intake::policy::Policy;
use smolpaws::intake::signature::{WebhookSecrets, sign};

fn payload() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/issue_comment_created.with-installation.json"
    );
    let text = std::fs::read_to_string(path).expect("the fixture is readable");
    let mut payload: serde_json::Value = serde_json::from_str(&text).expect("the fixture is JSON");
    payload["comment"]["body"] = "@smolpaws why does the parser drop trailing commas?".into();
    serde_json::to_vec_pretty(&payload).expect("JSON serializes")
}

fn delivery(c: &mut Criterion) {
    let body = payload();
    let secret = SecretString::from("bench-secret");
    let signature = sign(&secret, &body);
    let secrets = WebhookSecrets::new([secret]);
    let rules = Rules {
        mention: "@smolpaws".parse().expect("a valid mention"),
        policy: Policy::new(["Codertocat".into()], ["Codertocat".into()], [], []),
        app_login: Some("smolpaws[bot]".into()),
        backend: Default::default(),
        max_age: None,
    };
    assert!(matches!(
        decide(&rules, "issue_comment", "d", &body, SystemTime::now()),
        Ok(Decision::Run(_))
    ));

    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify", |b| {
        b.iter(|| secrets.verify(Some(signature.as_bytes()), &body))
    });
    group.bench_function("verify+parse+policy", |b| {
        b.iter(|| {
            secrets
                .verify(Some(signature.as_bytes()), &body)
                .expect("signed");
            decide(
                &rules,
                "issue_comment",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                &body,
                SystemTime::now(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, delivery);
criterion_main!(benches);
