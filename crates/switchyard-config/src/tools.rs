//! The `[tools]` table: the tools Switchyard runs itself for models, and
//! the limits of the tool loop and of the code sandbox.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::FieldProblem;

/// The tool loop and the built-in tools.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Rounds of tool calls one request may run before the loop stops and
    /// answers with what it has.
    #[serde(default = "default_max_steps")]
    pub max_steps: usize,
    /// Seconds one tool call may take before the model is told it timed
    /// out.
    #[serde(default = "default_call_timeout_secs")]
    pub call_timeout_secs: u64,
    /// Tools offered on every request to a model or route, by its public
    /// name, as if the request had named them.
    #[serde(default)]
    pub attach: BTreeMap<String, Vec<String>>,
    /// The code sandbox behind `run_code`.
    #[serde(default)]
    pub run_code: RunCodeConfig,
    /// `http_fetch`: off unless hosts are allowed.
    #[serde(default)]
    pub http_fetch: HttpFetchConfig,
    /// MCP servers whose tools models may call, by name: a request names
    /// `NAME` (all its tools) or `NAME__TOOL` (one).
    #[serde(default)]
    pub mcp: BTreeMap<String, McpServerConfig>,
}

/// `[tools.mcp.NAME]`: an MCP server, started as a command (stdio) or
/// reached at a URL (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The program and its arguments, spoken to over stdin and stdout.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables for the command (values may be `${VAR}`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A streamable HTTP endpoint, instead of a command.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers sent to the endpoint (values may be `${VAR}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Tenants whose callers may use it (keyless and master-key callers
    /// are the `default` tenant); empty: every tenant.
    #[serde(default)]
    pub allow_tenants: Vec<String>,
    /// Its tools offered to models; empty: all it lists.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Keys (by id, `key_…`) whose callers may use it, beside the tenant
    /// check; empty: every key. Keyless and master-key callers have no key
    /// id, so a server with this list is not theirs.
    #[serde(default)]
    pub allow_keys: Vec<String>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_steps: default_max_steps(),
            call_timeout_secs: default_call_timeout_secs(),
            attach: BTreeMap::new(),
            run_code: RunCodeConfig::default(),
            http_fetch: HttpFetchConfig::default(),
            mcp: BTreeMap::new(),
        }
    }
}

/// `[tools.http_fetch]`: GET requests a model may make.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFetchConfig {
    /// Hosts it may fetch from: exact names, or `*.example.com` for the
    /// subdomains of one. Empty (the default): the tool is off.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Bytes of a response read at most; the rest is cut.
    #[serde(default = "default_fetch_max_bytes")]
    pub max_bytes: usize,
    /// Seconds a fetch may take, redirects included.
    #[serde(default = "default_fetch_timeout_secs")]
    pub timeout_secs: u64,
    /// Characters of extracted text given to the model at most.
    #[serde(default = "default_fetch_max_chars")]
    pub max_chars: usize,
    /// Whether an allowed host name may lead to a private, loopback or
    /// link-local address. Off: such addresses of a name are never
    /// connected to (an allowed host given as an IP address is reached as
    /// given).
    #[serde(default)]
    pub allow_private_addresses: bool,
}

impl Default for HttpFetchConfig {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            max_bytes: default_fetch_max_bytes(),
            timeout_secs: default_fetch_timeout_secs(),
            max_chars: default_fetch_max_chars(),
            allow_private_addresses: false,
        }
    }
}

/// Languages `run_code` may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxLanguage {
    /// The system's `python3`.
    Python,
    /// POSIX `sh`.
    Shell,
}

/// `[tools.run_code]`: limits of the sandbox generated code runs in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCodeConfig {
    /// Whether the tool is offered at all (it is only where the host can
    /// isolate it).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What it may run.
    #[serde(default = "default_languages")]
    pub languages: Vec<SandboxLanguage>,
    /// CPU seconds a run may use.
    #[serde(default = "default_cpu_secs")]
    pub cpu_secs: u64,
    /// Seconds a run may take from start to end.
    #[serde(default = "default_wall_secs")]
    pub wall_secs: u64,
    /// Address space a run may map, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Processes and threads a run may have at once.
    #[serde(default = "default_max_processes")]
    pub max_processes: u64,
    /// Bytes of stdout and of stderr kept; a run that writes more is
    /// stopped.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// Largest file a run may write, in MiB.
    #[serde(default = "default_max_file_mb")]
    pub max_file_mb: u64,
    /// Bytes of code accepted.
    #[serde(default = "default_max_code_bytes")]
    pub max_code_bytes: usize,
    /// Runs at once; more wait their turn.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for RunCodeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            languages: default_languages(),
            cpu_secs: default_cpu_secs(),
            wall_secs: default_wall_secs(),
            memory_mb: default_memory_mb(),
            max_processes: default_max_processes(),
            max_output_bytes: default_max_output_bytes(),
            max_file_mb: default_max_file_mb(),
            max_code_bytes: default_max_code_bytes(),
            concurrency: default_concurrency(),
        }
    }
}

impl ToolsConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldProblem> {
        let run_code = &self.run_code;
        let at_least_one = [
            ("max_steps", self.max_steps as u64),
            ("call_timeout_secs", self.call_timeout_secs),
            ("run_code.cpu_secs", run_code.cpu_secs),
            ("run_code.wall_secs", run_code.wall_secs),
            ("run_code.memory_mb", run_code.memory_mb),
            ("run_code.max_processes", run_code.max_processes),
            (
                "run_code.max_output_bytes",
                run_code.max_output_bytes as u64,
            ),
            ("run_code.max_file_mb", run_code.max_file_mb),
            ("run_code.max_code_bytes", run_code.max_code_bytes as u64),
            ("run_code.concurrency", run_code.concurrency as u64),
            ("http_fetch.max_bytes", self.http_fetch.max_bytes as u64),
            ("http_fetch.timeout_secs", self.http_fetch.timeout_secs),
            ("http_fetch.max_chars", self.http_fetch.max_chars as u64),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err((format!("tools.{name}"), "must be at least 1".into()));
            }
        }
        if let Some(host) = self.http_fetch.allow_hosts.iter().find(|host| {
            let name = host.strip_prefix("*.").unwrap_or(host);
            name.is_empty() || name.contains(['/', ':', '*', ' ', '@'])
        }) {
            return Err((
                "tools.http_fetch.allow_hosts".into(),
                format!("{host:?} is not a host name (or *.domain)"),
            ));
        }
        for (name, server) in &self.mcp {
            let field = format!("tools.mcp.{name}");
            if name.is_empty()
                || name.contains("__")
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || BUILTIN_TOOLS.contains(&name.as_str())
            {
                return Err((
                    field,
                    "a server's name is letters, digits, - and _ (no __), and not a built-in tool's"
                        .into(),
                ));
            }
            if let Some(key) = server.allow_keys.iter().find(|k| !k.starts_with("key_")) {
                return Err((
                    format!("{field}.allow_keys"),
                    format!("{key:?} is not a key id (key_…)"),
                ));
            }
            match (server.command.is_empty(), &server.url) {
                (false, None) | (true, Some(_)) => {}
                _ => {
                    return Err((field, "give either `command` or `url`".into()));
                }
            }
        }
        if run_code.enabled && run_code.languages.is_empty() {
            return Err((
                "tools.run_code.languages".into(),
                "name at least one language, or set enabled = false".into(),
            ));
        }
        Ok(())
    }
}

/// The tools Switchyard has, by the names requests and `attach` use.
pub const BUILTIN_TOOLS: [&str; 5] = ["calculator", "clock", "http_fetch", "run_code", "search"];

impl ToolsConfig {
    /// `attach` names models or routes that exist, and tools Switchyard has.
    pub(crate) fn validate_attach(&self, known: impl Fn(&str) -> bool) -> Result<(), FieldProblem> {
        for (target, tools) in &self.attach {
            if !known(target) {
                return Err((
                    format!("tools.attach.{target}"),
                    "no model or route by this name".into(),
                ));
            }
            let known = |tool: &str| {
                BUILTIN_TOOLS.contains(&tool)
                    || self
                        .mcp
                        .contains_key(tool.split("__").next().unwrap_or(tool))
            };
            if let Some(unknown) = tools.iter().find(|t| !known(t)) {
                return Err((
                    format!("tools.attach.{target}"),
                    format!(
                        "no tool named {unknown:?}; the tools are {}",
                        BUILTIN_TOOLS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_max_steps() -> usize {
    8
}
fn default_call_timeout_secs() -> u64 {
    30
}
fn default_languages() -> Vec<SandboxLanguage> {
    vec![SandboxLanguage::Python]
}
fn default_cpu_secs() -> u64 {
    5
}
fn default_wall_secs() -> u64 {
    10
}
// Python alone maps about 30 MiB; 256 MiB leaves room for real work.
fn default_memory_mb() -> u64 {
    256
}
fn default_max_processes() -> u64 {
    32
}
fn default_max_output_bytes() -> usize {
    64 * 1024
}
fn default_max_file_mb() -> u64 {
    16
}
fn default_max_code_bytes() -> usize {
    64 * 1024
}
// A long manual page is a few hundred KiB of HTML.
fn default_fetch_max_bytes() -> usize {
    2 * 1024 * 1024
}
fn default_fetch_timeout_secs() -> u64 {
    10
}
// About 5,000 tokens: room for a page, not a book.
fn default_fetch_max_chars() -> usize {
    20_000
}
// Two runs at once on a small machine; a run is mostly CPU.
fn default_concurrency() -> usize {
    2
}
