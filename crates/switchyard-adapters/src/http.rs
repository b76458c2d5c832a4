//! What every HTTP adapter shares: TLS set-up, Retry-After parsing, and the
//! mapping of statuses and transport failures to canonical error kinds.

use std::sync::Once;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use switchyard_core::{BackendError, ErrorKind};
use switchyard_protocol::openai::ErrorBody;

/// Longest upstream error text passed on to clients.
const MAX_ERROR_TEXT: usize = 512;

/// rustls needs a process-wide crypto provider; ring builds fastest and is
/// enough for a client. Installing twice is harmless.
pub(crate) fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Reads `retry-after-ms` (OpenAI), then `retry-after` as seconds or as an
/// HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The upstream's own error message: OpenAI's `{"error":{"message"}}` when
/// the body has that shape, else the text itself, shortened.
fn upstream_message(body: &str) -> (String, Option<String>) {
    if let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) {
        let code = parsed.error.code.map(|c| match c {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        return (parsed.error.message, code);
    }
    let trimmed = body.trim();
    let mut end = trimmed.len().min(MAX_ERROR_TEXT);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    (trimmed[..end].to_owned(), None)
}

/// Classifies an unsuccessful upstream answer.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> BackendError {
    let (message, code) = upstream_message(body);
    let kind = match status {
        400 | 409 | 413 | 415 | 422 => ErrorKind::InvalidRequest,
        401 | 403 => ErrorKind::Authentication,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Overloaded,
        _ => ErrorKind::Upstream,
    };
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    let text = match kind {
        ErrorKind::Authentication => {
            format!("the upstream rejected Switchyard's credentials (HTTP {status}){detail}")
        }
        _ => format!("the upstream answered HTTP {status}{detail}"),
    };
    let mut error = BackendError::new(kind, text)
        .with_upstream_status(status)
        .with_retry_after(retry_after);
    error.code = code;
    error
}

/// Classifies a failure to talk to the upstream at all.
pub(crate) fn transport_error(error: &reqwest::Error) -> BackendError {
    // reqwest's Display hides the cause chain; the cause says what happened.
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Upstream
    };
    let what = if error.is_connect() {
        "cannot connect to the upstream"
    } else {
        "the upstream connection failed"
    };
    BackendError::new(kind, format!("{what}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut dated = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        dated.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&dated).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_map_to_kinds_with_upstream_message() {
        let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let error = classify_status(429, Some(Duration::from_secs(2)), body);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
        assert!(error.message.contains("Rate limit reached"));
        assert_eq!(classify_status(529, None, "").kind, ErrorKind::Overloaded);
        assert_eq!(classify_status(500, None, "boom").kind, ErrorKind::Upstream);
        assert_eq!(
            classify_status(401, None, "").kind,
            ErrorKind::Authentication
        );
        assert_eq!(
            classify_status(400, None, "").kind,
            ErrorKind::InvalidRequest
        );
        assert_eq!(classify_status(504, None, "").kind, ErrorKind::Timeout);
    }

    #[test]
    fn long_html_error_pages_are_shortened() {
        let page = "é".repeat(1000);
        let error = classify_status(502, None, &page);
        assert!(error.message.len() < 600);
    }
}
