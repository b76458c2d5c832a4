//! Configuration reloads (SIGHUP) while serving, against stand-in
//! upstreams in OpenAI's wire format: every section a reload may change
//! takes effect for new requests, and a request in flight finishes on the
//! snapshot it arrived on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Server, client, recording_standin, standin_model};
use serde_json::{Value, json};

const MASTER: &str = "sy-master-reload-test";

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Rewrites the config file, signals the server and waits for the reload.
async fn reload_with(server: &Server, file: &tempfile::NamedTempFile, config: &str) {
    let marks_before = server.logs().matches("configuration reloaded").count();
    std::fs::write(file.path(), config.as_bytes()).unwrap();
    common::signal(server.pid(), "HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.logs().matches("configuration reloaded").count() == marks_before {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config_file(config: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn a_reload_that_turns_authentication_on_refuses_the_next_keyless_request() {
    let upstream = recording_standin().await;
    let governance =
        |auth: bool| format!("[governance]\nauth = {auth}\nmaster_key = \"{MASTER}\"\n");
    let before = [standin_model("m", &upstream, ""), governance(false)].concat();
    let file = config_file(&before);
    let server = Server::start_file(file.path());
    assert_eq!(server.post_chat(&ask("m")).await.status(), 200);

    let after = [standin_model("m", &upstream, ""), governance(true)].concat();
    reload_with(&server, &file, &after).await;
    let refused = server.post_chat(&ask("m")).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let with_key = client()
        .post(format!("{}/chat/completions", server.v1()))
        .bearer_auth(MASTER)
        .json(&ask("m"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 200);
    assert!(
        !server.logs().contains("take effect on restart only"),
        "authentication needs no restart:\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn a_reload_adds_an_assistant_and_names_what_needs_a_restart() {
    let upstream = recording_standin().await;
    let models = [
        standin_model("m", &upstream, ""),
        common::local_embedding_config(),
    ]
    .concat();
    let file = config_file(&models);
    let server = Server::start_file(file.path());
    let lookup = |name: &str| {
        let url = format!("{}/models/{name}", server.v1());
        async move { client().get(url).send().await.unwrap().status() }
    };
    assert_eq!(lookup("helper").await, 404);

    let after = format!(
        "max_body_bytes = 1000000\n{models}\n[retrieval.assistants.helper]\nmodel = \"m\"\ncollection = \"docs\"\n"
    );
    reload_with(&server, &file, &after).await;
    assert_eq!(lookup("helper").await, 200);
    let listing: Value = client()
        .get(format!("{}/models", server.v1()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listing["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "helper"),
        "{listing}"
    );
    assert!(
        server
            .logs()
            .contains("take effect on restart only: max_body_bytes"),
        "{}",
        server.logs()
    );
}

/// The audit record of one request, once the ledger has written it.
async fn audit_of(server: &Server, request_id: &str) -> Value {
    common::audit_record(server, MASTER, request_id).await
}

fn route_step(record: &Value) -> Value {
    record["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "route")
        .cloned()
        .unwrap_or_else(|| panic!("no route step: {record}"))
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_its_snapshot_while_new_ones_use_the_new_one() {
    let upstream = recording_standin().await;
    let config = |weights: (u32, u32)| {
        [
            // The blue deployment answers slowly, so a request to it is
            // still in flight when the configuration changes.
            standin_model(
                "blue",
                &upstream,
                "headers = { \"x-standin-latency-ms\" = \"1500\" }",
            ),
            standin_model("green", &upstream, ""),
            format!(
                "[routes.chat]\ndeployments = [{{ model = \"blue\", weight = {} }}, {{ model = \"green\", weight = {} }}]\n",
                weights.0, weights.1
            ),
            format!("[governance]\nmaster_key = \"{MASTER}\"\n"),
        ]
        .concat()
    };
    let file = config_file(&config((100, 0)));
    let server = Server::start_file(file.path());
    let send = |request_id: &'static str| {
        let url = format!("{}/chat/completions", server.v1());
        async move {
            client()
                .post(url)
                .header("x-request-id", request_id)
                .json(&ask("chat"))
                .send()
                .await
                .unwrap()
        }
    };
    let in_flight = send("before-reload");
    let reload_then_ask = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reload_with(&server, &file, &config((0, 100))).await;
        send("after-reload").await
    };
    let (old, new) = tokio::join!(in_flight, reload_then_ask);
    assert_eq!(old.status(), 200);
    assert_eq!(old.headers()["x-switchyard-route"], "chat/blue");
    assert_eq!(new.status(), 200);
    assert_eq!(new.headers()["x-switchyard-route"], "chat/green");

    let old_record = audit_of(&server, "before-reload").await;
    assert_eq!(route_step(&old_record)["deployment"], "blue");
    let new_record = audit_of(&server, "after-reload").await;
    assert_eq!(route_step(&new_record)["deployment"], "green");
}
