//! What every HTTP adapter shares: the pooled client with its deadlines,
//! credential headers that never show in logs, Retry-After parsing, and the
//! mapping of transport failures to canonical error kinds.

use std::sync::Once;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use switchyard_core::{BackendError, ErrorKind};
use switchyard_telemetry::clock::network_wait;
use tokio::time::{Instant, timeout_at};

use crate::AdapterBuildError;

/// Longest upstream error text passed on to clients.
const MAX_ERROR_TEXT: usize = 512;

/// rustls needs a process-wide crypto provider; ring builds fastest and is
/// enough for a client. Installing twice is harmless.
pub fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Connect, first-byte and total deadlines of one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/TLS connect deadline.
    pub connect: Duration,
    /// Deadline for the response headers and, when streaming, the first event.
    pub first_byte: Duration,
    /// Deadline for the whole answer.
    pub total: Duration,
}

impl Default for Timeouts {
    /// 5 s connect, 60 s first byte, 10 min total.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// TLS toward one upstream beyond the defaults: its own CA, a client
/// certificate for mutual TLS, and the name to reach it by when the
/// configured address is an IP.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA certificates (PEM) trusted instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and private key (PEM, one after the other).
    pub identity_pem: Option<Vec<u8>>,
    /// A DNS name and the address it stands for: requests go to the name
    /// (SNI, certificate check, `Host`), connections to the address.
    pub resolve: Option<(String, std::net::SocketAddr)>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "identity_pem",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("resolve", &self.resolve)
            .finish()
    }
}

/// Builds a header map from configured pairs. Every value is marked
/// sensitive: configured headers often carry credentials (`api-key`,
/// `x-api-key`), and sensitive values never appear in `Debug` output.
pub(crate) fn header_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<HeaderMap, AdapterBuildError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let invalid = |reason: String| AdapterBuildError::InvalidHeader {
            name: name.to_owned(),
            reason,
        };
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut header_value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        header_value.set_sensitive(true);
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// How a provider turns an unsuccessful answer into an error.
pub(crate) type Classifier = fn(u16, &HeaderMap, &str) -> BackendError;

/// A pooled HTTP client for one upstream, with its deadlines and the headers
/// every request carries.
#[derive(Debug)]
pub(crate) struct HttpUpstream {
    client: reqwest::Client,
    headers: HeaderMap,
    timeouts: Timeouts,
}

impl HttpUpstream {
    pub fn new(
        timeouts: Timeouts,
        mut headers: HeaderMap,
        tls: &UpstreamTls,
    ) -> Result<Self, AdapterBuildError> {
        ensure_crypto_provider();
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            // A provider API answers; it does not redirect. Following one
            // would resend the prompt (and any credential in a custom
            // header) to wherever the upstream points, so a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)?;
            if roots.is_empty() {
                return Err(AdapterBuildError::Config(
                    "tls_ca holds no PEM certificate".to_owned(),
                ));
            }
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pem) = &tls.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem)?);
        }
        if let Some((name, address)) = &tls.resolve {
            builder = builder.resolve(name, *address);
        }
        let client = builder.build()?;
        Ok(Self {
            client,
            headers,
            timeouts,
        })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The deadline of a request that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeouts.total
    }

    /// POSTs `body` and waits for a successful status within the first-byte
    /// deadline. `signed` adds per-request headers (request signatures).
    pub async fn post(
        &self,
        url: &reqwest::Url,
        body: Vec<u8>,
        signed: HeaderMap,
        deadline: Instant,
        classify: Classifier,
    ) -> Result<reqwest::Response, BackendError> {
        let headers_deadline = deadline.min(Instant::now() + self.timeouts.first_byte);
        let mut headers = self.headers.clone();
        headers.extend(signed);
        switchyard_telemetry::trace::inject(&mut headers);
        // A parsed URL: reqwest would otherwise parse (and IDNA-check) the
        // string on every request.
        let pending = self
            .client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send();
        let waiting = network_wait();
        let response = timeout_at(headers_deadline, pending)
            .await
            .map_err(|_| self.first_byte_timeout())?
            .map_err(|e| transport_error(&e))?;
        drop(waiting);
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        // The error body is small; cap the wait for it by the same deadline.
        let _waiting = network_wait();
        let text = timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(classify(status.as_u16(), &headers, &text))
    }

    /// Reads a whole body within the deadline.
    pub async fn body(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> Result<Bytes, BackendError> {
        let _waiting = network_wait();
        timeout_at(deadline, response.bytes())
            .await
            .map_err(|_| self.total_timeout())?
            .map_err(|e| transport_error(&e))
    }

    pub fn first_byte_timeout(&self) -> BackendError {
        BackendError::new(
            ErrorKind::Timeout,
            format!(
                "the upstream sent nothing within {} ms",
                self.timeouts.first_byte.as_millis()
            ),
        )
    }

    pub fn total_timeout(&self) -> BackendError {
        BackendError::new(
            ErrorKind::Timeout,
            format!(
                "the upstream did not finish within {} ms",
                self.timeouts.total.as_millis()
            ),
        )
    }
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

/// The error kind most providers mean by an HTTP status.
pub(crate) fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        400 | 409 | 413 | 415 | 422 => ErrorKind::InvalidRequest,
        401 | 403 => ErrorKind::Authentication,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Overloaded,
        _ => ErrorKind::Upstream,
    }
}

/// An error for an unsuccessful upstream status, with the provider's own
/// message (already extracted from its error shape) and code.
pub(crate) fn status_error(
    status: u16,
    kind: ErrorKind,
    message: &str,
    code: Option<String>,
    retry_after: Option<Duration>,
) -> BackendError {
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

/// An upstream body that is not the provider's error shape, shortened.
pub(crate) fn plain_message(body: &str) -> String {
    let trimmed = body.trim();
    let mut end = trimmed.len().min(MAX_ERROR_TEXT);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_owned()
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

/// Parses a URL built from configuration.
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, AdapterBuildError> {
    reqwest::Url::parse(url).map_err(|e| AdapterBuildError::Config(format!("URL {url:?}: {e}")))
}

/// An upstream answer Switchyard cannot read.
pub(crate) fn unreadable(what: &str, error: impl std::fmt::Display) -> BackendError {
    BackendError::new(
        ErrorKind::Upstream,
        format!("the upstream's {what} could not be read: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn configured_headers_are_hidden_from_debug_output() {
        let headers = header_map([("x-api-key", "secret-value")]).unwrap();
        assert!(!format!("{headers:?}").contains("secret-value"));
        assert!(header_map([("bad header", "x")]).is_err());
    }

    #[tokio::test]
    async fn upstream_redirects_are_errors_and_never_followed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let followed = Arc::new(AtomicUsize::new(0));
        let counter = followed.clone();
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(|| async {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", "/elsewhere")],
                    )
                }),
            )
            .route(
                "/elsewhere",
                axum::routing::post(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "{}"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let upstream = HttpUpstream::new(
            Timeouts::default(),
            HeaderMap::new(),
            &UpstreamTls::default(),
        )
        .unwrap();
        let url = parse_url(&format!("http://{addr}/v1/chat/completions")).unwrap();
        let classify: Classifier =
            |status, _, body| status_error(status, kind_of_status(status), body, None, None);
        let error = upstream
            .post(
                &url,
                b"{}".to_vec(),
                HeaderMap::new(),
                upstream.deadline(),
                classify,
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Upstream);
        assert_eq!(error.upstream_status, Some(307));
        assert_eq!(followed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn long_html_error_pages_are_shortened() {
        let page = "é".repeat(1000);
        assert!(plain_message(&page).len() <= MAX_ERROR_TEXT);
    }
}
