//! Errors in OpenAI's shape, `{"error":{"message","type","param","code"}}`,
//! with the status code and headers that go with them.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchyard_core::{BackendError, ErrorKind};
use switchyard_protocol::openai::{ErrorBody, ErrorObject, InvalidField};

/// An error answer of the OpenAI-compatible API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<String>,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// Further headers (`x-ratelimit-*` on a rate-limit refusal); boxed,
    /// as most errors have none and the error travels in every `Result`.
    pub headers: Option<Box<Vec<(&'static str, String)>>>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>, param: Option<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param,
            code: None,
            retry_after: None,
            headers: None,
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The error's JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.message.clone(),
                kind: Some(self.kind.to_owned()),
                param: self.param.clone(),
                code: self.code.clone().map(serde_json::Value::String),
            },
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(field: InvalidField) -> Self {
        ApiError::invalid_request(field.message, Some(field.param))
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        let (status, kind, default_code) = match error.kind {
            ErrorKind::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            ErrorKind::NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            // The upstream refused the gateway's own credentials: the client
            // can do nothing about it, so it is a bad gateway, not a 401.
            ErrorKind::Authentication => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                Some("upstream_authentication_failed"),
            ),
            ErrorKind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            ErrorKind::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("overloaded"),
            ),
            ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "upstream_error", None),
            ErrorKind::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                Some("upstream_timeout"),
            ),
            // Nginx's "client closed request"; only ever logged, since the
            // client is gone.
            ErrorKind::Cancelled => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "cancelled",
                None,
            ),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        // 429 and 503 always say when to come back.
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Some(error.retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => error.retry_after,
        };
        ApiError {
            status,
            kind,
            message: error.message,
            param: error.param,
            code: error.code.or(default_code.map(str::to_owned)),
            retry_after,
            headers: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), message = %self.message, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), message = %self.message, "request refused");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        for (name, value) in self.headers.iter().flat_map(|headers| headers.iter()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                response
                    .headers_mut()
                    .insert(axum::http::HeaderName::from_static(name), value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kinds_map_to_openai_statuses() {
        let status = |kind| ApiError::from(BackendError::new(kind, "x")).status.as_u16();
        assert_eq!(status(ErrorKind::InvalidRequest), 400);
        assert_eq!(status(ErrorKind::NotFound), 404);
        assert_eq!(status(ErrorKind::RateLimited), 429);
        assert_eq!(status(ErrorKind::Overloaded), 503);
        assert_eq!(status(ErrorKind::Upstream), 502);
        assert_eq!(status(ErrorKind::Authentication), 502);
        assert_eq!(status(ErrorKind::Timeout), 504);
        assert_eq!(status(ErrorKind::Internal), 500);
    }

    #[test]
    fn busy_answers_carry_retry_after() {
        let error = BackendError::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_millis(1500)));
        let response = ApiError::from(error).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let overloaded =
            ApiError::from(BackendError::new(ErrorKind::Overloaded, "busy")).into_response();
        assert_eq!(overloaded.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn body_is_openai_shaped() {
        let error = ApiError::invalid_request("bad", Some("temperature".into()));
        assert_eq!(
            serde_json::to_value(error.body()).unwrap(),
            serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error",
                                         "param": "temperature", "code": null}})
        );
    }
}
