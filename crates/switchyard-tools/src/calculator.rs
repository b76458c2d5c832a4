//! `calculator`: exact arithmetic and common functions, on fend's
//! arbitrary-precision rational numbers (so `2^100`, `1/3 + 1/6` and
//! `0.1 + 0.2` come out exact), with units (`5 km to miles`).

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_core::ToolDefinition;

use crate::toolbox::{Tool, ToolError, parse_arguments};

/// How long one expression may compute (`10^10^10` would take forever).
const EVALUATION_LIMIT: Duration = Duration::from_secs(2);

/// Longest expression accepted.
const MAX_EXPRESSION_BYTES: usize = 4096;

/// The calculator tool.
#[derive(Debug, Default)]
pub struct Calculator;

impl Calculator {
    /// The tool.
    pub fn new() -> Self {
        Self
    }
}

#[derive(Deserialize)]
struct Arguments {
    expression: String,
}

/// What the model gets back.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    /// The expression as given.
    pub expression: String,
    /// Its value.
    pub result: String,
}

/// Stops an evaluation past its deadline.
struct Deadline(Instant);

impl fend_core::Interrupt for Deadline {
    fn should_interrupt(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Evaluates `expression` (CPU work: call it off the async runtime).
pub fn evaluate(expression: &str) -> Result<String, ToolError> {
    if expression.trim().is_empty() {
        return Err(ToolError::Arguments("the expression is empty".into()));
    }
    if expression.len() > MAX_EXPRESSION_BYTES {
        return Err(ToolError::Arguments(format!(
            "the expression is longer than {MAX_EXPRESSION_BYTES} bytes"
        )));
    }
    let mut context = fend_core::Context::new();
    // Same input, same answer: no random functions.
    context.disable_rng();
    let deadline = Deadline(Instant::now() + EVALUATION_LIMIT);
    match fend_core::evaluate_with_interrupt(expression, &mut context, &deadline) {
        Ok(result) if result.output_is_empty() => {
            Err(ToolError::Failed("the expression has no value".into()))
        }
        Ok(result) => Ok(result.get_main_result().to_owned()),
        Err(_) if deadline.should_interrupt_now() => Err(ToolError::Failed(format!(
            "the expression took longer than {} s to evaluate",
            EVALUATION_LIMIT.as_secs()
        ))),
        Err(message) => Err(ToolError::Failed(message)),
    }
}

impl Deadline {
    fn should_interrupt_now(&self) -> bool {
        fend_core::Interrupt::should_interrupt(self)
    }
}

impl Tool for Calculator {
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "calculator".into(),
            description: Some(
                "Evaluates an arithmetic expression exactly (arbitrary precision): + - * / ^, \
                 parentheses, sqrt, sin, cos, tan, ln, log10, exp, abs, factorial (5!), pi, e, \
                 percentages and unit conversions (\"5 km to miles\"). Use it for any \
                 calculation instead of computing in your head."
                    .into(),
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "description": "The expression, e.g. \"(17 * 23) / 4\" or \"2^64\""
                    }
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let Arguments { expression } = parse_arguments(arguments)?;
            let asked = expression.clone();
            let result = tokio::task::spawn_blocking(move || evaluate(&expression))
                .await
                .map_err(|e| ToolError::Failed(format!("the calculator stopped: {e}")))??;
            serde_json::to_string(&Evaluation {
                expression: asked,
                result,
            })
            .map_err(|e| ToolError::Failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(
            evaluate("2^100").ok().as_deref(),
            Some("1267650600228229401496703205376")
        );
        assert_eq!(evaluate("0.1 + 0.2").ok().as_deref(), Some("0.3"));
        assert_eq!(evaluate("(17 * 23) / 4").ok().as_deref(), Some("97.75"));
        assert_eq!(evaluate("20!").ok().as_deref(), Some("2432902008176640000"));
        assert_eq!(evaluate("sqrt(144)").ok().as_deref(), Some("12"));
    }

    #[test]
    fn nonsense_and_runaway_expressions_are_errors_not_hangs() {
        assert!(matches!(evaluate(""), Err(ToolError::Arguments(_))));
        assert!(matches!(evaluate("2 +* 3"), Err(ToolError::Failed(_))));
        assert!(matches!(evaluate("1/0"), Err(ToolError::Failed(_))));
        // Interrupted at the deadline rather than computed.
        assert!(evaluate("10^10^10^10").is_err());
    }

    #[tokio::test]
    async fn the_tool_answers_json_and_refuses_bad_arguments() {
        let calculator = Calculator::new();
        let answer = calculator.call(r#"{"expression": "6 * 7"}"#).await;
        let evaluation: Evaluation =
            serde_json::from_str(&answer.unwrap_or_default()).unwrap_or(Evaluation {
                expression: String::new(),
                result: String::new(),
            });
        assert_eq!(evaluation.result, "42");
        assert!(matches!(
            calculator.call(r#"{"expr": 1}"#).await,
            Err(ToolError::Arguments(_))
        ));
    }
}
