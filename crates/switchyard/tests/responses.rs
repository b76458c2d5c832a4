//! OpenAI's Responses API end to end, through the real gateway process:
//! the conversation kept by Switchyard (a second turn reaches the stand-in
//! upstreams with the first turn in it, though the client sent only its
//! new input) for OpenAI-, Anthropic- and Gemini-format upstreams and the
//! local model; the semantic event stream; tenants kept apart; a response
//! the client saw complete surviving a kill -9; the official SDK.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, client, local_model_config, recording_standin, sse_data, standin_model};
use serde_json::{Value, json};

const MASTER: &str = "sy-master-responses-test-0123456789";

async fn respond(server: &Server, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}/responses", server.v1()))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

/// The roles and texts of the messages an upstream received.
fn received(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(text) => text.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap().to_owned(), text)
        })
        .collect()
}

#[tokio::test]
async fn a_second_turn_reaches_the_standin_with_the_first_without_the_client_resending_it() {
    let upstream = recording_standin().await;
    let server = Server::start(&standin_model("remote", &upstream, ""));
    let (status, first) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "My name is Ada.", "instructions": "Be brief.",
               "metadata": {"case": "memory"}}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["metadata"]["case"], "memory");
    assert_eq!(output_text(&first), "echo: My name is Ada.");
    let first_id = first["id"].as_str().unwrap();

    let (status, second) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "What is my name?", "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], first_id);
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        received(&sent[0].body),
        [
            ("system".to_owned(), "Be brief.".to_owned()),
            ("user".to_owned(), "My name is Ada.".to_owned())
        ]
    );
    // Instructions are the first turn's alone; its input and answer are
    // the second's history.
    assert_eq!(
        received(&sent[1].body),
        [
            ("user".to_owned(), "My name is Ada.".to_owned()),
            ("assistant".to_owned(), "echo: My name is Ada.".to_owned()),
            ("user".to_owned(), "What is my name?".to_owned()),
        ]
    );

    // Retrieved as served; its input items (history first with order=asc).
    let second_id = second["id"].as_str().unwrap();
    let retrieved: Value = client()
        .get(format!("{}/responses/{second_id}", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retrieved, second);
    let items: Value = client()
        .get(format!(
            "{}/responses/{second_id}/input_items?order=asc&limit=2",
            server.v1()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items["object"], "list");
    assert_eq!(items["has_more"], true);
    assert_eq!(items["data"][0]["role"], "user");
    assert_eq!(items["data"][1]["content"][0]["type"], "output_text");

    // `store: false` keeps nothing to continue.
    let (_, unstored) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "forget me", "store": false}),
    )
    .await;
    let (status, error) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "x", "previous_response_id": unstored["id"]}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");
    assert_eq!(
        upstream.requests().len(),
        3,
        "a missing history calls no model"
    );
}

#[tokio::test]
async fn the_stream_is_openais_semantic_events_in_order_and_the_response_is_stored() {
    let upstream = recording_standin().await;
    let server = Server::start(&standin_model("remote", &upstream, ""));
    let response = client()
        .post(format!("{}/responses", server.v1()))
        .json(&json!({"model": "remote", "input": "stream me", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let events: Vec<Value> = sse_data(&body)
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let deltas = types
        .iter()
        .filter(|t| **t == "response.output_text.delta")
        .count();
    assert!(deltas >= 2, "{types:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(types, expected);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n);
    }
    // Every event names itself in the SSE `event:` line too.
    assert!(
        body.contains("event: response.output_text.delta\n"),
        "{body}"
    );
    let completed = &events.last().unwrap()["response"];
    let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(text, "echo: stream me");
    assert_eq!(output_text(completed), text);
    assert!(completed["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let id = completed["id"].as_str().unwrap();
    let stored: Value = client()
        .get(format!("{}/responses/{id}", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&stored, completed);

    // A streamed function call: its arguments as deltas, then done.
    let response = client()
        .post(format!("{}/responses", server.v1()))
        .json(&json!({"model": "remote", "input": "look it up", "stream": true,
                      "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}))
        .send()
        .await
        .unwrap();
    let events: Vec<Value> = sse_data(&response.text().await.unwrap())
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let added = events
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap();
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["name"], "lookup");
    let arguments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    let done = events
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"], arguments);
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"query": "look it up"})
    );
}

#[tokio::test]
async fn anthropic_and_gemini_upstreams_get_the_history_in_their_own_wire_formats() {
    let upstream = recording_standin().await;
    let root = upstream.root_url();
    let config = format!(
        "[models.claude]\nbackend = \"anthropic\"\nbase_url = \"{root}\"\napi_key = \"sk-ant-standin\"\n\
         upstream_model = \"claude-3-5-haiku-latest\"\n\
         [models.gemini]\nbackend = \"gemini\"\nbase_url = \"{root}/v1beta\"\napi_key = \"gemini-standin\"\n\
         upstream_model = \"gemini-2.0-flash\"\n"
    );
    let server = Server::start(&config);
    for model in ["claude", "gemini"] {
        let (status, first) = respond(
            &server,
            None,
            json!({"model": model, "input": "The code word is heron.", "instructions": "Answer briefly."}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {first}");
        assert_eq!(output_text(&first), "echo: The code word is heron.");
        let (status, second) = respond(
            &server,
            None,
            json!({"model": model, "input": "What is the code word?",
                   "previous_response_id": first["id"]}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {second}");
        assert_eq!(output_text(&second), "echo: What is the code word?");
    }
    let sent = upstream.requests();
    assert_eq!(sent.len(), 4);
    // Anthropic: the system prompt apart, the turns as messages.
    let claude = &sent[1].body;
    assert!(
        claude.get("system").is_none(),
        "instructions were the first turn's: {claude}"
    );
    let turns: Vec<&str> = claude["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(turns, ["user", "assistant", "user"], "{claude}");
    assert!(claude.to_string().contains("The code word is heron."));
    // Gemini: contents with user and model roles.
    let gemini = &sent[3].body;
    let roles: Vec<&str> = gemini["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user"], "{gemini}");
    assert!(gemini.to_string().contains("echo: The code word is heron."));
}

#[tokio::test]
async fn one_tenant_cannot_read_continue_or_delete_anothers_responses() {
    let upstream = recording_standin().await;
    let config = format!(
        "{}[governance]\nauth = true\nmaster_key = \"{MASTER}\"\n",
        standin_model("remote", &upstream, "")
    );
    let server = Server::start(&config);
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let tenant: Value = client()
            .post(format!("{}/admin/tenants", server.url))
            .bearer_auth(MASTER)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key: Value = client()
            .post(format!("{}/admin/keys", server.url))
            .bearer_auth(MASTER)
            .json(&json!({"tenant_id": tenant["id"], "name": "app", "role": "member"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    let (status, mine) = respond(
        &server,
        Some(&keys[0]),
        json!({"model": "remote", "input": "a secret plan"}),
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let id = mine["id"].as_str().unwrap();
    for path in [
        format!("responses/{id}"),
        format!("responses/{id}/input_items"),
    ] {
        let status = client()
            .get(format!("{}/{path}", server.v1()))
            .bearer_auth(&keys[1])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = respond(
        &server,
        Some(&keys[1]),
        json!({"model": "remote", "input": "and then?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 404);
    let deleted = client()
        .delete(format!("{}/responses/{id}", server.v1()))
        .bearer_auth(&keys[1])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(deleted, 404);
    // Its owner still has it; the audit record links the new response to
    // the one it continued.
    let continued = client()
        .post(format!("{}/responses", server.v1()))
        .bearer_auth(&keys[0])
        .header("x-request-id", "continue-1")
        .json(&json!({"model": "remote", "input": "and then?", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(continued.status(), 200);
    let continued: Value = continued.json().await.unwrap();
    assert_eq!(upstream.requests().len(), 2);
    let mut step = Value::Null;
    for _ in 0..100 {
        let audit: Value = client()
            .get(format!("{}/admin/audit?request_id=continue-1", server.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(found) = audit["data"][0]["decisions"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["step"] == "response"))
        {
            step = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(step["id"], continued["id"], "{step}");
    assert_eq!(step["previous_response_id"], id);
    assert_eq!(step["history_items"], 2);
    // Without a key, nothing.
    let status = client()
        .get(format!("{}/responses/{id}", server.v1()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_conversation_is_the_history_of_the_responses_created_in_it_and_stays_in_its_tenant() {
    let upstream = recording_standin().await;
    let config = format!(
        "{}[governance]\nauth = true\nmaster_key = \"{MASTER}\"\n",
        standin_model("remote", &upstream, "")
    );
    let server = Server::start(&config);
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let tenant: Value = client()
            .post(format!("{}/admin/tenants", server.url))
            .bearer_auth(MASTER)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key: Value = client()
            .post(format!("{}/admin/keys", server.url))
            .bearer_auth(MASTER)
            .json(&json!({"tenant_id": tenant["id"], "name": "app", "role": "member"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    let conversation: Value = client()
        .post(format!("{}/conversations", server.v1()))
        .bearer_auth(&keys[0])
        .json(&json!({"items": [{"role": "user", "content": "The code is 42."}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = conversation["id"].as_str().unwrap();
    assert_eq!(conversation["object"], "conversation");
    for turn in ["What is the code?", "Say it again."] {
        let (status, reply) = respond(
            &server,
            Some(&keys[0]),
            json!({"model": "remote", "input": turn, "conversation": id}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["conversation"]["id"], id);
    }
    let sent = upstream.requests();
    assert_eq!(
        received(&sent[1].body),
        [
            ("user".to_owned(), "The code is 42.".to_owned()),
            ("user".to_owned(), "What is the code?".to_owned()),
            ("assistant".to_owned(), "echo: What is the code?".to_owned()),
            ("user".to_owned(), "Say it again.".to_owned()),
        ]
    );
    // Another tenant can neither see it nor answer in it.
    let status = client()
        .get(format!("{}/conversations/{id}/items", server.v1()))
        .bearer_auth(&keys[1])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let (status, error) = respond(
        &server,
        Some(&keys[1]),
        json!({"model": "remote", "input": "x", "conversation": id}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["param"], "conversation");
    // Both at once is a mistake.
    let (status, error) = respond(
        &server,
        Some(&keys[0]),
        json!({"model": "remote", "input": "x", "conversation": id, "previous_response_id": "resp_x"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_response_the_client_saw_complete_survives_a_kill_9() {
    let upstream = recording_standin().await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let config = standin_model("remote", &upstream, "");
    let env = [("SWITCHYARD_DATA_DIR", data_dir.as_str())];
    let mut server = Server::start_with_env(&config, &env);
    let (_, whole) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "keep this"}),
    )
    .await;
    let conversation: Value = client()
        .post(format!("{}/conversations", server.v1()))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, in_conversation) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "note this", "conversation": conversation["id"]}),
    )
    .await;
    assert_eq!(in_conversation["status"], "completed");
    let streamed = client()
        .post(format!("{}/responses", server.v1()))
        .json(
            &json!({"model": "remote", "input": "and this", "stream": true,
                      "previous_response_id": whole["id"]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(sse_data(&streamed).last().unwrap()).unwrap();
    assert_eq!(last["type"], "response.completed");
    let id = last["response"]["id"].as_str().unwrap().to_owned();
    common::signal(server.pid(), "KILL");
    server.wait_exit(Duration::from_secs(10));

    let server = Server::start_with_env(&config, &env);
    let items: Value = client()
        .get(format!(
            "{}/responses/{id}/input_items?order=asc",
            server.v1()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["content"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["keep this", "echo: keep this", "and this"]);
    let items: Value = client()
        .get(format!(
            "{}/conversations/{}/items?order=asc",
            server.v1(),
            conversation["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["content"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["note this", "echo: note this"]);
}

#[tokio::test]
async fn the_local_model_continues_a_response_and_reuses_its_prompt_prefix() {
    let server = Server::start(&local_model_config(""));
    let ask = |input: &str, previous: Option<&Value>| {
        // Instructions belong to one turn: each turn brings them again.
        let mut body = json!({"model": "smollm2-135m-instruct", "input": input,
                              "instructions": "You are a helpful assistant.",
                              "temperature": 0, "max_output_tokens": 24});
        if let Some(previous) = previous {
            body["previous_response_id"] = previous["id"].clone();
        }
        body
    };
    let (status, first) = respond(
        &server,
        None,
        ask("What is the capital of France? Answer in one word.", None),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert!(output_text(&first).contains("Paris"), "{first}");
    let (status, second) = respond(
        &server,
        None,
        ask("And of Italy? Answer in one word.", Some(&first)),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let (one, two) = (&first["usage"], &second["usage"]);
    // The second prompt holds the first turn, and the engine evaluated
    // only what it had not seen.
    assert!(
        two["input_tokens"].as_u64().unwrap()
            > one["input_tokens"].as_u64().unwrap() + one["output_tokens"].as_u64().unwrap(),
        "{one} {two}"
    );
    assert!(
        two["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{two}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_sdk_drives_the_responses_api() {
    let upstream = recording_standin().await;
    let config = format!(
        "{}{}",
        standin_model("remote", &upstream, ""),
        local_model_config("")
    );
    let server = Server::start(&config);
    let url = server.v1();
    // The script blocks; the stand-in answering it runs on this runtime.
    tokio::task::block_in_place(|| {
        common::run_check(
            &server,
            "openai_sdk_responses_check.py",
            url,
            "openai SDK responses checks passed",
        );
    });
}

/// A long conversation: a system message, then `turns` exchanges of about
/// 75 tokens a message, with a tool call and its result in turns 5 and 36.
fn long_conversation(turns: usize) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": "You are the archivist."})];
    for turn in 0..turns {
        let padding = "lorem ipsum dolor sit amet ".repeat(10);
        messages.push(json!({"role": "user", "content": format!("Question {turn}: {padding}")}));
        if turn == 5 || turn == 36 {
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": format!("call_{turn}"), "type": "function",
                 "function": {"name": "lookup", "arguments": format!("{{\"turn\":{turn}}}")}}]}));
            messages.push(
                json!({"role": "tool", "tool_call_id": format!("call_{turn}"),
                                 "content": format!("result {turn}: {padding}")}),
            );
        }
        messages.push(json!({"role": "assistant", "content": format!("Answer {turn}: {padding}")}));
    }
    messages
}

/// Every tool result an upstream received follows the assistant message
/// that made its call.
fn tool_pairs_whole(messages: &[Value]) -> bool {
    messages.iter().enumerate().all(|(i, m)| {
        m["role"] != "tool"
            || messages[..i]
                .iter()
                .rev()
                .take_while(|p| p["role"] == "tool" || p["tool_calls"].is_array())
                .any(|p| {
                    p["tool_calls"]
                        .as_array()
                        .is_some_and(|calls| calls.iter().any(|c| c["id"] == m["tool_call_id"]))
                })
    })
}

#[tokio::test]
async fn a_forty_turn_conversation_is_truncated_to_a_2k_window_keeping_the_newest_turns_and_tool_pairs()
 {
    let upstream = recording_standin().await;
    let config = format!(
        "{}[context]\nfit = {{ \"small-window\" = \"truncate\" }}\n",
        standin_model("small-window", &upstream, "context_window = 2048")
    );
    let server = Server::start(&config);
    let mut messages = long_conversation(40);
    messages.push(json!({"role": "user", "content": "And the last question?"}));
    let response = server
        .post_chat(&json!({"model": "small-window", "messages": messages}))
        .await;
    assert_eq!(response.status(), 200);
    let sent = upstream.requests();
    let received = sent[0].body["messages"].as_array().unwrap().clone();
    assert!(
        received.len() < messages.len() / 2,
        "{} of {}",
        received.len(),
        messages.len()
    );
    // The system message, then a user's turn, ..., the newest turns as sent.
    assert_eq!(received[0], messages[0]);
    assert_eq!(received[1]["role"], "user");
    let tail = &messages[messages.len() - 6..];
    assert_eq!(&received[received.len() - 6..], tail);
    assert!(tool_pairs_whole(&received), "{received:?}");
    // About what the window leaves: 2048 less a quarter for the answer.
    let characters: usize = received.iter().map(|m| m.to_string().len()).sum();
    assert!(characters / 4 < 1536 + 200, "{characters} characters sent");
}

#[tokio::test]
async fn summarize_writes_one_summary_and_the_next_turn_reuses_it() {
    let upstream = recording_standin().await;
    let config = format!(
        "{}{}[governance]\nmaster_key = \"{MASTER}\"\nledger_flush_ms = 50\n\
         [context]\nfit = {{ \"archive\" = \"summarize\" }}\nsummary_model = \"summarizer\"\n",
        standin_model("archive", &upstream, "context_window = 2048"),
        standin_model(
            "summarizer",
            &upstream,
            "headers = { \"x-standin-reply\" = \"The user asked forty questions about lorem ipsum.\" }"
        ),
    );
    let server = Server::start(&config);
    let mut messages = long_conversation(40);
    messages.push(json!({"role": "user", "content": "And the next one?"}));
    for turn in 0..2 {
        let response = client()
            .post(format!("{}/chat/completions", server.v1()))
            .header("x-request-id", format!("summarized-{turn}"))
            .json(&json!({"model": "archive", "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        messages.push(answer["choices"][0]["message"].clone());
        messages.push(json!({"role": "user", "content": "One more?"}));
    }
    let sent = upstream.requests();
    let summaries = sent
        .iter()
        .filter(|r| r.body["model"] == "summarizer")
        .count();
    assert_eq!(summaries, 1, "the second turn reuses the summary");
    let answered: Vec<&Value> = sent
        .iter()
        .filter(|r| r.body["model"] == "archive")
        .map(|r| &r.body)
        .collect();
    assert_eq!(answered.len(), 2);
    for body in &answered {
        let received = body["messages"].as_array().unwrap();
        assert_eq!(received[0]["content"], "You are the archivist.");
        assert_eq!(
            received[1]["content"],
            "Summary of the earlier conversation: The user asked forty questions about lorem ipsum."
        );
        assert_eq!(received[2]["role"], "user");
        assert!(tool_pairs_whole(received));
    }
    // Both turns were cut at the same place: the second sent two more.
    let lengths: Vec<usize> = answered
        .iter()
        .map(|b| b["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(lengths[1], lengths[0] + 2, "{lengths:?}");
    // The summary model read the dropped turns, not the newest.
    let summarizer = sent
        .iter()
        .find(|r| r.body["model"] == "summarizer")
        .unwrap();
    let transcript = summarizer.body["messages"][1]["content"].as_str().unwrap();
    assert!(transcript.contains("Question 0:") && !transcript.contains("Question 39:"));
    // The audit trail says so.
    for (turn, summary) in [(0, "written"), (1, "reused")] {
        let mut step = Value::Null;
        for _ in 0..100 {
            let audit: Value = client()
                .get(format!(
                    "{}/admin/audit?request_id=summarized-{turn}",
                    server.url
                ))
                .bearer_auth(MASTER)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(found) = audit["data"][0]["decisions"]
                .as_array()
                .and_then(|steps| steps.iter().find(|s| s["step"] == "fit"))
            {
                step = found.clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(step["mode"], "summarize", "{step}");
        assert_eq!(step["summary"], summary);
    }
}

#[tokio::test]
async fn truncation_auto_fits_a_long_input_to_the_local_models_window_by_its_own_tokenizer() {
    let server = Server::start(&local_model_config(""));
    let input: Vec<Value> = long_conversation(20)
        .into_iter()
        .filter(|m| m["tool_calls"].is_null() && m["role"] != "tool")
        .chain([json!({"role": "user", "content": "What is the capital of France? Answer in one word."})])
        .collect();
    let body = |truncation: &str| {
        json!({"model": "smollm2-135m-instruct", "input": input, "truncation": truncation,
               "max_output_tokens": 16, "temperature": 0})
    };
    let (status, error) = respond(&server, None, body("disabled")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    let (status, fitted) = respond(&server, None, body("auto")).await;
    assert_eq!(status, 200, "{fitted}");
    assert_eq!(fitted["truncation"], "auto");
    let prompt = fitted["usage"]["input_tokens"].as_u64().unwrap();
    // The local window is 1,024 tokens; 16 are kept for the answer.
    assert!(prompt + 16 <= 1024 && prompt > 256, "{prompt}");
}

#[tokio::test]
async fn with_mask_on_stored_items_keep_no_personal_data() {
    let upstream = recording_standin().await;
    let config = format!(
        "{}[conversations]\nmask = true\nretention_days = 30\n",
        standin_model("remote", &upstream, "")
    );
    let server = Server::start(&config);
    let (status, first) = respond(
        &server,
        None,
        json!({"model": "remote", "input": "Mail jane.doe@example.com about it."}),
    )
    .await;
    assert_eq!(status, 200);
    // The client's own answer is as the model wrote it...
    assert_eq!(
        output_text(&first),
        "echo: Mail jane.doe@example.com about it."
    );
    let id = first["id"].as_str().unwrap();
    // ...what is kept is masked, and so is the history a later turn gets.
    let stored: Value = client()
        .get(format!("{}/responses/{id}", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(output_text(&stored), "echo: Mail [EMAIL] about it.");
    let items: Value = client()
        .get(format!("{}/responses/{id}/input_items", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        items["data"][0]["content"][0]["text"],
        "Mail [EMAIL] about it."
    );
    respond(
        &server,
        None,
        json!({"model": "remote", "input": "Thanks.", "previous_response_id": id}),
    )
    .await;
    let sent = upstream.requests();
    assert!(
        !sent[1].body.to_string().contains("jane.doe"),
        "{}",
        sent[1].body
    );
}
