//! `${VAR}` interpolation in configuration strings, so that secrets live in
//! the environment rather than in the file.
//!
//! Interpolation runs on parsed string values, never on the raw file, so an
//! environment value can never inject TOML syntax. Written by hand: the
//! grammar is three forms (`${VAR}`, `${VAR:-default}`, `$${` for a literal)
//! and the error must name the config field, which a generic crate cannot.

use toml::Value;

/// An interpolation that could not be done.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpolationError {
    /// Dotted path of the field, e.g. `models.gpt-4o.api_key`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Replaces `${VAR}` in every string of `value`, looking names up with `lookup`.
pub fn interpolate(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    walk(value, &mut Vec::new(), lookup)
}

fn walk(
    value: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    match value {
        Value::String(text) => {
            *text = expand(text, lookup).map_err(|message| InterpolationError {
                field: path.join("."),
                message,
            })?;
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(index.to_string());
                walk(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                walk(item, path, lookup)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("unclosed `${{` in {text:?}"));
        };
        let expression = &body[..end];
        let (name, default) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{expression}}}` is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"
            ));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} for a fallback)"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "PORT" => Some("9000".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_literals() {
        assert_eq!(expand("Bearer ${KEY}", &env).unwrap(), "Bearer sk-123");
        assert_eq!(expand("${MISSING:-x}-${PORT}", &env).unwrap(), "x-9000");
        assert_eq!(
            expand("cost $5 and $${KEY}", &env).unwrap(),
            "cost $5 and ${KEY}"
        );
    }

    #[test]
    fn missing_variable_names_it() {
        let error = expand("${NOPE}", &env).unwrap_err();
        assert!(error.contains("NOPE is not set"), "{error}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand("${KEY", &env).is_err());
        assert!(expand("${A B}", &env).is_err());
        assert!(expand("${}", &env).is_err());
    }

    #[test]
    fn error_names_the_field_path() {
        let mut value: Value = toml::from_str("[models.gpt]\napi_key = \"${NOPE}\"").unwrap();
        let error = interpolate(&mut value, &env).unwrap_err();
        assert_eq!(error.field, "models.gpt.api_key");
    }

    #[test]
    fn injected_toml_stays_a_plain_string() {
        let evil = |_: &str| Some("\"\nlisten = \"0.0.0.0:1".to_string());
        let mut value: Value = toml::from_str("api_key = \"${X}\"").unwrap();
        interpolate(&mut value, &evil).unwrap();
        assert_eq!(
            value.get("api_key").and_then(Value::as_str),
            Some("\"\nlisten = \"0.0.0.0:1")
        );
        assert!(value.get("listen").is_none());
    }
}
