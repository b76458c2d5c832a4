//! The `openai` adapter end to end, against the stand-in upstream
//! (`switchyard-standin`), which speaks OpenAI's chat completions wire
//! format: the real gateway process in front of it, a real HTTP client in
//! front of that.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, client, sse_data};
use serde_json::{Value, json};
use switchyard_standin::{RunningStandin, StandinConfig};

async fn standin() -> RunningStandin {
    switchyard_standin::spawn(
        "127.0.0.1:0".parse().unwrap(),
        StandinConfig {
            record: true,
            ..StandinConfig::default()
        },
    )
    .await
    .unwrap()
}

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
    let upstream = standin().await;
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
    let upstream = standin().await;
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
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
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
    let upstream = standin().await;
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
    let upstream = standin().await;
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

#[tokio::test]
async fn client_disconnect_drops_the_standin_call() {
    let upstream = standin().await;
    let config = remote_model(
        "remote",
        &upstream.base_url(),
        "headers = { \"x-standin-token-delay-ms\" = \"300\" }",
    );
    let server = Server::start(&config);
    let mut response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .json(&chat("remote", true))
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap();
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.abandoned_streams() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.abandoned_streams(),
        1,
        "the upstream stream was read to its end after the client left"
    );
}
