//! The settings and the pure parts of the strategies that ask more than
//! one model: a cascade's acceptance checks (refusals, JSON shape, a
//! judge's verdict) and an ensemble's prompts and verdict parsing. The
//! gateway runs them (`gateway/composite.rs`).

use std::time::Duration;

use regex::Regex;
use switchyard_config as config;
use switchyard_core::{ResponseFormat, TokenLogprob};

/// The judge's prompt unless the route brings one.
pub const DEFAULT_CASCADE_TEMPLATE: &str = "\
You check answers before they reach a user. Does the answer below fully and \
correctly answer the question? Reply with one word: yes or no.

Question: {{question}}

Answer: {{answer}}";

/// A cascade's acceptance checks.
#[derive(Debug, Clone)]
pub struct CascadeSpec {
    /// Escalate refusals and "I don't know".
    pub refusals: bool,
    /// Escalate JSON answers of the wrong shape.
    pub json: bool,
    /// The judge model, if any.
    pub judge: Option<String>,
    /// Its prompt.
    pub judge_template: String,
    /// Its verdict rule: a match accepts; `None`: a reply that begins
    /// with yes.
    pub accept_if: Option<Regex>,
    /// How long it may take.
    pub judge_timeout: Duration,
    /// A failed judge escalates (else the answer is served).
    pub escalate_on_judge_failure: bool,
    /// The least mean token log-probability accepted.
    pub min_mean_logprob: Option<f32>,
    /// The least log-probability of any one token accepted.
    pub min_token_logprob: Option<f32>,
}

impl CascadeSpec {
    /// Whether a check reads the steps' token log-probabilities (so the
    /// steps are asked for them).
    pub fn wants_logprobs(&self) -> bool {
        self.min_mean_logprob.is_some() || self.min_token_logprob.is_some()
    }

    /// Why `tokens` are not confident enough; `None` when they are (or
    /// when no log-probability check is configured).
    pub fn doubt(&self, tokens: &[TokenLogprob]) -> Option<String> {
        if tokens.is_empty() {
            return None;
        }
        let mean = tokens.iter().map(|t| f64::from(t.logprob)).sum::<f64>() / tokens.len() as f64;
        if let Some(least) = self.min_mean_logprob
            && mean < f64::from(least)
        {
            return Some(format!(
                "mean token log-probability {mean:.2} is below {least}"
            ));
        }
        let lowest = tokens
            .iter()
            .map(|t| t.logprob)
            .fold(f32::INFINITY, f32::min);
        if let Some(least) = self.min_token_logprob
            && lowest < least
        {
            return Some(format!(
                "a token's log-probability {lowest:.2} is below {least}"
            ));
        }
        None
    }
}

impl PartialEq for CascadeSpec {
    fn eq(&self, other: &Self) -> bool {
        self.refusals == other.refusals
            && self.json == other.json
            && self.judge == other.judge
            && self.judge_template == other.judge_template
            && self.accept_if.as_ref().map(Regex::as_str)
                == other.accept_if.as_ref().map(Regex::as_str)
            && self.judge_timeout == other.judge_timeout
            && self.escalate_on_judge_failure == other.escalate_on_judge_failure
            && self.min_mean_logprob == other.min_mean_logprob
            && self.min_token_logprob == other.min_token_logprob
    }
}

impl CascadeSpec {
    /// Whether the judge's `reply` accepts the answer.
    pub fn accepts(&self, reply: &str) -> bool {
        match &self.accept_if {
            Some(rule) => rule.is_match(reply),
            None => {
                let words = reply.trim_start_matches(|c: char| !c.is_alphanumeric());
                let first: String = words.chars().take_while(|c| c.is_alphanumeric()).collect();
                first.eq_ignore_ascii_case("yes")
            }
        }
    }
}

impl Default for CascadeSpec {
    fn default() -> Self {
        (&config::CascadeConfig::default()).into()
    }
}

impl From<&config::CascadeConfig> for CascadeSpec {
    fn from(cascade: &config::CascadeConfig) -> Self {
        Self {
            refusals: cascade.refusals,
            json: cascade.json,
            judge: cascade.judge.clone(),
            judge_template: cascade
                .judge_template
                .clone()
                .unwrap_or_else(|| DEFAULT_CASCADE_TEMPLATE.to_owned()),
            // The configuration's validation compiled it already.
            accept_if: cascade
                .accept_if
                .as_deref()
                .and_then(|pattern| Regex::new(pattern).ok()),
            judge_timeout: Duration::from_millis(cascade.judge_timeout_ms),
            escalate_on_judge_failure: cascade.escalate_on_judge_failure,
            min_mean_logprob: cascade.min_mean_logprob,
            min_token_logprob: cascade.min_token_logprob,
        }
    }
}

/// An ensemble's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleSpec {
    /// `best-of`: who picks.
    pub judge: Option<String>,
    /// `mixture`: who writes.
    pub aggregator: Option<String>,
    /// Answers asked of each deployment.
    pub samples: u32,
    /// How long members are waited for.
    pub deadline: Duration,
}

impl Default for EnsembleSpec {
    fn default() -> Self {
        (&config::EnsembleConfig::default()).into()
    }
}

impl From<&config::EnsembleConfig> for EnsembleSpec {
    fn from(ensemble: &config::EnsembleConfig) -> Self {
        Self {
            judge: ensemble.judge.clone(),
            aggregator: ensemble.aggregator.clone(),
            samples: ensemble.samples.max(1),
            deadline: Duration::from_millis(ensemble.deadline_ms),
        }
    }
}

/// Whether `text` refuses, says it does not know, or says nothing.
pub fn refuses(text: &str) -> bool {
    const PHRASES: [&str; 12] = [
        "i don't know",
        "i do not know",
        "i'm not sure",
        "i am not sure",
        "i cannot answer",
        "i can't answer",
        "i can't help",
        "i cannot help",
        "i'm unable to",
        "i am unable to",
        "as an ai",
        "no idea",
    ];
    let lower = text.trim().to_lowercase().replace('\u{2019}', "'");
    lower.is_empty() || PHRASES.iter().any(|phrase| lower.contains(phrase))
}

/// What is wrong with `content` as an answer to a request for `format`;
/// `None` when it is fine (or the format is free text). A JSON schema is
/// checked for the answer's shape: its type, the required properties and
/// the types and enums of the properties it declares, not every keyword.
pub fn json_problem(format: &ResponseFormat, content: &str) -> Option<String> {
    let schema = match format {
        ResponseFormat::Text => return None,
        ResponseFormat::JsonObject => None,
        ResponseFormat::JsonSchema(schema) => Some(&schema.schema),
    };
    let value: serde_json::Value = match serde_json::from_str(content.trim()) {
        Ok(value) => value,
        Err(error) => return Some(format!("not JSON: {error}")),
    };
    match schema {
        None if !value.is_object() => Some("not a JSON object".into()),
        None => None,
        Some(schema) => shape_problem(schema, &value, "answer"),
    }
}

fn type_matches(kind: &str, value: &serde_json::Value) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn shape_problem(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Option<String> {
    let kinds: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(kind) => vec![kind.as_str()],
        serde_json::Value::Array(kinds) => kinds.iter().filter_map(|k| k.as_str()).collect(),
        _ => Vec::new(),
    };
    if !kinds.is_empty() && !kinds.iter().any(|kind| type_matches(kind, value)) {
        return Some(format!("{at} is not of type {}", kinds.join(" or ")));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Some(format!("{at} is not one of its enum's values"));
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(|n| n.as_str()) {
                if !object.contains_key(name) {
                    return Some(format!("{at} lacks the required property {name:?}"));
                }
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                if let Some(inner) = object.get(name)
                    && let Some(problem) = shape_problem(property, inner, &format!("{at}.{name}"))
                {
                    return Some(problem);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            if let Some(problem) = shape_problem(items, item, &format!("{at}[{index}]")) {
                return Some(problem);
            }
        }
    }
    None
}

/// `template` with `{{question}}` and `{{answer}}` filled in.
pub fn judge_prompt(template: &str, question: &str, answer: &str) -> String {
    template
        .replace("{{question}}", question)
        .replace("{{answer}}", answer)
}

/// The numbered answers, for a judge or an aggregator.
fn numbered(answers: &[&str]) -> String {
    answers
        .iter()
        .enumerate()
        .map(|(i, answer)| format!("Answer {}:\n{}\n", i + 1, answer.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt that asks a judge to pick the best of `answers`.
pub fn best_of_prompt(question: &str, answers: &[&str]) -> String {
    format!(
        "Several assistants answered the question below. Pick the answer that is the most \
         correct, complete and clear. Reply with its number only.\n\nQuestion: {question}\n\n{}",
        numbered(answers)
    )
}

/// The prompt that asks an aggregator to write the answer from `answers`.
pub fn mixture_prompt(question: &str, answers: &[&str]) -> String {
    format!(
        "Several assistants answered the question below. Write the single best answer to \
         it, keeping what they got right and leaving out what they got wrong. Reply with the \
         answer only.\n\nQuestion: {question}\n\n{}",
        numbered(answers)
    )
}

/// The answer a judge's `reply` picks among `count`, from 0.
pub fn parse_pick(reply: &str, count: usize) -> Option<usize> {
    let digits: String = reply
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    let pick: usize = digits.parse().ok()?;
    (1..=count).contains(&pick).then(|| pick - 1)
}

/// A held answer in pieces a word long, to stream it once accepted.
pub fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::JsonSchemaFormat;

    #[test]
    fn low_confidence_is_doubted_by_mean_or_by_its_least_likely_token() {
        let tokens = |logprobs: &[f32]| -> Vec<TokenLogprob> {
            logprobs
                .iter()
                .map(|&logprob| TokenLogprob {
                    token: "w".into(),
                    logprob,
                })
                .collect()
        };
        let spec = CascadeSpec {
            min_mean_logprob: Some(-1.0),
            min_token_logprob: Some(-6.0),
            ..CascadeSpec::default()
        };
        assert!(spec.wants_logprobs());
        assert_eq!(spec.doubt(&tokens(&[-0.1, -0.3, -2.0])), None);
        let mean = spec.doubt(&tokens(&[-0.5, -3.0, -2.0])).unwrap();
        assert!(mean.contains("mean token log-probability -1.83"), "{mean}");
        // Mean -0.71, but one token at -7.
        let mut mostly_sure = vec![-0.01; 9];
        mostly_sure.push(-7.0);
        let one = spec.doubt(&tokens(&mostly_sure)).unwrap();
        assert!(one.contains("-7.00"), "{one}");
        // No tokens given: nothing to judge by.
        assert_eq!(spec.doubt(&[]), None);
        assert!(!CascadeSpec::default().wants_logprobs());
    }

    #[test]
    fn refusals_and_empty_answers_are_caught() {
        assert!(refuses("I don't know the answer to that."));
        assert!(refuses("I\u{2019}m not sure, sorry."));
        assert!(refuses("   "));
        assert!(!refuses("The capital of France is Paris."));
    }

    #[test]
    fn json_answers_are_checked_for_the_schemas_shape() {
        let format = ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "city".into(),
            description: None,
            schema: serde_json::json!({
                "type": "object",
                "required": ["name", "population"],
                "properties": {
                    "name": {"type": "string"},
                    "population": {"type": "integer"},
                    "size": {"enum": ["small", "large"]},
                    "districts": {"type": "array", "items": {"type": "string"}}
                }
            }),
            strict: Some(true),
        });
        assert_eq!(
            json_problem(&format, r#"{"name": "Oslo", "population": 700000}"#),
            None
        );
        assert!(
            json_problem(&format, "Oslo")
                .unwrap()
                .starts_with("not JSON")
        );
        assert_eq!(
            json_problem(&format, r#"{"name": "Oslo"}"#).unwrap(),
            "answer lacks the required property \"population\""
        );
        assert!(json_problem(&format, r#"{"name": 1, "population": 2}"#).is_some());
        assert!(
            json_problem(&format, r#"{"name": "a", "population": 2, "size": "huge"}"#).is_some()
        );
        assert!(
            json_problem(
                &format,
                r#"{"name": "a", "population": 2, "districts": ["x", 3]}"#
            )
            .unwrap()
            .contains("districts[1]")
        );
        assert!(json_problem(&ResponseFormat::JsonObject, "[1]").is_some());
        assert_eq!(json_problem(&ResponseFormat::Text, "anything"), None);
    }

    #[test]
    fn a_judges_pick_is_read_from_its_first_number() {
        assert_eq!(parse_pick("2", 3), Some(1));
        assert_eq!(parse_pick("Answer 3 is best.", 3), Some(2));
        assert_eq!(parse_pick("4", 3), None);
        assert_eq!(parse_pick("none", 3), None);
    }

    #[test]
    fn the_default_verdict_accepts_a_yes() {
        let spec = CascadeSpec::default();
        assert!(spec.accepts("Yes."));
        assert!(spec.accepts("  yes, it does"));
        assert!(!spec.accepts("No, yes is wrong"));
        assert!(!spec.accepts("yesterday"));
    }
}
