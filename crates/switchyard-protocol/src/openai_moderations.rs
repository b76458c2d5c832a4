//! OpenAI's moderations API (`POST /v1/moderations`): the request, and the
//! response shape Switchyard's guardrail checks answer in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::openai::InvalidField;

/// A moderation request.
#[derive(Debug, Clone, Deserialize)]
pub struct ModerationRequest {
    /// One text, several, or content parts (text only).
    pub input: ModerationInput,
    /// Whose attached policies apply besides the defaults (a model or
    /// route name); OpenAI's moderation model names are accepted and apply
    /// the defaults only.
    #[serde(default)]
    pub model: Option<String>,
}

/// What to moderate.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ModerationInput {
    /// One text.
    One(String),
    /// Several texts, each with its own result.
    Many(Vec<String>),
    /// Content parts: `{"type": "text", "text": ...}`.
    Parts(Vec<ModerationPart>),
}

/// One content part of a moderation input.
#[derive(Debug, Clone, Deserialize)]
pub struct ModerationPart {
    /// `text` (`image_url` is refused: the checks read text).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

impl ModerationRequest {
    /// The texts to check, one result each.
    pub fn texts(self) -> Result<Vec<String>, InvalidField> {
        let texts = match self.input {
            ModerationInput::One(text) => vec![text],
            ModerationInput::Many(texts) => texts,
            ModerationInput::Parts(parts) => parts
                .into_iter()
                .enumerate()
                .map(|(i, part)| match (part.kind.as_str(), part.text) {
                    ("text", Some(text)) => Ok(text),
                    _ => Err(InvalidField {
                        param: format!("input[{i}]"),
                        message: "only text parts can be moderated (`{\"type\": \"text\", \"text\": ...}`)".into(),
                    }),
                })
                .collect::<Result<_, _>>()?,
        };
        if texts.is_empty() {
            return Err(InvalidField {
                param: "input".into(),
                message: "`input` must not be empty".into(),
            });
        }
        Ok(texts)
    }
}

/// A moderation response.
#[derive(Debug, Clone, Serialize)]
pub struct ModerationResponse {
    /// `modr-…`.
    pub id: String,
    /// What answered.
    pub model: String,
    /// One per input, in order.
    pub results: Vec<ModerationResult>,
}

/// The verdict on one input.
#[derive(Debug, Clone, Serialize)]
pub struct ModerationResult {
    /// Whether any check fired.
    pub flagged: bool,
    /// Each category, and whether a check under it fired.
    pub categories: BTreeMap<&'static str, bool>,
    /// Each category's score: 1 when a check under it fired, else 0 (the
    /// checks are rules, not probabilities).
    pub category_scores: BTreeMap<&'static str, f64>,
    /// Which policy and check fired, and on what (never the text).
    pub switchyard_flags: Vec<ModerationFlag>,
}

/// One check that fired on an input.
#[derive(Debug, Clone, Serialize)]
pub struct ModerationFlag {
    /// The policy.
    pub policy: String,
    /// The check.
    pub check: String,
    /// Its category.
    pub category: &'static str,
    /// What it found: a data class, `word`, `pattern`, a heuristic.
    pub found: String,
}
