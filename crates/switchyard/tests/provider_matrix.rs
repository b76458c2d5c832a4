//! The provider test matrix: every remote provider Switchyard speaks runs
//! the same scenarios through the real gateway process against the
//! stand-in upstream (`switchyard-standin`, which speaks each provider's
//! documented wire format: OpenAI and Azure chat completions, Anthropic
//! Messages, Gemini `generateContent`, Bedrock Converse with SigV4 and AWS
//! event-stream framing).
//!
//! A provider is a row; a scenario is a column. Adding a provider to
//! `switchyard_config::Provider` does not compile until it has a row here
//! (the matches below have no catch-all), and a row runs every column.
//! The OpenAI-compatible presets share the OpenAI row's wire and run the
//! core columns each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, client, recording_standin, sse_data, stream_chunks, streamed_text};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard_config::Provider;
use switchyard_standin::{AWS_SECRET, RunningStandin};

/// The `[models.NAME]` table that points `provider` at the stand-in, with
/// `extra` lines (fault headers, timeouts) appended.
fn model_table(provider: Provider, name: &str, upstream: &RunningStandin, extra: &str) -> String {
    let root = upstream.root_url();
    let wire = match provider {
        Provider::Openai => format!(
            "backend = \"openai\"\nbase_url = \"{}\"",
            upstream.base_url()
        ),
        Provider::Azure => format!(
            "backend = \"azure\"\nbase_url = \"{root}\"\ndeployment = \"gpt4o-prod\"\n\
             api_key = \"azure-secret\"\napi_version = \"2024-10-21\""
        ),
        Provider::Anthropic => format!(
            "backend = \"anthropic\"\nbase_url = \"{root}\"\napi_key = \"sk-ant-standin\"\n\
             upstream_model = \"claude-3-5-haiku-latest\""
        ),
        Provider::Gemini => format!(
            "backend = \"gemini\"\nbase_url = \"{root}/v1beta\"\napi_key = \"gemini-standin\"\n\
             upstream_model = \"gemini-2.0-flash\""
        ),
        Provider::Bedrock => format!(
            "backend = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"{root}\"\n\
             access_key_id = \"AKIDSTANDIN\"\nsecret_access_key = \"{AWS_SECRET}\"\n\
             session_token = \"tok-123\"\nupstream_model = \"anthropic.claude-3-haiku-20240307-v1:0\""
        ),
    };
    format!("[models.{name}]\n{wire}\n{extra}\n")
}

/// The header the provider's credential travels in, and its value, as the
/// stand-in should have received it.
fn credential_header(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        // The OpenAI row runs keyless (self-hosted servers do).
        Provider::Openai => ("authorization", ""),
        Provider::Azure => ("api-key", "azure-secret"),
        Provider::Anthropic => ("x-api-key", "sk-ant-standin"),
        Provider::Gemini => ("x-goog-api-key", "gemini-standin"),
        Provider::Bedrock => ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDSTANDIN/"),
    }
}

fn fault(header: &str, value: &str) -> String {
    format!("headers = {{ \"{header}\" = \"{value}\" }}")
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

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])
}

fn tool_request(model: &str, stream: bool) -> Value {
    let mut request = chat(model, stream);
    request["tools"] = weather_tools();
    request["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    request
}

async fn start(provider: Provider, tables: &[(&str, String)]) -> (RunningStandin, Server) {
    let upstream = recording_standin().await;
    let config: String = tables
        .iter()
        .map(|(name, extra)| model_table(provider, name, &upstream, extra))
        .collect();
    let server = Server::start(&config);
    (upstream, server)
}

/// The columns: each takes the row it runs for.
mod scenario {
    use super::*;

    pub async fn whole_answer(provider: Provider) {
        let (upstream, server) = start(provider, &[("m", String::new())]).await;
        let response = server.post_chat(&chat("m", false)).await;
        assert_eq!(response.status(), 200, "{provider:?}");
        let answer: Value = response.json().await.unwrap();
        let choice = &answer["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant", "{answer}");
        assert_eq!(choice["message"]["content"], "echo: hello there stand in");
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(answer["model"], "m");
        assert!(
            answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
            "{answer}"
        );
        assert!(
            answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{answer}"
        );

        let sent = upstream.requests();
        assert_eq!(sent.len(), 1, "{provider:?}: one call upstream");
        let (header, value) = credential_header(provider);
        match sent[0].header(header) {
            Some(got) => assert!(got.starts_with(value) && !value.is_empty(), "{got}"),
            None => assert!(value.is_empty(), "{provider:?}: no {header} header"),
        }
    }

    pub async fn stream(provider: Provider) {
        let (_upstream, server) = start(provider, &[("m", String::new())]).await;
        let response = server.post_chat(&chat("m", true)).await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let chunks = stream_chunks(&response.text().await.unwrap());
        assert!(
            chunks.len() > 2,
            "{provider:?}: not streamed in pieces: {chunks:?}"
        );
        assert_eq!(streamed_text(&chunks), "echo: hello there stand in");
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"),
            "{provider:?}: {chunks:?}"
        );
        let usage = chunks
            .iter()
            .rev()
            .find_map(|c| c.get("usage").filter(|u| !u.is_null()))
            .unwrap_or_else(|| panic!("{provider:?}: no usage chunk in {chunks:?}"));
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    }

    pub async fn tool_call_whole(provider: Provider) {
        let (upstream, server) = start(provider, &[("m", String::new())]).await;
        let answer: Value = server
            .post_chat(&tool_request("m", false))
            .await
            .json()
            .await
            .unwrap();
        let choice = &answer["choices"][0];
        assert_eq!(
            choice["finish_reason"], "tool_calls",
            "{provider:?}: {answer}"
        );
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert!(!call["id"].as_str().unwrap().is_empty());
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"query": "hello there stand in"}));
        // The tool's schema reached the upstream in its own shape.
        let sent = serde_json::to_string(&upstream.requests()[0].body).unwrap();
        assert!(
            sent.contains("get_weather") && sent.contains("Current weather"),
            "{sent}"
        );
    }

    pub async fn tool_call_streamed(provider: Provider) {
        let (_upstream, server) = start(provider, &[("m", String::new())]).await;
        let body = server
            .post_chat(&tool_request("m", true))
            .await
            .text()
            .await
            .unwrap();
        let chunks = stream_chunks(&body);
        let pieces: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert!(!pieces.is_empty(), "{provider:?}: no tool call in {body}");
        assert_eq!(pieces[0]["function"]["name"], "get_weather");
        assert!(!pieces[0]["id"].as_str().unwrap().is_empty());
        let arguments: String = pieces
            .iter()
            .filter_map(|p| p["function"]["arguments"].as_str())
            .collect();
        let arguments: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(arguments, json!({"query": "hello there stand in"}));
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
            "{provider:?}: {body}"
        );
    }

    pub async fn tool_result_round_trip(provider: Provider) {
        let (_upstream, server) = start(provider, &[("m", String::new())]).await;
        let first: Value = server
            .post_chat(&tool_request("m", false))
            .await
            .json()
            .await
            .unwrap();
        let call = first["choices"][0]["message"]["tool_calls"][0].clone();
        let follow_up = json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
            ],
            "tools": weather_tools()
        });
        let response = server.post_chat(&follow_up).await;
        assert_eq!(response.status(), 200, "{provider:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"], "tool said: sunny",
            "{provider:?}: {answer}"
        );
    }

    pub async fn image(provider: Provider) {
        let (_upstream, server) = start(provider, &[("m", String::new())]).await;
        let request = json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]}]
        });
        let answer: Value = server.post_chat(&request).await.json().await.unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"], "echo: look (1 image)",
            "{provider:?}: {answer}"
        );
    }

    pub async fn rate_limited(provider: Provider) {
        let limited =
            "headers = { \"x-standin-status\" = \"429\", \"x-standin-retry-after\" = \"7\" }"
                .to_owned();
        let (_upstream, server) = start(provider, &[("m", limited)]).await;
        for stream in [false, true] {
            let response = server.post_chat(&chat("m", stream)).await;
            assert_eq!(response.status(), 429, "{provider:?} stream={stream}");
            assert_eq!(response.headers()["retry-after"], "7");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        }
    }

    pub async fn upstream_refuses_the_credential(provider: Provider) {
        let (_upstream, server) = start(provider, &[("m", fault("x-standin-status", "401"))]).await;
        let response = server.post_chat(&chat("m", false)).await;
        // The caller's own key was fine: the gateway's is not, which is a
        // bad gateway, never the caller's 401.
        assert_eq!(response.status(), 502, "{provider:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "upstream_error", "{body}");
    }

    pub async fn broken_stream_ends_with_error_and_done(provider: Provider) {
        let (_upstream, server) = start(
            provider,
            &[("m", fault("x-standin-fault", "midstream-disconnect"))],
        )
        .await;
        let response = server.post_chat(&chat("m", true)).await;
        assert_eq!(response.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(10), response.text())
            .await
            .expect("the stream hung")
            .unwrap();
        assert!(
            body.ends_with("\n\n"),
            "{provider:?}: truncated frame in {body:?}"
        );
        let events = sse_data(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
        let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(
            error["error"]["type"], "upstream_error",
            "{provider:?}: {error}"
        );
        assert!(
            events.iter().any(|e| e.contains("\"content\":\"")),
            "{provider:?}: the pieces before the failure were not forwarded: {body}"
        );
    }

    pub async fn reset_fails_over_to_the_next_deployment(provider: Provider) {
        let upstream = recording_standin().await;
        let config = [
            model_table(
                provider,
                "cut",
                &upstream,
                &fault("x-standin-fault", "reset"),
            ),
            model_table(provider, "steady", &upstream, ""),
            "[routes.chat]\nstrategy = \"priority\"\n\
             deployments = [{ model = \"cut\" }, { model = \"steady\" }]\n"
                .to_owned(),
        ]
        .concat();
        let server = Server::start(&config);
        let response = server.post_chat(&chat("chat", false)).await;
        assert_eq!(response.status(), 200, "{provider:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "echo: hello there stand in"
        );
        assert_eq!(
            upstream.requests().len(),
            2,
            "{provider:?}: tried, then failed over"
        );
        // A stream cut before its first token fails over the same way.
        let response = server.post_chat(&chat("chat", true)).await;
        assert_eq!(response.status(), 200, "{provider:?}");
        let chunks = stream_chunks(&response.text().await.unwrap());
        assert_eq!(streamed_text(&chunks), "echo: hello there stand in");
        assert_eq!(upstream.requests().len(), 4, "{provider:?}");
    }

    pub async fn client_disconnect_drops_the_upstream_stream(provider: Provider) {
        let (upstream, server) =
            start(provider, &[("m", fault("x-standin-token-delay-ms", "300"))]).await;
        let mut response = client()
            .post(format!("{}/chat/completions", server.v1()))
            .json(&chat("m", true))
            .send()
            .await
            .unwrap();
        response.chunk().await.unwrap();
        drop(response);
        // Waits on the other process, bounded; nothing here asserts a time.
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.abandoned_streams() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            upstream.abandoned_streams(),
            1,
            "{provider:?}: the upstream stream was read to its end after the client left"
        );
    }

    /// A JSON `response_format` reaches providers that have one in their
    /// own shape and is refused, before any upstream call, by those that
    /// do not.
    pub async fn json_response_format(provider: Provider) {
        let (upstream, server) = start(provider, &[("m", String::new())]).await;
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"], "additionalProperties": false});
        let mut request = chat("m", false);
        request["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "place", "strict": true, "schema": schema}});
        let response = server.post_chat(&request).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let sent = upstream.requests();
        match provider {
            Provider::Openai | Provider::Azure => {
                assert_eq!(status, 200, "{provider:?}: {body}");
                assert_eq!(sent[0].body["response_format"], request["response_format"]);
            }
            Provider::Gemini => {
                assert_eq!(status, 200, "{body}");
                let config = &sent[0].body["generationConfig"];
                assert_eq!(config["responseMimeType"], "application/json");
                assert_eq!(
                    config["responseSchema"],
                    json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]})
                );
            }
            Provider::Anthropic | Provider::Bedrock => {
                assert_eq!(status, 400, "{provider:?}: {body}");
                assert_eq!(body["error"]["param"], "response_format", "{body}");
                assert!(sent.is_empty(), "{provider:?}: called upstream anyway");
            }
        }
    }
}

/// One module per row, one test per column; `every_provider_has_a_row`
/// fails to compile when a provider is missing from the list.
macro_rules! matrix {
    ($($row:ident => $provider:ident),* $(,)?) => {
        $(
            mod $row {
                use super::*;
                const ROW: Provider = Provider::$provider;

                #[tokio::test]
                async fn whole_answer_against_standin() { scenario::whole_answer(ROW).await }
                #[tokio::test]
                async fn stream_against_standin() { scenario::stream(ROW).await }
                #[tokio::test]
                async fn tool_call_whole_against_standin() { scenario::tool_call_whole(ROW).await }
                #[tokio::test]
                async fn tool_call_streamed_against_standin() { scenario::tool_call_streamed(ROW).await }
                #[tokio::test]
                async fn tool_result_round_trip_against_standin() { scenario::tool_result_round_trip(ROW).await }
                #[tokio::test]
                async fn image_against_standin() { scenario::image(ROW).await }
                #[tokio::test]
                async fn json_response_format_against_standin() {
                    scenario::json_response_format(ROW).await
                }
                #[tokio::test]
                async fn rate_limit_with_retry_after_against_standin() { scenario::rate_limited(ROW).await }
                #[tokio::test]
                async fn refused_credential_is_a_bad_gateway_against_standin() {
                    scenario::upstream_refuses_the_credential(ROW).await
                }
                #[tokio::test]
                async fn broken_stream_ends_with_error_and_done_against_standin() {
                    scenario::broken_stream_ends_with_error_and_done(ROW).await
                }
                #[tokio::test]
                async fn reset_fails_over_against_standin() {
                    scenario::reset_fails_over_to_the_next_deployment(ROW).await
                }
                #[tokio::test]
                async fn client_disconnect_against_standin() {
                    scenario::client_disconnect_drops_the_upstream_stream(ROW).await
                }
            }
        )*

        /// Each row's table configures the provider the row names (a row
        /// pointing at the wrong backend would test another provider twice).
        #[tokio::test]
        async fn every_provider_has_a_row_that_configures_it() {
            // No catch-all: a provider missing from the list is a compile error.
            fn row_of(provider: Provider) -> &'static str {
                match provider {
                    $(Provider::$provider => stringify!($row),)*
                }
            }
            let upstream = recording_standin().await;
            for provider in [$(Provider::$provider),*] {
                let text = model_table(provider, "m", &upstream, "");
                let config = switchyard_config::Config::parse(
                    std::path::Path::new(row_of(provider)),
                    &text,
                    &|_| None,
                )
                .unwrap_or_else(|e| panic!("{}: {e}", row_of(provider)));
                match &config.models["m"] {
                    switchyard_config::ModelConfig::Remote(configured, _) => {
                        assert_eq!(*configured, provider, "{}", row_of(provider));
                    }
                    other => panic!("{}: not a remote model: {other:?}", row_of(provider)),
                }
            }
        }
    };
}

matrix! {
    openai => Openai,
    azure => Azure,
    anthropic => Anthropic,
    gemini => Gemini,
    bedrock => Bedrock,
}

/// Every OpenAI-compatible preset through the OpenAI row's wire: whole and
/// streamed answers, with each preset's field quirks applied.
#[tokio::test]
async fn every_preset_answers_whole_and_streamed_against_standin() {
    let upstream = recording_standin().await;
    let config: String = switchyard_adapters::presets::PRESETS
        .iter()
        .map(|preset| {
            format!(
                "[models.{0}]\nbackend = \"openai\"\npreset = \"{0}\"\nbase_url = \"{1}\"\napi_key = \"k\"\n",
                preset.name,
                upstream.base_url()
            )
        })
        .collect();
    let server = Server::start(&config);
    for preset in switchyard_adapters::presets::PRESETS {
        let answer: Value = server
            .post_chat(&chat(preset.name, false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"], "echo: hello there stand in",
            "{}: {answer}",
            preset.name
        );
        let response = server.post_chat(&chat(preset.name, true)).await;
        let chunks = stream_chunks(&response.text().await.unwrap());
        assert_eq!(
            streamed_text(&chunks),
            "echo: hello there stand in",
            "{}",
            preset.name
        );
        let sent = upstream.requests().last().unwrap().body.clone();
        assert_eq!(
            sent.get("stream_options").is_some(),
            preset.quirks.stream_usage_option,
            "{}: {sent}",
            preset.name
        );
    }
}
