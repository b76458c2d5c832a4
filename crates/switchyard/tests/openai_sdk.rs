//! The official `openai` and `anthropic` Python packages, unmodified,
//! against the server and its local models (streaming and not, errors
//! included). `make test` installs the packages into `.venv`;
//! `SWITCHYARD_TEST_PYTHON` may name another interpreter that has them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, local_embedding_config, local_model_config, python};

/// Runs one SDK check script against `url`, failing with everything useful.
fn run_check(server: &Server, script: &str, url: String, passed: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(python())
        .arg(script)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "SDK check failed:\nstdout: {}\nstderr: {}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(passed));
}

#[test]
fn official_openai_sdk_streams_and_not() {
    let config = format!("{}\n{}", local_model_config(""), local_embedding_config());
    let server = Server::start(&config);
    run_check(
        &server,
        "openai_sdk_check.py",
        server.v1(),
        "openai SDK checks passed",
    );
}

#[test]
fn official_openai_sdk_gets_grounded_answers_with_citations_through_extra_body() {
    let config = format!("{}\n{}", local_model_config(""), local_embedding_config());
    let server = Server::start(&config);
    run_check(
        &server,
        "openai_sdk_retrieval_check.py",
        server.v1(),
        "openai SDK retrieval checks passed",
    );
}

#[test]
fn official_anthropic_sdk_streams_and_not_with_the_local_model() {
    let server = Server::start(&local_model_config(""));
    run_check(
        &server,
        "anthropic_sdk_check.py",
        server.url.clone(),
        "anthropic SDK checks passed",
    );
}
