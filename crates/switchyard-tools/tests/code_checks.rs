//! The code assistant's checks, run in this host's real sandbox
//! (bubblewrap, installed by `scripts/bootstrap.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use switchyard_config::{CodeCheck, RunCodeConfig};
use switchyard_tools::code_checks::{CheckOutcome, CheckResult, extract_code, run_checks};
use switchyard_tools::sandbox::RunCode;

const ALL: [CodeCheck; 3] = [CodeCheck::Syntax, CodeCheck::Tests, CodeCheck::Lint];

fn sandbox() -> &'static RunCode {
    static SANDBOX: OnceLock<RunCode> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let limits = RunCodeConfig {
            cpu_secs: 1,
            wall_secs: 5,
            concurrency: 8,
            ..RunCodeConfig::default()
        };
        RunCode::detect(&limits).unwrap_or_else(|why| {
            panic!("the sandbox must work on this host (scripts/bootstrap.sh installs bubblewrap): {why}")
        })
    })
}

async fn check(answer: &str, given: &str) -> Vec<CheckResult> {
    let code = extract_code(answer);
    run_checks(Ok(sandbox()), &ALL, code.as_ref(), given).await
}

fn outcome(results: &[CheckResult], check: CodeCheck) -> &CheckResult {
    results.iter().find(|r| r.check == check).unwrap()
}

/// Whether the python3 the sandbox runs (the system's) has pyflakes.
fn pyflakes_installed() -> bool {
    std::process::Command::new("python3")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["-c", "import pyflakes"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn test_functions_unittest_cases_and_imports_of_the_solution_all_run() {
    let answer = "```python\ndef add(a, b):\n    return a + b\n```\n\n```python\n# tests\nimport unittest\nfrom solution import add as imported\n\ndef test_add():\n    assert add(2, 2) == 4\n\ndef test_imported():\n    assert imported(1, 1) == 2\n\nclass AddTest(unittest.TestCase):\n    def test_negative(self):\n        self.assertEqual(add(-1, -1), -2)\n```";
    let results = check(answer, "").await;
    let tests = outcome(&results, CodeCheck::Tests);
    assert_eq!(tests.outcome, CheckOutcome::Passed, "{results:?}");
    assert_eq!(tests.summary, "3 of 3 tests passed");
    assert_eq!(
        outcome(&results, CodeCheck::Syntax).outcome,
        CheckOutcome::Passed
    );
}

#[tokio::test]
async fn a_failing_test_is_reported_with_its_traceback() {
    let answer = "```python\ndef add(a, b):\n    return a - b\n\ndef test_add():\n    assert add(2, 2) == 4, 'two and two'\n```";
    // The model's own test function, in its solution block, and the
    // user's assert.
    let results = check(answer, "assert add(1, 0) == 1").await;
    let tests = outcome(&results, CodeCheck::Tests);
    assert_eq!(tests.outcome, CheckOutcome::Failed, "{results:?}");
    assert!(tests.output.contains("two and two"), "{}", tests.output);
    assert!(tests.output.contains("AssertionError"), "{}", tests.output);
}

#[tokio::test]
async fn the_linter_finds_undefined_names_where_it_is_installed() {
    let answer = "```python\nimport os\n\ndef area(r):\n    return pi * r * r\n```";
    let results = check(answer, "").await;
    let lint = outcome(&results, CodeCheck::Lint);
    if pyflakes_installed() {
        assert_eq!(lint.outcome, CheckOutcome::Failed, "{results:?}");
        assert!(
            lint.output.contains("undefined name 'pi'"),
            "{}",
            lint.output
        );
        assert!(
            lint.output.contains("'os' imported but unused"),
            "{}",
            lint.output
        );
    } else {
        assert_eq!(lint.outcome, CheckOutcome::Skipped);
        assert_eq!(lint.summary, "pyflakes is not installed");
    }
    let tests = outcome(&results, CodeCheck::Tests);
    assert_eq!(tests.outcome, CheckOutcome::Skipped);
    assert_eq!(tests.summary, "no tests were given or written");
}

#[tokio::test]
async fn code_that_never_ends_is_stopped_by_the_sandboxs_limits() {
    let answer = "```python\ndef spin():\n    while True:\n        pass\n```";
    let results = check(answer, "spin()\nassert True").await;
    let tests = outcome(&results, CodeCheck::Tests);
    assert_eq!(tests.outcome, CheckOutcome::Failed, "{results:?}");
    assert!(tests.summary.starts_with("stopped: "), "{}", tests.summary);
}

#[tokio::test]
async fn a_syntax_error_names_its_line_and_skips_the_rest() {
    let results = check("```python\ndef f(:\n    pass\n```", "assert f() is None").await;
    let syntax = outcome(&results, CodeCheck::Syntax);
    assert_eq!(syntax.outcome, CheckOutcome::Failed);
    assert!(
        syntax.summary.starts_with("solution.py, line 1"),
        "{}",
        syntax.summary
    );
    for later in [CodeCheck::Tests, CodeCheck::Lint] {
        assert_eq!(
            outcome(&results, later).summary,
            "the code does not compile"
        );
    }
}

#[tokio::test]
async fn without_a_sandbox_or_without_code_nothing_runs_and_the_results_say_why() {
    let code = extract_code("```python\nprint('hi')\n```");
    let results = run_checks(Err("bubblewrap is missing"), &ALL, code.as_ref(), "").await;
    assert!(results.iter().all(|r| r.outcome == CheckOutcome::Skipped));
    assert!(results[0].summary.contains("bubblewrap is missing"));
    let results = run_checks(Ok(sandbox()), &ALL, None, "").await;
    assert!(results.iter().all(|r| r.outcome == CheckOutcome::Failed));
    assert_eq!(results[0].summary, "the answer holds no Python code block");
}
