//! Routing and resilience end to end: the real gateway process, routes over
//! deployments on stand-in upstreams (`switchyard-standin`, OpenAI wire
//! format) with injected faults.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, client, recording_standin, sse_data, standin_model};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_governance::switchyard_state::testing::{REDIS_ENV, service_url};
use switchyard_standin::{Failure, RunningStandin};

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// How many requests each upstream model received.
fn served_by(upstream: &RunningStandin, model: &str) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.body["model"] == model)
        .count()
}

/// Sends `total` requests, `concurrency` at a time; returns the statuses.
async fn load(server: &Server, body: Value, total: usize, concurrency: usize) -> Vec<u16> {
    let http = client();
    let url = format!("{}/chat/completions", server.v1());
    futures::stream::iter(0..total)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            let body = body.clone();
            async move {
                let response = http.post(&url).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test]
async fn a_deployment_failing_30_percent_with_a_healthy_fallback_serves_all_1000() {
    let upstream = recording_standin().await;
    let config = [
        standin_model(
            "flaky",
            &upstream,
            "headers = { \"x-standin-failure-rate\" = \"0.3\", \"x-standin-failure-mix\" = \"500,reset,timeout\", \"x-standin-timeout-ms\" = \"1500\" }\nfirst_byte_timeout_ms = 250",
        ),
        standin_model("steady", &upstream, ""),
        "[routes.chat]\nstrategy = \"priority\"\ndeployments = [{ model = \"flaky\" }, { model = \"steady\" }]\n".into(),
        // Keep the breaker from hiding the flaky deployment: every request
        // should meet the faults.
        "[resilience]\nbreaker_failures = 1000\nbreaker_window = 100000\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let statuses = load(&server, ask("chat"), 1000, 25).await;
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    let flaky = served_by(&upstream, "flaky");
    let steady = served_by(&upstream, "steady");
    assert_eq!(flaky, 1000, "every request tried the first deployment");
    assert!(
        (200..=400).contains(&steady),
        "about 30% fell back, got {steady}"
    );
}

#[tokio::test]
async fn a_breaker_opens_stops_sending_then_recovers() {
    let primary = recording_standin().await;
    let backup = recording_standin().await;
    let config = [
        standin_model("primary", &primary, ""),
        standin_model("backup", &backup, ""),
        "[routes.chat]\nstrategy = \"priority\"\ndeployments = [{ model = \"primary\" }, { model = \"backup\" }]\n".into(),
        "[resilience]\nbreaker_failures = 3\nbreaker_open_ms = 700\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    primary.set_outage(Some(Failure::status(503)));
    for _ in 0..20 {
        let response = server.post_chat(&ask("chat")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-switchyard-route"], "chat/backup");
    }
    assert_eq!(
        primary.requests().len(),
        3,
        "the breaker let more than 3 through"
    );
    primary.set_outage(None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let probe = server.post_chat(&ask("chat")).await;
    assert_eq!(probe.headers()["x-switchyard-route"], "chat/primary");
    for _ in 0..5 {
        let response = server.post_chat(&ask("chat")).await;
        assert_eq!(response.headers()["x-switchyard-route"], "chat/primary");
    }
}

#[tokio::test]
async fn retries_stop_when_the_retry_budget_is_spent() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("down", &upstream, ""),
        "[routes.chat]\ndeployments = [{ model = \"down\" }]\nretries = 3\nretry_backoff_ms = 1\n".into(),
        // A window that never fills and a count never reached: only the
        // budget limits the retries.
        "[resilience]\nbreaker_failures = 1000\nbreaker_window = 100000\nretry_budget_ratio = 0.1\nretry_budget_min_per_sec = 0\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    upstream.set_outage(Some(Failure::status(500)));
    let statuses = load(&server, ask("chat"), 100, 4).await;
    assert!(statuses.iter().all(|s| *s == 502));
    let attempts = upstream.requests().len();
    // 100 requests × 4 attempts without a budget; 10% allows ~10 retries.
    assert!((100..=111).contains(&attempts), "{attempts} attempts");
}

#[tokio::test]
async fn retry_after_from_the_upstream_is_honoured() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("limited", &upstream, ""),
        "[routes.chat]\ndeployments = [{ model = \"limited\" }]\nretries = 1\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    upstream.queue_failures([Failure {
        status: 429,
        retry_after: Some(1),
    }]);
    let started = Instant::now();
    let response = server.post_chat(&ask("chat")).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried before the upstream's Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_95_5_weighted_split_lands_within_a_few_percent() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("stable", &upstream, ""),
        standin_model("canary", &upstream, ""),
        "[routes.chat]\nstrategy = \"weighted\"\ndeployments = [{ model = \"stable\", weight = 95 }, { model = \"canary\", weight = 5 }]\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let statuses = load(&server, ask("chat"), 2000, 50).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let canary = served_by(&upstream, "canary") as f64 / 2000.0;
    assert!((0.03..=0.07).contains(&canary), "canary share {canary}");
}

#[tokio::test]
async fn a_stream_cut_after_tokens_ends_with_an_error_and_is_not_replayed() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("cut", &upstream, "headers = { \"x-standin-fault\" = \"midstream-disconnect\" }"),
        standin_model("steady", &upstream, ""),
        "[routes.chat]\nstrategy = \"priority\"\ndeployments = [{ model = \"cut\" }, { model = \"steady\" }]\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let mut request = ask("chat");
    request["messages"][0]["content"] = json!("hello there stand in today");
    request["stream"] = json!(true);
    let body = server.post_chat(&request).await.text().await.unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events[events.len() - 2].contains("\"error\""));
    assert!(
        body.contains("echo: "),
        "the tokens before the cut were not sent"
    );
    assert_eq!(served_by(&upstream, "steady"), 0, "tokens were sent twice");
}

#[tokio::test]
async fn hedging_answers_from_the_faster_deployment_and_cancels_the_slower() {
    let slow = recording_standin().await;
    let fast = recording_standin().await;
    let config = [
        standin_model("slow", &slow, "headers = { \"x-standin-latency-ms\" = \"3000\" }"),
        standin_model("fast", &fast, ""),
        "[routes.chat]\nstrategy = \"priority\"\nhedge_after_ms = 100\ndeployments = [{ model = \"slow\" }, { model = \"fast\" }]\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let started = Instant::now();
    let response = server.post_chat(&ask("chat")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-route"], "chat/fast");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The slow attempt's connection is dropped, and the slow upstream sees
    // its request abandoned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.cancelled_requests() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.cancelled_requests(), 1);
}

#[tokio::test]
async fn cache_hits_are_exact_replays_and_never_cross_callers() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("m", &upstream, ""),
        "[cache]\nenabled = true\nttl_secs = 60\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let http = client();
    let url = format!("{}/chat/completions", server.v1());
    let mut request = ask("m");
    request["temperature"] = json!(0);
    let call = |key: &'static str, body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(&url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let cache = response.headers()["x-switchyard-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            (cache, response.text().await.unwrap())
        }
    };
    let (first_status, first) = call("key-alice", request.clone()).await;
    assert_eq!(first_status, "miss");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (second_status, second) = call("key-alice", request.clone()).await;
    assert_eq!(second_status, "hit");
    let strip = |body: &str| {
        let mut value: Value = serde_json::from_str(body).unwrap();
        value.as_object_mut().unwrap().remove("id");
        value.as_object_mut().unwrap().remove("created");
        value
    };
    assert_eq!(
        strip(&first),
        strip(&second),
        "a hit must replay the answer exactly"
    );
    assert_eq!(upstream.requests().len(), 1);

    let (bob_status, _) = call("key-bob", request.clone()).await;
    assert_eq!(
        bob_status, "miss",
        "another caller must not see alice's entry"
    );
    assert_eq!(upstream.requests().len(), 2);

    // A cached answer replays as a stream, piece for piece.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (stream_status, body) = call("key-alice", streamed).await;
    assert_eq!(stream_status, "hit");
    let text: String = sse_data(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "echo: hello");
    assert_eq!(upstream.requests().len(), 2);

    // Sampled requests are not cached by default.
    let mut sampled = ask("m");
    sampled["temperature"] = json!(0.8);
    let response = http.post(&url).json(&sampled).send().await.unwrap();
    assert!(response.headers().get("x-switchyard-cache").is_none());
}

#[tokio::test]
async fn rules_route_by_header_code_and_length() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("general", &upstream, ""),
        standin_model("coder", &upstream, ""),
        standin_model("cheap", &upstream, ""),
        standin_model("premium", &upstream, ""),
        "[routes.auto]\ndeployments = [{ model = \"general\" }]\nrules = [\n  { route = \"premium\", header = \"x-tier\", header_value = \"premium\" },\n  { route = \"coder\", has_code = true },\n  { route = \"cheap\", prompt_chars_below = 20 },\n]\n".into(),
    ]
    .concat();
    let server = Server::start(&config);
    let http = client();
    let url = format!("{}/chat/completions", server.v1());
    let route_of = |body: Value, tier: Option<&'static str>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut request = http.post(&url).json(&body);
            if let Some(tier) = tier {
                request = request.header("x-tier", tier);
            }
            let response = request.send().await.unwrap();
            response.headers()["x-switchyard-route"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let message =
        |text: &str| json!({"model": "auto", "messages": [{"role": "user", "content": text}]});
    assert_eq!(route_of(message("hi"), None).await, "cheap");
    assert_eq!(
        route_of(
            message("Please explain this error:\n```\nfn main() { let x: i32 = \"a\"; }\n```"),
            None
        )
        .await,
        "coder"
    );
    assert_eq!(
        route_of(
            message("Tell me about the history of Rome in detail."),
            None
        )
        .await,
        "auto/general"
    );
    assert_eq!(route_of(message("hi"), Some("premium")).await, "premium");
}

#[tokio::test]
async fn a_config_reload_under_load_fails_no_request() {
    let upstream = recording_standin().await;
    let before = [
        standin_model("blue", &upstream, ""),
        standin_model("green", &upstream, ""),
        "[routes.chat]\ndeployments = [{ model = \"blue\", weight = 100 }, { model = \"green\", weight = 0 }]\n".into(),
    ]
    .concat();
    let after = before.replace(
        "{ model = \"blue\", weight = 100 }, { model = \"green\", weight = 0 }",
        "{ model = \"blue\", weight = 0 }, { model = \"green\", weight = 100 }",
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(before.as_bytes()).unwrap();
    let server = Server::start_file(file.path());
    let body = ask("chat");
    let load = {
        let body = body.clone();
        let server = &server;
        async move { load(server, body, 600, 10).await }
    };
    let swap = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(file.path(), after.as_bytes()).unwrap();
        common::signal(server.pid(), "HUP");
    };
    let (statuses, ()) = tokio::join!(load, swap);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed during the reload"
    );
    assert!(
        server
            .wait_for_log(&["configuration reloaded"], Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        server.logs()
    );
    let response = server.post_chat(&body).await;
    assert_eq!(response.headers()["x-switchyard-route"], "chat/green");
    assert!(served_by(&upstream, "green") > 0);
}

/// Two gateway instances sharing a Redis cache. Ignored where Redis is
/// neither configured nor required (`make test` configures it).
#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_instances_share_the_redis_cache() {
    let redis = service_url(REDIS_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{REDIS_ENV} is not set"));
    let upstream = recording_standin().await;
    // A fresh namespace per run: the reply text carries a random marker.
    let marker = format!("run-{}", fastrand::u64(..));
    let config = [
        standin_model(
            "m",
            &upstream,
            &format!("headers = {{ \"x-standin-reply\" = \"{marker}\" }}"),
        ),
        format!("[cache]\nenabled = true\nttl_secs = 30\nredis_url = \"{redis}\"\n"),
    ]
    .concat();
    let one = Server::start(&config);
    let two = Server::start(&config);
    let mut request = ask("m");
    request["temperature"] = json!(0);
    request["messages"][0]["content"] = json!(marker.clone());
    let first = one.post_chat(&request).await;
    assert_eq!(first.headers()["x-switchyard-cache"], "miss");
    let _ = first.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = two.post_chat(&request).await;
    assert_eq!(second.headers()["x-switchyard-cache"], "hit");
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], marker);
    assert_eq!(upstream.requests().len(), 1);
}

/// Prompts written for the test, none among the routes' examples: the
/// route each should take.
const MEANING_SET: [(&str, &str); 20] = [
    ("How do I reverse a linked list in Rust?", "coder"),
    (
        "My Python function raises KeyError when the dict is empty; how do I fix it?",
        "coder",
    ),
    (
        "Write a SQL query that counts orders per customer.",
        "coder",
    ),
    ("Why does my JavaScript promise never resolve?", "coder"),
    (
        "Explain the borrow checker error E0502 in my code.",
        "coder",
    ),
    ("How can I speed up this nested for loop in C++?", "coder"),
    (
        "Write unit tests for a function that parses dates.",
        "coder",
    ),
    (
        "What does a segmentation fault mean in my C program?",
        "coder",
    ),
    ("Refactor this Java class to use an interface.", "coder"),
    ("How do I read a CSV file with pandas?", "coder"),
    ("What is a good name for a grey kitten?", "chatter"),
    ("Plan a relaxed weekend in Lisbon for two.", "chatter"),
    ("Suggest a vegetarian dinner for six people.", "chatter"),
    (
        "Write a short birthday message for my grandmother.",
        "chatter",
    ),
    (
        "What should I pack for a week of hiking in Norway?",
        "chatter",
    ),
    ("Recommend three novels for a long train ride.", "chatter"),
    ("How can I sleep better after night shifts?", "chatter"),
    ("Give me ideas for a rainy Sunday with kids.", "chatter"),
    ("What are fun facts about octopuses?", "chatter"),
    (
        "Help me write a polite note to my neighbour about noise.",
        "chatter",
    ),
];

#[tokio::test]
async fn routing_by_meaning_sends_code_questions_to_the_code_model_with_the_local_embedder() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("coder", &upstream, ""),
        standin_model("chatter", &upstream, ""),
        common::local_embedding_config(),
        "[routes.auto]\ndeployments = [{ model = \"chatter\" }]\nrules = [\n\
           { route = \"coder\", threshold = 0.25, similar_to = [\"Debug this function, it throws an exception\", \
             \"How do I implement a binary search in Python?\", \"Why does my program crash with a null pointer?\", \
             \"Write a regular expression that matches email addresses\", \"Fix the compile error in my Rust code\", \
             \"How do I join two tables in a database query?\", \"My web page's script throws an undefined error\", \
             \"Make this algorithm faster, it is too slow\", \"How do I load a spreadsheet into a data frame?\", \
             \"Write a test for this method\", \"Which design pattern fits this class hierarchy?\"] },\n\
           { route = \"chatter\", threshold = 0.25, similar_to = [\"What should I cook for dinner tonight?\", \
             \"Suggest a gift for my sister\", \"Where should I travel this summer?\", \
             \"Tell me something interesting about whales\", \"Help me write a thank-you card\", \
             \"What book should I read next?\", \"How do I relax after a stressful day?\", \
             \"Name ideas for my new puppy\", \"Plan a picnic with friends\"] },\n]\n"
            .to_owned(),
    ]
    .concat();
    let server = Server::start(&config);
    let mut right = 0;
    for (prompt, wanted) in MEANING_SET {
        let response = server
            .post_chat(&json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}))
            .await;
        assert_eq!(response.status(), 200);
        let route = response.headers()["x-switchyard-route"]
            .to_str()
            .unwrap()
            .to_owned();
        let served = upstream.requests().last().unwrap().body["model"].clone();
        if served == wanted {
            right += 1;
        } else {
            eprintln!("{prompt:?} went to {route}, not {wanted}");
        }
    }
    let accuracy = f64::from(right) / MEANING_SET.len() as f64;
    eprintln!(
        "routing by meaning: {right} of {} right ({accuracy:.2})",
        MEANING_SET.len()
    );
    assert!(accuracy >= 0.85, "accuracy {accuracy}");
    // The examples were embedded once; each request embedded its turn once
    // (the stand-in saw only chat calls: embeddings are local).
    assert_eq!(upstream.requests().len(), MEANING_SET.len());
}

fn semantic_config(upstream: &RunningStandin, cache: &str) -> String {
    [
        standin_model("m", upstream, ""),
        common::local_embedding_config(),
        "[routes.faq]\ndeployments = [{ model = \"m\" }]\nsemantic_cache = { threshold = 0.9 }\n"
            .to_owned(),
        cache.to_owned(),
    ]
    .concat()
}

fn faq(question: &str) -> Value {
    json!({"model": "faq", "temperature": 0, "messages": [{"role": "user", "content": question}]})
}

#[tokio::test]
async fn the_semantic_cache_answers_a_rewording_and_not_a_different_question() {
    let upstream = recording_standin().await;
    let server = Server::start(&semantic_config(&upstream, ""));
    let first = server.post_chat(&faq("How do I reset my password?")).await;
    assert_eq!(first.headers()["x-switchyard-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    // Kept off the request's path: a moment to land.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reworded = server.post_chat(&faq("How can I reset my password?")).await;
    assert_eq!(reworded.headers()["x-switchyard-cache"], "semantic-hit");
    let similarity: f32 = reworded.headers()["x-switchyard-cache-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(similarity >= 0.9, "{similarity}");
    let reworded: Value = reworded.json().await.unwrap();
    assert_eq!(
        reworded["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(upstream.requests().len(), 1);

    // A question on the same topic that asks something else is answered.
    let other = server.post_chat(&faq("How do I reset my username?")).await;
    assert_eq!(other.headers()["x-switchyard-cache"], "miss");
    let _ = other.text().await.unwrap();
    assert_eq!(upstream.requests().len(), 2);

    // Streams replay the cached answer as a stream.
    let mut streamed = faq("How can I reset my password, please?");
    streamed["stream"] = json!(true);
    let response = server.post_chat(&streamed).await;
    assert_eq!(response.headers()["x-switchyard-cache"], "semantic-hit");
    let body = response.text().await.unwrap();
    assert_eq!(
        common::streamed_text(&common::stream_chunks(&body)),
        first["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // A sampled request neither reads nor fills it.
    let mut sampled = faq("How can I reset my password?");
    sampled["temperature"] = json!(0.8);
    let response = server.post_chat(&sampled).await;
    assert!(response.headers().get("x-switchyard-cache").is_none());
    let _ = response.text().await.unwrap();
    assert_eq!(upstream.requests().len(), 3);

    let metrics = common::scrape(&server, None).await.text().await.unwrap();
    let hits = common::metric_sample(
        &metrics,
        "switchyard_cache_lookups_total",
        &["route=\"faq\"", "result=\"semantic_hit\""],
    );
    assert_eq!(hits, Some(2.0), "{metrics}");
}

/// Two replicas with one Redis: a rewording answered from what the other
/// replica cached.
#[tokio::test]
#[cfg_attr(
    not(switchyard_redis),
    ignore = "needs Redis: set SWITCHYARD_TEST_REDIS_URL (make test does)"
)]
async fn two_replicas_share_semantic_hits_through_redis() {
    let redis = service_url(REDIS_ENV)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{REDIS_ENV} is not set"));
    let upstream = recording_standin().await;
    // A fresh namespace per run: the conversation carries a random marker.
    let marker = format!("Support desk {}.", fastrand::u64(..));
    let config = semantic_config(
        &upstream,
        &format!("[cache]\nttl_secs = 30\nredis_url = \"{redis}\"\n"),
    );
    let one = Server::start(&config);
    let two = Server::start(&config);
    let ask = |question: &str| {
        json!({"model": "faq", "temperature": 0, "messages": [
            {"role": "system", "content": marker},
            {"role": "user", "content": question}]})
    };
    let first = one.post_chat(&ask("How do I reset my password?")).await;
    assert_eq!(first.headers()["x-switchyard-cache"], "miss");
    let _ = first.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = two.post_chat(&ask("How can I reset my password?")).await;
    assert_eq!(second.headers()["x-switchyard-cache"], "semantic-hit");
    let _ = second.text().await.unwrap();
    assert_eq!(upstream.requests().len(), 1);
}

fn replying(name: &str, upstream: &RunningStandin, reply: &str, extra: &str) -> String {
    standin_model(
        name,
        upstream,
        &format!("headers = {{ \"x-standin-reply\" = \"{reply}\"{extra} }}"),
    )
}

/// The steps of `request_id`'s decision path named `name`.
async fn steps(server: &Server, request_id: &str, name: &str) -> Vec<Value> {
    for _ in 0..100 {
        let audit: Value = client()
            .get(format!(
                "{}/admin/audit?request_id={request_id}",
                server.url
            ))
            .bearer_auth(MASTER_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(record) = audit["data"].get(0) {
            return record["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["step"] == name)
                .cloned()
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit record for {request_id}");
}

const MASTER_KEY: &str = "sy-master-orchestration-0123456789";

async fn asked(server: &Server, route: &str, id: &str, body: Value) -> Value {
    let mut body = body;
    body["model"] = json!(route);
    let response = client()
        .post(format!("{}/chat/completions", server.v1()))
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{id}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_cascade_serves_the_cheap_answer_when_accepted_and_escalates_when_not() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("cheap", &upstream, "pricing = { input = 0.1, output = 0.1 }"),
        replying("unsure", &upstream, "I don't know.", ""),
        standin_model("strong", &upstream, "pricing = { input = 10.0, output = 10.0 }"),
        replying("json-strong", &upstream, "{\\\"city\\\": \\\"Oslo\\\"}", ""),
        replying("judge-yes", &upstream, "Yes.", ""),
        replying("judge-no", &upstream, "No, it misses the point.", ""),
        replying("judge-slow", &upstream, "Yes.", ", \"x-standin-latency-ms\" = \"3000\""),
        format!("[governance]\nmaster_key = \"{MASTER_KEY}\"\nledger_flush_ms = 50\n"),
        "[routes.easy]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"strong\" }]\n\
         [routes.refusing]\nstrategy = \"cascade\"\ndeployments = [{ model = \"unsure\" }, { model = \"strong\" }]\n\
         [routes.picky]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"strong\" }]\ncascade = { judge = \"judge-no\" }\n\
         [routes.approved]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"strong\" }]\ncascade = { judge = \"judge-yes\" }\n\
         [routes.slow]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"strong\" }]\ncascade = { judge = \"judge-slow\", judge_timeout_ms = 200 }\n\
         [routes.structured]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"json-strong\" }]\n"
            .to_owned(),
    ]
    .concat();
    let server = Server::start(&config);
    let question =
        json!({"messages": [{"role": "user", "content": "What is the capital of Norway?"}]});
    let served = |answer: &Value| answer["model"].as_str().unwrap().to_owned();
    let count = |model: &str| served_by(&upstream, model);

    // Accepted at the first step: the strong model is never asked.
    let answer = asked(&server, "easy", "c-easy", question.clone()).await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: What is the capital of Norway?"
    );
    assert_eq!(
        (count("cheap"), count("strong")),
        (1, 0),
        "{}",
        served(&answer)
    );
    // A refusal escalates.
    let answer = asked(&server, "refusing", "c-refusing", question.clone()).await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: What is the capital of Norway?"
    );
    assert_eq!((count("unsure"), count("strong")), (1, 1));
    let path = steps(&server, "c-refusing", "cascade_step").await;
    assert_eq!(path[0]["accepted"], false);
    assert_eq!(path[0]["why"], "the answer refuses or does not know");
    assert_eq!(path[1]["accepted"], true);
    // The unaccepted step is billed with the request.
    let calls = steps(&server, "c-refusing", "call").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["purpose"], "cascade step");
    assert_eq!(calls[0]["deployment"], "unsure");
    // A judge that says no escalates; one that says yes accepts.
    asked(&server, "picky", "c-picky", question.clone()).await;
    assert_eq!(
        (count("cheap"), count("strong"), count("judge-no")),
        (2, 2, 1)
    );
    let judge_prompt = upstream
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "judge-no")
        .unwrap();
    let prompt = judge_prompt.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("Question: What is the capital of Norway?")
            && prompt.contains("Answer: echo:"),
        "{prompt}"
    );
    asked(&server, "approved", "c-approved", question.clone()).await;
    assert_eq!(
        (count("cheap"), count("strong"), count("judge-yes")),
        (3, 2, 1)
    );
    // A judge that times out escalates.
    asked(&server, "slow", "c-slow", question.clone()).await;
    assert_eq!((count("cheap"), count("strong")), (4, 3));
    let path = steps(&server, "c-slow", "cascade_step").await;
    assert!(
        path[0]["why"]
            .as_str()
            .unwrap()
            .contains("longer than 200 ms"),
        "{path:?}"
    );
    // An answer that is not the JSON asked for escalates.
    let mut structured = question.clone();
    structured["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "place",
        "schema": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}});
    let answer = asked(&server, "structured", "c-structured", structured).await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "{\"city\": \"Oslo\"}"
    );
    assert_eq!((count("cheap"), count("json-strong")), (5, 1));
    // Streams carry only the accepted answer.
    let mut streamed = question.clone();
    streamed["model"] = json!("refusing");
    streamed["stream"] = json!(true);
    let body = server.post_chat(&streamed).await.text().await.unwrap();
    let text = common::streamed_text(&common::stream_chunks(&body));
    assert_eq!(text, "echo: What is the capital of Norway?");

    let metrics = common::scrape(&server, Some(MASTER_KEY))
        .await
        .text()
        .await
        .unwrap();
    let answered = |route: &str, deployment: &str| {
        common::metric_sample(
            &metrics,
            "switchyard_cascade_answers_total",
            &[
                &format!("route=\"{route}\""),
                &format!("deployment=\"{deployment}\""),
            ],
        )
    };
    assert_eq!(answered("easy", "cheap"), Some(1.0));
    assert_eq!(answered("refusing", "strong"), Some(2.0));
    let saved = common::metric_sample(
        &metrics,
        "switchyard_cascade_saved_usd_total",
        &["route=\"easy\""],
    );
    assert!(saved.unwrap_or(0.0) > 0.0, "{metrics}");
}

#[tokio::test]
async fn a_cascade_escalates_what_its_cheap_step_was_unsure_of_by_token_logprobs_against_standin() {
    let upstream = recording_standin().await;
    let config = [
        standin_model("cheap", &upstream, "pricing = { input = 0.1, output = 0.1 }"),
        standin_model("strong", &upstream, "pricing = { input = 10.0, output = 10.0 }"),
        format!("[governance]\nmaster_key = \"{MASTER_KEY}\"\nledger_flush_ms = 50\n"),
        "[routes.confident]\nstrategy = \"cascade\"\ndeployments = [{ model = \"cheap\" }, { model = \"strong\" }]\n\
         cascade = { min_mean_logprob = -1.0 }\n"
            .to_owned(),
    ]
    .concat();
    let server = Server::start(&config);
    let count = |model: &str| served_by(&upstream, model);
    let ask = |text: &str| json!({"messages": [{"role": "user", "content": text}]});

    // The stand-in is sure of this one (every token at -0.05): step one.
    let easy = asked(
        &server,
        "confident",
        "lp-easy",
        ask("What is the capital of Norway?"),
    )
    .await;
    assert_eq!((count("cheap"), count("strong")), (1, 0));
    let sent = upstream
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "cheap")
        .unwrap();
    assert_eq!(sent.body["logprobs"], true, "the step was asked for them");
    assert_eq!(
        easy["choices"][0]["logprobs"],
        Value::Null,
        "the client did not ask for them"
    );
    // Scripted as unsure (every token at -3.0): escalated to the strong step.
    asked(
        &server,
        "confident",
        "lp-hard",
        ask("[unsure] What did Ibsen have for breakfast on 3 May 1880?"),
    )
    .await;
    assert_eq!((count("cheap"), count("strong")), (2, 1));
    let path = steps(&server, "lp-hard", "cascade_step").await;
    assert!(
        path[0]["why"]
            .as_str()
            .unwrap()
            .contains("mean token log-probability -3.00 is below -1"),
        "{path:?}"
    );
    assert_eq!(path[1]["accepted"], true);
    // A client that asks gets the served answer's, in OpenAI's shape.
    let mut asking = ask("What is the capital of Norway?");
    asking["logprobs"] = json!(true);
    let answer = asked(&server, "confident", "lp-asked", asking).await;
    let tokens = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    let text: String = tokens
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: What is the capital of Norway?");
    assert!(
        tokens.iter().all(|t| t["logprob"] == json!(-0.05)),
        "{tokens:?}"
    );
    assert!(tokens.iter().all(|t| t["top_logprobs"] == json!([])));
}

#[tokio::test]
async fn ensembles_pick_with_a_judge_or_write_with_an_aggregator_and_leave_the_late_behind() {
    let upstream = recording_standin().await;
    let config = [
        replying("a", &upstream, "Oslo is the capital.", ""),
        replying("b", &upstream, "The capital of Norway is Oslo.", ""),
        replying("late", &upstream, "Too late to matter.", ", \"x-standin-latency-ms\" = \"5000\""),
        replying("picker", &upstream, "2", ""),
        replying("writer", &upstream, "Oslo, the capital of Norway.", ""),
        format!("[governance]\nmaster_key = \"{MASTER_KEY}\"\nledger_flush_ms = 50\n"),
        "[routes.panel]\nstrategy = \"best-of\"\ndeployments = [{ model = \"a\" }, { model = \"b\" }, { model = \"late\" }]\n\
         ensemble = { judge = \"picker\", deadline_ms = 500 }\n\
         [routes.blend]\nstrategy = \"mixture\"\ndeployments = [{ model = \"a\" }, { model = \"b\" }]\n\
         ensemble = { aggregator = \"writer\" }\n"
            .to_owned(),
    ]
    .concat();
    let server = Server::start(&config);
    let question =
        json!({"messages": [{"role": "user", "content": "What is the capital of Norway?"}]});
    let started = std::time::Instant::now();
    let picked = asked(&server, "panel", "e-panel", question.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the late member was waited for"
    );
    assert_eq!(
        picked["choices"][0]["message"]["content"],
        "The capital of Norway is Oslo."
    );
    let judge = upstream
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "picker")
        .unwrap();
    let prompt = judge.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("Answer 1:\nOslo is the capital.")
            && prompt.contains("Answer 2:\nThe capital of Norway is Oslo."),
        "{prompt}"
    );
    assert!(!prompt.contains("Too late"), "{prompt}");
    let pick = steps(&server, "e-panel", "ensemble_pick").await;
    assert_eq!(pick[0]["deployment"], "b");
    assert_eq!(pick[0]["of"], 2);
    let calls: Vec<String> = steps(&server, "e-panel", "call")
        .await
        .iter()
        .map(|c| format!("{}:{}", c["purpose"], c["deployment"]).replace('"', ""))
        .collect();
    assert_eq!(calls, ["ensemble judge:picker", "ensemble member:a"]);

    let blended = asked(&server, "blend", "e-blend", question.clone()).await;
    assert_eq!(
        blended["choices"][0]["message"]["content"],
        "Oslo, the capital of Norway."
    );
    let writer = upstream
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "writer")
        .unwrap();
    let prompt = writer.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("Oslo is the capital.")
            && prompt.contains("The capital of Norway is Oslo.")
    );
    let members = steps(&server, "e-blend", "ensemble_member").await;
    assert_eq!(members.len(), 2);
}
