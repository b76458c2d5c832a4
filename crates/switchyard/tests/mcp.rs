//! MCP servers as tool sources, end to end: the gateway process starts a
//! real MCP server (the official `mcp` Python package, a different
//! implementation from the gateway's `rmcp` client) as a command over stdio
//! and reaches another over streamable HTTP; the stand-in upstream is
//! scripted to call their tools. A server that crashes is restarted, and
//! its tools answer with an error meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, client, python, recording_standin, standin_model};
use serde_json::{Value, json};

fn server_script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/mcp_server.py")
        .display()
        .to_string()
}

/// The test MCP server over streamable HTTP, killed when dropped.
struct HttpMcp(Child, u16);

impl HttpMcp {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([server_script(), "http".into(), port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the MCP server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child, port)
    }
}

impl Drop for HttpMcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn calling(
    name: &str,
    upstream: &switchyard_standin::RunningStandin,
    tool: &str,
    arguments: Value,
) -> String {
    standin_model(
        name,
        upstream,
        &format!(
            "headers = {{ \"x-standin-tool-calls\" = '{}' }}",
            json!([{"name": tool, "arguments": arguments}])
        ),
    )
}

fn config(upstream: &switchyard_standin::RunningStandin, http: &HttpMcp) -> String {
    [
        calling("adds", upstream, "calc__add", json!({"a": 2, "b": 40})),
        calling("asks-pid", upstream, "calc__whoami", json!({})),
        calling("crashes", upstream, "calc__crash", json!({})),
        calling("adds-narrowly", upstream, "narrow__add", json!({"a": 1, "b": 1})),
        calling("grows", upstream, "calc__grow", json!({})),
        calling("triples", upstream, "calc__triple", json!({"n": 14})),
        calling(
            "adds-over-http",
            upstream,
            "web__add",
            json!({"a": 20, "b": 22}),
        ),
        format!(
            "[tools]\ncall_timeout_secs = 10\n\
             [tools.mcp.calc]\ncommand = [{:?}, {:?}, \"stdio\"]\n\
             [tools.mcp.web]\nurl = \"http://127.0.0.1:{}/mcp\"\n\
             [tools.mcp.narrow]\nurl = \"http://127.0.0.1:{}/mcp\"\nallow_tools = [\"add\"]\n\
             [tools.mcp.acme-only]\nurl = \"http://127.0.0.1:{}/mcp\"\nallow_tenants = [\"acme\"]\n",
            python().display().to_string(),
            server_script(),
            http.1,
            http.1,
            http.1
        ),
    ]
    .concat()
}

/// Asks `model` with the MCP tools of `server`; the answer's text.
async fn ask(gateway: &Server, model: &str, server: &str) -> (u16, String) {
    ask_with(gateway, None, model, server).await
}

/// As [`ask`], presenting `key` when given.
async fn ask_with(gateway: &Server, key: Option<&str>, model: &str, server: &str) -> (u16, String) {
    let mut request = client()
        .post(format!("{}/chat/completions", gateway.v1()))
        .json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": "go"}],
            "tools": [{"type": "switchyard", "name": server}],
        }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    (status, text)
}

/// Asks until the answer is served and `done` holds, or fails after 30 s.
async fn ask_until(
    gateway: &Server,
    model: &str,
    server: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = ask(gateway, model, server).await;
        if status == 200 && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never: {status} {text}\n{}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn mcp_tools_over_stdio_and_http_are_offered_called_and_a_crashed_server_restarts() {
    let upstream = recording_standin().await;
    let http = HttpMcp::start();
    let gateway = Server::start(&config(&upstream, &http));

    // Over stdio: listed (the model is offered every tool under the
    // server's prefix) and called.
    let answer = ask_until(&gateway, "adds", "calc", |text| {
        text.starts_with("tool said:")
    })
    .await;
    assert_eq!(answer, "tool said: 42");
    let offered: Vec<String> = upstream.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(offered.contains(&"calc__add".to_owned()), "{offered:?}");
    assert!(offered.contains(&"calc__whoami".to_owned()), "{offered:?}");
    let schema = &upstream.requests()[0].body["tools"][0]["function"]["parameters"];
    assert_eq!(schema["type"], "object", "{schema}");

    // Over streamable HTTP.
    let answer = ask_until(&gateway, "adds-over-http", "web", |t| {
        t.starts_with("tool said:")
    })
    .await;
    assert_eq!(answer, "tool said: 42");

    // A crash: the call that killed it fails, the model is told, and the
    // answer still arrives; then the supervisor starts a new process.
    let first_pid = ask_until(&gateway, "asks-pid", "calc", |t| {
        t.starts_with("tool said:")
    })
    .await;
    let (status, crashed) = ask(&gateway, "crashes", "calc").await;
    assert_eq!(status, 200);
    assert!(crashed.contains("error"), "{crashed}");
    let second_pid = ask_until(&gateway, "asks-pid", "calc", |text| {
        text.starts_with("tool said: ") && !text.contains("error")
    })
    .await;
    assert_ne!(first_pid, second_pid, "a new server process answers");
    assert!(
        gateway
            .logs()
            .contains("MCP server session ended; restarting")
    );

    // A server that says its tools changed is listed again: a tool it
    // added is offered and called.
    let (status, text) = ask(&gateway, "triples", "calc__triple").await;
    assert_eq!(status, 400, "no such tool yet: {text}");
    let grown = ask_until(&gateway, "grows", "calc", |t| t.starts_with("tool said:")).await;
    assert_eq!(grown, "tool said: grown");
    let tripled = ask_until(&gateway, "triples", "calc__triple", |t| {
        t.starts_with("tool said:")
    })
    .await;
    assert_eq!(tripled, "tool said: 42");
}

#[tokio::test]
async fn allow_lists_narrow_a_servers_tools_and_the_tenants_that_see_it() {
    let upstream = recording_standin().await;
    let http = HttpMcp::start();
    let gateway = Server::start(&config(&upstream, &http));
    let answer = ask_until(&gateway, "adds-narrowly", "narrow", |t| {
        t.starts_with("tool said:")
    })
    .await;
    assert_eq!(answer, "tool said: 2");
    let offered: Vec<String> = upstream.requests().last().unwrap().body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["narrow__add"]);
    // Keyless callers are the default tenant, which acme-only does not
    // admit: refused as if the server did not exist.
    let (status, text) = ask(&gateway, "adds-narrowly", "acme-only").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("there is no tool named"), "{text}");
}

#[tokio::test]
async fn an_unknown_mcp_tool_is_a_clear_400() {
    let upstream = recording_standin().await;
    let http = HttpMcp::start();
    let gateway = Server::start(&config(&upstream, &http));
    // Once the server has listed its tools, a tool it lacks is refused.
    ask_until(&gateway, "adds", "calc", |t| t.starts_with("tool said:")).await;
    let (status, text) = ask(&gateway, "adds", "calc__teleport").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no tool \\\"teleport\\\""), "{text}");
}

const MASTER: &str = "sy-master-mcp-keys-0123456789";

async fn admin_post(gateway: &Server, path: &str, body: Value) -> Value {
    let response = client()
        .post(format!("{}{path}", gateway.url))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_server_with_allow_keys_is_offered_to_those_keys_alone() {
    let upstream = recording_standin().await;
    let http = HttpMcp::start();
    let config = |allowed: &str| {
        format!(
            "{}[governance]\nmaster_key = \"{MASTER}\"\n\
             [tools.mcp.keyed]\nurl = \"http://127.0.0.1:{}/mcp\"\nallow_keys = [\"{allowed}\"]\n",
            calling(
                "adds-keyed",
                &upstream,
                "keyed__add",
                json!({"a": 2, "b": 3})
            ),
            http.1
        )
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config("key_nobody")).unwrap();
    let gateway = Server::start_file(file.path());
    let tenant = admin_post(&gateway, "/admin/tenants", json!({"name": "acme"})).await;
    let mut keys = Vec::new();
    for name in ["allowed", "other"] {
        let key = admin_post(
            &gateway,
            "/admin/keys",
            json!({"tenant_id": tenant["id"], "name": name}),
        )
        .await;
        keys.push((
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        ));
    }

    // The key ids are known once the keys exist: the configuration names
    // one, and is reloaded.
    let reloads = gateway.logs().matches("configuration reloaded").count();
    std::fs::write(file.path(), config(&keys[0].0)).unwrap();
    common::signal(gateway.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reloaded = gateway.logs().matches("configuration reloaded").count() > reloads;
        let (status, text) = ask_with(&gateway, Some(&keys[0].1), "adds-keyed", "keyed").await;
        if reloaded && status == 200 {
            assert!(text.contains('5'), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never: {status} {text}\n{}",
            gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another key of the same tenant, and the master key, do not see it.
    for key in [keys[1].1.as_str(), MASTER] {
        let (status, text) = ask_with(&gateway, Some(key), "adds-keyed", "keyed").await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("there is no tool named"), "{text}");
    }
}
