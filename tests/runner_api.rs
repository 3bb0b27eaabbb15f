//! `smolpaws agent serve`, the runner, as its clients meet it: the binary on
//! loopback, a scripted LLM over local HTTP, HTTP and websocket clients.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm::{FakeLlm, Reply};
use support::runner::{Runner, TOKEN};
use tokio_tungstenite::tungstenite::Message;

/// Reads stored events from `socket` until one says the conversation
/// finished; the `full_state` snapshots between them are left out.
async fn until_finished(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).expect("a JSON event");
                if event["key"] == "full_state" {
                    continue;
                }
                let finished =
                    event["kind"] == "ConversationStateUpdateEvent" && event["value"] == "finished";
                seen.push(event);
                if finished {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no finished event; saw {seen:#?}"));
    seen
}

fn message(text: &str, run: bool) -> Value {
    json!({ "role": "user", "content": [{ "type": "text", "text": text }], "run": run })
}

#[tokio::test]
async fn run_answers_jobs_and_refuses_bad_ones() {
    let (remote, _) = support::git_remote::server(&[]);
    let llm = FakeLlm::start([
        Reply::Text("Hello from the runner."),
        Reply::Tool {
            name: "view",
            arguments: json!({ "path": "README.md" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "The README says main." }),
        },
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let server = format!("file://{}", remote.path().display());
    let runner = Runner::start(dir.path(), &llm, &[("GITHUB_SERVER_URL", &server)]).await;

    let job = json!({ "prompt": "say hello" });
    let anonymous = runner
        .http
        .post(runner.at("/run"))
        .json(&job)
        .send()
        .await
        .expect("an answer");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = runner
        .http
        .post(runner.at("/run"))
        .bearer_auth("not-the-token")
        .json(&job)
        .send()
        .await
        .expect("an answer");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let alive = runner
        .http
        .get(runner.at("/health"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(alive.status(), StatusCode::OK, "probes need no token");

    for (bad, field) in [
        (json!({}), "prompt"),
        (json!({ "prompt": "  " }), "prompt"),
        (
            json!({ "prompt": "x", "repository": "not a repo", "number": 1 }),
            "repository",
        ),
        (
            json!({ "prompt": "x", "repository": "octo/hello" }),
            "number",
        ),
        (json!({ "prompt": 7 }), "prompt"),
    ] {
        let (status, answer) = runner.post("/run", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{bad}: {detail}");
    }

    let by_session_key = runner
        .http
        .post(runner.at("/run"))
        .header("X-Session-API-Key", TOKEN)
        .json(&job)
        .send()
        .await
        .expect("an answer");
    assert_eq!(by_session_key.status(), StatusCode::OK);
    let answer: Value = by_session_key.json().await.expect("JSON");
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(answer["reply"], "Hello from the runner.");
    assert_eq!(answer["model"], "scripted-model");
    assert_eq!(answer["usage"]["promptTokens"], 100);

    let (status, answer) = runner
        .post(
            "/run",
            json!({ "prompt": "what does the README say?", "repo": "octo/hello", "issue": 7 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["reply"],
        "The README says main.\n\n*No files were changed.*"
    );
    let seen = llm.requests()[2].1.to_string();
    assert!(seen.contains("main"), "the agent read the checkout: {seen}");
}

#[tokio::test]
async fn conversation_events_stream_in_order_and_late_clients_catch_up() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "echo streamed > out.txt && cat out.txt" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Wrote out.txt." }),
        },
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(dir.path(), &llm, &[]).await;

    let (status, info) = runner
        .post(
            "/api/conversations",
            json!({ "initial_message": message("write out.txt", false) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    let id = info["id"].as_str().expect("an id").to_owned();
    assert_eq!(info["execution_status"], "idle");

    let mut early = runner.follow(&id, "&resend_mode=all").await;
    let (status, _) = runner
        .post(&format!("/api/conversations/{id}/run"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = until_finished(&mut early).await;

    let stamps: Vec<&str> = seen
        .iter()
        .map(|e| e["timestamp"].as_str().expect("a timestamp"))
        .collect();
    assert!(
        stamps.windows(2).all(|pair| pair[0] < pair[1]),
        "every event, in order, later than the one before: {stamps:?}"
    );
    assert!(seen.iter().all(|e| e.get("seq").is_none()));
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| match e["kind"].as_str() {
            Some("ConversationStateUpdateEvent") => {
                format!("state:{}", e["value"].as_str().unwrap_or_default())
            }
            Some(kind) => kind.to_owned(),
            None => panic!("an event without a kind: {e}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "MessageEvent",
            "state:running",
            "ActionEvent",
            "ObservationEvent",
            "MessageEvent",
            "state:finished"
        ]
    );
    assert_eq!(seen[2]["tool_name"], "bash");
    assert!(
        seen[3]["observation"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("streamed")
    );
    assert_eq!(
        seen[4]["llm_message"]["content"][0]["text"],
        "Wrote out.txt."
    );
    assert_eq!(seen[4]["source"], "agent");

    assert_eq!(seen[3]["action_id"], seen[2]["id"]);
    let mut late = runner.follow(&id, "&resend_mode=all").await;
    let replayed = until_finished(&mut late).await;
    assert_eq!(replayed, seen, "a late client gets what it missed first");
    let third = seen[3]["id"].as_str().expect("an id");
    let mut resumed = runner.follow(&id, &format!("&after={third}")).await;
    let rest = until_finished(&mut resumed).await;
    assert_eq!(rest, seen[4..].to_vec());
    let since = seen[4]["timestamp"].as_str().expect("a timestamp");
    let mut since = runner
        .follow(&id, &format!("&resend_mode=since&after_timestamp={since}"))
        .await;
    assert_eq!(until_finished(&mut since).await, seen[4..].to_vec());

    assert_eq!(runner.events(&id).await, seen);
    let (_, page) = runner
        .get(&format!(
            "/api/conversations/{id}/events/search?kind=ActionEvent"
        ))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let (_, newest) = runner
        .get(&format!(
            "/api/conversations/{id}/events/search?sort_order=TIMESTAMP_DESC&limit=1"
        ))
        .await;
    assert_eq!(newest["items"][0], seen[seen.len() - 1]);
    for bad in ["sort_order=SIDEWAYS", "timestamp__gte=yesterday"] {
        let (status, refused) = runner
            .get(&format!("/api/conversations/{id}/events/search?{bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {refused}");
        assert_eq!(refused["field"], bad.split('=').next().unwrap_or_default());
    }
    let _ = early.close(None).await;
}

#[tokio::test]
async fn a_killed_runner_comes_back_with_its_conversations() {
    let llm = FakeLlm::start([Reply::Text("First answer."), Reply::Text("Second answer.")]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut runner = Runner::start(dir.path(), &llm, &[]).await;
    let (_, info) = runner
        .post(
            "/api/conversations",
            json!({ "initial_message": message("first", true) }),
        )
        .await;
    let id = info["id"].as_str().expect("an id").to_owned();
    runner.until_status(&id, "finished").await;
    let before = runner.events(&id).await;
    assert!(before.len() >= 4, "{before:#?}");

    runner.child.start_kill().expect("SIGKILL");
    runner.child.wait().await.expect("the runner died");
    let runner = Runner::start(dir.path(), &llm, &[]).await;
    let (_, page) = runner.get("/api/conversations/search").await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert_eq!(runner.events(&id).await, before, "the whole history");
    let (_, count) = runner.get("/api/conversations/count").await;
    assert_eq!(count, json!(1));

    let (status, _) = runner
        .post(
            &format!("/api/conversations/{id}/events"),
            message("second", true),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    runner.until_status(&id, "finished").await;
    let after = runner.events(&id).await;
    assert_eq!(after[..before.len()], before[..]);
    let last_request = llm
        .requests()
        .last()
        .map(|r| r.1.to_string())
        .unwrap_or_default();
    assert!(
        last_request.contains("First answer.") && last_request.contains("second"),
        "the restarted conversation goes on from its history: {last_request}"
    );
}

/// Runs `command` through /api/bash in `cwd`; the BashOutput.
async fn bash(runner: &Runner, command: &str, cwd: Option<&str>) -> Value {
    let (status, output) = runner
        .post(
            "/api/bash/execute_bash_command",
            json!({ "command": command, "cwd": cwd, "timeout": 20 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{command}: {output}");
    output
}

#[tokio::test]
async fn the_remote_workspace_runs_commands_moves_files_and_shows_git_changes() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "str_replace",
            arguments: json!({ "path": "README.md", "old_str": "old", "new_str": "new" }),
        },
        Reply::Tool {
            name: "finish",
            arguments: json!({ "reply": "Updated the README." }),
        },
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(
        dir.path(),
        &llm,
        &[("SMOLPAWS_RUNNER_COMMAND_TIMEOUT", "60s")],
    )
    .await;

    let output = bash(&runner, "echo out; echo err >&2; exit 3", None).await;
    assert_eq!(output["kind"], "BashOutput");
    assert_eq!(output["exit_code"], 3);
    assert_eq!(output["stdout"], "out\n", "{output}");
    assert_eq!(output["stderr"], "err\n", "{output}");

    let began = Instant::now();
    let (_, slow) = runner
        .post(
            "/api/bash/execute_bash_command",
            json!({ "command": "sleep 30; echo never", "timeout": 1 }),
        )
        .await;
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "the timeout stopped it"
    );
    assert_eq!(slow["exit_code"], -1);
    assert!(
        slow["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{slow}"
    );

    let (_, started) = runner
        .post(
            "/api/bash/start_bash_command",
            json!({ "command": "echo later" }),
        )
        .await;
    let command = started["id"].as_str().expect("a command id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = runner
            .get(&format!(
                "/api/bash/bash_events/search?command_id__eq={command}&kind__eq=BashOutput"
            ))
            .await;
        if let Some(output) = page["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
        {
            assert_eq!(output["exit_code"], 0);
            assert!(
                output["stdout"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("later")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background command never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let blob: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(blob.clone()).file_name("blob.bin"),
    );
    let uploaded = runner
        .http
        .post(runner.at("/api/file/upload/data/blob.bin"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .expect("an answer");
    assert_eq!(uploaded.status(), StatusCode::OK);
    let downloaded = runner
        .http
        .get(runner.at("/api/file/download/data/blob.bin"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("an answer");
    assert_eq!(downloaded.status(), StatusCode::OK);
    assert_eq!(downloaded.bytes().await.expect("bytes").to_vec(), blob);

    let (_, info) = runner.post("/api/conversations", json!({})).await;
    let id = info["id"].as_str().expect("an id").to_owned();
    let workdir = info["workspace"]["working_dir"]
        .as_str()
        .expect("a working dir")
        .to_owned();
    let seeded = bash(
        &runner,
        "git init -q && echo old > README.md && git add . && git -c user.name=t -c user.email=t@e commit -qm first && echo ok",
        Some(&workdir),
    )
    .await;
    assert_eq!(seeded["exit_code"], 0, "{seeded}");
    runner
        .post(
            &format!("/api/conversations/{id}/events"),
            message("update the README", true),
        )
        .await;
    runner.until_status(&id, "finished").await;

    let (status, changes) = runner.get(&format!("/api/git/changes/{workdir}")).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(
        changes,
        json!([{ "status": "UPDATED", "path": "README.md" }])
    );
    let (_, diff) = runner
        .get(&format!("/api/git/diff/{workdir}/README.md"))
        .await;
    assert_eq!(diff, json!({ "original": "old\n", "modified": "new\n" }));
}

#[tokio::test]
async fn paths_out_of_the_workspace_are_refused() {
    let llm = FakeLlm::start([]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let outside = tempfile::tempdir().expect("an outside dir");
    std::fs::write(outside.path().join("secret.txt"), "outside").expect("write");
    let runner = Runner::start(dir.path(), &llm, &[]).await;
    let root: PathBuf = dir.path().join("workspaces");
    std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("a symlink out");

    let upload = |route: String| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
        );
        runner
            .http
            .post(runner.at(&route))
            .bearer_auth(TOKEN)
            .multipart(form)
            .send()
    };
    // Encoded so that the client sends them as they are (a URL library
    // would resolve a literal `..`); in the path form `//` makes a path
    // absolute.
    let outside_dir = outside.path().display().to_string();
    let escapes = [
        "..%2Fescape.txt".to_owned(),
        "a%2F..%2F..%2Fescape.txt".to_owned(),
        format!("{outside_dir}/escape.txt"),
        "link/escape.txt".to_owned(),
    ];
    for path in &escapes {
        let slash = if path.starts_with('/') { "/" } else { "" };
        for route in [
            format!("/api/file/upload?path={path}"),
            format!("/api/file/upload/{slash}{path}"),
        ] {
            let answer = upload(route.clone()).await.expect("an answer");
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "upload {route}");
        }
    }
    let outside_secret = format!("{outside_dir}/secret.txt");
    for route in [
        "/api/file/download/link/secret.txt".to_owned(),
        "/api/file/download/..%2Fconversations".to_owned(),
        format!("/api/file/download//{outside_secret}"),
        "/api/file/download?path=link/secret.txt".to_owned(),
        "/api/file/download?path=..%2Fconversations%2Fx".to_owned(),
        format!("/api/file/download?path={outside_secret}"),
    ] {
        let answer = runner
            .http
            .get(runner.at(&route))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "download {route}");
        assert_ne!(answer.text().await.unwrap_or_default(), "outside");
    }
    let (status, _) = runner
        .post(
            "/api/bash/execute_bash_command",
            json!({ "command": "pwd", "cwd": "../" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for route in [
        "/api/git/changes/link",
        "/api/git/changes?path=link",
        "/api/git/diff?path=link/secret.txt",
    ] {
        let (status, _) = runner.get(route).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}");
    }
    let (status, refused) = runner
        .post(
            "/api/conversations",
            json!({ "workspace": { "kind": "LocalWorkspace", "working_dir": outside_dir } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    assert!(!dir.path().join("escape.txt").exists());
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("list").count(),
        1,
        "nothing was written outside"
    );
}

#[tokio::test]
async fn runs_beyond_the_cap_get_429() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "sleep 3" }),
        },
        Reply::Text("Done."),
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(dir.path(), &llm, &[("SMOLPAWS_RUNNER_MAX_RUNS", "1")]).await;
    let (_, info) = runner
        .post(
            "/api/conversations",
            json!({ "initial_message": message("wait", true) }),
        )
        .await;
    let id = info["id"].as_str().expect("an id").to_owned();
    runner.until_status(&id, "running").await;
    let (status, answer) = runner.post("/run", json!({ "prompt": "me too" })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    runner.until_status(&id, "finished").await;

    let mut socket = runner.follow(&id, "").await;
    socket.send(Message::Close(None)).await.expect("a close");
}

#[tokio::test]
async fn a_stopped_runner_pauses_its_running_conversations_cleanly() {
    let llm = FakeLlm::start([
        Reply::Tool {
            name: "bash",
            arguments: json!({ "command": "sleep 20" }),
        },
        Reply::Text("Resumed and done."),
    ])
    .await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut runner = Runner::start(dir.path(), &llm, &[]).await;
    let (_, info) = runner
        .post(
            "/api/conversations",
            json!({ "initial_message": message("take long", true) }),
        )
        .await;
    let id = info["id"].as_str().expect("an id").to_owned();
    // Stopped in the middle of its command.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !runner
        .events(&id)
        .await
        .iter()
        .any(|e| e["kind"] == "ActionEvent")
    {
        assert!(Instant::now() < deadline, "the agent never called its tool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = runner.child.id().expect("a pid");
    support::signal(pid, nix::sys::signal::Signal::SIGTERM);
    let exited = tokio::time::timeout(Duration::from_secs(30), runner.child.wait())
        .await
        .expect("the runner stops on SIGTERM")
        .expect("its status");
    assert!(exited.success(), "{exited}");

    let runner = Runner::start(dir.path(), &llm, &[]).await;
    assert_eq!(runner.status_of(&id).await, "paused");
    let events = runner.events(&id).await;
    assert_eq!(
        events.last().map(|e| e["value"].clone()),
        Some(json!("paused")),
        "the pause is in the history: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["kind"] == "ObservationEvent"),
        "the 20 s command was stopped, not waited for: {events:#?}"
    );
    runner
        .post(&format!("/api/conversations/{id}/run"), json!({}))
        .await;
    runner.until_status(&id, "finished").await;
}

#[tokio::test]
async fn a_runner_started_without_a_token_makes_one_and_requires_it() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    let llm = FakeLlm::start([]).await;
    let mut runner = Runner::spawn(
        dir.path(),
        &llm,
        &[("SMOLPAWS_RUNNER_TOKEN", "")],
        Stdio::piped(),
    )
    .await;
    // Said on stderr, the way a developer sees it, and nowhere else.
    let stderr = runner.child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut made = String::new();
    while let Some(line) = lines.next_line().await.expect("stderr reads") {
        if line.contains("needs this one") {
            made = lines
                .next_line()
                .await
                .expect("stderr reads")
                .expect("the token follows")
                .trim()
                .to_owned();
            break;
        }
    }
    assert_eq!(made.len(), 64, "a made token: {made:?}");
    let files = walk(dir.path());
    assert!(
        files.iter().all(|f| !std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains(&made)),
        "the token is in no file the model's tools could read"
    );

    let http = reqwest::Client::new();
    let path = runner.at("/api/conversations/search");
    let none = http.get(&path).send().await.expect("an answer");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    // A page a developer visits could put the token in a URL, not a header:
    // the query form opens only the websockets.
    let in_query = http
        .get(format!("{path}?session_api_key={made}"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(in_query.status(), StatusCode::UNAUTHORIZED);
    let given = http
        .get(&path)
        .bearer_auth(&made)
        .send()
        .await
        .expect("an answer");
    assert_eq!(given.status(), StatusCode::OK);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn web_pages_cannot_drive_the_runner_even_with_the_token() {
    let llm = FakeLlm::start([]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let runner = Runner::start(
        dir.path(),
        &llm,
        &[("SMOLPAWS_RUNNER_ALLOWED_ORIGINS", "http://localhost:3001")],
    )
    .await;
    let marker = dir.path().join("workspaces/ran");
    let command = json!({ "command": format!("touch {}", marker.display()) });
    let from = |origin: Option<&str>| {
        let mut request = runner
            .http
            .post(runner.at("/api/bash/execute_bash_command"))
            .bearer_auth(TOKEN)
            .json(&command);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    // A page on another site, and one whose DNS name was rebound to
    // 127.0.0.1 (same port, its own origin).
    for origin in ["https://evil.example", "http://rebound.example:3000"] {
        let answer = from(Some(origin)).await.expect("an answer");
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    let socket = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/sockets/events/00000000-0000-0000-0000-000000000000?session_api_key={TOKEN}",
            runner.url.replacen("http", "ws", 1)
        ))
        .map(|mut request| {
            request
                .headers_mut()
                .insert("origin", "https://evil.example".parse().expect("a header"));
            request
        })
        .expect("a request"),
    )
    .await;
    assert!(socket.is_err(), "a page's websocket is refused");
    assert!(!marker.exists(), "nothing ran for a page");

    let allowed = from(Some("http://localhost:3001"))
        .await
        .expect("an answer");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let tool = from(None).await.expect("an answer");
    assert!(
        tool.status().is_success(),
        "clients without Origin are served"
    );
}
