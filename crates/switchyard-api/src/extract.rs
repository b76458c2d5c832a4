//! A JSON body extractor whose rejections are OpenAI-shaped errors that name
//! the offending field (axum's own `Json` answers in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A request body parsed as JSON into `T`.
pub struct OpenAiJson<T>(pub T);

impl<S, T> FromRequest<S> for OpenAiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(request, state).await.map(OpenAiJson)
    }
}

/// Reads the body (within the configured size limit) and parses it.
pub async fn read_json<S, T>(request: Request, state: &S) -> Result<T, ApiError>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    let bytes = read_body(request, state).await?;
    parse_json(&bytes)
}

/// Reads the body, within the configured size limit.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..ApiError::invalid_request(
                        "the request body is larger than this server accepts (see `max_body_bytes` in the configuration)",
                        None,
                    )
                }
                .with_code("request_too_large")
            } else {
                ApiError::invalid_request(
                    format!("could not read the request body: {rejection}"),
                    None,
                )
            }
        })
}

/// Parses `bytes` into `T`, naming the field at fault when it does not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "the request body is empty; send a JSON object",
            None,
        ));
    }
    let not_json = |inner: serde_json::Error| {
        ApiError::invalid_request(format!("the request body is not valid JSON: {inner}"), None)
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(not_json)?;
            Ok(value)
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(not_json(inner));
            }
            let param = (path != ".").then_some(path);
            let message = explain(&inner.to_string());
            let message = match &param {
                Some(field) => format!("invalid `{field}`: {message}"),
                None => format!("invalid request: {message}"),
            };
            Err(ApiError::invalid_request(message, param))
        }
    }
}

/// serde's messages for untagged enums say nothing useful; say what fits.
fn explain(message: &str) -> String {
    let hint = if message.contains("untagged enum MessageContent") {
        Some("must be a string or an array of content parts")
    } else if message.contains("untagged enum StopSequences") {
        Some("must be a string or an array of strings")
    } else if message.contains("untagged enum SystemPrompt") {
        Some("must be a string or an array of text blocks")
    } else {
        None
    };
    match hint {
        Some(hint) => hint.to_owned(),
        // Drop serde's trailing " at line 1 column 42": the field is named.
        None => match message.find(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::openai::ChatCompletionRequest;

    fn rejection(body: &str) -> ApiError {
        match parse_json::<ChatCompletionRequest>(body.as_bytes()) {
            Ok(_) => panic!("{body} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn malformed_json_is_a_400_without_param() {
        let error = rejection("{\"model\": ");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        assert!(rejection("").message.contains("empty"));
        assert!(
            rejection(r#"{"model": "m", "messages": []} trailing"#)
                .message
                .contains("not valid JSON")
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = rejection(r#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#);
        assert_eq!(error.param.as_deref(), Some("messages[0].content"));
        assert!(
            error.message.contains("string or an array"),
            "{}",
            error.message
        );

        let error = rejection(r#"{"model": "m", "messages": [], "temperature": "hot"}"#);
        assert_eq!(error.param.as_deref(), Some("temperature"));

        let error = rejection(r#"{"messages": []}"#);
        assert!(
            error.message.contains("missing field `model`"),
            "{}",
            error.message
        );
    }
}
