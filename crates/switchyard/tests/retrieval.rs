//! Retrieval end to end: the real gateway with the local chat model
//! (SmolLM2) and the local embedder (all-MiniLM-L6-v2), pages of the Rust
//! Book ingested through the CLI and the API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, client, signal, stream_chunks};
use serde_json::{Value, json};

const MASTER: &str = "sy-master-retrieval-test";

fn book_page(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../switchyard-retrieval/tests/corpus/rust-book")
        .join(format!("{name}.html"))
}

fn config(extra: &str) -> String {
    common::local_model_config(&format!(
        "{}\n[retrieval.assistants.book-assistant]\nmodel = \"smollm2-135m-instruct\"\ncollection = \"book\"\ntop_k = 3\n{extra}",
        common::local_embedding_config()
    ))
}

async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls an ingestion job until it ends.
async fn finished(server: &Server, key: Option<&str>, job: &Value) -> Value {
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, body) = call(
            server,
            reqwest::Method::GET,
            &format!("/v1/ingestion_jobs/{id}"),
            key,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "succeeded" || body["status"] == "failed" {
            return body;
        }
        assert!(Instant::now() < deadline, "job never finished: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn search(server: &Server, key: Option<&str>, collection: &str, query: &str) -> (u16, Value) {
    call(
        server,
        reqwest::Method::POST,
        &format!("/v1/collections/{collection}/search"),
        key,
        Some(json!({"query": query, "top_k": 5})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grounded_answers_cite_the_page_that_holds_the_answer_and_stream() {
    let server = Server::start(&config(""));
    let pages = tempfile::tempdir().unwrap();
    for name in [
        "ch01-01-installation",
        "ch08-03-hash-maps",
        "ch16-01-threads",
        "ch11-01-writing-tests",
    ] {
        std::fs::copy(book_page(name), pages.path().join(format!("{name}.html"))).unwrap();
    }
    std::fs::write(pages.path().join("notes.bin"), b"\x00\x01").unwrap();

    // The CLI walks the folder, creates the collection and follows the job.
    let output = std::process::Command::new(common::binary())
        .args(["ingest", "book"])
        .arg(pages.path())
        .args(["--url", &server.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("4 documents into `book`"), "{stdout}");
    assert!(stdout.contains("0 failed, 1 files skipped"), "{stdout}");
    let (_, collection) = call(
        &server,
        reqwest::Method::GET,
        "/v1/collections/book",
        None,
        None,
    )
    .await;
    assert_eq!(collection["documents"], 4, "{collection}");
    assert!(collection["chunks"].as_u64().unwrap() > 40, "{collection}");

    // Running it again changes nothing.
    let again = std::process::Command::new(common::binary())
        .args(["ingest", "book"])
        .arg(pages.path())
        .args(["--url", &server.url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("4 unchanged"));

    let questions = [
        (
            "How do I install rustup on Linux or macOS?",
            "ch01-01-installation.html",
        ),
        (
            "How do I count word occurrences with the entry API of a HashMap?",
            "ch08-03-hash-maps.html",
        ),
        (
            "How do I wait for a spawned thread to finish using join?",
            "ch16-01-threads.html",
        ),
    ];
    for (question, page) in questions {
        // Through the assistant alias, whole.
        let response = server
            .post_chat(&json!({
                "model": "book-assistant",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 24,
                "temperature": 0,
            }))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "book-assistant");
        let citations = body["citations"].as_array().unwrap();
        assert!(!citations.is_empty() && citations.len() <= 3, "{body}");
        assert_eq!(citations[0]["document_id"], page, "{question}: {body}");
        assert_eq!(citations[0]["index"], 1);
        assert_eq!(citations[0]["collection"], "book");
        let (start, end) = (
            citations[0]["start"].as_u64().unwrap(),
            citations[0]["end"].as_u64().unwrap(),
        );
        assert!(end > start);
        assert!(!citations[0]["title"].as_str().unwrap().is_empty());
        assert!(
            !body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        // The sources reached the model: the prompt is far longer than the question.
        assert!(
            body["usage"]["prompt_tokens"].as_u64().unwrap() > 150,
            "{body}"
        );

        // Through the extension field, streamed.
        let response = server
            .post_chat(&json!({
                "model": "smollm2-135m-instruct",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 16,
                "stream": true,
                "retrieval": {"collection": "book", "top_k": 2},
            }))
            .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"));
        let chunks = stream_chunks(&text);
        assert_eq!(chunks[0]["citations"][0]["document_id"], page, "{text}");
        assert!(chunks[1..].iter().all(|c| c.get("citations").is_none()));
        let pieces = chunks
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert!(pieces > 1, "the answer streams in pieces: {text}");
    }

    // A follow-up is searched with the turn it follows.
    let body: Value = server
        .post_chat(&json!({
            "model": "book-assistant",
            "messages": [
                {"role": "user", "content": "How do I install rustup?"},
                {"role": "assistant", "content": "Run the installer script."},
                {"role": "user", "content": "And how do I check which version I have?"},
            ],
            "max_tokens": 8,
        }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["citations"][0]["document_id"], "ch01-01-installation.html",
        "{body}"
    );

    // The Responses API grounds the same way: the assistant, and the
    // extension field; the sources come back as citations on the text.
    for body in [
        json!({"model": "book-assistant", "input": "How do I wait for a spawned thread to finish using join?",
               "max_output_tokens": 16}),
        json!({"model": "smollm2-135m-instruct", "input": "How do I wait for a spawned thread to finish using join?",
               "max_output_tokens": 16, "retrieval": {"collection": "book", "top_k": 2}}),
    ] {
        let (status, response) = call(
            &server,
            reqwest::Method::POST,
            "/v1/responses",
            None,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{response}");
        let annotations = &response["output"][0]["content"][0]["annotations"];
        assert_eq!(annotations[0]["type"], "file_citation", "{response}");
        assert_eq!(
            annotations[0]["file_id"], "ch16-01-threads.html",
            "{response}"
        );
        assert_eq!(annotations[0]["index"], 1);
    }

    // Bad requests get the API's error shape.
    let response = server
        .post_chat(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "hi"}],
            "retrieval": {"collection": "nope"},
        }))
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let response = server
        .post_chat(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "hi"}],
            "retrieval": {"collection": "book", "mode": "psychic"},
        }))
        .await;
    assert_eq!(response.status(), 400);

    // The assistant is listed among the models.
    let (_, models) = call(&server, reqwest::Method::GET, "/v1/models", None, None).await;
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "book-assistant"),
        "{models}"
    );
    let (status, model) = call(
        &server,
        reqwest::Method::GET,
        "/v1/models/book-assistant",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], "book-assistant");

    // Retrieval time is logged apart and measured.
    assert!(server.logs().contains("retrieval_ms="), "{}", server.logs());
    let metrics = common::scrape(&server, None).await.text().await.unwrap();
    let count = common::metric_sample(&metrics, "switchyard_retrieval_duration_seconds_count", &[])
        .unwrap();
    assert!(count >= 8.0, "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_survive_restarts_and_kills_and_stay_within_their_tenant() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let governed = config(&format!(
        "[governance]\nauth = true\nmaster_key = \"{MASTER}\"\n"
    ));
    let mut server = Server::start_with_env(&governed, &[("SWITCHYARD_DATA_DIR", &data_dir)]);
    let admin = Some(MASTER);
    let mut keys = Vec::new();
    let mut tenant_ids = Vec::new();
    for name in ["acme", "globex"] {
        let (_, tenant) = call(
            &server,
            reqwest::Method::POST,
            "/admin/tenants",
            admin,
            Some(json!({"name": name})),
        )
        .await;
        let (_, key) = call(
            &server,
            reqwest::Method::POST,
            "/admin/keys",
            admin,
            Some(json!({"tenant_id": tenant["id"], "name": "app"})),
        )
        .await;
        tenant_ids.push(tenant["id"].clone());
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    let (acme, globex) = (Some(keys[0].as_str()), Some(keys[1].as_str()));

    // An assistant is listed only to keys that may use its model.
    let acme_tenant = &tenant_ids[0];
    let (_, narrow) = call(
        &server,
        reqwest::Method::POST,
        "/admin/keys",
        admin,
        Some(json!({"tenant_id": acme_tenant, "name": "narrow", "allowed_models": ["another-model"]})),
    )
    .await;
    let narrow = narrow["key"].as_str().unwrap();
    for (key, listed) in [(acme, true), (Some(narrow), false)] {
        let (_, models) = call(&server, reqwest::Method::GET, "/v1/models", key, None).await;
        let ids: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.contains(&"book-assistant"), listed, "{models}");
        let (status, _) = call(
            &server,
            reqwest::Method::GET,
            "/v1/models/book-assistant",
            key,
            None,
        )
        .await;
        assert_eq!(status, if listed { 200 } else { 404 });
    }

    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections",
        None,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(status, 401, "a key is needed");
    let (status, created) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections",
        acme,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections",
        acme,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections",
        acme,
        Some(json!({"name": "../etc"})),
    )
    .await;
    assert_eq!(status, 400);

    let documents = json!({"documents": [
        {"id": "refunds", "format": "markdown", "content": "# Refunds\n\nRefunds are paid back to the original card within fourteen days of the return.", "metadata": {"team": "billing"}},
        {"id": "shipping", "format": "markdown", "content": "# Shipping\n\nParcels ship from the Rotterdam warehouse every weekday before noon.", "metadata": {"team": "logistics"}},
    ]});
    let (status, job) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections/docs/documents",
        acme,
        Some(documents),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(finished(&server, acme, &job).await["status"], "succeeded");
    // A raw upload names its format by Content-Type.
    let response = client()
        .put(format!(
            "{}/v1/collections/docs/documents/returns",
            server.url
        ))
        .bearer_auth(keys[0].as_str())
        .header("content-type", "text/plain")
        .body("Returns are accepted for thirty days when the item is unused.")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    assert_eq!(finished(&server, acme, &job).await["status"], "succeeded");
    let response = client()
        .put(format!(
            "{}/v1/collections/docs/documents/image",
            server.url
        ))
        .bearer_auth(keys[0].as_str())
        .header("content-type", "image/png")
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    let (status, found) = search(&server, acme, "docs", "when is my money refunded?").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"][0]["document_id"], "refunds", "{found}");
    assert_eq!(found["data"][0]["metadata"]["team"], "billing");
    let (_, filtered) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections/docs/search",
        acme,
        Some(json!({"query": "when is my money refunded?", "filter": {"metadata": {"team": "logistics"}}})),
    )
    .await;
    let ids: Vec<&str> = filtered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shipping"], "{filtered}");

    // Another tenant sees nothing of acme's, even under the same name.
    let (status, _) = call(
        &server,
        reqwest::Method::GET,
        "/v1/collections/docs",
        globex,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = search(&server, globex, "docs", "refunds").await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/ingestion_jobs/{}", job["id"].as_str().unwrap()),
        globex,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, listed) = call(
        &server,
        reqwest::Method::GET,
        "/v1/collections",
        globex,
        None,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections",
        globex,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, theirs) = search(&server, globex, "docs", "refunds card fourteen days").await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0, "{theirs}");
    let response = server
        .post_chat(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "refunds"}],
            "max_tokens": 4,
            "retrieval": {"collection": "docs"},
        }))
        .await;
    assert_eq!(response.status(), 401);

    // Deleting a document takes it out of results.
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/v1/collections/docs/documents/shipping",
        acme,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/v1/collections/docs/documents/shipping",
        acme,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, found) = search(&server, acme, "docs", "Rotterdam warehouse parcels").await;
    assert!(
        found["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] != "shipping"),
        "{found}"
    );

    // A long ingestion killed half way leaves the index as it was
    // committed: every document whole, the earlier ones searchable.
    let pages: Vec<Value> = std::fs::read_dir(book_page("x").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| json!({"id": p.file_stem().unwrap().to_str().unwrap(), "format": "html", "content": std::fs::read_to_string(&p).unwrap()}))
        .collect();
    let (status, job) = call(
        &server,
        reqwest::Method::POST,
        "/v1/collections/docs/documents",
        acme,
        Some(json!({"documents": pages})),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, progress) = call(
            &server,
            reqwest::Method::GET,
            &format!("/v1/ingestion_jobs/{id}"),
            acme,
            None,
        )
        .await;
        if progress["chunks_embedded"].as_u64().unwrap_or(0) > 0 {
            assert_ne!(
                progress["status"], "succeeded",
                "the job should still be running: {progress}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{progress}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(server.pid(), "KILL");
    server.wait_exit(Duration::from_secs(10));

    let server = Server::start_with_env(&governed, &[("SWITCHYARD_DATA_DIR", &data_dir)]);
    let (status, found) = search(&server, acme, "docs", "when is my money refunded?").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["data"][0]["document_id"], "refunds",
        "the index survives a restart: {found}"
    );
    let (_, collection) = call(
        &server,
        reqwest::Method::GET,
        "/v1/collections/docs",
        acme,
        None,
    )
    .await;
    let (_, documents) = call(
        &server,
        reqwest::Method::GET,
        "/v1/collections/docs/documents",
        acme,
        None,
    )
    .await;
    let documents = documents["data"].as_array().unwrap();
    let ids: Vec<&str> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"refunds") && ids.contains(&"returns") && !ids.contains(&"shipping"),
        "{ids:?}"
    );
    let listed_chunks: u64 = documents
        .iter()
        .map(|d| d["chunks"].as_u64().unwrap())
        .sum();
    assert_eq!(
        collection["chunks"].as_u64().unwrap(),
        listed_chunks,
        "no document is half written: {collection}"
    );
    assert!(ids.len() < 2 + 47, "the killed job did not finish: {ids:?}");
    let (_, theirs) = search(&server, globex, "docs", "refunds card fourteen days").await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);

    // Deleting the collection removes it.
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/v1/collections/docs",
        acme,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = search(&server, acme, "docs", "refunds").await;
    assert_eq!(status, 404);
}
