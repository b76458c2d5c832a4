//! What the code assistant does with a model's answer: finds the Python
//! code and the tests in it, runs the configured checks on them in the
//! sandbox, and writes up the results (for the user, and for the model
//! when the code must be repaired).
//!
//! Each check is a small Python program of ours that receives the code as
//! a string literal: the code is compiled, executed or linted inside the
//! sandbox, never on the host.

use std::time::Instant;

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use switchyard_config::{CodeCheck, SandboxLanguage};

use crate::sandbox::{Limit, RunCode};

/// The code of an answer: the solution, and the tests that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// The solution's code blocks, joined.
    pub solution: String,
    /// Test blocks, joined; empty when there are none.
    pub tests: String,
}

/// The Python code blocks of `markdown`: the solution and its tests. A
/// block is a test block when its first line says so (`# tests`), when
/// it defines only `test…` functions and `unittest` cases, or when it is
/// bare `assert`s. Blocks marked `python` are the code; unmarked ones
/// count only when none is marked (they are often shell commands or
/// output). `None` when there is no Python block at all.
pub fn extract_code(markdown: &str) -> Option<Extracted> {
    let mut extracted = Extracted::default();
    let mut found = false;
    for block in python_blocks(markdown) {
        found = true;
        let part = if is_test_block(&block) {
            &mut extracted.tests
        } else {
            &mut extracted.solution
        };
        if !part.is_empty() {
            part.push_str("\n\n");
        }
        part.push_str(block.trim_end());
    }
    found.then_some(extracted)
}

/// The tests of `markdown` (a user's message): its Python blocks that are
/// test blocks, joined; empty when it has none.
pub fn given_tests(markdown: &str) -> String {
    python_blocks(markdown)
        .into_iter()
        .filter(|block| is_test_block(block))
        .map(|block| block.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Fenced blocks marked Python, in order, as a CommonMark parser reads
/// them (fences inside other blocks, indented fences and unclosed ones are
/// its business, not ours); the unmarked ones when none is marked.
fn python_blocks(markdown: &str) -> Vec<String> {
    let mut marked = Vec::new();
    let mut unmarked = Vec::new();
    // The block being read, and whether it is marked.
    let mut current: Option<(String, bool)> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let language = info.split_whitespace().next().unwrap_or("");
                match language.to_ascii_lowercase().as_str() {
                    "python" | "py" | "python3" => current = Some((String::new(), true)),
                    "" => current = Some((String::new(), false)),
                    _ => {}
                }
            }
            Event::Text(text) => {
                if let Some((block, _)) = &mut current {
                    block.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((block, is_marked)) = current.take()
                    && !block.trim().is_empty()
                {
                    if is_marked {
                        marked.push(block);
                    } else {
                        unmarked.push(block);
                    }
                }
            }
            _ => {}
        }
    }
    if marked.is_empty() { unmarked } else { marked }
}

fn is_test_block(block: &str) -> bool {
    let first = block
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(comment) = first.strip_prefix('#') {
        let words: Vec<&str> = comment.split_whitespace().take(2).collect();
        let says_tests = |w: &str| matches!(w.trim_end_matches(':'), "test" | "tests");
        if words.first().is_some_and(|w| says_tests(w))
            || (words.first() == Some(&"unit") && words.get(1).is_some_and(|w| says_tests(w)))
        {
            return true;
        }
    }
    let defs: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("def ") || l.starts_with("async def ") || l.starts_with("class "))
        .collect();
    if defs.is_empty() {
        return block.lines().any(|l| l.starts_with("assert "));
    }
    defs.iter().all(|d| {
        let d = d.trim_start_matches("async ");
        d.strip_prefix("def ")
            .is_some_and(|name| name.starts_with("test"))
            || d.strip_prefix("class ")
                .is_some_and(|class| class.contains("TestCase"))
    })
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It ran and found nothing wrong.
    Passed,
    /// It ran and found a problem.
    Failed,
    /// It could not run (no tests, no linter, no sandbox, code that does
    /// not compile).
    Skipped,
}

impl CheckOutcome {
    /// Its name in answers, audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check.
    pub check: CodeCheck,
    /// How it came out.
    pub outcome: CheckOutcome,
    /// One line for the user: why it was skipped, how many tests passed.
    pub summary: String,
    /// What it printed (a failure's details), cut to a readable size.
    pub output: String,
    /// Its time in the sandbox, in milliseconds.
    pub duration_ms: u64,
}

/// The most of a check's output shown to the user and the model.
const MAX_SHOWN_OUTPUT: usize = 2_000;

/// The exit status our lint program gives when no linter is installed.
const EXIT_NO_LINTER: i32 = 3;

/// Runs `checks` in order on `code`, with `given` tests (the user's) run
/// beside the model's. `sandbox` is `Err(why)` where code cannot be run
/// here: every check is then skipped, saying why. Code that does not
/// compile skips the checks after `syntax`.
pub async fn run_checks(
    sandbox: Result<&RunCode, &str>,
    checks: &[CodeCheck],
    code: Option<&Extracted>,
    given: &str,
) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    let mut compiles = true;
    for &check in checks {
        let skipped = |summary: String| CheckResult {
            check,
            outcome: CheckOutcome::Skipped,
            summary,
            output: String::new(),
            duration_ms: 0,
        };
        let Some(code) = code else {
            results.push(CheckResult {
                outcome: CheckOutcome::Failed,
                ..skipped("the answer holds no Python code block".into())
            });
            continue;
        };
        let sandbox = match sandbox {
            Ok(sandbox) => sandbox,
            Err(why) => {
                results.push(skipped(format!("code cannot be run on this server: {why}")));
                continue;
            }
        };
        if !compiles {
            results.push(skipped("the code does not compile".into()));
            continue;
        }
        let tests = [given, code.tests.as_str()]
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        let program = match check {
            CodeCheck::Syntax => syntax_program(&code.solution),
            CodeCheck::Tests if tests.is_empty() => {
                results.push(skipped("no tests were given or written".into()));
                continue;
            }
            CodeCheck::Tests => tests_program(&code.solution, &tests),
            CodeCheck::Lint => lint_program(&code.solution),
        };
        let result = run_check(sandbox, check, &program).await;
        if check == CodeCheck::Syntax && result.outcome == CheckOutcome::Failed {
            compiles = false;
        }
        results.push(result);
    }
    results
}

async fn run_check(sandbox: &RunCode, check: CodeCheck, program: &str) -> CheckResult {
    let started = Instant::now();
    let report = sandbox.run(SandboxLanguage::Python, program).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            return CheckResult {
                check,
                outcome: CheckOutcome::Skipped,
                summary: format!("the sandbox could not run it: {error}"),
                output: String::new(),
                duration_ms,
            };
        }
    };
    let output = shown(&[report.stdout.as_str(), report.stderr.as_str()]);
    let (outcome, summary) = match (report.exit_code, report.limit) {
        (_, Some(limit)) => (
            CheckOutcome::Failed,
            format!("stopped: {}", limit_words(limit)),
        ),
        (Some(0), None) => (CheckOutcome::Passed, last_line(&report.stdout)),
        (Some(EXIT_NO_LINTER), None) if check == CodeCheck::Lint => {
            (CheckOutcome::Skipped, "pyflakes is not installed".into())
        }
        _ => (CheckOutcome::Failed, last_line(&report.stdout)),
    };
    CheckResult {
        check,
        outcome,
        summary,
        output: if outcome == CheckOutcome::Failed {
            output
        } else {
            String::new()
        },
        duration_ms,
    }
}

fn limit_words(limit: Limit) -> &'static str {
    match limit {
        Limit::WallTime => "it ran past its time",
        Limit::CpuTime => "it used its CPU seconds",
        Limit::Output => "it printed too much",
        Limit::Memory => "it ran out of memory",
        Limit::Processes => "it started too many processes",
    }
}

/// The last line a check printed: its verdict (the tests' tally, the
/// syntax error).
fn last_line(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The outputs joined, the end kept when too long (a traceback's last
/// lines say what failed).
fn shown(outputs: &[&str]) -> String {
    let joined = outputs
        .iter()
        .map(|o| o.trim_end())
        .filter(|o| !o.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if joined.len() <= MAX_SHOWN_OUTPUT {
        return joined;
    }
    let mut start = joined.len() - MAX_SHOWN_OUTPUT;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…\n{}", &joined[start..])
}

/// `text` as a Python string literal: a JSON string is one (its escapes
/// are Python's too).
fn literal(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn syntax_program(solution: &str) -> String {
    format!(
        r#"import sys
try:
    compile({source}, "solution.py", "exec")
except SyntaxError as error:
    if error.text:
        print("    " + error.text.rstrip())
    print(f"solution.py, line {{error.lineno}}: {{error.msg}}")
    sys.exit(1)
print("it compiles")
"#,
        source = literal(solution)
    )
}

/// Runs the tests against the solution: test functions (`test…`) and
/// `unittest` cases, each reported; bare asserts run as they load. The
/// solution is also written as `solution.py`, so tests that import it
/// find it.
fn tests_program(solution: &str, tests: &str) -> String {
    format!(
        r#"import sys, traceback, unittest
SOURCE = {source}
TESTS = {tests}
with open("solution.py", "w") as f:
    f.write(SOURCE)
sys.path.insert(0, ".")
namespace = {{"__name__": "solution"}}
exec(compile(SOURCE, "solution.py", "exec"), namespace)
exec(compile(TESTS, "tests.py", "exec"), namespace)
ran = failed = 0
for name, test in list(namespace.items()):
    if name.startswith("test") and callable(test) and not isinstance(test, type):
        ran += 1
        try:
            test()
            print(f"PASS {{name}}")
        except Exception:
            failed += 1
            print(f"FAIL {{name}}")
            traceback.print_exc(file=sys.stdout)
cases = [v for v in list(namespace.values()) if isinstance(v, type) and issubclass(v, unittest.TestCase) and v is not unittest.TestCase]
for case in cases:
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    ran += result.testsRun
    failed += len(result.failures) + len(result.errors)
if ran == 0:
    print("the asserts passed")
else:
    print(f"{{ran - failed}} of {{ran}} tests passed")
sys.exit(1 if failed else 0)
"#,
        source = literal(solution),
        tests = literal(tests)
    )
}

fn lint_program(solution: &str) -> String {
    format!(
        r#"import sys
try:
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
except ImportError:
    sys.exit({EXIT_NO_LINTER})
problems = check({source}, "solution.py", Reporter(sys.stdout, sys.stdout))
print(f"pyflakes found {{problems}} problems" if problems else "pyflakes found nothing")
sys.exit(1 if problems else 0)
"#,
        source = literal(solution)
    )
}

/// The results for the user: one line per check, a failure's output
/// under it.
pub fn render(results: &[CheckResult], repairs: u32) -> String {
    let repaired = match repairs {
        0 => String::new(),
        1 => "; the code was repaired once".to_owned(),
        n => format!("; the code was repaired {n} times"),
    };
    let mut text = format!("**Checks** (run in Switchyard's sandbox{repaired}):\n");
    for result in results {
        text.push_str(&format!(
            "- {}: {}",
            result.check.name(),
            result.outcome.name()
        ));
        if !result.summary.is_empty() {
            text.push_str(&format!(" ({})", result.summary));
        }
        text.push('\n');
        if !result.output.is_empty() {
            text.push_str(&format!("\n  ```\n{}\n  ```\n", indent(&result.output)));
        }
    }
    text
}

/// What the model is told when its code failed: each failed check and
/// its output.
pub fn repair_request(results: &[CheckResult]) -> String {
    let mut text = String::from("The code did not pass its checks.\n");
    for result in results.iter().filter(|r| r.outcome == CheckOutcome::Failed) {
        text.push_str(&format!("\n{} failed", result.check.name()));
        if !result.summary.is_empty() {
            text.push_str(&format!(": {}", result.summary));
        }
        text.push('\n');
        if !result.output.is_empty() {
            text.push_str(&format!("```\n{}\n```\n", result.output));
        }
    }
    text.push_str(
        "\nFix the code. Answer with the whole corrected code in one ```python block, then say briefly what you changed.",
    );
    text
}

/// Whether any check failed.
pub fn any_failed(results: &[CheckResult]) -> bool {
    results.iter().any(|r| r.outcome == CheckOutcome::Failed)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solution_and_its_tests_are_told_apart() {
        let answer = "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nAnd tests:\n\n```python\n# tests\nassert add(1, 2) == 3\n```\n\n```bash\nrm -rf /\n```\n";
        let code = extract_code(answer).unwrap();
        assert_eq!(code.solution, "def add(a, b):\n    return a + b");
        assert_eq!(code.tests, "# tests\nassert add(1, 2) == 3");
        let only_tests = "```py\ndef test_add():\n    assert add(1, 1) == 2\n```";
        assert_eq!(extract_code(only_tests).unwrap().solution, "");
        assert!(extract_code("no code here, `inline` only").is_none());
        assert!(is_test_block(
            "import unittest\nclass T(unittest.TestCase):\n    pass"
        ));
        assert!(!is_test_block(
            "def add(a, b):\n    return a + b\n\ndef test_add():\n    assert add(1, 1) == 2"
        ));
        assert!(is_test_block("# Unit tests:\nassert f() == 1"));
        // A first comment that merely contains "test", or a solution that
        // mentions unittest, is code.
        assert!(!is_test_block("# fastest way\ndef f():\n    return 1"));
        assert!(!is_test_block(
            "import unittest\n\ndef helper():\n    return unittest"
        ));
        // Unmarked blocks count only when no block is marked python.
        let mixed = "```\n$ pip install x\n```\n\n```python\ndef f():\n    return 1\n```";
        assert_eq!(
            extract_code(mixed).unwrap().solution,
            "def f():\n    return 1"
        );
        let bare = "```\ndef f():\n    return 1\n```";
        assert_eq!(
            extract_code(bare).unwrap().solution,
            "def f():\n    return 1"
        );
    }

    #[test]
    fn a_users_tests_are_their_test_blocks() {
        let message = "Write add.\n\n```python\nassert add(2, 3) == 5\n```\n\n```python\nprint('not a test')\n```";
        assert_eq!(given_tests(message), "assert add(2, 3) == 5");
        assert_eq!(given_tests("no tests"), "");
    }

    #[test]
    fn code_reaches_python_as_an_exact_string_literal() {
        let tricky = "s = \"quote\" + 'single' + \"\\\\n\" + '''triple'''\n# ünïcode \u{1F600}\n";
        let program = syntax_program(tricky);
        assert!(program.contains(&literal(tricky)));
        assert!(!literal(tricky).contains('\n'));
    }

    #[test]
    fn results_read_as_a_list_with_failures_shown() {
        let results = vec![
            CheckResult {
                check: CodeCheck::Syntax,
                outcome: CheckOutcome::Passed,
                summary: String::new(),
                output: String::new(),
                duration_ms: 1,
            },
            CheckResult {
                check: CodeCheck::Tests,
                outcome: CheckOutcome::Failed,
                summary: "0 of 1 tests passed".into(),
                output: "FAIL test_add\nAssertionError".into(),
                duration_ms: 1,
            },
        ];
        let text = render(&results, 2);
        assert!(text.contains("repaired 2 times"), "{text}");
        assert!(text.contains("- syntax: passed\n"), "{text}");
        assert!(
            text.contains("- tests: failed (0 of 1 tests passed)"),
            "{text}"
        );
        assert!(text.contains("  AssertionError"), "{text}");
        assert!(any_failed(&results));
        let repair = repair_request(&results);
        assert!(
            repair.contains("tests failed: 0 of 1 tests passed"),
            "{repair}"
        );
        assert!(!repair.contains("syntax"), "{repair}");
        let long = "x".repeat(MAX_SHOWN_OUTPUT * 2);
        assert!(shown(&[&long]).len() <= MAX_SHOWN_OUTPUT + 4);
    }
}
