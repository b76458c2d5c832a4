//! The official `openai` Python package, unmodified, against the server and
//! its local model (streaming and not, errors included). `make test` installs
//! the package into `.venv`; `SWITCHYARD_TEST_PYTHON` may name another
//! interpreter that has it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, local_embedding_config, local_model_config};

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SWITCHYARD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.is_file(),
        "no Python with the openai package: run `make test` (it creates .venv) or set SWITCHYARD_TEST_PYTHON"
    );
    venv
}

#[test]
fn official_openai_sdk_streams_and_not() {
    let config = format!("{}\n{}", local_model_config(""), local_embedding_config());
    let server = Server::start(&config);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk_check.py");
    let output = Command::new(python())
        .arg(script)
        .arg(server.v1())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openai SDK check failed:\nstdout: {}\nstderr: {}\nserver logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("openai SDK checks passed"));
}
