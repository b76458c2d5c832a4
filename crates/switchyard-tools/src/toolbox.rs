//! The tool interface and the set of tools a configuration offers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchyard_config::ToolsConfig;
use switchyard_core::ToolDefinition;

use crate::calculator::Calculator;
use crate::clock::Clock;
use crate::http_fetch::HttpFetch;
use crate::mcp::{McpServer, SEPARATOR};
use crate::sandbox::RunCode;

/// Why a tool call gave no result. The tool loop hands the message to the
/// model as the call's result, so it can correct itself or answer without.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The model's arguments do not fit the tool's schema or make no sense.
    #[error("invalid arguments: {0}")]
    Arguments(String),
    /// The tool cannot run here (its isolation is missing, say).
    #[error("the tool is unavailable: {0}")]
    Unavailable(String),
    /// It ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// Who asks for tools: what MCP servers' allow-lists are checked against.
#[derive(Debug, Clone, Copy)]
pub struct ToolUser<'a> {
    /// The caller's tenant (`default` for keyless and master-key callers).
    pub tenant: &'a str,
    /// The caller's key id, when it presented a key.
    pub key: Option<&'a str>,
}

/// A tool Switchyard runs for a model.
pub trait Tool: Send + Sync {
    /// Its name, description and JSON Schema of arguments, as offered to
    /// models.
    fn definition(&self) -> ToolDefinition;

    /// Runs it on `arguments` (the JSON text the model wrote); the result
    /// is the JSON text given back to the model.
    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>>;
}

/// The tools a configuration offers, the loop's limits, and the tools
/// attached to models and routes.
pub struct Toolbox {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    /// Tools that exist but cannot run here, and why.
    unavailable: BTreeMap<String, String>,
    attach: BTreeMap<String, Vec<String>>,
    /// MCP servers, by name.
    mcp: BTreeMap<String, Arc<McpServer>>,
    /// The code sandbox, or why there is none here.
    sandbox: Result<Arc<RunCode>, String>,
    /// Rounds of tool calls before the loop stops.
    pub max_steps: usize,
    /// How long one call may take.
    pub call_timeout: Duration,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .field("unavailable", &self.unavailable)
            .field("max_steps", &self.max_steps)
            .finish_non_exhaustive()
    }
}

impl Toolbox {
    /// The built-in tools `config` enables. `run_code` is offered only
    /// where its sandbox works on this host; elsewhere it is listed as
    /// unavailable with the reason.
    ///
    /// MCP servers are started (on the current runtime), except those
    /// `previous` (the toolbox in force before a reload) already runs with
    /// the same settings, which carry over.
    pub fn from_config(config: &ToolsConfig, previous: Option<&Toolbox>) -> Self {
        let mut toolbox = Self::empty(config);
        for (name, server) in &config.mcp {
            let running = previous
                .and_then(|p| p.mcp.get(name))
                .filter(|running| running.runs(server))
                .cloned()
                .unwrap_or_else(|| McpServer::start(name, server));
            toolbox.mcp.insert(name.clone(), running);
        }
        toolbox.add(Arc::new(Calculator::new()));
        toolbox.add(Arc::new(Clock::system()));
        match HttpFetch::new(&config.http_fetch) {
            Ok(Some(fetch)) => toolbox.add(Arc::new(fetch)),
            Ok(None) => {
                toolbox.unavailable.insert(
                    "http_fetch".into(),
                    "no hosts are allowed ([tools.http_fetch] allow_hosts)".into(),
                );
            }
            Err(why) => {
                tracing::warn!(%why, "http_fetch is unavailable");
                toolbox.unavailable.insert("http_fetch".into(), why);
            }
        }
        if config.run_code.enabled {
            match RunCode::detect(&config.run_code) {
                Ok(run_code) => {
                    let run_code = Arc::new(run_code);
                    toolbox.sandbox = Ok(run_code.clone());
                    toolbox.add(run_code);
                }
                Err(why) => {
                    tracing::warn!(%why, "run_code is unavailable: generated code is never run outside a sandbox");
                    toolbox.unavailable.insert("run_code".into(), why.clone());
                    toolbox.sandbox = Err(why);
                }
            }
        } else {
            let why = "it is disabled ([tools.run_code] enabled = false)".to_owned();
            toolbox.unavailable.insert("run_code".into(), why.clone());
            toolbox.sandbox = Err(why);
        }
        toolbox
    }

    /// No tools, with `config`'s limits and attachments.
    pub fn empty(config: &ToolsConfig) -> Self {
        Self {
            tools: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            attach: config.attach.clone(),
            mcp: BTreeMap::new(),
            sandbox: Err("the toolbox has no sandbox".into()),
            max_steps: config.max_steps,
            call_timeout: Duration::from_secs(config.call_timeout_secs),
        }
    }

    /// Offers `tool` under its definition's name.
    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        let name = tool.definition().name;
        self.unavailable.remove(&name);
        self.tools.insert(name, tool);
    }

    /// The tool called `name`; an error saying why when there is none here.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Tool>, String> {
        if let Some(tool) = self.tools.get(name) {
            return Ok(tool.clone());
        }
        Err(match self.unavailable.get(name) {
            Some(why) => format!("the tool {name:?} is unavailable on this server: {why}"),
            None => format!(
                "there is no tool named {name:?}; the tools are {}",
                self.tools
                    .keys()
                    .chain(self.mcp.keys())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The tools a request's `{"type": "switchyard", "name": name}` stands
    /// for: a built-in tool, every tool of the MCP server `name`, or the one
    /// tool `SERVER__TOOL`.
    /// MCP tools are those `user` may use.
    /// An `Unavailable` error is one worth retrying (a server that has not
    /// connected yet).
    pub fn resolve(&self, name: &str, user: ToolUser<'_>) -> Result<Vec<Arc<dyn Tool>>, ToolError> {
        if let Some(server) = self.mcp.get(name) {
            return server.tools(user, None);
        }
        if let Some((server, tool)) = name.split_once(SEPARATOR)
            && let Some(server) = self.mcp.get(server)
        {
            return server.tools(user, Some(tool));
        }
        self.get(name)
            .map(|tool| vec![tool])
            .map_err(ToolError::Arguments)
    }

    /// The code sandbox, or why code cannot be run here.
    pub fn sandbox(&self) -> Result<&RunCode, &str> {
        self.sandbox.as_deref().map_err(String::as_str)
    }

    /// The MCP server called `name`, if one is configured.
    pub fn mcp_server(&self, name: &str) -> Option<&Arc<McpServer>> {
        self.mcp.get(name)
    }

    /// Tools attached to the model or route `name` by the configuration.
    pub fn attached(&self, name: &str) -> &[String] {
        self.attach.get(name).map_or(&[], Vec::as_slice)
    }

    /// The names of the tools offered here.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

/// Parses a tool's arguments (the model's JSON text; empty counts as
/// `{}`), with a message for the model when they do not fit.
pub fn parse_arguments<T: serde::de::DeserializeOwned>(arguments: &str) -> Result<T, ToolError> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(text).map_err(|e| ToolError::Arguments(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unavailable_tools_say_why() {
        let config = ToolsConfig {
            run_code: switchyard_config::RunCodeConfig {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let toolbox = Toolbox::from_config(&config, None);
        assert!(toolbox.get("calculator").is_ok());
        let missing = toolbox.get("teleport").err().unwrap_or_default();
        assert!(missing.contains("calculator, clock"), "{missing}");
        let disabled = toolbox.get("run_code").err().unwrap_or_default();
        assert!(disabled.contains("disabled"), "{disabled}");
    }
}
