//! Observability end to end: the real gateway process in front of
//! stand-in upstreams (`switchyard-standin`, OpenAI wire format): the
//! Prometheus scrape after known traffic, W3C trace context reaching the
//! upstream, the span tree exported to an in-process OTLP/HTTP (JSON)
//! collector, and the per-request log line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Server, client, metric_sample as sample, recording_standin, scrape, standin_model,
    stream_chunks, streamed_text,
};
use serde_json::{Value, json};
use switchyard_standin::{Failure, RunningStandin};

const MASTER: &str = "sy-master-observability";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// A route `chat` over `primary` then `backup`, each on its own stand-in;
/// the backup is priced so that cost shows in the metrics.
fn fallback_config(primary: &RunningStandin, backup: &RunningStandin, extra: &str) -> String {
    [
        standin_model("primary", primary, ""),
        standin_model(
            "backup",
            backup,
            "pricing = { input = 1000.0, output = 2000.0 }",
        ),
        "[routes.chat]\nstrategy = \"priority\"\ndeployments = [{ model = \"primary\" }, { model = \"backup\" }]\n\
         [resilience]\nbreaker_failures = 1000\nbreaker_window = 100000\n"
            .to_owned(),
        extra.to_owned(),
    ]
    .concat()
}

fn ask(stream: bool) -> Value {
    json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

#[tokio::test]
async fn metrics_after_known_traffic_with_fallbacks_on_standin_upstreams() {
    let primary = recording_standin().await;
    let backup = recording_standin().await;
    primary.set_outage(Some(Failure::status(503)));
    let server = Server::start(&fallback_config(
        &primary,
        &backup,
        &format!("[governance]\nmaster_key = \"{MASTER}\"\n"),
    ));
    for _ in 0..5 {
        let response = server.post_chat(&ask(false)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-switchyard-route"], "chat/backup");
    }
    for _ in 0..3 {
        let response = server.post_chat(&ask(true)).await;
        assert_eq!(response.status(), 200);
        let chunks = stream_chunks(&response.text().await.unwrap());
        assert!(!streamed_text(&chunks).is_empty());
    }
    let secret_name = "no-such-model-4711";
    let unknown = server
        .post_chat(&json!({"model": secret_name, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(unknown.status(), 404);

    let response = scrape(&server, None).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = response.text().await.unwrap();
    let served = [
        "operation=\"chat\"",
        "model=\"chat\"",
        "route=\"chat\"",
        "status=\"200\"",
        "tenant=\"-\"",
    ];
    assert_eq!(
        sample(&text, "switchyard_requests_total", &served),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "switchyard_requests_total",
            &["model=\"unknown\"", "status=\"404\""]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(secret_name),
        "a model name the gateway does not serve became a label"
    );
    // Every request met the primary's outage, then the backup served it.
    let attempts = |deployment: &str, outcome: &str| {
        sample(
            &text,
            "switchyard_upstream_attempts_total",
            &[
                &format!("deployment=\"{deployment}\""),
                "provider=\"openai\"",
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert_eq!(attempts("primary", "overloaded"), Some(8.0));
    assert_eq!(attempts("backup", "ok"), Some(8.0));
    assert_eq!(
        sample(
            &text,
            "switchyard_fallbacks_total",
            &["route=\"chat\"", "from_deployment=\"primary\""]
        ),
        Some(8.0)
    );
    // The GenAI histograms: one server duration per request, a time to
    // first token per stream, token usage per successful upstream call.
    assert_eq!(
        sample(
            &text,
            "gen_ai_server_request_duration_seconds_count",
            &["gen_ai_request_model=\"chat\"", "error_type=\"\""]
        ),
        Some(8.0)
    );
    assert_eq!(
        sample(
            &text,
            "gen_ai_server_time_to_first_token_seconds_count",
            &["gen_ai_request_model=\"chat\""]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "gen_ai_client_token_usage_count",
            &[
                "gen_ai_request_model=\"backup\"",
                "gen_ai_token_type=\"output\"",
                "gen_ai_provider_name=\"openai\""
            ]
        ),
        Some(8.0)
    );
    assert_eq!(
        sample(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[
                "gen_ai_request_model=\"primary\"",
                "error_type=\"overloaded\""
            ]
        ),
        Some(8.0)
    );
    // The gateway's own time, per request that reached an upstream.
    assert_eq!(
        sample(
            &text,
            "switchyard_gateway_overhead_seconds_count",
            &["stream=\"false\""]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "switchyard_gateway_overhead_seconds_count",
            &["stream=\"true\""]
        ),
        Some(3.0)
    );
    // Cost: the backup's answers are priced; the ledger holds the same sum.
    let cost = sample(
        &text,
        "switchyard_cost_usd_total",
        &["tenant=\"-\"", "model=\"chat\""],
    )
    .unwrap();
    assert!(cost > 0.0);
    tokio::time::sleep(Duration::from_millis(600)).await; // a ledger flush
    let usage: Value = client()
        .get(format!("{}/admin/usage?group_by=model", server.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ledger = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "chat")
        .and_then(|group| group["cost"].as_f64())
        .expect("the ledger's cost for `chat`");
    assert!(
        (ledger - cost).abs() < 1e-9,
        "ledger {ledger} vs metric {cost}"
    );
    assert_eq!(
        sample(
            &text,
            "switchyard_circuit_breaker_state",
            &["deployment=\"primary\""]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "switchyard_in_flight_requests", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn metrics_need_an_admin_key_when_keys_are_required() {
    let upstream = recording_standin().await;
    let config = standin_model(
        "m",
        &upstream,
        "[governance]\nauth = true\nmaster_key = \"sy-master-metrics-test\"",
    );
    let server = Server::start(&config);
    assert_eq!(scrape(&server, None).await.status(), 401);
    assert_eq!(scrape(&server, Some("sy-wrong")).await.status(), 401);
    assert_eq!(
        scrape(&server, Some("sy-master-metrics-test"))
            .await
            .status(),
        200
    );
    let public = Server::start(&format!("{config}[telemetry]\npublic_metrics = true\n"));
    assert_eq!(scrape(&public, None).await.status(), 200);
}

#[tokio::test]
async fn the_clients_traceparent_reaches_the_standin_upstream() {
    let upstream = recording_standin().await;
    let config = standin_model("m", &upstream, "");
    let server = Server::start_with_env(&config, &[("SWITCHYARD_LOG_FORMAT", "json")]);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .header("traceparent", traceparent())
        .header("tracestate", "vendor=opaque")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = upstream.requests();
    assert_eq!(seen[0].header("traceparent"), Some(traceparent().as_str()));
    assert_eq!(seen[0].header("tracestate"), Some("vendor=opaque"));

    // Without one, the request gets a trace of its own, and the upstream
    // and the log line share its id.
    let response = server.post_chat(&body).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.requests();
    let sent = seen[1].header("traceparent").unwrap().to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], CLIENT_TRACE);

    // One JSON line per request, with its ids, tokens, cost and latency.
    let line = server
        .wait_for_log(&["request done", &request_id], Duration::from_secs(5))
        .await
        .expect("a log line for the request");
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["trace_id"], CLIENT_TRACE);
    assert_eq!(record["request_id"], request_id.as_str());
    assert_eq!(record["model"], "m");
    assert_eq!(record["status"], 200);
    for field in [
        "tenant",
        "route",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
    ] {
        assert!(!record[field].is_null(), "{field} missing from {line}");
    }
    // The line is written as the request finishes, which may be just after
    // its answer reached the client.
    let generated = format!("\"trace_id\":\"{}\"", parts[1]);
    assert!(
        server
            .wait_for_log(&[&generated], Duration::from_secs(5))
            .await
            .is_some(),
        "the generated trace id is not in the log"
    );
}

/// Spans an in-process OTLP/HTTP collector (JSON encoding) received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Value>>>);

impl Collector {
    async fn start(self) -> String {
        use axum::routing::post;
        let spans = self.0.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| {
                let spans = spans.clone();
                async move {
                    let export: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let mut spans = spans.lock().unwrap();
                    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            for span in scope["spans"].as_array().into_iter().flatten() {
                                let mut span = span.clone();
                                span["resource"] = resource["resource"].clone();
                                spans.push(span);
                            }
                        }
                    }
                    ([("content-type", "application/json")], "{}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

/// An attribute's value, whatever its OTLP JSON type.
fn attribute(span: &Value, key: &str) -> Value {
    let Some(found) = span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
    else {
        return Value::Null;
    };
    let value = &found["value"];
    if let Some(s) = value.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = value.get("intValue") {
        // proto3 JSON writes 64-bit integers as strings.
        return match i {
            Value::String(s) => json!(s.parse::<i64>().unwrap()),
            other => other.clone(),
        };
    }
    if let Some(a) = value.get("arrayValue") {
        return Value::Array(
            a["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("stringValue").cloned())
                .collect(),
        );
    }
    value.clone()
}

const SPAN_KIND_SERVER: i64 = 2;
const SPAN_KIND_CLIENT: i64 = 3;
const STATUS_ERROR: i64 = 2;

#[tokio::test]
async fn a_streamed_request_with_one_fallback_exports_its_span_tree_to_an_otlp_standin_collector() {
    let collector = Collector::default();
    let endpoint = collector.clone().start().await;
    let primary = recording_standin().await;
    let backup = recording_standin().await;
    primary.set_outage(Some(Failure::status(503)));
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\notlp_protocol = \"http/json\"\nexport_interval_ms = 100\nservice_name = \"switchyard-under-test\"\n"
    );
    let server = Server::start(&fallback_config(&primary, &backup, &telemetry));
    // A client that does not sample its trace: nothing of it is exported,
    // and the upstream still joins it, unsampled.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .header(
            "traceparent",
            format!("00-{unsampled_trace}-b7ad6b7169203331-00"),
        )
        .json(&ask(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = backup.requests()[0]
        .header("traceparent")
        .expect("the upstream got a traceparent")
        .to_owned();
    assert!(
        sent.starts_with(&format!("00-{unsampled_trace}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .header("traceparent", traceparent())
        .json(&json!({
            "model": "chat",
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 64,
            "temperature": 0.5,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let chunks = stream_chunks(&response.text().await.unwrap());
    assert!(!streamed_text(&chunks).is_empty());

    // The batch exporter sends every 100 ms; wait for the whole tree.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = collector.spans();
        let named = |name: &str| spans.iter().any(|s| s["name"] == name);
        if named("POST /v1/chat/completions") && named("stream") && named("chat backup") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans never arrived: {spans:#?}\nlogs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_name = |name: &str| -> &Value {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
    };
    // Other requests (the harness's /readyz polls) have traces of their
    // own; every span of this request is in the client's.
    let request_steps = [
        "POST /v1/chat/completions",
        "authenticate",
        "limits",
        "route chat",
        "chat primary",
        "chat backup",
        "stream",
    ];
    for span in spans
        .iter()
        .filter(|s| request_steps.iter().any(|n| s["name"] == *n))
    {
        assert_eq!(
            span["traceId"].as_str().map(str::to_lowercase).as_deref(),
            Some(CLIENT_TRACE),
            "span outside the client's trace: {span:#}"
        );
    }
    let server_span = by_name("POST /v1/chat/completions");
    assert_eq!(server_span["kind"], SPAN_KIND_SERVER);
    assert_eq!(
        server_span["parentSpanId"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some(CLIENT_SPAN),
        "the server span does not continue the client's span"
    );
    assert_eq!(attribute(server_span, "gen_ai.operation.name"), "chat");
    assert_eq!(attribute(server_span, "gen_ai.request.model"), "chat");
    assert_eq!(attribute(server_span, "switchyard.route"), "chat");
    assert_eq!(attribute(server_span, "switchyard.deployment"), "backup");
    assert_eq!(attribute(server_span, "switchyard.tenant"), "-");
    assert_eq!(attribute(server_span, "switchyard.cache"), "bypass");
    assert_eq!(attribute(server_span, "http.response.status_code"), 200);
    let service = server_span["resource"]["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == "service.name")
        .map(|a| a["value"]["stringValue"].clone());
    assert_eq!(service, Some(json!("switchyard-under-test")));
    let server_id = server_span["spanId"].as_str().unwrap();

    let child_of = |span: &Value, parent: &str| span["parentSpanId"].as_str() == Some(parent);
    for step in ["authenticate", "limits", "route chat", "stream"] {
        assert!(
            child_of(by_name(step), server_id),
            "{step} is not a child of the server span"
        );
    }
    let route_id = by_name("route chat")["spanId"].as_str().unwrap();

    // The failed attempt and the one that served are siblings under the
    // route, client spans with the GenAI attributes.
    let failed = by_name("chat primary");
    let served = by_name("chat backup");
    for attempt in [failed, served] {
        assert!(child_of(attempt, route_id), "{attempt:#}");
        assert_eq!(attempt["kind"], SPAN_KIND_CLIENT);
        assert_eq!(attribute(attempt, "gen_ai.operation.name"), "chat");
        assert_eq!(attribute(attempt, "gen_ai.provider.name"), "openai");
        assert_eq!(attribute(attempt, "gen_ai.request.max_tokens"), 64);
    }
    assert_eq!(attribute(failed, "gen_ai.request.model"), "primary");
    assert_eq!(attribute(failed, "error.type"), "overloaded");
    assert_eq!(failed["status"]["code"], STATUS_ERROR);
    assert_eq!(attribute(failed, "switchyard.attempt"), 1);
    assert_eq!(attribute(served, "switchyard.attempt"), 2);
    assert_eq!(attribute(served, "gen_ai.request.model"), "backup");
    assert_eq!(attribute(served, "gen_ai.response.model"), "backup");
    assert_eq!(
        attribute(served, "gen_ai.response.finish_reasons"),
        json!(["stop"])
    );
    let usage = chunks
        .iter()
        .find(|c| !c["usage"].is_null())
        .map(|c| c["usage"].clone())
        .expect("a usage chunk");
    assert_eq!(
        attribute(served, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"]
    );
    assert_eq!(
        attribute(served, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"]
    );
    assert_eq!(
        attribute(server_span, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"]
    );
    // The served attempt lasts as long as its stream.
    let end = |s: &Value| {
        s["endTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
    };
    assert!(end(served) >= end(by_name("stream")) - 5_000_000);

    assert!(
        !collector
            .spans()
            .iter()
            .any(|s| s["traceId"].as_str().map(str::to_lowercase).as_deref()
                == Some(unsampled_trace)),
        "spans of an unsampled trace were exported"
    );

    // The upstream got the attempt's own span as its parent.
    let sent = backup.requests()[1]
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert_eq!(
        sent,
        format!(
            "00-{CLIENT_TRACE}-{}-01",
            served["spanId"].as_str().unwrap().to_lowercase()
        )
    );
}
