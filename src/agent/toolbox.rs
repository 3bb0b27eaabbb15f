//! The tools as the model sees them (names, descriptions, JSON schemas) and
//! the dispatch of its calls to [`super::tools`].

use std::time::Duration;

use genai::chat::Tool;
use serde::Deserialize;
use serde_json::{Value, json};

use super::tools::workspace::Workspace;
use super::tools::{ToolError, files, shell};

/// The tool that ends the session with the reply.
pub const FINISH: &str = "finish";

/// The tool definitions sent to the model.
pub fn definitions() -> Vec<Tool> {
    let tool = |name: &str, description: &str, schema: Value| {
        Tool::new(name)
            .with_description(description)
            .with_schema(schema)
    };
    vec![
        tool(
            "bash",
            "Run a bash command in the repository checkout. Output is capped; long commands time out.",
            json!({ "type": "object", "properties": {
                "command": { "type": "string" },
                "timeout_seconds": { "type": "integer", "minimum": 1 },
            }, "required": ["command"] }),
        ),
        tool(
            "view",
            "Show a file with line numbers (optionally lines start_line..=end_line), or list a directory.",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" },
                "start_line": { "type": "integer", "minimum": 1 },
                "end_line": { "type": "integer", "minimum": 1 },
            }, "required": ["path"] }),
        ),
        tool(
            "create",
            "Create a new file with the given content.",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" },
                "content": { "type": "string" },
            }, "required": ["path", "content"] }),
        ),
        tool(
            "str_replace",
            "Replace the one exact occurrence of old_str in a file with new_str.",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" },
                "old_str": { "type": "string" },
                "new_str": { "type": "string" },
            }, "required": ["path", "old_str", "new_str"] }),
        ),
        tool(
            "insert",
            "Insert text after line `line` of a file (0 inserts at the top).",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" },
                "line": { "type": "integer", "minimum": 0 },
                "text": { "type": "string" },
            }, "required": ["path", "line", "text"] }),
        ),
        tool(
            "git_diff",
            "Show the changes made to the checkout so far.",
            json!({ "type": "object", "properties": {} }),
        ),
        tool(
            FINISH,
            "End the session with the reply to post on GitHub (Markdown).",
            json!({ "type": "object", "properties": {
                "reply": { "type": "string" },
            }, "required": ["reply"] }),
        ),
    ]
}

#[derive(Deserialize)]
struct Bash {
    command: String,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct View {
    path: String,
    start_line: Option<usize>,
    end_line: Option<usize>,
}

#[derive(Deserialize)]
struct Create {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct StrReplace {
    path: String,
    old_str: String,
    new_str: String,
}

#[derive(Deserialize)]
struct Insert {
    path: String,
    line: usize,
    text: String,
}

fn arguments<T: serde::de::DeserializeOwned>(name: &str, value: Value) -> Result<T, ToolError> {
    serde_json::from_value(value)
        .map_err(|e| ToolError::new(format!("invalid arguments for {name}: {e}")))
}

/// What a tool call produced, for the model and the log.
pub struct ToolOutput {
    /// The text returned to the model.
    pub text: String,
    /// The exit code of a bash command.
    pub exit_code: Option<i32>,
    /// Whether the call failed: refused, or a command that did not exit 0.
    pub failed: bool,
}

/// What `git_diff` shows: the changes to tracked files, then every path
/// that differs (untracked ones included).
const GIT_DIFF: &str = "git diff --no-color HEAD; git status --short --untracked-files=all";

/// Runs tool `name` with `args`; failures become text for the model.
pub async fn call(
    workspace: &Workspace,
    name: &str,
    args: Value,
    bash_timeout: Duration,
) -> ToolOutput {
    let result = match name {
        "bash" => match arguments::<Bash>(name, args) {
            Ok(bash) => {
                let timeout = bash
                    .timeout_seconds
                    .map_or(bash_timeout, Duration::from_secs)
                    .min(bash_timeout * 4);
                shell::run(workspace, &bash.command, timeout)
                    .await
                    .map(|out| (out.describe(timeout), out.exit_code))
            }
            Err(error) => Err(error),
        },
        "view" => arguments::<View>(name, args).and_then(|v| {
            let range = v
                .start_line
                .map(|start| (start, v.end_line.unwrap_or(usize::MAX)));
            files::view(workspace, &v.path, range).map(|text| (text, None))
        }),
        "create" => arguments::<Create>(name, args)
            .and_then(|c| files::create(workspace, &c.path, &c.content).map(|text| (text, None))),
        "str_replace" => arguments::<StrReplace>(name, args).and_then(|r| {
            files::str_replace(workspace, &r.path, &r.old_str, &r.new_str).map(|text| (text, None))
        }),
        "insert" => arguments::<Insert>(name, args).and_then(|i| {
            files::insert(workspace, &i.path, i.line, &i.text).map(|text| (text, None))
        }),
        "git_diff" => shell::run(workspace, GIT_DIFF, bash_timeout)
            .await
            .map(|out| {
                // An empty answer reads like a failure to a model.
                let text = if out.exit_code == Some(0) && out.output.trim().is_empty() {
                    "No changes: the working tree matches the checked-out commit.".to_owned()
                } else {
                    out.output
                };
                (text, out.exit_code)
            }),
        other => Err(ToolError::new(format!(
            "there is no tool {other}: use bash, view, create, str_replace, insert, git_diff or finish"
        ))),
    };
    match result {
        Ok((text, exit_code)) => ToolOutput {
            text,
            exit_code,
            failed: exit_code.is_some_and(|code| code != 0),
        },
        Err(error) => ToolOutput {
            text: format!("error: {error}"),
            exit_code: None,
            failed: true,
        },
    }
}

/// The paths that differ from the checked-out commit (untracked ones
/// included), or `None` when the workspace is not a git checkout.
pub async fn changed_files(workspace: &Workspace, timeout: Duration) -> Option<Vec<String>> {
    let out = shell::run(
        workspace,
        "git status --porcelain=v1 --untracked-files=all",
        timeout,
    )
    .await
    .ok()?;
    if out.exit_code != Some(0) {
        return None;
    }
    Some(
        out.output
            .lines()
            .filter_map(|line| line.get(3..))
            .map(str::to_owned)
            .collect(),
    )
}
