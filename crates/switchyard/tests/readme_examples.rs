//! The README's quick-start examples, read from the README itself and run
//! against a server on the embedded defaults (no configuration file), as a
//! newcomer runs them after `make run`: the answers must be on topic and
//! bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, client, python, stream_chunks, streamed_text};
use serde_json::Value;

/// Where the README's examples expect the server.
const README_ADDRESS: &str = "http://127.0.0.1:8080";

/// A catalogue model's answer budget for requests without `max_tokens`.
const DEFAULT_ANSWER_BUDGET: u64 = 512;

/// The README's quick-start section.
fn quick_start() -> String {
    section("## Quick start")
}

/// The README's section under `heading`.
fn section(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme.find(heading).expect("the README's section");
    let rest = &readme[start + 3..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The bodies of the section's fenced blocks in `language`.
fn blocks(section: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    let mut found = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("```").unwrap();
        found.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    found
}

/// The JSON body of the README's `curl … -d '{…}'` chat example.
fn curl_body(section: &str) -> Value {
    let curl = blocks(section, "sh")
        .into_iter()
        .find(|b| b.contains("curl ") && b.contains("/v1/chat/completions"))
        .expect("a curl chat example");
    let data = curl.split("-d '").nth(1).unwrap();
    serde_json::from_str(&data[..data.find('\'').unwrap()]).unwrap()
}

fn completion_tokens(answer: &Value) -> u64 {
    answer["usage"]["completion_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn the_readmes_examples_give_sensible_bounded_answers_on_the_default_model() {
    let server = Server::start_defaults();
    let section = quick_start();
    let http = client();
    let chat_url = format!("{}/chat/completions", server.v1());

    // The curl example: no system message, no max_tokens, the catalogue's
    // sampling. Sampled, so asked a few times.
    let body = curl_body(&section);
    assert!(body.get("max_tokens").is_none() && body.get("temperature").is_none());
    for _ in 0..3 {
        let answer: Value = http
            .post(&chat_url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains("Paris"), "answer: {answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
        assert!(completion_tokens(&answer) <= 64, "{answer}");
    }

    // The Python examples, verbatim but for the address, through the
    // official SDKs.
    let python_blocks = blocks(&section, "python");
    assert_eq!(python_blocks.len(), 2, "the README's two Python examples");
    let script = python_blocks.concat().replace(README_ADDRESS, &server.url);
    let output = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the README's Python failed:\n{stdout}\n{}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "output: {stdout}");
    assert_eq!(
        lines.last().copied(),
        Some("2 vectors of 384 dimensions"),
        "{stdout}"
    );

    // The joke the streamed example asks for ends by itself, well inside
    // the default budget.
    let joke_prompt = python_blocks[0]
        .split("\"content\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert_eq!(joke_prompt, "Tell me a joke");
    for _ in 0..3 {
        let stream = http
            .post(&chat_url)
            .json(&serde_json::json!({
                "model": "smollm2-135m-instruct",
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": joke_prompt}],
            }))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let chunks = stream_chunks(&stream);
        let finish = chunks
            .iter()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str())
            .unwrap();
        let joke = streamed_text(&chunks);
        assert_eq!(finish, "stop", "the joke did not end: {joke:?}");
        assert!(joke.split_whitespace().count() >= 5, "joke: {joke:?}");
        let usage = chunks
            .iter()
            .rev()
            .find(|c| c["usage"].is_object())
            .unwrap();
        assert!(completion_tokens(usage) < DEFAULT_ANSWER_BUDGET);
    }
}

#[tokio::test]
async fn the_readmes_conversation_example_continues_on_the_default_model() {
    let server = Server::start_defaults();
    let example = blocks(&section("## Conversations"), "python");
    assert_eq!(example.len(), 1, "the README's Responses example");
    // The quick start made `client`; the example uses it as it is.
    let script = format!(
        "from openai import OpenAI\nclient = OpenAI(base_url=\"{}\", api_key=\"unused\")\n{}",
        server.v1(),
        example[0]
    );
    let output = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the README's Python failed:\n{stdout}\n{}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    // The second turn knew what "And of Italy?" continued.
    assert!(stdout.contains("Rome"), "{stdout}");
    assert!(stdout.split_whitespace().count() < 64, "{stdout}");
}
