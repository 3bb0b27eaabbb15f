//! Conversations stored by runners from before the SDK 1.58 wire format:
//! read into today's shapes when they are loaded, so that an upgraded
//! runner keeps their whole history. Their files are not rewritten; new
//! events are appended in today's shape.

use serde_json::{Value, json};

use super::events::{Event, EventBody, Observation, ToolCall};

/// An event line in an older shape, in today's; `None` when it is not one
/// of the shapes older runners wrote. `earlier` are the conversation's
/// events before it (an observation names its action by id now).
pub fn event(mut line: Value, earlier: &[Event]) -> Option<Event> {
    let fields = line.as_object_mut()?;
    let kind = fields.get("kind")?.as_str()?.to_owned();
    let text = |value: Option<&Value>| -> String {
        match value {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    };
    let body = match kind.as_str() {
        "ActionEvent" => {
            let tool = text(fields.get("tool_name"));
            let call = text(fields.get("tool_call_id"));
            EventBody::ActionEvent {
                thought: Vec::new(),
                tool_call: ToolCall {
                    id: call.clone(),
                    name: tool.clone(),
                    arguments: fields.get("action").map(Value::to_string)?,
                    origin: "completion".into(),
                },
                tool_name: tool,
                tool_call_id: call,
                llm_response_id: crate::random::uuid(),
            }
        }
        "ObservationEvent" => {
            let tool = text(fields.get("tool_name"));
            let call = text(fields.get("tool_call_id"));
            let observation = fields.get("observation")?;
            let failed = observation["exit_code"].as_i64().is_some_and(|c| c != 0);
            EventBody::ObservationEvent {
                action_id: earlier
                    .iter()
                    .rev()
                    .find_map(|e| match &e.body {
                        EventBody::ActionEvent { tool_call_id, .. } if *tool_call_id == call => {
                            Some(e.id.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_default(),
                observation: Observation::new(&tool, &text(observation.get("content")), failed),
                tool_name: tool,
                tool_call_id: call,
            }
        }
        "AgentErrorEvent" => EventBody::ConversationErrorEvent {
            code: "AgentError".into(),
            detail: text(fields.get("error")),
        },
        _ => return None,
    };
    Some(Event {
        id: text(fields.get("id")),
        timestamp: text(fields.get("timestamp")),
        source: serde_json::from_value(fields.get("source")?.clone()).ok()?,
        body,
    })
}

/// A `meta.json` in an older shape, with today's fields filled: the
/// directory `persistence` it is in, the agent of `model` (the runner's
/// when the conversation named none), and at most `iterations` a run.
pub fn info(mut meta: Value, persistence: &str, model: &str, iterations: u32) -> Value {
    if let Some(fields) = meta.as_object_mut() {
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_owned();
        fields
            .entry("persistence_dir")
            .or_insert_with(|| json!(persistence));
        fields
            .entry("agent")
            .or_insert_with(|| super::conversations::default_agent(&model));
        if fields.get("max_iterations").is_none_or(Value::is_null) {
            fields.insert("max_iterations".into(), json!(iterations));
        }
        fields
            .entry("stuck_detection")
            .or_insert_with(|| json!(false));
        fields
            .entry("confirmation_policy")
            .or_insert_with(|| json!({ "kind": "NeverConfirm" }));
        fields
            .entry("stats")
            .or_insert_with(|| json!({ "usage_to_metrics": {} }));
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_an_older_runner_stored_are_read_in_todays_shapes() {
        let lines = [
            json!({ "id": "a", "seq": 2, "timestamp": "2026-11-26T00:00:00.1Z", "source": "agent",
                    "kind": "ActionEvent", "tool_name": "bash", "tool_call_id": "c1",
                    "action": { "command": "ls" } }),
            json!({ "id": "o", "seq": 3, "timestamp": "2026-11-26T00:00:00.2Z", "source": "environment",
                    "kind": "ObservationEvent", "tool_name": "bash", "tool_call_id": "c1",
                    "observation": { "exit_code": 2, "content": "no such file" } }),
            json!({ "id": "e", "seq": 4, "timestamp": "2026-11-26T00:00:00.3Z", "source": "environment",
                    "kind": "AgentErrorEvent", "error": "the model is gone" }),
        ];
        let mut events = Vec::new();
        for line in lines {
            let event = event(line, &events).expect("an older shape");
            events.push(event);
        }
        let json: Vec<Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).expect("JSON"))
            .collect();
        assert_eq!(json[0]["tool_call"]["arguments"], r#"{"command":"ls"}"#);
        assert_eq!(json[1]["action_id"], "a");
        assert_eq!(json[1]["observation"]["is_error"], true);
        assert_eq!(json[1]["observation"]["content"][0]["text"], "no such file");
        assert_eq!(json[2]["kind"], "ConversationErrorEvent");
        assert!(json.iter().all(|e| e.get("seq").is_none()));
        assert!(event(json!({ "kind": "Nonsense" }), &[]).is_none());
    }

    #[test]
    fn an_older_meta_json_gets_todays_fields() {
        let meta = json!({ "id": "x", "model": null, "max_iterations": null });
        let upgraded = info(meta, "/p/x", "gpt-4o", 30);
        assert_eq!(upgraded["max_iterations"], 30);
        assert_eq!(upgraded["agent"]["llm"]["model"], "gpt-4o");
        assert_eq!(upgraded["persistence_dir"], "/p/x");
        assert_eq!(upgraded["confirmation_policy"]["kind"], "NeverConfirm");
    }
}
