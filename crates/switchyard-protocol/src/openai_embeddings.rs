//! OpenAI's `/v1/embeddings` wire format, both directions.

use base64::Engine;
use serde::{Deserialize, Serialize};
use switchyard_core::{EmbeddingRequest, EmbeddingResponse};

use crate::openai::InvalidField;

/// Most inputs in one request, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name.
    pub model: String,
    /// A string or a list of strings (token arrays are refused).
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Output size, for models that can shorten vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `input`: every shape OpenAI accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// One pre-tokenized input.
    Tokens(Vec<u32>),
    /// Several pre-tokenized inputs.
    TokenBatches(Vec<Vec<u32>>),
}

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Base64 of little-endian f32s.
    Base64,
}

impl EmbeddingsRequest {
    /// Validates and converts to the canonical request.
    pub fn into_canonical(self) -> Result<(EmbeddingRequest, EncodingFormat), InvalidField> {
        let invalid = |param: &str, message: String| InvalidField {
            param: param.to_owned(),
            message,
        };
        let format = match self.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(invalid(
                    "encoding_format",
                    format!("unknown encoding_format {other:?}; expected float or base64"),
                ));
            }
        };
        let inputs = match self.input {
            EmbeddingInput::One(text) => vec![text],
            EmbeddingInput::Many(texts) => texts,
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => {
                return Err(invalid(
                    "input",
                    "token arrays are not supported; send the text itself".into(),
                ));
            }
        };
        if inputs.is_empty() {
            return Err(invalid("input", "`input` must not be empty".into()));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(invalid(
                "input",
                format!(
                    "at most {MAX_INPUTS} inputs per request; got {}",
                    inputs.len()
                ),
            ));
        }
        if let Some(index) = inputs.iter().position(|t| t.is_empty()) {
            return Err(invalid(
                "input",
                format!("input {index} is an empty string; every input needs text"),
            ));
        }
        if self.dimensions == Some(0) {
            return Err(invalid(
                "dimensions",
                "`dimensions` must be at least 1".into(),
            ));
        }
        Ok((
            EmbeddingRequest {
                model: self.model,
                inputs,
                dimensions: self.dimensions,
                user: self.user,
            },
            format,
        ))
    }

    /// The body an OpenAI-compatible upstream receives (floats, so that no
    /// decoding is needed on the way back).
    pub fn from_canonical(request: &EmbeddingRequest, upstream_model: &str) -> Self {
        Self {
            model: upstream_model.to_owned(),
            input: EmbeddingInput::Many(request.inputs.clone()),
            encoding_format: Some("float".into()),
            dimensions: request.dimensions,
            user: request.user.clone(),
        }
    }
}

/// A vector as floats or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Base64 of little-endian f32s.
    Base64(String),
}

impl EmbeddingVector {
    /// Encodes `vector` in `format`.
    pub fn encode(vector: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => EmbeddingVector::Float(vector),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    /// The floats, decoding base64 if needed.
    pub fn into_floats(self) -> Option<Vec<f32>> {
        match self {
            EmbeddingVector::Float(values) => Some(values),
            EmbeddingVector::Base64(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?;
                (bytes.len() % 4 == 0).then(|| {
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                })
            }
        }
    }
}

/// One vector of the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingObject {
    /// Always `embedding`.
    #[serde(default = "embedding_object")]
    pub object: String,
    /// Position of its input.
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
}

fn embedding_object() -> String {
    "embedding".into()
}

/// Token counts of an embeddings request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens read.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// The same number.
    #[serde(default)]
    pub total_tokens: u32,
}

/// `/v1/embeddings` response: `object: "list"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    #[serde(default)]
    pub object: String,
    /// One object per input.
    pub data: Vec<EmbeddingObject>,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Token counts.
    #[serde(default)]
    pub usage: EmbeddingUsage,
}

impl EmbeddingsResponse {
    /// The OpenAI shape of a canonical answer.
    pub fn from_canonical(
        model: String,
        response: EmbeddingResponse,
        format: EncodingFormat,
    ) -> Self {
        Self {
            object: "list".into(),
            data: response
                .embeddings
                .into_iter()
                .enumerate()
                .map(|(index, vector)| EmbeddingObject {
                    object: embedding_object(),
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    embedding: EmbeddingVector::encode(vector, format),
                })
                .collect(),
            model,
            usage: EmbeddingUsage {
                prompt_tokens: response.prompt_tokens,
                total_tokens: response.prompt_tokens,
            },
        }
    }

    /// The canonical answer, vectors ordered by `index`.
    pub fn into_canonical(mut self, fallback_model: &str) -> Option<EmbeddingResponse> {
        self.data.sort_by_key(|d| d.index);
        let embeddings = self
            .data
            .into_iter()
            .map(|d| d.embedding.into_floats())
            .collect::<Option<Vec<_>>>()?;
        Some(EmbeddingResponse {
            model: if self.model.is_empty() {
                fallback_model.to_owned()
            } else {
                self.model
            },
            embeddings,
            prompt_tokens: self.usage.prompt_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: serde_json::Value) -> Result<(EmbeddingRequest, EncodingFormat), InvalidField> {
        serde_json::from_value::<EmbeddingsRequest>(body)
            .unwrap()
            .into_canonical()
    }

    #[test]
    fn accepts_a_string_or_a_list() {
        let (one, format) = parse(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(one.inputs, vec!["hi"]);
        assert_eq!(format, EncodingFormat::Float);
        let (many, format) =
            parse(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})).unwrap();
        assert_eq!(many.inputs.len(), 2);
        assert_eq!(format, EncodingFormat::Base64);
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        assert_eq!(
            parse(json!({"model": "m", "input": []})).unwrap_err().param,
            "input"
        );
        assert_eq!(
            parse(json!({"model": "m", "input": [""]}))
                .unwrap_err()
                .param,
            "input"
        );
        assert_eq!(
            parse(json!({"model": "m", "input": [1, 2]}))
                .unwrap_err()
                .param,
            "input"
        );
        assert_eq!(
            parse(json!({"model": "m", "input": "x", "encoding_format": "int8"}))
                .unwrap_err()
                .param,
            "encoding_format"
        );
    }

    #[test]
    fn base64_round_trips_little_endian_floats() {
        let vector = vec![1.0f32, -0.5, 0.25];
        let encoded = EmbeddingVector::encode(vector.clone(), EncodingFormat::Base64);
        let EmbeddingVector::Base64(text) = &encoded else {
            panic!("not base64");
        };
        // 1.0f32 little-endian is 00 00 80 3f.
        assert!(text.starts_with("AACAPw"), "{text}");
        assert_eq!(encoded.into_floats().unwrap(), vector);
    }
}
