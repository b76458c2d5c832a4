//! MCP servers as tool sources, through the official Rust SDK (`rmcp`): a
//! configured server is started as a command (stdio) or reached at a URL
//! (streamable HTTP); its tools are listed when it connects and again when
//! it says they changed, and models call them as `SERVER__TOOL` (those of
//! its tools `allow_tools` names, for the tenants `allow_tenants` and the
//! keys `allow_keys` names).
//! A supervisor keeps each server up: one that dies is restarted with
//! backoff, and while it is down its tools answer the model with an error
//! saying so (the loop's call timeout bounds a server that hangs).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceExt};
use switchyard_config::McpServerConfig;
use switchyard_core::ToolDefinition;
use tokio::io::AsyncBufReadExt;

use crate::toolbox::{Tool, ToolError, ToolUser, parse_arguments};

/// How an MCP tool is named to models: `SERVER__TOOL`.
pub const SEPARATOR: &str = "__";

/// First wait before a restart; it doubles up to [`MAX_BACKOFF`], and
/// starts over once a server has stayed up for [`HEALTHY`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY: Duration = Duration::from_secs(60);

/// One configured MCP server and its supervisor.
pub struct McpServer {
    name: String,
    config: McpServerConfig,
    state: Arc<Mutex<State>>,
    supervisor: tokio::task::JoinHandle<()>,
}

/// What is known of a server now.
#[derive(Default)]
struct State {
    /// The session, while connected.
    peer: Option<Peer<RoleClient>>,
    /// Its tools as last listed (kept while it restarts, so requests can
    /// still be offered them).
    tools: Vec<rmcp::model::Tool>,
    /// Why it is not connected, when it is not.
    down: Option<String>,
    /// Connections made so far.
    connections: u64,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        // The session and (for a command) the process go with the task.
        self.supervisor.abort();
    }
}

impl McpServer {
    /// Starts supervising `config` under `name` (on the current runtime).
    pub fn start(name: &str, config: &McpServerConfig) -> Arc<Self> {
        let state = Arc::new(Mutex::new(State {
            down: Some("starting".into()),
            ..State::default()
        }));
        let supervisor = tokio::spawn(supervise(name.to_owned(), config.clone(), state.clone()));
        Arc::new(Self {
            name: name.to_owned(),
            config: config.clone(),
            state,
            supervisor,
        })
    }

    /// Whether it was started from `config` (a reload keeps such a server
    /// running).
    pub fn runs(&self, config: &McpServerConfig) -> bool {
        self.config == *config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether it is connected, and how many times it has connected.
    pub fn status(&self) -> (bool, u64) {
        let state = self.lock();
        (state.peer.is_some(), state.connections)
    }

    /// Its tools (all, or the one named `only`) that `user` may use, as
    /// the loop offers them; an error when there are none.
    pub fn tools(
        self: &Arc<Self>,
        user: ToolUser<'_>,
        only: Option<&str>,
    ) -> Result<Vec<Arc<dyn Tool>>, ToolError> {
        let tenants = &self.config.allow_tenants;
        let keys = &self.config.allow_keys;
        let tenant_allowed = tenants.is_empty() || tenants.iter().any(|t| t == user.tenant);
        let key_allowed =
            keys.is_empty() || user.key.is_some_and(|key| keys.iter().any(|k| k == key));
        if !tenant_allowed || !key_allowed {
            // Said as for a server that does not exist: a tenant learns
            // nothing of what others may use.
            return Err(ToolError::Arguments(format!(
                "there is no tool named {:?}",
                self.name
            )));
        }
        let state = self.lock();
        if state.tools.is_empty() {
            // Starting, or never reached yet: worth a retry.
            return Err(ToolError::Unavailable(format!(
                "the MCP server {:?} has no tools yet: {}",
                self.name,
                state.down.as_deref().unwrap_or("it listed none")
            )));
        }
        let chosen: Vec<Arc<dyn Tool>> = state
            .tools
            .iter()
            .filter(|tool| only.is_none_or(|name| tool.name == name))
            .filter(|tool| {
                self.config.allow_tools.is_empty()
                    || self.config.allow_tools.iter().any(|t| *t == tool.name)
            })
            .map(|tool| {
                Arc::new(McpTool {
                    server: self.clone(),
                    tool: tool.name.to_string(),
                    definition: ToolDefinition {
                        name: format!("{}{SEPARATOR}{}", self.name, tool.name),
                        description: tool.description.as_ref().map(|d| d.to_string()),
                        parameters: serde_json::Value::Object((*tool.input_schema).clone()),
                    },
                }) as Arc<dyn Tool>
            })
            .collect();
        if chosen.is_empty() {
            return Err(ToolError::Arguments(format!(
                "the MCP server {:?} has no tool {:?}",
                self.name,
                only.unwrap_or_default()
            )));
        }
        Ok(chosen)
    }
}

/// Connects, lists the tools, waits for the session to end, and starts
/// over after a backoff, for as long as the server is configured.
async fn supervise(name: String, config: McpServerConfig, state: Arc<Mutex<State>>) {
    let set = |update: &dyn Fn(&mut State)| {
        update(
            &mut state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        match connect(&name, &config, &state).await {
            Ok(running) => {
                let peer = running.peer().clone();
                match peer.list_all_tools().await {
                    Ok(tools) => {
                        tracing::info!(server = %name, tools = tools.len(), "MCP server connected");
                        set(&|s| {
                            s.peer = Some(peer.clone());
                            s.tools = tools.clone();
                            s.down = None;
                            s.connections += 1;
                        });
                        let ended = running.waiting().await;
                        tracing::warn!(server = %name, ?ended, "MCP server session ended; restarting");
                        set(&|s| {
                            s.peer = None;
                            s.down = Some("it stopped and is being restarted".into());
                        });
                    }
                    Err(error) => {
                        tracing::warn!(server = %name, %error, "MCP server did not list its tools");
                        set(&|s| s.down = Some(format!("listing its tools failed: {error}")));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(server = %name, %error, "MCP server could not be reached");
                set(&|s| {
                    s.peer = None;
                    s.down = Some(format!("it could not be reached: {error}"));
                });
            }
        }
        if started.elapsed() >= HEALTHY {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The gateway's side of a session: it follows the server's notice that
/// its tools changed by listing them again.
struct Session {
    name: String,
    state: Arc<Mutex<State>>,
}

impl rmcp::ClientHandler for Session {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        match context.peer.list_all_tools().await {
            Ok(tools) => {
                tracing::info!(server = %self.name, tools = tools.len(), "MCP server's tools changed");
                self.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .tools = tools;
            }
            Err(error) => {
                tracing::warn!(server = %self.name, %error, "MCP server's changed tools could not be listed");
            }
        }
    }
}

/// One session with the server.
async fn connect(
    name: &str,
    config: &McpServerConfig,
    state: &Arc<Mutex<State>>,
) -> Result<RunningService<RoleClient, Session>, String> {
    let session = Session {
        name: name.to_owned(),
        state: state.clone(),
    };
    if let Some(url) = &config.url {
        let mut headers = HashMap::new();
        for (key, value) in &config.headers {
            let key = http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| format!("header {key:?}: {e}"))?;
            let value =
                http::HeaderValue::from_str(value).map_err(|e| format!("header {key}: {e}"))?;
            headers.insert(key, value);
        }
        let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
        transport_config.custom_headers = headers;
        let transport = StreamableHttpClientTransport::from_config(transport_config);
        return session.serve(transport).await.map_err(|e| e.to_string());
    }
    let (program, arguments) = config
        .command
        .split_first()
        .ok_or_else(|| "no command".to_owned())?;
    let mut command = tokio::process::Command::new(program);
    command.args(arguments).envs(&config.env).kill_on_drop(true);
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if let Some(stderr) = stderr {
        // The server's own log, in the gateway's (at debug).
        let server = name.to_owned();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(server = %server, "{line}");
            }
        });
    }
    session.serve(transport).await.map_err(|e| e.to_string())
}

/// One tool of an MCP server.
struct McpTool {
    server: Arc<McpServer>,
    tool: String,
    definition: ToolDefinition,
}

impl Tool for McpTool {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let arguments: JsonObject = parse_arguments(arguments)?;
            let peer = {
                let state = self.server.lock();
                state.peer.clone().ok_or_else(|| {
                    ToolError::Unavailable(format!(
                        "the MCP server {:?} is not connected: {}",
                        self.server.name,
                        state.down.as_deref().unwrap_or("unknown")
                    ))
                })?
            };
            let result = peer
                .call_tool(CallToolRequestParams::new(self.tool.clone()).with_arguments(arguments))
                .await
                .map_err(|e| {
                    ToolError::Failed(format!("the MCP server {:?}: {e}", self.server.name))
                })?;
            let mut text: Vec<String> = result
                .content
                .iter()
                .filter_map(|block| block.as_text().map(|t| t.text.clone()))
                .collect();
            if text.is_empty()
                && let Some(structured) = &result.structured_content
            {
                text.push(structured.to_string());
            }
            let text = text.join("\n");
            if result.is_error == Some(true) {
                return Err(ToolError::Failed(text));
            }
            Ok(text)
        })
    }
}
