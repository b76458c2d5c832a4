//! End to end through the HTTP API with the embedded engine and the real
//! default model, SmolLM2-135M-Instruct.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    Server, capital_request, client, local_embedding_config, local_model_config, metric_sample,
    scrape, sse_data, stream_chunks,
};
use serde_json::{Value, json};

#[tokio::test]
async fn greedy_capital_answer_and_stream_match_and_usage_adds_up() {
    let server = Server::start(&local_model_config(""));
    let http = client();
    let url = format!("{}/chat/completions", server.v1());

    let whole: Value = http
        .post(&url)
        .json(&capital_request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "smollm2-135m-instruct");
    assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let usage = &whole["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 10 && completion > 0);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);

    let mut streamed = capital_request(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = http.post(&url).json(&streamed).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = response.text().await.unwrap();
    let chunks = stream_chunks(&body);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks.iter().all(|c| c["id"] == id));
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text_streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text_streamed, text);
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(content_chunks >= 2, "expected one chunk per token or so");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    // The same prompt again: all of it but the token whose logits start
    // the answer comes from the first request's KV state.
    let streamed_usage = &usage_chunk["usage"];
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(streamed_usage[field], usage[field], "{field}");
    }
    assert!(usage["prompt_tokens_details"].is_null());
    assert_eq!(
        streamed_usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(prompt - 1)
    );

    // The engine's counters saw both requests; nothing is left queued.
    let metrics = scrape(&server, None).await.text().await.unwrap();
    let engine = |name: &str| {
        metric_sample(&metrics, name, &["deployment=\"smollm2-135m-instruct\""])
            .unwrap_or_else(|| panic!("no {name} in {metrics}")) as u64
    };
    let generated = engine("switchyard_engine_generated_tokens_total");
    // Each sequence also samples the token that ends it.
    assert!(
        (2 * completion..=2 * (completion + 1)).contains(&generated),
        "{generated} tokens generated for two answers of {completion}"
    );
    let evaluated = engine("switchyard_engine_prompt_tokens_total");
    assert_eq!(evaluated, prompt + 1, "prompt tokens evaluated");
    assert_eq!(
        engine("switchyard_engine_cached_prompt_tokens_total"),
        prompt - 1
    );
    assert_eq!(engine("switchyard_engine_queue_depth"), 0);
    assert_eq!(engine("switchyard_engine_in_flight"), 0);
}

#[tokio::test]
async fn max_tokens_five_ends_with_length() {
    let server = Server::start(&local_model_config(""));
    let mut request = capital_request(false);
    request["messages"][0]["content"] = json!("Write a long poem about the sea.");
    request["max_tokens"] = json!(5);
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 5);

    // `max_completion_tokens` is the current name of the same limit.
    request["max_tokens"] = Value::Null;
    request["max_completion_tokens"] = json!(3);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let body = server.post_chat(&request).await.text().await.unwrap();
    let events = sse_data(&body);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let finish: Value = serde_json::from_str(&events[events.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn client_disconnect_mid_stream_stops_generation() {
    let server = Server::start(&local_model_config(""));
    let mut request = capital_request(true);
    request["messages"][0]["content"] =
        json!("Write a very long story about a dragon and a knight.");
    request["max_tokens"] = json!(900);
    request["temperature"] = json!(0.8);
    let mut response = server.post_chat(&request).await;
    // Read a few chunks, then hang up.
    for _ in 0..3 {
        response.chunk().await.unwrap();
    }
    drop(response);
    let line = server
        .wait_for_log(&["generation cancelled"], Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no cancellation logged:\n{}", server.logs()));
    let generated: u32 = line
        .split("completion_tokens=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(generated < 900, "the engine ran to the end: {line}");
    assert!(
        !server.logs().contains("finish_reason=\"length\""),
        "the abandoned request was generated to its limit"
    );
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_a_400() {
    let server = Server::start(
        &local_model_config("").replace("context_length = 1024", "context_length = 64"),
    );
    let mut request = capital_request(false);
    request["messages"][0]["content"] = json!("word ".repeat(300));
    let response = server.post_chat(&request).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["param"], "messages");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context window is 64 tokens")
    );
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let config = local_model_config("queue = 1").replace("parallel = 2", "parallel = 1");
    let server = Server::start(&config);
    let http = client();
    let url = format!("{}/chat/completions", server.v1());
    let mut long = capital_request(true);
    long["messages"][0]["content"] = json!("Write a very long story about a dragon.");
    long["max_tokens"] = json!(600);
    long["temperature"] = json!(0.8);
    // One request generating, one waiting: the next one has no room.
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let response = http.post(&url).json(&long).send().await.unwrap();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    let refused = refused.expect("four requests fit in one slot and a one-place queue");
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "overloaded");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish() {
    // A grace period no loaded CI machine runs out of: the drain is under
    // test here, not the deadline.
    let config = format!("shutdown_grace_secs = 300\n{}", local_model_config(""));
    let mut server = Server::start(&config);
    let mut request = capital_request(true);
    request["max_tokens"] = json!(40);
    request["messages"][0]["content"] = json!("Count from one to twenty in words.");
    let mut response = server.post_chat(&request).await;
    let first = response.chunk().await.unwrap().unwrap();
    common::signal(server.pid(), "TERM");
    let mut body = String::from_utf8_lossy(&first).into_owned();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break,
            // The server's own account says why the stream was cut.
            Err(error) => {
                let exit = server.wait_exit(Duration::from_secs(20));
                panic!(
                    "stream cut after {body:?}: {error}; exit {exit:?}\nserver log:\n{}",
                    server.logs()
                )
            }
        }
    }
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.iter().any(|e| e.contains("\"finish_reason\":\"")));
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(server.logs().contains("shutting down"));
}

#[tokio::test]
async fn local_embeddings_over_http() {
    let server = Server::start(&local_embedding_config());
    let http = client();
    let answer: Value = http
        .post(format!("{}/embeddings", server.v1()))
        .json(&json!({"model": "all-minilm-l6-v2", "input": ["A man is eating food.", "A man is eating a piece of bread."]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a: Vec<f64> = serde_json::from_value(answer["data"][0]["embedding"].clone()).unwrap();
    let b: Vec<f64> = serde_json::from_value(answer["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(a.len(), 384);
    let cosine: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((cosine - 0.7553).abs() < 0.01, "{cosine}");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() >= 14);

    // An embedding model does not chat, and says where to go instead.
    let mut chat = capital_request(false);
    chat["model"] = json!("all-minilm-l6-v2");
    let refused = server.post_chat(&chat).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_supported");
}

#[tokio::test]
async fn local_model_calls_tools_in_openai_shape_and_refuses_images_with_400() {
    let server = Server::start(&local_model_config(""));
    let mut with_tools = capital_request(false);
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 40}},
                       "required": ["query"]}}}]);
    with_tools["tool_choice"] = json!("required");
    let response = server.post_chat(&with_tools).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["query"].is_string(), "{arguments}");

    let with_image = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let response = server.post_chat(&with_image).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "messages[0].content");
}

/// Two names for the default GGUF, neither preloaded, under `[engine]`
/// `max_memory`, with `extra` lines for the second.
fn two_local_models(max_memory: &str, extra: &str) -> String {
    let path = common::default_model_path();
    let model = |name: &str, extra: &str| {
        format!(
            "[models.{name}]\nbackend = \"local\"\npath = \"{}\"\ncontext_length = 512\nparallel = 1\n{extra}\n",
            path.display()
        )
    };
    format!(
        "[engine]\nmax_memory = \"{max_memory}\"\n[governance]\nmaster_key = \"{MASTER}\"\n{}{}",
        model("small-a", ""),
        model("small-b", extra)
    )
}

const MASTER: &str = "sk-master-local-models";

/// Resident and peak memory of a process, in bytes (`/proc/PID/status`).
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn listed_status(server: &Server, model: &str) -> Value {
    let listing: Value = client()
        .get(format!("{}/models", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == model)
        .cloned()
        .unwrap()
}

async fn ask(server: &Server, model: &str) -> Value {
    let mut request = capital_request(false);
    request["model"] = json!(model);
    let response = server.post_chat(&request).await;
    assert_eq!(response.status(), 200, "{model}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn two_local_models_under_a_budget_for_one_alternate_and_memory_stays_bounded() {
    const BUDGET: u64 = 300 * 1000 * 1000;
    let server = Server::start(&two_local_models("300 MB", ""));
    // Neither preloads: both load on first use.
    assert_eq!(
        listed_status(&server, "small-a").await["status"],
        "unloaded"
    );
    let ready: Value = client()
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["local_models"]["small-b"], "unloaded");
    let (baseline, _) = memory_of(server.pid());

    for turn in 0..6 {
        let model = if turn % 2 == 0 { "small-a" } else { "small-b" };
        let answer = ask(&server, model).await;
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.contains("Paris"), "turn {turn}: {text:?}");
        let status = listed_status(&server, model).await;
        assert_eq!(status["status"], "loaded");
        let footprint = status["memory_bytes"].as_u64().unwrap();
        // The test means something only if two models do not fit.
        assert!(2 * footprint > BUDGET && footprint <= BUDGET, "{footprint}");
        let other = if model == "small-a" {
            "small-b"
        } else {
            "small-a"
        };
        assert_ne!(listed_status(&server, other).await["status"], "loaded");
    }
    // Peak resident memory: what the process had before any model, plus
    // the budget, plus 64 MiB for llama.cpp's vocabulary read while a
    // footprint is estimated and allocator slack.
    let (_, peak) = memory_of(server.pid());
    assert!(
        peak <= baseline + BUDGET + 64 * 1024 * 1024,
        "peak {peak} over baseline {baseline} + budget"
    );
    let text = scrape(&server, Some(MASTER)).await.text().await.unwrap();
    let count = |name: &str, model: &str, extra: &[&str]| {
        let label = format!("deployment=\"{model}\"");
        let mut labels = vec![label.as_str()];
        labels.extend_from_slice(extra);
        metric_sample(&text, name, &labels).unwrap_or(0.0)
    };
    let loads = count("switchyard_engine_loads_total", "small-a", &[])
        + count("switchyard_engine_loads_total", "small-b", &[]);
    assert_eq!(loads, 6.0);
    let memory = ["reason=\"memory\""];
    let unloads = count("switchyard_engine_unloads_total", "small-a", &memory)
        + count("switchyard_engine_unloads_total", "small-b", &memory);
    assert_eq!(unloads, 5.0);
    assert_eq!(count("switchyard_engine_model_loaded", "small-b", &[]), 1.0);
    assert_eq!(count("switchyard_engine_model_loaded", "small-a", &[]), 0.0);
}

#[tokio::test]
async fn the_master_key_loads_and_unloads_local_models_and_keep_alive_unloads_idle_ones() {
    let server = Server::start(&two_local_models("4 GiB", "keep_alive = 0"));
    let http = client();
    let admin = |path: &str| format!("{}/admin/models{path}", server.url);

    let loaded: Value = http
        .post(admin("/load"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "small-a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(loaded["status"], "loaded", "{loaded}");
    assert!(loaded["memory_bytes"].as_u64().unwrap() > 90_000_000);
    let listing: Value = http
        .get(admin(""))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small-a", "small-b"]);

    let unloaded: Value = http
        .post(admin("/unload"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "small-a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unloaded["status"], "unloaded");
    assert_eq!(unloaded["unloads"]["admin"], 1);

    // keep_alive = 0: a model is unloaded as soon as its request ends, and
    // the next request loads it again.
    ask(&server, "small-b").await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = listed_status(&server, "small-b").await;
        if status["status"] == "unloaded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "unloaded", "{status}");
    ask(&server, "small-b").await;

    // Refusals: no key, a wrong model, a model that is not local.
    let no_key = http
        .post(admin("/load"))
        .json(&json!({"model": "small-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let unknown = http
        .post(admin("/load"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
}
