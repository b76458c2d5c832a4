//! The `openai` adapter end to end, against the stand-in upstream
//! (`switchyard-standin`), which speaks OpenAI's chat completions wire
//! format: the real gateway process in front of it, a real HTTP client in
//! front of that.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, recording_standin, sse_data, stream_chunks, streamed_text};
use serde_json::{Value, json};

/// A model entry for the stand-in with extra lines (headers, timeouts).
fn remote_model(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[models.{name}]\nbackend = \"openai\"\nbase_url = \"{base_url}\"\nupstream_model = \"upstream-{name}\"\n{extra}\n"
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
        "temperature": 0.5,
        "max_tokens": 50,
    })
}

#[tokio::test]
async fn whole_answer_through_standin_with_credentials_and_headers() {
    let upstream = recording_standin().await;
    let config = remote_model(
        "remote",
        &upstream.base_url(),
        "api_key = \"${STANDIN_KEY}\"\nheaders = { \"x-team\" = \"search\" }",
    );
    let server = Server::start_with_env(&config, &[("STANDIN_KEY", "sk-standin-secret")]);
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .json(&chat("remote", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "remote");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there stand in"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11})
    );

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let header = |name: &str| {
        seen[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer sk-standin-secret")
    );
    assert_eq!(header("x-team").as_deref(), Some("search"));
    let body = &seen[0].body;
    assert_eq!(body["model"], "upstream-remote");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be terse"})
    );
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_completion_tokens"], 50);
    assert!(body.get("stream").is_none());
    assert!(
        !server.logs().contains("sk-standin-secret"),
        "the upstream key leaked into the logs"
    );
}

#[tokio::test]
async fn stream_through_standin_is_forwarded_chunk_by_chunk() {
    let upstream = recording_standin().await;
    let config = remote_model(
        "remote",
        &upstream.base_url(),
        "headers = { \"x-standin-token-delay-ms\" = \"150\" }",
    );
    let server = Server::start(&config);
    let mut request = chat("remote", true);
    request["stream_options"] = json!({"include_usage": true});
    let mut response = server.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let mut body = String::new();
    let mut content_arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        let text = String::from_utf8_lossy(&chunk).into_owned();
        if text.contains("\"content\":\"") && !text.contains("\"content\":\"\"") {
            content_arrivals.push(Instant::now());
        }
        body.push_str(&text);
    }
    let chunks = stream_chunks(&body);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text = streamed_text(&chunks);
    assert_eq!(text, "echo: hello there stand in");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 5);
    // Five words, 150 ms apart upstream: had the gateway buffered the
    // stream, they would all have arrived at once.
    assert!(content_arrivals.len() >= 4, "{content_arrivals:?}");
    let spread = *content_arrivals.last().unwrap() - content_arrivals[0];
    assert!(
        spread >= Duration::from_millis(300),
        "chunks arrived together ({spread:?}): the stream was buffered"
    );

    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn standin_errors_map_to_openai_errors() {
    let upstream = recording_standin().await;
    let base = upstream.base_url();
    let config = [
        remote_model(
            "limited",
            &base,
            "headers = { \"x-standin-status\" = \"429\", \"x-standin-retry-after\" = \"7\" }",
        ),
        remote_model(
            "broken",
            &base,
            "headers = { \"x-standin-status\" = \"500\" }",
        ),
        remote_model(
            "slow",
            &base,
            "headers = { \"x-standin-latency-ms\" = \"3000\" }\nfirst_byte_timeout_ms = 300",
        ),
        remote_model(
            "unreachable",
            "http://127.0.0.1:9/v1",
            "connect_timeout_ms = 1000",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    let http = client();
    let call = |model: &'static str, stream: bool| {
        let http = http.clone();
        let url = format!("{}/chat/completions", server.v1());
        async move {
            http.post(url)
                .json(&chat(model, stream))
                .send()
                .await
                .unwrap()
        }
    };

    for stream in [false, true] {
        let limited = call("limited", stream).await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "7");
        let body: Value = limited.json().await.unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("stand-in failure with status 429")
        );

        let broken = call("broken", stream).await;
        assert_eq!(broken.status(), 502);
        let body: Value = broken.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_error");

        let started = Instant::now();
        let slow = call("slow", stream).await;
        assert_eq!(slow.status(), 504);
        assert!(started.elapsed() < Duration::from_secs(3));
        let body: Value = slow.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upstream_timeout");

        let unreachable = call("unreachable", stream).await;
        assert_eq!(unreachable.status(), 502);
        let body: Value = unreachable.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot connect"),
            "{body}"
        );
    }
}

/// Streams that break after they started end with an error event and
/// `[DONE]`: never a hang, never a truncated frame.
#[tokio::test]
async fn broken_standin_streams_end_with_error_event_and_done() {
    let upstream = recording_standin().await;
    let base = upstream.base_url();
    let config = [
        remote_model(
            "cut",
            &base,
            "headers = { \"x-standin-fault\" = \"midstream-disconnect\" }",
        ),
        remote_model(
            "garbled",
            &base,
            "headers = { \"x-standin-fault\" = \"malformed\" }",
        ),
        remote_model(
            "dawdling",
            &base,
            "headers = { \"x-standin-token-delay-ms\" = \"400\" }\ntotal_timeout_ms = 1000",
        ),
    ]
    .concat();
    let server = Server::start(&config);
    for (model, expected) in [
        ("cut", "upstream_error"),
        ("garbled", "upstream_error"),
        ("dawdling", "timeout_error"),
    ] {
        let response = client()
            .post(format!("{}/chat/completions", server.v1()))
            .json(&chat(model, true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{model}");
        let body = tokio::time::timeout(Duration::from_secs(10), response.text())
            .await
            .expect("the stream hung")
            .unwrap();
        assert!(
            body.ends_with("\n\n"),
            "{model}: truncated frame in {body:?}"
        );
        let events = sse_data(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{model}");
        let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(error["error"]["type"], expected, "{model}: {error}");
        assert!(
            events
                .iter()
                .any(|e| e.contains("\"content\":\"echo: \"") || e.contains("\"content\":\"hello ")),
            "{model}: the chunks before the failure were not forwarded: {events:?}"
        );
    }
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])
}

#[tokio::test]
async fn tool_calls_through_standin_whole_and_streamed() {
    let upstream = recording_standin().await;
    let server = Server::start(&remote_model("remote", &upstream.base_url(), ""));
    let mut request = chat("remote", false);
    request["tools"] = weather_tools();
    request["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let whole: Value = server.post_chat(&request).await.json().await.unwrap();
    let message = &whole["choices"][0]["message"];
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], Value::Null);
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        call["function"]["arguments"],
        "{\"query\":\"hello there stand in\"}"
    );
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["tools"], weather_tools());
    assert_eq!(sent["tool_choice"]["function"]["name"], "get_weather");

    request["stream"] = json!(true);
    let body = server.post_chat(&request).await.text().await.unwrap();
    let events = sse_data(&body);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let pieces: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(
        pieces.len() >= 3,
        "arguments were not streamed in fragments"
    );
    assert_eq!(pieces[0]["id"], call["id"]);
    assert_eq!(pieces[0]["function"]["name"], "get_weather");
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"query\":\"hello there stand in\"}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // The tool's answer goes back up, and the model reads it.
    let follow_up = json!({
        "model": "remote",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
        ],
        "tools": weather_tools()
    });
    let answer: Value = server.post_chat(&follow_up).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tool said: sunny"
    );
    let sent = upstream.requests().last().unwrap().body.clone();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(sent["messages"][2]["tool_call_id"], call["id"]);
}

#[tokio::test]
async fn images_are_forwarded_to_the_standin() {
    let upstream = recording_standin().await;
    let server = Server::start(&remote_model("remote", &upstream.base_url(), ""));
    let request = json!({
        "model": "remote",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
        ]}]
    });
    let answer: Value = server.post_chat(&request).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: what is this (2 images)"
    );
    let sent = &upstream.requests()[0].body["messages"][0]["content"];
    assert_eq!(
        sent[1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}})
    );
    assert_eq!(sent[2]["image_url"]["url"], "https://example.com/cat.jpg");
}

#[tokio::test]
async fn embeddings_through_standin_float_and_base64() {
    let upstream = recording_standin().await;
    let server = Server::start(&remote_model("embedder", &upstream.base_url(), ""));
    let http = client();
    let url = format!("{}/embeddings", server.v1());
    let floats: Value = http
        .post(&url)
        .json(&json!({"model": "embedder", "input": ["alpha", "beta"], "dimensions": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "embedder");
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(floats["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(floats["usage"]["prompt_tokens"], 2);
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["model"], "upstream-embedder");
    assert_eq!(sent["dimensions"], 4);

    let encoded: Value = http
        .post(&url)
        .json(&json!({"model": "embedder", "input": "alpha", "dimensions": 4, "encoding_format": "base64"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = encoded["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64_decode(text);
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    let expected: Vec<f64> = floats["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(decoded.len(), 4);
    for (a, b) in decoded.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6);
    }
}

/// Standard base64, decoded by hand to keep the test free of the code under test.
fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test]
async fn azure_deployment_urls_key_header_and_api_version_against_standin() {
    let upstream = recording_standin().await;
    let config = format!(
        "[models.azure-gpt]\nbackend = \"azure\"\nbase_url = \"{}\"\ndeployment = \"gpt4o-prod\"\napi_key = \"azure-secret\"\napi_version = \"2024-10-21\"\n",
        upstream.root_url()
    );
    let server = Server::start(&config);
    let answer: Value = server
        .post_chat(&chat("azure-gpt", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there stand in"
    );
    let sent = &upstream.requests()[0];
    assert_eq!(
        sent.uri,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(sent.header("api-key"), Some("azure-secret"));
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn mistral_preset_renames_fields_against_standin() {
    let upstream = recording_standin().await;
    let config = format!(
        "[models.mistral-small]\nbackend = \"openai\"\npreset = \"mistral\"\nbase_url = \"{}\"\napi_key = \"m-key\"\n",
        upstream.base_url()
    );
    let server = Server::start(&config);
    let mut request = chat("mistral-small", true);
    request["seed"] = json!(7);
    request["user"] = json!("someone");
    request["stream_options"] = json!({"include_usage": true});
    let response = server.post_chat(&request).await;
    assert_eq!(response.status(), 200);
    let _ = response.text().await.unwrap();
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["random_seed"], 7);
    assert_eq!(sent["max_tokens"], 50);
    assert!(sent.get("seed").is_none());
    assert!(sent.get("user").is_none());
    assert!(sent.get("stream_options").is_none());
    assert!(sent.get("max_completion_tokens").is_none());
}
