//! Conversations: a workspace, an event history, and agent runs on it.
//!
//! Each conversation lives in `<persistence>/<id>/` (`meta.json`, rewritten
//! whole; `events.jsonl`, appended) and works in the directory its client
//! asked for inside the workspace root, else `<workspaces>/<id>/`. A run
//! rebuilds the model's history from the events, so a conversation goes on
//! the same way after a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use genai::chat::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::events::{
    Event, EventBody, EventLog, LlmMessage, Observation, Source, TextContent, ToolCall,
};
use super::models::Models;
use crate::agent::WorkArgs;
use crate::agent::redact::Redactor;
use crate::agent::session::{Session, Step};
use crate::agent::tools::workspace::Workspace;
use crate::api::TokenUsage;

/// How many events a slow websocket client may fall behind before it is
/// dropped.
pub const EVENT_BUFFER: usize = 1024;

/// Where a conversation's agent is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Waiting for a message or a run.
    Idle,
    /// The agent works.
    Running,
    /// Stopped by a pause or a shutdown; can run again.
    Paused,
    /// The agent replied.
    Finished,
    /// The agent failed.
    Error,
}

/// A conversation's workspace, as the SDK's `LocalWorkspace`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    /// Always `LocalWorkspace`: the runner's own directory.
    #[serde(default = "local_workspace")]
    pub kind: String,
    /// Its directory.
    pub working_dir: String,
}

fn local_workspace() -> String {
    "LocalWorkspace".to_owned()
}

/// What clients see of a conversation: the fields the SDK's
/// `ConversationInfo` reads, and smolpaws's own (`title`, `usage`, `model`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationInfo {
    /// Its id.
    pub id: String,
    /// The first words of its first message.
    pub title: Option<String>,
    /// Where its agent is.
    pub execution_status: ExecutionStatus,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Its workspace.
    pub workspace: WorkspaceInfo,
    /// Where its events are stored.
    pub persistence_dir: String,
    /// The agent as the client described it, secrets masked; SDK clients
    /// rebuild their `Agent` from it when they attach.
    pub agent: Value,
    /// The most LLM round trips per run.
    pub max_iterations: u32,
    /// smolpaws has no stuck detector: runs end at their limits instead.
    pub stuck_detection: bool,
    /// Every action runs without asking: the SDK's `NeverConfirm`.
    pub confirmation_policy: Value,
    /// The SDK's `ConversationStats`; smolpaws counts tokens in `usage`.
    pub stats: Value,
    /// Where the client's tool classes live, handed back on attach.
    #[serde(default)]
    pub tool_module_qualnames: BTreeMap<String, String>,
    /// The client's labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Tokens spent.
    pub usage: TokenUsage,
    /// The model the client asked for (its provider prefix included).
    pub model: Option<String>,
}

/// A message sent to a conversation.
#[derive(Clone, Debug, Deserialize)]
pub struct SendMessage {
    /// `user` (the default).
    #[serde(default = "user_role")]
    pub role: String,
    /// The text parts.
    pub content: Vec<TextContent>,
    /// Whether to run the agent on it now.
    #[serde(default)]
    pub run: bool,
}

fn user_role() -> String {
    "user".to_owned()
}

/// The workspace a start request asks for.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WorkspaceRequest {
    /// A directory inside the workspace root (absolute, or relative to it).
    pub working_dir: String,
}

/// A request to start a conversation: the SDK's `StartConversationRequest`,
/// of which smolpaws reads what it acts on.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StartConversation {
    /// The first message.
    pub initial_message: Option<SendMessage>,
    /// The agent; smolpaws uses its `llm.model`.
    pub agent: Option<Value>,
    /// The most LLM round trips per run.
    pub max_iterations: Option<u32>,
    /// Where the agent works; `<workspace root>/<id>` when not given.
    pub workspace: Option<WorkspaceRequest>,
    /// The id to give it; starting an existing one again returns it.
    pub conversation_id: Option<String>,
    /// Where the client's tool classes live.
    #[serde(default)]
    pub tool_module_qualnames: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl StartConversation {
    fn model(&self) -> Option<String> {
        let agent = self.agent.as_ref()?;
        agent["llm"]["model"].as_str().map(str::to_owned)
    }
}

/// A conversation id in its canonical form (lowercase, hyphenated), from
/// either form the SDK writes (hyphenated, or 32 hex digits).
pub fn canonical_id(id: &str) -> Option<String> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = String::with_capacity(36);
    for (at, digit) in hex.chars().enumerate() {
        if matches!(at, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        id.push(digit.to_ascii_lowercase());
    }
    Some(id)
}

/// The agent as stored and shown: every secret-looking string (an API key,
/// a token, a password) masked, as the agent-server masks them, so that
/// nobody reading a conversation gets the client's credentials.
fn masked(mut agent: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields.iter_mut() {
                    let name = name.to_ascii_lowercase();
                    let secret = ["api_key", "secret", "password", "token"]
                        .iter()
                        .any(|s| name.contains(s));
                    if secret && field.is_string() {
                        *field = json!("**********");
                    } else {
                        walk(field);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut agent);
    agent
}

/// The agent shown for a conversation whose client described none: the
/// SDK's smallest valid `Agent`.
pub(super) fn default_agent(model: &str) -> Value {
    json!({ "kind": "Agent", "llm": { "model": model, "usage_id": "agent" }, "tools": [] })
}

/// Why a conversation call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No such conversation.
    #[error("there is no conversation {0}")]
    NotFound(String),
    /// Its agent already runs.
    #[error("conversation {0} is already running")]
    Running(String),
    /// Every run slot is taken.
    #[error("{0} runs are already in progress; try again later")]
    Busy(usize),
    /// A message without text.
    #[error("content: the message has no text")]
    Empty,
    /// An id that is not a UUID.
    #[error("conversation_id: {0:?} is not a UUID")]
    BadId(String),
    /// A working directory outside the workspace root.
    #[error("workspace.working_dir: {0}")]
    Outside(String),
    /// The disk refused.
    #[error("the conversation could not be stored: {0}")]
    Io(#[from] std::io::Error),
}

/// What a conversation's followers receive.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A stored event, at its place in the conversation.
    Event {
        /// Its index in the conversation.
        at: usize,
        /// The event.
        event: Arc<Event>,
    },
    /// A `full_state` snapshot, sent when a run ends; never stored.
    Snapshot(Arc<Event>),
}

struct State {
    info: ConversationInfo,
    log: EventLog,
    events: Vec<Arc<Event>>,
    /// The last timestamp handed out, in microseconds: the next is later.
    clock: i64,
    stop: Option<CancellationToken>,
}

impl State {
    /// A timestamp later than every one before in this conversation.
    fn tick(&mut self) -> String {
        self.clock = super::now_micros().max(self.clock + 1);
        super::timestamp(self.clock)
    }
}

/// One conversation.
pub struct Conversation {
    dir: PathBuf,
    workspace: PathBuf,
    state: Mutex<State>,
    live: broadcast::Sender<Frame>,
}

/// What a new follower gets, all taken at one instant.
pub struct Following {
    /// The conversation as it stands, as a `full_state` event.
    pub snapshot: Event,
    /// The events so far.
    pub history: Vec<Arc<Event>>,
    /// The frames to come.
    pub live: broadcast::Receiver<Frame>,
}

impl Conversation {
    fn new(dir: PathBuf, workspace: PathBuf, info: ConversationInfo, log: EventLog) -> Self {
        Self {
            dir,
            workspace,
            state: Mutex::new(State {
                info,
                log,
                events: Vec::new(),
                clock: 0,
                stop: None,
            }),
            live: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What clients see of it.
    pub fn info(&self) -> ConversationInfo {
        self.lock().info.clone()
    }

    fn snapshot(state: &mut State) -> Event {
        Event {
            id: crate::random::uuid(),
            timestamp: state.tick(),
            source: Source::Environment,
            body: EventBody::ConversationStateUpdateEvent {
                key: "full_state".into(),
                value: json!(state.info),
            },
        }
    }

    /// A snapshot, the events so far, and a receiver of the ones to come
    /// (subscribed under the same lock, so nothing falls between).
    pub fn follow(&self) -> Following {
        let mut state = self.lock();
        Following {
            live: self.live.subscribe(),
            snapshot: Self::snapshot(&mut state),
            history: state.events.clone(),
        }
    }

    /// Its events so far.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.lock().events.clone()
    }

    /// Appends and publishes an event; its id. A failed write is logged:
    /// the event is still published, and the conversation goes on.
    fn record(&self, source: Source, body: EventBody) -> String {
        let mut state = self.lock();
        let event = Arc::new(Event {
            id: crate::random::uuid(),
            timestamp: state.tick(),
            source,
            body,
        });
        if let Err(error) = state.log.append(&event) {
            warn!(%error, "could not persist a conversation event");
        }
        let at = state.events.len();
        state.events.push(event.clone());
        state.info.updated_at = event.timestamp.clone();
        let id = event.id.clone();
        // No receiver is fine: nobody follows the conversation.
        let _ = self.live.send(Frame::Event { at, event });
        id
    }

    /// Tells followers all of the conversation: the SDK waits for this
    /// after a run to know that it ended and that it has every event.
    fn publish_snapshot(&self) {
        let snapshot = Self::snapshot(&mut self.lock());
        let _ = self.live.send(Frame::Snapshot(Arc::new(snapshot)));
    }

    fn set_status(&self, status: ExecutionStatus) {
        let changed = {
            let mut state = self.lock();
            let changed = state.info.execution_status != status;
            state.info.execution_status = status;
            changed
        };
        if changed {
            self.record(
                Source::Environment,
                EventBody::ConversationStateUpdateEvent {
                    key: "execution_status".into(),
                    value: json!(status),
                },
            );
        }
        if let Err(error) = self.save() {
            warn!(%error, "could not persist a conversation's state");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let info = self.info();
        let temporary = self.dir.join("meta.json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&info)?)?;
        std::fs::rename(temporary, self.dir.join("meta.json"))
    }

    /// The id of the action event of tool call `call`.
    fn action_of(&self, call: &str) -> Option<String> {
        self.lock().events.iter().rev().find_map(|e| match &e.body {
            EventBody::ActionEvent { tool_call_id, .. } if tool_call_id == call => {
                Some(e.id.clone())
            }
            _ => None,
        })
    }

    /// The model's history, from the events: messages as they were, tool
    /// activity as the model's own account of it.
    fn history(&self) -> Vec<ChatMessage> {
        let mut history = Vec::new();
        let mut actions: BTreeMap<String, (String, String)> = BTreeMap::new();
        for event in self.events() {
            match &event.body {
                EventBody::MessageEvent { llm_message } => {
                    let text = llm_message.text();
                    history.push(if event.source == Source::Agent {
                        ChatMessage::assistant(text)
                    } else {
                        ChatMessage::user(text)
                    });
                }
                EventBody::ActionEvent { tool_call, .. } => {
                    actions.insert(
                        tool_call.id.clone(),
                        (tool_call.name.clone(), tool_call.arguments.clone()),
                    );
                }
                EventBody::ObservationEvent {
                    tool_call_id,
                    observation,
                    ..
                } => {
                    if let Some((tool, arguments)) = actions.remove(tool_call_id) {
                        let seen: String = observation.text().chars().take(4000).collect();
                        history.push(ChatMessage::assistant(format!(
                            "I called {tool} with {arguments}; it answered:\n{seen}"
                        )));
                    }
                }
                EventBody::ConversationStateUpdateEvent { .. }
                | EventBody::ConversationErrorEvent { .. } => {}
            }
        }
        history
    }
}

/// Every conversation of a runner.
pub struct Conversations {
    persistence: PathBuf,
    /// The workspace root: conversations work inside it.
    root: Workspace,
    settings: WorkArgs,
    /// What must never leave the runner: its token and the LLM key.
    redactor: Redactor,
    models: Arc<Models>,
    slots: Arc<Semaphore>,
    capacity: usize,
    all: RwLock<BTreeMap<String, Arc<Conversation>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Conversations {
    /// The conversations stored under `persistence`, working under
    /// `workspaces`; runs take one of `slots` (of `capacity`); `redactor`
    /// cleans what they send out. Conversations a killed runner left
    /// running are marked paused.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        persistence: &Path,
        workspaces: &Path,
        settings: WorkArgs,
        redactor: Redactor,
        models: Arc<Models>,
        slots: Arc<Semaphore>,
        capacity: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(persistence)?;
        std::fs::create_dir_all(workspaces)?;
        let mut all = BTreeMap::new();
        for entry in std::fs::read_dir(persistence)? {
            let dir = entry?.path();
            let Ok(meta) = std::fs::read(dir.join("meta.json")) else {
                continue;
            };
            let meta = serde_json::from_slice(&meta).map(|meta| {
                super::legacy::info(
                    meta,
                    &dir.display().to_string(),
                    settings.llm.model.as_deref().unwrap_or_default(),
                    settings.max_iterations,
                )
            });
            let Ok(mut info) = meta.and_then(serde_json::from_value::<ConversationInfo>) else {
                warn!(dir = %dir.display(), "skipping a conversation whose meta.json is unreadable");
                continue;
            };
            let (log, events) = EventLog::open(&dir.join("events.jsonl"))?;
            let interrupted = info.execution_status == ExecutionStatus::Running;
            if interrupted {
                info.execution_status = ExecutionStatus::Idle;
            }
            let id = info.id.clone();
            let conversation =
                Conversation::new(dir, PathBuf::from(&info.workspace.working_dir), info, log);
            {
                let mut state = conversation.lock();
                for mut event in events {
                    // Older runners wrote timestamps of any precision, some
                    // equal: each is made later than the one before.
                    let at = super::micros(&event.timestamp).unwrap_or(0);
                    state.clock = at.max(state.clock + 1);
                    event.timestamp = super::timestamp(state.clock);
                    state.events.push(Arc::new(event));
                }
            }
            if interrupted {
                conversation.set_status(ExecutionStatus::Paused);
            }
            all.insert(id, Arc::new(conversation));
        }
        info!(conversations = all.len(), dir = %persistence.display(), "conversations loaded");
        Ok(Self {
            persistence: persistence.to_owned(),
            root: Workspace::new(workspaces)?,
            settings,
            redactor,
            models,
            slots,
            capacity,
            all: RwLock::new(all),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// The conversation `id` (either UUID form).
    pub fn get(&self, id: &str) -> Result<Arc<Conversation>, ConversationError> {
        let key = canonical_id(id).unwrap_or_else(|| id.to_owned());
        self.all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .ok_or_else(|| ConversationError::NotFound(id.to_owned()))
    }

    /// Every conversation (in no order), optionally only those in `status`.
    pub fn list(&self, status: Option<ExecutionStatus>) -> Vec<ConversationInfo> {
        self.all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.info())
            .filter(|info| status.is_none_or(|s| info.execution_status == s))
            .collect()
    }

    /// Starts a conversation, or returns the one with the id asked for.
    pub fn create(
        self: &Arc<Self>,
        request: StartConversation,
    ) -> Result<ConversationInfo, ConversationError> {
        let id = match &request.conversation_id {
            Some(asked) => {
                let id =
                    canonical_id(asked).ok_or_else(|| ConversationError::BadId(asked.clone()))?;
                if let Ok(existing) = self.get(&id) {
                    return Ok(existing.info());
                }
                id
            }
            None => crate::random::uuid(),
        };
        let workspace = match &request.workspace {
            Some(asked) => self
                .root
                .resolve(&asked.working_dir)
                .map_err(|e| ConversationError::Outside(e.to_string()))?,
            None => self.root.root().join(&id),
        };
        let dir = self.persistence.join(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&workspace)?;
        let (log, _) = EventLog::open(&dir.join("events.jsonl"))?;
        let created = super::now();
        let title = request.initial_message.as_ref().map(|m| {
            let text: String = m.content.iter().map(|c| c.text.as_str()).collect();
            text.chars().take(60).collect()
        });
        let model = request.model();
        let agent = match request.agent.clone() {
            Some(agent) if agent.get("llm").is_some() && agent.get("kind").is_some() => {
                masked(agent)
            }
            _ => default_agent(
                model
                    .as_deref()
                    .or(self.settings.llm.model.as_deref())
                    .unwrap_or_default(),
            ),
        };
        let info = ConversationInfo {
            id: id.clone(),
            title,
            execution_status: ExecutionStatus::Idle,
            created_at: created.clone(),
            updated_at: created,
            workspace: WorkspaceInfo {
                kind: local_workspace(),
                working_dir: workspace.display().to_string(),
            },
            persistence_dir: dir.display().to_string(),
            agent,
            max_iterations: request
                .max_iterations
                .map_or(self.settings.max_iterations, |most| {
                    most.clamp(1, self.settings.max_iterations)
                }),
            stuck_detection: false,
            confirmation_policy: json!({ "kind": "NeverConfirm" }),
            stats: json!({ "usage_to_metrics": {} }),
            tool_module_qualnames: request.tool_module_qualnames.clone(),
            tags: request.tags.clone(),
            usage: TokenUsage::default(),
            model,
        };
        let conversation = Arc::new(Conversation::new(dir, workspace, info, log));
        conversation.save()?;
        self.all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), conversation);
        if let Some(message) = request.initial_message {
            self.send(&id, message)?;
        }
        Ok(self.get(&id)?.info())
    }

    /// Adds a message; runs the agent when it asks to.
    pub fn send(self: &Arc<Self>, id: &str, message: SendMessage) -> Result<(), ConversationError> {
        let conversation = self.get(id)?;
        if message.content.iter().all(|c| c.text.trim().is_empty()) {
            return Err(ConversationError::Empty);
        }
        conversation.record(
            Source::User,
            EventBody::MessageEvent {
                llm_message: LlmMessage {
                    role: message.role,
                    content: message.content,
                },
            },
        );
        if message.run {
            match self.run(id) {
                // A message to a running agent waits for its next run.
                Ok(()) | Err(ConversationError::Running(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Runs the agent on the conversation as it stands.
    pub fn run(self: &Arc<Self>, id: &str) -> Result<(), ConversationError> {
        let conversation = self.get(id)?;
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConversationError::Busy(self.capacity))?;
        let stop = self.shutdown.child_token();
        {
            let mut state = conversation.lock();
            if state.stop.is_some() {
                return Err(ConversationError::Running(id.to_owned()));
            }
            state.stop = Some(stop.clone());
        }
        conversation.set_status(ExecutionStatus::Running);
        let this = self.clone();
        self.tasks.spawn(async move {
            this.work(&conversation, stop, permit).await;
        });
        Ok(())
    }

    async fn work(
        &self,
        conversation: &Arc<Conversation>,
        stop: CancellationToken,
        _slot: OwnedSemaphorePermit,
    ) {
        let info = conversation.info();
        let ended = async {
            let llm = self
                .models
                .get(info.model.as_deref())
                .map_err(|e| e.to_string())?;
            let workspace = Workspace::new(&conversation.workspace).map_err(|e| e.to_string())?;
            let mut limits = self.settings.limits(None);
            limits.iterations = limits.iterations.min(info.max_iterations);
            let redactor = &self.redactor;
            let mut session = Session::with_history(conversation.history());
            let observe = |step: Step<'_>| observe(conversation, step);
            let ending = session
                .run(&llm, &workspace, limits, redactor, &observe, &stop)
                .await;
            Ok::<_, String>((ending, session.usage()))
        }
        .await;
        let status = match ended {
            Ok((Some(ending), usage)) => {
                conversation.record(
                    Source::Agent,
                    EventBody::MessageEvent {
                        llm_message: LlmMessage {
                            role: "assistant".into(),
                            content: vec![TextContent::new(ending.reply)],
                        },
                    },
                );
                add_usage(conversation, usage);
                if ending.outcome.failed() {
                    ExecutionStatus::Error
                } else {
                    ExecutionStatus::Finished
                }
            }
            Ok((None, usage)) => {
                add_usage(conversation, usage);
                ExecutionStatus::Paused
            }
            Err(detail) => {
                conversation.record(
                    Source::Environment,
                    EventBody::ConversationErrorEvent {
                        code: "AgentError".into(),
                        detail,
                    },
                );
                ExecutionStatus::Error
            }
        };
        conversation.lock().stop = None;
        conversation.set_status(status);
        conversation.publish_snapshot();
    }

    /// Pauses the conversation's agent, if it runs.
    pub fn pause(&self, id: &str) -> Result<(), ConversationError> {
        if let Some(stop) = self.get(id)?.lock().stop.clone() {
            stop.cancel();
        }
        Ok(())
    }

    /// Deletes the conversation and its events, and its workspace when the
    /// runner made it (a working directory the client chose stays).
    pub fn delete(&self, id: &str) -> Result<(), ConversationError> {
        let key = canonical_id(id).unwrap_or_else(|| id.to_owned());
        let conversation = self
            .all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .ok_or_else(|| ConversationError::NotFound(id.to_owned()))?;
        if let Some(stop) = conversation.lock().stop.clone() {
            stop.cancel();
        }
        std::fs::remove_dir_all(&conversation.dir)?;
        if conversation.workspace != self.root.root().join(&key) {
            return Ok(());
        }
        match std::fs::remove_dir_all(&conversation.workspace) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Stops every run (each records that it paused) and waits for them.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn add_usage(conversation: &Conversation, usage: TokenUsage) {
    let mut state = conversation.lock();
    state.info.usage.prompt_tokens += usage.prompt_tokens;
    state.info.usage.completion_tokens += usage.completion_tokens;
}

/// Records a session step as its event.
fn observe(conversation: &Conversation, step: Step<'_>) {
    let (source, body) = match step {
        Step::Said(text) => (
            Source::Agent,
            EventBody::MessageEvent {
                llm_message: LlmMessage {
                    role: "assistant".into(),
                    content: vec![TextContent::new(text)],
                },
            },
        ),
        Step::Called {
            id,
            tool,
            arguments,
        } => (
            Source::Agent,
            EventBody::ActionEvent {
                thought: Vec::new(),
                tool_name: tool.to_owned(),
                tool_call_id: id.to_owned(),
                tool_call: ToolCall {
                    id: id.to_owned(),
                    name: tool.to_owned(),
                    arguments: arguments.to_owned(),
                    origin: "completion".into(),
                },
                llm_response_id: crate::random::uuid(),
            },
        ),
        Step::Answered {
            id,
            tool,
            exit_code,
            output,
        } => (
            Source::Environment,
            EventBody::ObservationEvent {
                tool_name: tool.to_owned(),
                tool_call_id: id.to_owned(),
                action_id: conversation.action_of(id).unwrap_or_default(),
                observation: Observation::new(tool, output, exit_code.is_some_and(|c| c != 0)),
            },
        ),
    };
    conversation.record(source, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_in_either_uuid_form() {
        let id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(canonical_id(id).as_deref(), Some(id));
        assert_eq!(
            canonical_id("0A1B2C3D4E5F4A6B8C7D9E0F1A2B3C4D").as_deref(),
            Some(id)
        );
        assert_eq!(canonical_id("../etc"), None);
        assert_eq!(canonical_id("0a1b2c3d"), None);
    }

    #[test]
    fn secrets_of_the_agent_are_masked_and_the_rest_kept() {
        let agent = json!({
            "kind": "Agent",
            "llm": { "model": "openai/m", "api_key": "sk-1", "max_output_tokens": 10 },
            "mcp_config": { "servers": [{ "headers": { "auth_token": "t" } }] },
        });
        let shown = masked(agent);
        assert_eq!(shown["llm"]["api_key"], "**********");
        assert_eq!(shown["llm"]["max_output_tokens"], 10);
        assert_eq!(shown["llm"]["model"], "openai/m");
        assert_eq!(
            shown["mcp_config"]["servers"][0]["headers"]["auth_token"],
            "**********"
        );
    }
}
