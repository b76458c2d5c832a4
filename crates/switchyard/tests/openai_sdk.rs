//! The official `openai` and `anthropic` Python packages, unmodified,
//! against the server and its local models (streaming and not, errors
//! included). `make test` installs the packages into `.venv`;
//! `SWITCHYARD_TEST_PYTHON` may name another interpreter that has them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, local_embedding_config, local_model_config, run_check};

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
fn official_openai_sdk_gets_schema_valid_json_from_the_local_model() {
    let server = Server::start(&local_model_config(""));
    run_check(
        &server,
        "openai_sdk_structured_check.py",
        server.v1(),
        "openai SDK structured output checks passed",
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
