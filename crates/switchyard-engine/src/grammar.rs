//! Structured output: a request's `response_format` as a llama.cpp grammar
//! that the sampler enforces token by token, so the answer always parses
//! (and, with a schema, validates) however small the model.
//!
//! The grammar comes from llama.cpp's own JSON-schema-to-GBNF conversion
//! (the one llama-server uses), so schemas behave as they do there.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use switchyard_core::{BackendError, ResponseFormat};

/// What `json_object` asks for: any JSON object.
const ANY_OBJECT: &str = r#"{"type": "object"}"#;

/// The grammar's start rule, as the conversion names it.
const ROOT: &str = "root";

/// The GBNF grammar of `format`; `None` for free text.
pub(crate) fn grammar_for(format: Option<&ResponseFormat>) -> Result<Option<String>, BackendError> {
    let schema = match format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => ANY_OBJECT.to_owned(),
        Some(ResponseFormat::JsonSchema(format)) => format.schema.to_string(),
    };
    llama_cpp_2::json_schema_to_grammar(&schema)
        .map(Some)
        .map_err(|error| {
            BackendError::invalid_request(format!(
                "this JSON schema cannot be enforced on a local model ({error}); it supports types, properties, required, items, enum, const, anyOf/oneOf, $ref/$defs, string formats and patterns, and numeric and length bounds"
            ))
            .with_param("response_format.json_schema.schema")
        })
}

/// The sampler stage that leaves the answer free until it writes
/// `trigger`, then keeps it within `grammar` (whose start rule begins with
/// `trigger`).
pub(crate) fn lazy_grammar_sampler(
    model: &LlamaModel,
    grammar: &str,
    trigger: &str,
) -> Result<LlamaSampler, BackendError> {
    LlamaSampler::grammar_lazy(model, grammar, ROOT, [trigger], &[]).map_err(|error| {
        BackendError::invalid_request(format!(
            "the grammar for these tools could not be built: {error}"
        ))
        .with_param("tools")
    })
}

/// The sampler stage that keeps every token within `grammar`.
pub(crate) fn grammar_sampler(
    model: &LlamaModel,
    grammar: &str,
) -> Result<LlamaSampler, BackendError> {
    LlamaSampler::grammar(model, grammar, ROOT).map_err(|error| {
        BackendError::invalid_request(format!(
            "the grammar for this response_format could not be built: {error}"
        ))
        .with_param("response_format")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_core::JsonSchemaFormat;

    fn schema(value: serde_json::Value) -> ResponseFormat {
        ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "s".into(),
            description: None,
            schema: value,
            strict: Some(true),
        })
    }

    #[test]
    fn text_needs_no_grammar_and_json_modes_get_one() {
        assert_eq!(grammar_for(None).unwrap(), None);
        assert_eq!(grammar_for(Some(&ResponseFormat::Text)).unwrap(), None);
        let object = grammar_for(Some(&ResponseFormat::JsonObject))
            .unwrap()
            .unwrap();
        assert!(object.contains("root ::="), "{object}");
        let nested = grammar_for(Some(&schema(json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "size": {"enum": ["small", "large"]},
                "tags": {"type": "array", "items": {"type": "integer"}}
            },
            "required": ["city", "size"]
        }))))
        .unwrap()
        .unwrap();
        for piece in ["city", "small", "large", "tags"] {
            assert!(nested.contains(piece), "{piece} missing from {nested}");
        }
    }

    #[test]
    fn a_schema_the_conversion_rejects_is_the_callers_error() {
        let error = grammar_for(Some(&schema(json!({"$ref": "#/$defs/missing"})))).unwrap_err();
        assert_eq!(error.kind, switchyard_core::ErrorKind::InvalidRequest);
        assert_eq!(
            error.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
    }
}
