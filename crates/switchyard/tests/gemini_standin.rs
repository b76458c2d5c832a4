//! The `gemini` adapter against the stand-in upstream's Gemini face
//! (`switchyard-standin`, which speaks the documented `generateContent`
//! wire format): text, streaming, tools, images, safety, errors, embeddings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, client, recording_standin, sse_data, stream_chunks, streamed_text};
use serde_json::{Value, json};
use switchyard_standin::RunningStandin;

fn gemini(name: &str, upstream: &RunningStandin, extra: &str) -> String {
    format!(
        "[models.{name}]\nbackend = \"gemini\"\nbase_url = \"{}/v1beta\"\napi_key = \"g-key\"\nupstream_model = \"gemini-test\"\n{extra}\n",
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
        "max_tokens": 40,
        "temperature": 0.3,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

fn whole(mut request: Value) -> Value {
    request.as_object_mut().unwrap().remove("stream_options");
    request
}

#[tokio::test]
async fn gemini_whole_answer_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&gemini("gem", &upstream, ""));
    let answer: Value = server
        .post_chat(&whole(chat("gem", false)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there stand in"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 6);
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    let sent = &upstream.requests()[0];
    assert_eq!(sent.uri, "/v1beta/models/gemini-test:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("g-key"));
    assert_eq!(
        sent.body["systemInstruction"]["parts"][0]["text"],
        "be terse"
    );
    assert_eq!(sent.body["contents"][0]["role"], "user");
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 40);
    assert_eq!(sent.body["generationConfig"]["temperature"], 0.3);
}

#[tokio::test]
async fn gemini_stream_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&gemini("gem", &upstream, ""));
    let body = server
        .post_chat(&chat("gem", true))
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
    assert_eq!(chunks[chunks.len() - 1]["usage"]["total_tokens"], 11);
    assert_eq!(
        upstream.requests()[0].uri,
        "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn gemini_function_calls_and_results_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&gemini("gem", &upstream, ""));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "additionalProperties": false,
                       "properties": {"query": {"type": "string"}}}}}]);
    let mut request = whole(chat("gem", false));
    request["tools"] = tools.clone();
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"query": "hello there stand in"})
    );
    let sent = &upstream.requests()[0].body;
    let declaration = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(declaration["name"], "get_weather");
    assert!(
        declaration["parameters"]
            .get("additionalProperties")
            .is_none()
    );

    // Streamed: the call arrives whole, as one tool-call chunk.
    request["stream"] = json!(true);
    let body = server.post_chat(&request).await.text().await.unwrap();
    let pieces: Vec<Value> = sse_data(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0]["function"]["name"], "get_weather");

    // The result names the function, as Gemini requires.
    let follow_up = json!({"model": "gem", "tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    ]});
    let answer: Value = server.post_chat(&follow_up).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool said: sunny"
    );
    let sent = upstream.requests().last().unwrap().body.clone();
    assert_eq!(sent["contents"][1]["role"], "model");
    assert_eq!(
        sent["contents"][1]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"id": call["id"], "name": "get_weather", "response": {"result": "sunny"}})
    );
}

#[tokio::test]
async fn gemini_images_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&gemini("gem", &upstream, ""));
    let request = json!({"model": "gem", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: look (1 image)"
    );
    assert_eq!(
        upstream.requests()[0].body["contents"][0]["parts"][1]["inlineData"],
        json!({"mimeType": "image/png", "data": "iVBORw0KGgo="})
    );
}

#[tokio::test]
async fn gemini_safety_blocks_are_content_filter_against_standin() {
    let upstream = recording_standin().await;
    let config = [
        gemini(
            "unsafe",
            &upstream,
            "headers = { \"x-standin-fault\" = \"safety\" }",
        ),
        gemini(
            "blocked",
            &upstream,
            "headers = { \"x-standin-fault\" = \"blocked-prompt\" }",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    for model in ["unsafe", "blocked"] {
        let answer: Value = server
            .post_chat(&whole(chat(model, false)))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer["choices"][0]["finish_reason"], "content_filter",
            "{model}"
        );
        let body = server
            .post_chat(&chat(model, true))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            body.contains("\"finish_reason\":\"content_filter\""),
            "{model}: {body}"
        );
        assert!(body.ends_with("data: [DONE]\n\n"), "{model}");
    }
}

#[tokio::test]
async fn gemini_errors_and_retry_info_against_standin() {
    let upstream = recording_standin().await;
    let config = [
        gemini(
            "limited",
            &upstream,
            "headers = { \"x-standin-status\" = \"429\", \"x-standin-retry-after\" = \"37\" }",
        ),
        gemini(
            "busy",
            &upstream,
            "headers = { \"x-standin-status\" = \"503\" }",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    let limited = server.post_chat(&whole(chat("limited", false))).await;
    assert_eq!(limited.status(), 429);
    // Google puts the wait in RetryInfo, not a header; it still reaches the client.
    assert_eq!(limited.headers()["retry-after"], "37");
    let busy = server.post_chat(&chat("busy", true)).await;
    assert_eq!(busy.status(), 503);
}

#[tokio::test]
async fn gemini_embeddings_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&gemini("gem-embed", &upstream, ""));
    let answer: Value = client()
        .post(format!("{}/embeddings", server.v1()))
        .json(&json!({"model": "gem-embed", "input": ["one", "two", "three"], "dimensions": 6}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 6);
    let sent = &upstream.requests()[0];
    assert_eq!(sent.uri, "/v1beta/models/gemini-test:batchEmbedContents");
    assert_eq!(
        sent.body["requests"][1]["content"]["parts"][0]["text"],
        "two"
    );
    assert_eq!(sent.body["requests"][1]["model"], "models/gemini-test");
    assert_eq!(sent.body["requests"][1]["outputDimensionality"], 6);
}
