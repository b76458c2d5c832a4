//! The code assistant end to end: the real gateway process asks a code
//! model (the stand-in upstream's OpenAI face, scripted with
//! `x-standin-replies` to answer each attempt differently), runs the
//! checks in its sandbox, and asks for repairs; and the same flow with the
//! local model as the code model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    Server, audit_record, client, decision_steps, local_model_config, post_chat, recording_standin,
    standin_model, stream_chunks, streamed_text, upstream_prompt_tokens,
};
use serde_json::{Value, json};

const MASTER: &str = "sy-master-code-assistant-0123456789";

const WRONG: &str = "```python\ndef add(a, b):\n    return a - b\n```\n\nIt adds two numbers.";
const FIXED: &str =
    "```python\ndef add(a, b):\n    return a + b\n```\n\nThe sign was wrong; it adds now.";
const BROKEN: &str = "```python\ndef add(a, b)\n    return a + b\n```";

/// A user message that gives a test.
const ASK: &str = "Write add(a, b).\n\n```python\nassert add(2, 3) == 5\n```";

/// A stand-in model answering its attempts with `replies` in turn; $1 a
/// token in and out, so costs are token counts.
fn coder(name: &str, upstream: &switchyard_standin::RunningStandin, replies: &[&str]) -> String {
    standin_model(
        name,
        upstream,
        &format!(
            "headers = {{ \"x-standin-replies\" = '{}' }}\npricing = {{ input = 1000000.0, output = 1000000.0 }}",
            json!(replies)
        ),
    )
}

fn config(upstream: &switchyard_standin::RunningStandin) -> String {
    [
        coder("fixer", upstream, &[WRONG, FIXED]),
        coder("stubborn", upstream, &[BROKEN, WRONG]),
        standin_model(
            "explainer",
            upstream,
            "headers = { \"x-standin-reply\" = \"It returns the sum of its two arguments.\" }\npricing = { input = 1000000.0, output = 1000000.0 }",
        ),
        format!(
            "[governance]\nmaster_key = \"{MASTER}\"\nledger_flush_ms = 50\n\
             [code_assistants.coding]\nmodel = \"fixer\"\n\
             [code_assistants.explained]\nmodel = \"fixer\"\nexplain_model = \"explainer\"\n\
             [code_assistants.hopeless]\nmodel = \"stubborn\"\nmax_repairs = 1\n"
        ),
    ]
    .concat()
}

async fn post(server: &Server, body: &Value, request_id: &str) -> reqwest::Response {
    post_chat(server, MASTER, body, request_id).await
}

/// The lint check's line where pyflakes is, or is not, installed for the
/// python3 the sandbox runs (the system's).
fn lint_line() -> &'static str {
    let installed = std::process::Command::new("python3")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["-c", "import pyflakes"])
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        "- lint: passed"
    } else {
        "- lint: skipped (pyflakes is not installed)"
    }
}

#[tokio::test]
async fn a_failing_function_is_repaired_and_the_answer_carries_the_fixed_code_and_passing_checks() {
    let upstream = recording_standin().await;
    let server = Server::start(&config(&upstream));
    let body = json!({"model": "coding", "messages": [{"role": "user", "content": ASK}]});
    let response = post(&server, &body, "repaired").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("return a + b"), "{answer}");
    assert!(!answer.contains("return a - b"), "{answer}");
    assert!(answer.contains("the code was repaired once"), "{answer}");
    assert!(answer.contains("- syntax: passed"), "{answer}");
    assert!(
        answer.contains("- tests: passed (the asserts passed)"),
        "{answer}"
    );
    assert!(answer.contains(lint_line()), "{answer}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // The second attempt was asked with the first and what its test said.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    let first = sent[0].body["messages"].as_array().unwrap();
    assert_eq!(first[0]["role"], "system");
    assert!(first[0]["content"].as_str().unwrap().contains("```python"));
    let history = sent[1].body["messages"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2]["role"], "assistant");
    assert!(history[2]["content"].as_str().unwrap().contains("a - b"));
    let repair = history[3]["content"].as_str().unwrap();
    assert!(repair.contains("tests failed"), "{repair}");
    assert!(repair.contains("AssertionError"), "{repair}");

    // Each check of each attempt is audited; both attempts are billed.
    let record = audit_record(&server, MASTER, "repaired").await;
    let checks = decision_steps(&record, "check");
    let tests: Vec<(u64, &str)> = checks
        .iter()
        .filter(|c| c["check"] == "tests")
        .map(|c| {
            (
                c["attempt"].as_u64().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tests, [(0, "failed"), (1, "passed")], "{record}");
    assert_eq!(
        decision_steps(&record, "tool_step")[0]["deployment"],
        "fixer"
    );
    let usage = &body["usage"];
    let billed = decision_steps(&record, "usage")[0]["cost_usd"]
        .as_f64()
        .unwrap();
    assert_eq!(billed, usage["total_tokens"].as_f64().unwrap(), "{record}");
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        upstream_prompt_tokens(&upstream)
    );

    // The assistant is listed as a model.
    let models: Value = client()
        .get(format!("{}/models", server.v1()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "coding"),
        "{models}"
    );
}

#[tokio::test]
async fn a_streamed_answer_shows_the_checked_code_its_explanation_and_the_checks() {
    let upstream = recording_standin().await;
    let server = Server::start(&config(&upstream));
    let body = json!({
        "model": "explained",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": ASK}],
    });
    let response = post(&server, &body, "explained").await;
    assert_eq!(response.status(), 200);
    let chunks = stream_chunks(&response.text().await.unwrap());
    let text = streamed_text(&chunks);
    assert!(
        text.starts_with("```python\ndef add(a, b):\n    return a + b\n```"),
        "{text}"
    );
    assert!(
        text.contains("It returns the sum of its two arguments."),
        "{text}"
    );
    assert!(text.contains("- tests: passed"), "{text}");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|choice| &choice["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("stop")]);

    // The explainer saw the checked code and its results.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].body["model"], "explainer");
    let asked = sent[2].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        asked.contains("return a + b") && asked.contains("- tests: passed"),
        "{asked}"
    );

    // One usage for the three calls, and the bill is theirs.
    let usage = chunks.iter().rev().find(|c| !c["usage"].is_null()).unwrap();
    let total = usage["usage"]["total_tokens"].as_f64().unwrap();
    let record = audit_record(&server, MASTER, "explained").await;
    assert_eq!(decision_steps(&record, "tool_step").len(), 3, "{record}");
    let billed = decision_steps(&record, "usage")[0]["cost_usd"]
        .as_f64()
        .unwrap();
    assert_eq!(billed, total, "{record}");
}

#[tokio::test]
async fn code_that_stays_broken_is_answered_with_its_failed_checks_after_the_last_repair() {
    let upstream = recording_standin().await;
    let server = Server::start(&config(&upstream));
    let body = json!({"model": "hopeless", "messages": [{"role": "user", "content": ASK}]});
    let response = post(&server, &body, "hopeless").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("- tests: failed"), "{answer}");
    assert!(answer.contains("AssertionError"), "{answer}");

    // The first attempt did not compile: its tests were skipped, and the
    // model was told where the syntax error was.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    let repair = sent[1].body["messages"][3]["content"].as_str().unwrap();
    assert!(
        repair.contains("syntax failed: solution.py, line 1"),
        "{repair}"
    );
    let record = audit_record(&server, MASTER, "hopeless").await;
    let first: Vec<(String, String)> = decision_steps(&record, "check")
        .iter()
        .filter(|c| c["attempt"] == 0)
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(first[0], ("syntax".into(), "failed".into()));
    assert_eq!(first[1], ("tests".into(), "skipped".into()));
}

#[tokio::test]
async fn the_responses_api_runs_the_code_assistant_on_the_turns_input() {
    let upstream = recording_standin().await;
    let server = Server::start(&config(&upstream));
    let response: Value = client()
        .post(format!("{}/responses", server.v1()))
        .bearer_auth(MASTER)
        .json(&json!({"model": "coding", "input": ASK}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["status"], "completed", "{response}");
    let text = response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("return a + b"), "{text}");
    assert!(
        text.contains("- tests: passed (the asserts passed)"),
        "{text}"
    );
    // The code model was told how to answer, with the turn's question.
    let first = upstream.requests()[0].body["messages"].clone();
    assert_eq!(first[0]["role"], "system", "{first}");
    assert!(first[0]["content"].as_str().unwrap().contains("```python"));
}

#[tokio::test]
async fn with_the_local_model_as_the_code_model_the_flow_completes() {
    // The small default model's code is not asserted, only that the
    // assistant checks what it wrote and answers.
    let server = Server::start(&format!(
        "{}[governance]\nmaster_key = \"{MASTER}\"\nledger_flush_ms = 50\n\
         [code_assistants.local-coder]\nmodel = \"smollm2-135m-instruct\"\nmax_repairs = 1\n",
        local_model_config("")
    ));
    let body = json!({
        "model": "local-coder",
        "messages": [{"role": "user", "content": "Write a Python function that returns the square of a number."}],
        "temperature": 0,
        "max_tokens": 120,
    });
    let response = post(&server, &body, "local-coder").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("**Checks**"), "{answer}");
    let record = audit_record(&server, MASTER, "local-coder").await;
    assert!(decision_steps(&record, "check").len() >= 3, "{record}");
}
