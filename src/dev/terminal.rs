//! Dev mode's terminal: every run's phases as they change, and its reply,
//! which in local mode has nowhere else to go.

use std::collections::HashMap;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::{AgentRun, Phase};

/// Prints runs until `stop` is cancelled.
pub async fn print_runs(client: kube::Client, stop: CancellationToken) {
    let api: Api<AgentRun> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut shown: HashMap<String, Phase> = HashMap::new();
    loop {
        let run = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some(Err(error)) => {
                    warn!(%error, "watching runs failed; retrying");
                    continue;
                }
                Some(Ok(run)) => run,
            },
        };
        let name = run.name_any();
        let phase = run.phase();
        if shown.insert(name.clone(), phase) == Some(phase) {
            continue;
        }
        let status = run.status.as_ref();
        let thread = format!("{}#{}", run.spec.github.repository, run.spec.github.number);
        match status.and_then(|s| s.message.as_deref()) {
            Some(message) => println!("[{name}] {thread} {phase}: {message}"),
            None => println!("[{name}] {thread} {phase}"),
        }
        if phase.is_terminal()
            && let Some(result) = status.and_then(|s| s.result.as_ref())
        {
            println!(
                "──── reply of {name} ────\n{}\n────────────────────────",
                result.reply.trim_end()
            );
        }
    }
}
