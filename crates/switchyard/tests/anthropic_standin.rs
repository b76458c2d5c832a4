//! Anthropic both ways, against the stand-in upstream's Anthropic face
//! (`switchyard-standin`, which speaks the Messages API's documented wire
//! format): the `anthropic` adapter behind the OpenAI endpoint, and the
//! `/v1/messages` front door in front of other backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, client, recording_standin, sse_data, stream_chunks, streamed_text};
use serde_json::{Value, json};
use switchyard_standin::RunningStandin;

fn claude(name: &str, upstream: &RunningStandin, extra: &str) -> String {
    format!(
        "[models.{name}]\nbackend = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-test\"\nupstream_model = \"claude-test\"\n{extra}\n",
        upstream.root_url()
    )
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "hello there stand in"}
        ],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

#[tokio::test]
async fn anthropic_adapter_whole_answer_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&claude("claude", &upstream, "default_max_tokens = 777"));
    let mut request = chat("claude", false);
    request.as_object_mut().unwrap().remove("stream_options");
    request["temperature"] = json!(1.5);
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there stand in"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 6);
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    let sent = &upstream.requests()[0];
    assert_eq!(sent.uri, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.body["model"], "claude-test");
    assert_eq!(sent.body["system"], "be terse");
    assert_eq!(sent.body["max_tokens"], 777);
    assert_eq!(sent.body["temperature"], 1.0);
    assert_eq!(sent.body["messages"][0]["role"], "user");
}

#[tokio::test]
async fn anthropic_adapter_streams_text_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&claude(
        "claude",
        &upstream,
        "headers = { \"x-standin-token-delay-ms\" = \"20\" }",
    ));
    let body = server
        .post_chat(&chat("claude", true))
        .await
        .text()
        .await
        .unwrap();
    let chunks = stream_chunks(&body);
    let text = streamed_text(&chunks);
    assert_eq!(text, "echo: hello there stand in");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 5);
    assert_eq!(upstream.requests()[0].body["stream"], true);
}

#[tokio::test]
async fn anthropic_adapter_tool_use_whole_and_streamed_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&claude("claude", &upstream, ""));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let mut request = chat("claude", false);
    request.as_object_mut().unwrap().remove("stream_options");
    request["tools"] = tools.clone();
    request["tool_choice"] = json!("required");
    request["parallel_tool_calls"] = json!(false);
    let whole: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
    let call = whole["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"query": "hello there stand in"})
    );
    let sent = &upstream.requests()[0].body;
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["query"]["type"],
        "string"
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );

    request["stream"] = json!(true);
    let body = server.post_chat(&request).await.text().await.unwrap();
    let chunks: Vec<Value> = sse_data(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let pieces: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(pieces.len() >= 3);
    assert_eq!(pieces[0]["function"]["name"], "get_weather");
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"query\":\"hello there stand in\"}");

    // History with the call and its result becomes Anthropic's blocks.
    let follow_up = json!({
        "model": "claude",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
        ]
    });
    let answer: Value = server.post_chat(&follow_up).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool said: sunny"
    );
    let sent = upstream.requests().last().unwrap().body.clone();
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][1]["content"][0]["input"],
        json!({"query": "hello there stand in"})
    );
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], call["id"]);
}

#[tokio::test]
async fn anthropic_adapter_forwards_images_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&claude("claude", &upstream, ""));
    let request = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: look (2 images)"
    );
    let blocks = upstream.requests()[0].body["messages"][0]["content"].clone();
    assert_eq!(
        blocks[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}})
    );
    assert_eq!(
        blocks[2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
    );
}

#[tokio::test]
async fn anthropic_adapter_errors_against_standin() {
    let upstream = recording_standin().await;
    let config = [
        claude(
            "limited",
            &upstream,
            "headers = { \"x-standin-status\" = \"429\", \"x-standin-retry-after\" = \"9\" }",
        ),
        claude(
            "overloaded",
            &upstream,
            "headers = { \"x-standin-status\" = \"529\" }",
        ),
        claude(
            "refused",
            &upstream,
            "headers = { \"x-standin-status\" = \"401\" }",
        ),
        claude(
            "flaky",
            &upstream,
            "headers = { \"x-standin-fault\" = \"error-event\" }",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    let limited = server.post_chat(&chat("limited", false)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");
    let overloaded = server.post_chat(&chat("overloaded", true)).await;
    assert_eq!(overloaded.status(), 503);
    let body: Value = overloaded.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded_error");
    let refused = server.post_chat(&chat("refused", false)).await;
    assert_eq!(refused.status(), 502);

    // Overloaded after the stream started: an error event, then [DONE].
    let response = server.post_chat(&chat("flaky", true)).await;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "overloaded_error");
}

/// The front door in front of an OpenAI-compatible backend (the stand-in's
/// OpenAI face): Anthropic in, OpenAI upstream, Anthropic out.
fn front_door_config(upstream: &RunningStandin) -> String {
    format!(
        "[models.gpt]\nbackend = \"openai\"\nbase_url = \"{}\"\n",
        upstream.base_url()
    )
}

async fn post_messages(server: &Server, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", server.url))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn front_door_answers_in_anthropic_shape_from_an_openai_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&front_door_config(&upstream));
    let request = json!({
        "model": "gpt", "max_tokens": 64, "system": "be terse",
        "messages": [{"role": "user", "content": "hello there"}]
    });
    let message: Value = post_messages(&server, &request).await.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "echo: hello there"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["output_tokens"], 3);
    let sent = &upstream.requests()[0].body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be terse"})
    );
    assert_eq!(sent["max_completion_tokens"], 64);
}

#[tokio::test]
async fn front_door_streams_anthropic_events_in_order() {
    let upstream = recording_standin().await;
    let server = Server::start(&front_door_config(&upstream));
    let request = json!({
        "model": "gpt", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hello there"}]
    });
    let response = post_messages(&server, &request).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = response.text().await.unwrap();
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "ping");
    assert_eq!(names[2], "content_block_start");
    assert!(
        names[3..names.len() - 3]
            .iter()
            .all(|n| *n == "content_block_delta")
    );
    assert_eq!(
        &names[names.len() - 3..],
        &["content_block_stop", "message_delta", "message_stop"]
    );
    let payloads: Vec<Value> = sse_data(&body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = payloads
        .iter()
        .filter_map(|p| p["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "echo: hello there");
    let delta = payloads
        .iter()
        .find(|p| p["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn front_door_tool_use_round_trip_with_an_openai_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&front_door_config(&upstream));
    let tools = json!([{"name": "get_weather", "description": "Weather",
                        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]);
    let request = json!({"model": "gpt", "max_tokens": 64, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "weather in Oslo"}]});
    let message: Value = post_messages(&server, &request).await.json().await.unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    let block = &message["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"query": "weather in Oslo"}));
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tool_choice"]["function"]["name"], "get_weather");

    // Streamed: a tool_use block with input_json_delta fragments.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let body = post_messages(&server, &streamed)
        .await
        .text()
        .await
        .unwrap();
    let payloads: Vec<Value> = sse_data(&body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let start = payloads
        .iter()
        .find(|p| p["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    let json_text: String = payloads
        .iter()
        .filter_map(|p| p["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        json!({"query": "weather in Oslo"})
    );

    // The result goes back as a tool_result block and the model reads it.
    let follow_up = json!({"model": "gpt", "max_tokens": 64, "tools": tools, "messages": [
        {"role": "user", "content": "weather in Oslo"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"}]}
    ]});
    let answer: Value = post_messages(&server, &follow_up)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["content"][0]["text"], "tool said: sunny");
}

#[tokio::test]
async fn front_door_errors_are_anthropic_shaped() {
    let upstream = recording_standin().await;
    let server = Server::start(&front_door_config(&upstream));
    let cases = [
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (
            json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
    ];
    for (request, status, kind) in cases {
        let response = post_messages(&server, &request).await;
        assert_eq!(response.status().as_u16(), status, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let malformed = client()
        .post(format!("{}/v1/messages", server.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["type"], "error");
}
