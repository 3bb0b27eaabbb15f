//! Real GitHub deliveries, made fresh and signed, sent to an intake.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use smolpaws::intake::signature::sign;

/// The fixture `file` as comment `id` with `body`, written just now (the
/// intake refuses old comments).
pub fn comment(file: &str, id: i64, body: &str) -> Value {
    let mut payload = super::fixture(file);
    payload["comment"]["body"] = body.into();
    payload["comment"]["id"] = id.into();
    payload["comment"]["created_at"] = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .into();
    payload
}

/// Sends `payload` as an `issue_comment` delivery signed with `secret` to
/// the intake at `url`, retrying while nothing listens there; returns the
/// name of the run it made.
pub async fn deliver(url: &str, secret: &str, payload: &Value) -> String {
    let id = payload["comment"]["id"].as_i64().unwrap_or_default();
    let delivery = format!("0b5f8e34-1111-4e5e-9a3c-{id:012}");
    let body = serde_json::to_vec(payload).expect("JSON");
    let signature = sign(&SecretString::from(secret.to_owned()), &body);
    let client = reqwest::Client::new();
    let mut wait = Duration::from_millis(100);
    for _ in 0..60 {
        let sent = client
            .post(format!("{url}/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", &delivery)
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                let answer = response.text().await.unwrap_or_default();
                return answer
                    .strip_prefix("accepted: agentrun ")
                    .unwrap_or_else(|| panic!("the intake names no run: {answer}"))
                    .to_owned();
            }
            Ok(response) => panic!(
                "the intake answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            // Not listening yet.
            Err(_) => tokio::time::sleep(wait).await,
        }
        wait = (wait * 2).min(Duration::from_secs(1));
    }
    panic!("the intake at {url} never answered");
}
