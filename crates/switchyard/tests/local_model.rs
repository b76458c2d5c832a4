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
    let mut server = Server::start(&local_model_config(""));
    let mut request = capital_request(true);
    request["max_tokens"] = json!(40);
    request["messages"][0]["content"] = json!("Count from one to twenty in words.");
    let mut response = server.post_chat(&request).await;
    let first = response.chunk().await.unwrap().unwrap();
    common::signal(server.pid(), "TERM");
    let mut body = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
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
