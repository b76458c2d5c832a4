//! Every bad input gets an OpenAI-shaped error with the right status, and
//! every response carries `x-request-id`. The server here fronts a stand-in
//! upstream, so these run without loading a model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, client};
use serde_json::{Value, json};
use switchyard_standin::StandinConfig;

async fn server(extra: &str) -> (Server, switchyard_standin::RunningStandin) {
    let upstream =
        switchyard_standin::spawn("127.0.0.1:0".parse().unwrap(), StandinConfig::default())
            .await
            .unwrap();
    let config = format!(
        "{extra}\n[models.remote]\nbackend = \"openai\"\nbase_url = \"{}\"\n",
        upstream.base_url()
    );
    (Server::start(&config), upstream)
}

async fn post_raw(
    server: &Server,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    (status, headers, body)
}

fn assert_openai_error(body: &Value) {
    let error = body["error"].as_object().expect("an `error` object");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["type"].is_string());
    assert!(error.contains_key("param"));
    assert!(error.contains_key("code"));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (server, _upstream) = server("").await;
    let (status, headers, body) = post_raw(&server, "{\"model\": \"remote\", ").await;
    assert_eq!(status, 400);
    assert_openai_error(&body);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn schema_violations_are_400_naming_the_field() {
    let (server, _upstream) = server("").await;
    let cases = [
        (json!({"model": "remote"}), None, "missing field `messages`"),
        (
            json!({"model": "remote", "messages": [{"role": "user", "content": 7}]}),
            Some("messages[0].content"),
            "string or an array",
        ),
        (
            json!({"model": "remote", "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            json!({"model": "remote", "messages": [{"role": "wizard", "content": "x"}]}),
            Some("messages[0].role"),
            "unknown role",
        ),
        (
            json!({"model": "remote", "messages": [{"role": "user", "content": "x"}], "stop": 3}),
            Some("stop"),
            "string or an array of strings",
        ),
        (
            json!({"model": "remote", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            Some("max_tokens"),
            "invalid value",
        ),
    ];
    for (request, param, message) in cases {
        let (status, _, body) = post_raw(&server, request.to_string()).await;
        assert_eq!(status, 400, "{request}");
        assert_openai_error(&body);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"].as_str(), param, "{request}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{request}: {body}"
        );
    }
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let (server, _upstream) = server("").await;
    let request = json!({
        "model": "remote",
        "messages": [{"role": "user", "content": "hi"}],
        "logit_bias": {"1": 2},
        "parallel_tool_calls": false,
        "metadata": {"x": "y"},
    });
    let (status, _, body) = post_raw(&server, request.to_string()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_model_is_404() {
    let (server, _upstream) = server("").await;
    let request = json!({"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post_raw(&server, request.to_string()).await;
    assert_eq!(status, 404);
    assert_openai_error(&body);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("remote")
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (server, _upstream) = server("max_body_bytes = 2048").await;
    let request =
        json!({"model": "remote", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, _, body) = post_raw(&server, request.to_string()).await;
    assert_eq!(status, 413);
    assert_openai_error(&body);
    assert_eq!(body["error"]["code"], "request_too_large");
    // Just under the limit still works.
    let small =
        json!({"model": "remote", "messages": [{"role": "user", "content": "x".repeat(100)}]});
    let (status, _, _) = post_raw(&server, small.to_string()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let (server, _upstream) = server("").await;
    let http = client();
    let echoed = http
        .get(format!("{}/models", server.v1()))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");
    let generated = http
        .get(format!("{}/nope", server.v1()))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 404);
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "expected a UUID, got {id}");
    let body: Value = generated.json().await.unwrap();
    assert_openai_error(&body);
}

#[tokio::test]
async fn models_health_and_readiness() {
    let (server, _upstream) = server("").await;
    let http = client();
    let models: Value = http
        .get(format!("{}/models", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "remote");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["owned_by"], "127.0.0.1");
    assert!(models["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);
    let one = http
        .get(format!("{}/models/remote", server.v1()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let missing = http
        .get(format!("{}/models/absent", server.v1()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(server.status_of("/healthz"), Some(200));
    assert_eq!(server.status_of("/readyz"), Some(200));
    let wrong_method = http
        .put(format!("{}/chat/completions", server.v1()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
}
