//! The `bedrock` adapter against the stand-in upstream's Bedrock face
//! (`switchyard-standin`, which speaks the documented Converse and
//! ConverseStream wire formats, AWS event-stream framing included, and
//! checks each request's SigV4 signature).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, recording_standin, sse_data, stream_chunks, streamed_text};
use serde_json::{Value, json};
use switchyard_standin::{AWS_SECRET, RunningStandin};

fn bedrock(name: &str, upstream: &RunningStandin, secret: &str, extra: &str) -> String {
    format!(
        "[models.{name}]\nbackend = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"{}\"\n\
         access_key_id = \"AKIDSTANDIN\"\nsecret_access_key = \"{secret}\"\nsession_token = \"tok-123\"\n\
         upstream_model = \"anthropic.claude-3-haiku-20240307-v1:0\"\n{extra}\n",
        upstream.root_url()
    )
}

fn chat(model: &str, stream: bool) -> Value {
    let mut request = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "hello there stand in"}
        ],
        "stream": stream,
        "max_tokens": 40,
    });
    if stream {
        request["stream_options"] = json!({"include_usage": true});
    }
    request
}

#[tokio::test]
async fn bedrock_converse_signed_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&bedrock("br", &upstream, AWS_SECRET, ""));
    let response = server.post_chat(&chat("br", false)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there stand in"
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 6);
    let sent = &upstream.requests()[0];
    assert!(
        sent.uri
            .starts_with("/model/anthropic.claude-3-haiku-20240307-v1")
    );
    assert!(sent.uri.ends_with("/converse"));
    assert!(
        sent.header("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDSTANDIN/")
    );
    assert_eq!(sent.header("x-amz-security-token"), Some("tok-123"));
    assert_eq!(sent.body["system"], json!([{"text": "be terse"}]));
    assert_eq!(sent.body["inferenceConfig"]["maxTokens"], 40);
}

#[tokio::test]
async fn bedrock_rejects_a_bad_signature_as_an_auth_failure() {
    let upstream = recording_standin().await;
    let server = Server::start(&bedrock("br", &upstream, "the-wrong-secret", ""));
    let response = server.post_chat(&chat("br", false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{body}"
    );
}

#[tokio::test]
async fn bedrock_converse_stream_event_frames_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&bedrock("br", &upstream, AWS_SECRET, ""));
    let body = server
        .post_chat(&chat("br", true))
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
    assert!(upstream.requests()[0].uri.ends_with("/converse-stream"));
}

#[tokio::test]
async fn bedrock_tool_use_whole_and_streamed_against_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&bedrock("br", &upstream, AWS_SECRET, ""));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let mut request = chat("br", false);
    request["tools"] = tools.clone();
    request["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    let sent = &upstream.requests()[0].body;
    assert_eq!(
        sent["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "get_weather"}})
    );
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["query"]["type"],
        "string"
    );

    request["stream"] = json!(true);
    let body = server.post_chat(&request).await.text().await.unwrap();
    let pieces: Vec<Value> = sse_data(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert!(pieces.len() >= 3);
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"query\":\"hello there stand in\"}");

    let follow_up = json!({"model": "br", "tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    ]});
    let answer: Value = server.post_chat(&follow_up).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool said: sunny"
    );
}

#[tokio::test]
async fn bedrock_images_as_bytes_and_urls_refused() {
    let upstream = recording_standin().await;
    let server = Server::start(&bedrock("br", &upstream, AWS_SECRET, ""));
    let inline = json!({"model": "br", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let answer: Value = server.post_chat(&inline).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: look (1 image)"
    );
    assert_eq!(
        upstream.requests()[0].body["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
    );
    let by_url = json!({"model": "br", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let refused = server.post_chat(&by_url).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data: URL")
    );
}

#[tokio::test]
async fn bedrock_errors_and_stream_exceptions_against_standin() {
    let upstream = recording_standin().await;
    let config = [
        bedrock(
            "throttled",
            &upstream,
            AWS_SECRET,
            "headers = { \"x-standin-status\" = \"429\", \"x-standin-retry-after\" = \"4\" }",
        ),
        bedrock(
            "down",
            &upstream,
            AWS_SECRET,
            "headers = { \"x-standin-status\" = \"503\" }",
        ),
        bedrock(
            "flaky",
            &upstream,
            AWS_SECRET,
            "headers = { \"x-standin-fault\" = \"error-event\" }",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    let throttled = server.post_chat(&chat("throttled", false)).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "4");
    let body: Value = throttled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ThrottlingException");
    let down = server.post_chat(&chat("down", true)).await;
    assert_eq!(down.status(), 503);

    // A throttlingException frame after the stream started.
    let body = server
        .post_chat(&chat("flaky", true))
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "throttlingException");
    assert_eq!(error["error"]["type"], "rate_limit_error");
}
