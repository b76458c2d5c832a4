//! End-to-end harness: runs the real `switchyard` binary on an ephemeral
//! port with a given configuration, and reads its logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `switchyard serve`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    logs: Arc<Mutex<Vec<String>>>,
    _config: Option<tempfile::NamedTempFile>,
    _data: tempfile::TempDir,
}

/// A Python with the official SDKs: `.venv` (made by `make test`) or
/// `SWITCHYARD_TEST_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.is_file(),
        "no Python with the openai package: run `make test` (it creates .venv) or set SWITCHYARD_TEST_PYTHON"
    );
    venv
}

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// The default local model, pulled; the test fails with instructions if not.
pub fn default_model_path() -> PathBuf {
    let store = switchyard_models_path();
    assert!(
        store.is_file(),
        "the default model is not pulled ({}): run `make models` or `switchyard models pull` first",
        store.display()
    );
    store
}

fn switchyard_models_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache
        .join("switchyard/models/smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A config entry for the local embedding model (pulled by `make models`).
pub fn local_embedding_config() -> String {
    let cache = default_model_path()
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("all-minilm-l6-v2"))
        .unwrap();
    assert!(
        cache.join("model.safetensors").is_file(),
        "all-minilm-l6-v2 is not pulled: run `make models` or `switchyard models pull` first"
    );
    format!(
        "[models.all-minilm-l6-v2]\nbackend = \"local-embedding\"\npath = \"{}\"\n",
        cache.display()
    )
}

/// A config with the default local model, small enough for tests.
pub fn local_model_config(extra: &str) -> String {
    format!(
        "[models.smollm2-135m-instruct]\nbackend = \"local\"\npath = \"{}\"\ncontext_length = 1024\nparallel = 2\n{extra}\n",
        default_model_path().display()
    )
}

impl Server {
    /// Starts the server with `config` (TOML) and waits until `/readyz` is 200.
    pub fn start(config: &str) -> Server {
        Self::start_with_env(config, &[])
    }

    /// Starts the server on a config file the test keeps (to rewrite it).
    pub fn start_file(path: &std::path::Path) -> Server {
        Self::spawn(Some(path), &[], None)
    }

    /// Starts the server with no configuration file: the embedded
    /// defaults a newcomer gets from `make run`.
    pub fn start_defaults() -> Server {
        Self::spawn(None, &[], None)
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Server {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let path = file.path().to_path_buf();
        Self::spawn(Some(&path), env, Some(file))
    }

    fn spawn(
        path: Option<&std::path::Path>,
        env: &[(&str, &str)],
        file: Option<tempfile::NamedTempFile>,
    ) -> Server {
        // Each server keeps its database in its own folder unless the test
        // says where.
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary());
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        match path {
            Some(path) => command.arg("--config").arg(path),
            None => command.env_remove("SWITCHYARD_CONFIG"),
        };
        let mut child = command
            .env("SWITCHYARD_DATA_DIR", data.path())
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                "info,switchyard_engine=debug,llama-cpp-2=warn,llama_cpp_2=error",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        let url = match first.trim().strip_prefix("switchyard listening on ") {
            Some(url) => url.to_owned(),
            None => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "server did not start; stdout {first:?}; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let server = Server {
            child,
            url,
            logs,
            _config: file,
            _data: data,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Over HTTPS (which the raw socket does not speak) the server's
            // own line says when every model is loaded.
            let ready = if self.url.starts_with("https://") {
                self.logs().contains("all models loaded; ready")
            } else {
                self.status_of("/readyz") == Some(200)
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server never became ready; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status of a plain GET, over a raw socket so that the harness
    /// needs no async runtime.
    pub fn status_of(&self, path: &str) -> Option<u16> {
        use std::io::Read;
        let addr = self.url.strip_prefix("http://")?;
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    /// Posts `body` to `/v1/chat/completions`.
    pub async fn post_chat(&self, body: &serde_json::Value) -> reqwest::Response {
        client()
            .post(format!("{}/chat/completions", self.v1()))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn v1(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits up to `timeout` for a log line containing every one of `needles`.
    /// Async, so the test's own runtime (and its connections) keep running.
    pub async fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return Some(line.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// An HTTP client for the tests (plain HTTP to loopback).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The events of an SSE body, in order (`data:` payloads only).
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The JSON chunks of an OpenAI-style stream, after checking that it ends
/// with `[DONE]`.
pub fn stream_chunks(body: &str) -> Vec<serde_json::Value> {
    let events = sse_data(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The text of a stream's content deltas, joined.
pub fn streamed_text(chunks: &[serde_json::Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// A stand-in upstream on an ephemeral port that records the requests it
/// receives.
pub async fn recording_standin() -> switchyard_standin::RunningStandin {
    switchyard_standin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        switchyard_standin::StandinConfig {
            record: true,
            ..switchyard_standin::StandinConfig::default()
        },
    )
    .await
    .unwrap()
}

/// The `What is the capital of France?` request, greedy.
pub fn capital_request(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "temperature": 0,
        "stream": stream,
    })
}

/// `GET /metrics`, with a bearer key when given.
pub async fn scrape(server: &Server, key: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("{}/metrics", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// The value of the first sample of `name` whose labels include all of
/// `labels`.
pub fn metric_sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' '])
                .next()
                .is_some_and(|metric| metric == name)
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// A `[models.NAME]` table for an OpenAI-format stand-in upstream, whose
/// upstream model is NAME too (so recorded requests say which deployment
/// they reached), with `extra` lines appended.
pub fn standin_model(
    name: &str,
    upstream: &switchyard_standin::RunningStandin,
    extra: &str,
) -> String {
    format!(
        "[models.{name}]\nbackend = \"openai\"\nbase_url = \"{}\"\nupstream_model = \"{name}\"\n{extra}\n",
        upstream.base_url()
    )
}

/// Runs one SDK check script against `url`, failing with everything useful.
pub fn run_check(server: &Server, script: &str, url: String, passed: &str) {
    run_check_with(server, script, &[url.as_str()], passed);
}

/// [`run_check`] with the script's arguments given in full.
pub fn run_check_with(server: &Server, script: &str, args: &[&str], passed: &str) {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "SDK check failed:\nstdout: {}\nstderr: {}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(passed));
}

/// The audit record of `request_id`, read with the admin key `key`, once
/// the ledger has written it (at most 10 s).
pub async fn audit_record(server: &Server, key: &str, request_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer: serde_json::Value = client()
            .get(format!(
                "{}/admin/audit?request_id={request_id}",
                server.url
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(record) = answer["data"].get(0) {
            return record.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The steps of an audit record's decision path named `name`, in order.
pub fn decision_steps(record: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    record["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["step"] == name)
        .cloned()
        .collect()
}

/// The prompt tokens the stand-in reported over every request it got: it
/// counts the words of every message as tokens.
pub fn upstream_prompt_tokens(upstream: &switchyard_standin::RunningStandin) -> u64 {
    let mut words = 0;
    for request in upstream.requests() {
        for message in request.body["messages"].as_array().unwrap() {
            let text = match &message["content"] {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            };
            words += text.split_whitespace().count() as u64;
        }
    }
    words
}

/// A chat completion sent with `key` under `request_id` (to read its audit
/// record after).
pub async fn post_chat(
    server: &Server,
    key: &str,
    body: &serde_json::Value,
    request_id: &str,
) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", server.v1()))
        .header("x-request-id", request_id)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}
