//! The `bedrock` adapter: AWS Bedrock's Converse and ConverseStream APIs,
//! with requests signed by SigV4 (the `aws-sigv4` crate) and the streamed
//! answer's AWS event-stream framing decoded by `aws-smithy-eventstream`.
//!
//! [`converse`] holds the typed wire format and its translation;
//! [`eventstream`] the stream's framing. Streams carry `messageStart`,
//! `contentBlockStart`/`Delta`/`Stop`, `messageStop` and `metadata` (usage)
//! events, and exceptions as frames of their own.

mod converse;
mod eventstream;

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use switchyard_core::{BackendError, BackendInfo, ChatRequest, ChatResponse, ErrorKind};

pub use converse::EventTranslator;
pub use eventstream::{Frame, decode_frames};

use crate::adapter::{HttpAdapter, Wire, encode, refuse_json_format};
use crate::http::{
    Timeouts, UpstreamTls, header_map, kind_of_status, plain_message, retry_after, status_error,
};
use crate::{AdapterBuildError, Credential};
/// AWS credentials for signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Credential,
    /// Session token, for temporary credentials.
    pub session_token: Option<Credential>,
}

/// How to reach one Bedrock model.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockConfig {
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// `https://bedrock-runtime.{region}.amazonaws.com` unless overridden.
    pub base_url: String,
    /// Signing credentials.
    pub credentials: AwsCredentials,
    /// The model id or inference-profile ARN.
    pub upstream_model: String,
    /// Extra headers (signed along with the request).
    pub headers: Vec<(String, String)>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// TLS toward the upstream beyond the defaults.
    pub tls: UpstreamTls,
}

impl BedrockConfig {
    /// The public regional endpoint with default deadlines.
    pub fn new(
        region: impl Into<String>,
        credentials: AwsCredentials,
        upstream_model: impl Into<String>,
    ) -> Self {
        let region = region.into();
        Self {
            base_url: format!("https://bedrock-runtime.{region}.amazonaws.com"),
            region,
            credentials,
            upstream_model: upstream_model.into(),
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            tls: UpstreamTls::default(),
        }
    }
}

// ---- Errors ---------------------------------------------------------------

/// The error kind an AWS exception name means (case-insensitive: streams
/// spell them `throttlingException`, HTTP headers `ThrottlingException`).
pub(crate) fn kind_of_exception(name: &str, status: u16) -> ErrorKind {
    match name.to_ascii_lowercase().as_str() {
        "throttlingexception" | "toomanyrequestsexception" => ErrorKind::RateLimited,
        "serviceunavailableexception" | "modelnotreadyexception" => ErrorKind::Overloaded,
        "validationexception" => ErrorKind::InvalidRequest,
        "accessdeniedexception" | "unrecognizedclientexception" | "expiredtokenexception" => {
            ErrorKind::Authentication
        }
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "modeltimeoutexception" => ErrorKind::Timeout,
        _ => kind_of_status(status),
    }
}

#[derive(Debug, Deserialize)]
struct AwsErrorBody {
    #[serde(default, alias = "Message")]
    message: String,
}

/// Reads AWS's error shape: the exception name in `x-amzn-ErrorType`, the
/// text in `{"message": ...}`.
fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
    let exception = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let message = serde_json::from_str::<AwsErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| plain_message(body));
    let kind = exception
        .as_deref()
        .map_or_else(|| kind_of_status(status), |e| kind_of_exception(e, status));
    let code = if message.contains("too long") || message.contains("too many input tokens") {
        Some("context_length_exceeded".to_owned())
    } else {
        exception
    };
    status_error(status, kind, &message, code, retry_after(headers))
}

// ---- The adapter ----------------------------------------------------------

/// A Bedrock model as a chat backend.
pub type BedrockAdapter = HttpAdapter<BedrockWire>;

/// Converse's wire format, signed with SigV4.
#[derive(Debug)]
pub struct BedrockWire {
    converse_url: reqwest::Url,
    stream_url: reqwest::Url,
    extra_headers: HeaderMap,
    config: BedrockConfig,
}

impl BedrockAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: BedrockConfig) -> Result<Self, AdapterBuildError> {
        let extra_headers =
            header_map(config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| AdapterBuildError::Config(format!("base_url: {e}")))?;
        let url = |action: &str| -> Result<reqwest::Url, AdapterBuildError> {
            // The model id may hold ':' and '/' (ARNs); as one path segment
            // they are percent-encoded, and SigV4 signs that same path.
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| AdapterBuildError::Config("base_url cannot hold a path".into()))?
                .pop_if_empty()
                .extend(["model", config.upstream_model.as_str(), action]);
            Ok(url)
        };
        let timeouts = config.timeouts;
        let tls = config.tls.clone();
        let wire = BedrockWire {
            converse_url: url("converse")?,
            stream_url: url("converse-stream")?,
            extra_headers,
            config,
        };
        // Every header, credentials included, is part of the signature.
        HttpAdapter::with_wire(wire, timeouts, HeaderMap::new(), &tls)
    }
}

impl Wire for BedrockWire {
    type Event = Frame;
    type Translator = EventTranslator;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "bedrock",
            upstream_model: self.config.upstream_model.clone(),
            owned_by: "aws-bedrock".into(),
        }
    }

    fn chat_url(&self, stream: bool) -> &reqwest::Url {
        if stream {
            &self.stream_url
        } else {
            &self.converse_url
        }
    }

    fn encode_chat(&self, request: &ChatRequest, _stream: bool) -> Result<Vec<u8>, BackendError> {
        refuse_json_format(request, "Bedrock")?;
        encode(&converse::request_body(request)?)
    }

    fn decode_chat(&self, body: &[u8]) -> Result<ChatResponse, BackendError> {
        converse::decode(body, &self.config.upstream_model)
    }

    fn frames(response: reqwest::Response) -> BoxStream<'static, Result<Frame, BackendError>> {
        eventstream::frames(response)
    }

    fn translator(&self) -> EventTranslator {
        EventTranslator::default()
    }

    fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
        classify(status, headers, body)
    }

    /// SigV4-signs a POST of `body` to `url`; returns every header to send.
    fn sign(&self, url: &reqwest::Url, body: &[u8]) -> Result<HeaderMap, BackendError> {
        let signing_error = |e: &dyn std::fmt::Display| {
            BackendError::internal(format!("cannot sign the request: {e}"))
        };
        let credentials = &self.config.credentials;
        let identity = Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose().to_owned(),
            credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            None,
            "switchyard-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let mut to_sign: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ];
        for (name, value) in &self.extra_headers {
            if let Ok(value) = value.to_str() {
                to_sign.push((name.as_str().to_owned(), value.to_owned()));
            }
        }
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        let mut headers = HeaderMap::new();
        for (name, value) in to_sign
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(instructions.headers())
        {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| signing_error(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| signing_error(&e))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BedrockConfig {
        BedrockConfig::new(
            "us-east-1",
            AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: Some("session-secret-xyz".into()),
            },
            "anthropic.claude-3-haiku-20240307-v1:0",
        )
    }

    #[test]
    fn urls_encode_the_model_id_as_one_segment() {
        let adapter = BedrockAdapter::new(config()).unwrap();
        assert_eq!(
            adapter.wire().converse_url.as_str(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
        );
        assert!(
            adapter
                .wire()
                .stream_url
                .as_str()
                .ends_with("-v1:0/converse-stream")
        );
    }

    #[test]
    fn requests_are_signed_with_sigv4() {
        let adapter = BedrockAdapter::new(config()).unwrap();
        let wire = adapter.wire();
        let headers = wire.sign(&wire.converse_url, b"{}").unwrap();
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(authorization.contains("/us-east-1/bedrock/aws4_request"));
        assert!(authorization.contains("SignedHeaders="));
        assert!(headers.contains_key("x-amz-date"));
        assert_eq!(headers["x-amz-security-token"], "session-secret-xyz");
        assert!(!format!("{headers:?}").contains("session-secret-xyz"));
    }

    #[test]
    fn aws_errors_map_by_exception() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
                .parse()
                .unwrap(),
        );
        let error = classify(
            429,
            &headers,
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.code.as_deref(), Some("ThrottlingException"));
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-errortype", "ValidationException".parse().unwrap());
        let long = classify(
            400,
            &headers,
            r#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(long.code.as_deref(), Some("context_length_exceeded"));
    }
}
