//! `http_fetch`: a GET of a page on an allowed host, its text given to the
//! model (HTML turned into plain text). Off unless the configuration
//! allows hosts; redirects are followed only to allowed hosts; the body is
//! read up to a size limit and the whole fetch runs under a deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_config::HttpFetchConfig;
use switchyard_core::ToolDefinition;

use crate::toolbox::{Tool, ToolError, parse_arguments};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Line width HTML is laid out to as text.
const TEXT_WIDTH: usize = 100;

/// The fetch tool.
pub struct HttpFetch {
    client: reqwest::Client,
    allowed: Arc<AllowedHosts>,
    max_bytes: usize,
    max_chars: usize,
}

impl std::fmt::Debug for HttpFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetch")
            .field("allowed", &self.allowed.0)
            .finish_non_exhaustive()
    }
}

/// Host names a fetch may reach: exact, or `*.domain` for its subdomains.
#[derive(Debug)]
struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    fn permits(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.0
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => host == *allowed,
            })
    }
}

/// Resolves host names to their public addresses only, so that a name on
/// the allow-list (or one its DNS answers for later) cannot lead a fetch to
/// the gateway's own network: loopback, private ranges, link-local (cloud
/// metadata services). Connections go to the addresses checked here, so a
/// name that changes its answer between a check and the connection gains
/// nothing. Literal IP addresses are not resolved, so an allow-listed
/// address is reached as the operator wrote it.
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses, which fetches do not reach"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether `ip` is a public address. Written out because the standard
/// library's `is_global` is not stable; the ranges are IANA's special-use
/// registries, the ones a request could abuse.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let octets = v6.octets();
            let embedded = |at: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    octets[at],
                    octets[at + 1],
                    octets[at + 2],
                    octets[at + 3],
                ))
            };
            // Forms that carry an IPv4 address lead where it leads:
            // IPv4-mapped ::ffff:0:0/96 and IPv4-compatible ::/96, NAT64's
            // 64:ff9b::/96 and 64:ff9b:1::/48, 6to4's 2002::/16.
            if segments[..5] == [0; 5] && (segments[5] == 0xffff || segments[5] == 0) {
                return !v6.is_loopback() && !v6.is_unspecified() && is_public(embedded(12));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..3] == [0x64, 0xff9b, 1] {
                return is_public(embedded(12));
            }
            if segments[0] == 0x2002 {
                return is_public(embedded(2));
            }
            let first = segments[0];
            !(v6.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10, site-local
                // fec0::/10 (deprecated, still routed inside some sites).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // Teredo 2001::/32 and documentation 2001:db8::/32.
                || (first == 0x2001 && (segments[1] == 0 || segments[1] == 0x0db8)))
        }
    }
}

#[derive(Deserialize)]
struct Arguments {
    url: String,
}

/// What the model gets back.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// Where the page was found (after redirects).
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: String,
    /// Its text.
    pub text: String,
    /// Whether the body or the text was cut at a limit.
    pub truncated: bool,
}

impl HttpFetch {
    /// The tool, when `config` allows any host.
    pub fn new(config: &HttpFetchConfig) -> Result<Option<Self>, String> {
        if config.allow_hosts.is_empty() {
            return Ok(None);
        }
        // rustls needs a process-wide crypto provider; the gateway's
        // adapters install the same one. Installing twice is harmless.
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let allowed = Arc::new(AllowedHosts(
            config
                .allow_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        ));
        let for_redirects = allowed.clone();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if for_redirects.permits(attempt.url()) {
                    attempt.follow()
                } else {
                    let to = attempt.url().host_str().unwrap_or("").to_owned();
                    attempt.error(format!("redirected to {to}, which is not an allowed host"))
                }
            }))
            .user_agent("switchyard-http-fetch")
            // A proxy from the environment would resolve names itself,
            // past the address check below.
            .no_proxy();
        let client = if config.allow_private_addresses {
            client
        } else {
            client.dns_resolver(Arc::new(PublicAddressesOnly))
        };
        let client = client.build().map_err(|e| format!("no HTTP client: {e}"))?;
        Ok(Some(Self {
            client,
            allowed,
            max_bytes: config.max_bytes,
            max_chars: config.max_chars,
        }))
    }

    /// Fetches `url`.
    pub async fn fetch(&self, url: &str) -> Result<Page, ToolError> {
        let url = Url::parse(url).map_err(|e| ToolError::Arguments(format!("not a URL: {e}")))?;
        if !self.allowed.permits(&url) {
            return Err(ToolError::Arguments(format!(
                "{} is not an allowed host; allowed: {}",
                url.host_str().unwrap_or("(none)"),
                self.allowed.0.join(", ")
            )));
        }
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| ToolError::Failed(describe(&e)))?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let html = mime == "text/html" || mime == "application/xhtml+xml";
        let textual = html
            || mime.starts_with("text/")
            || mime == "application/json"
            || mime.ends_with("+json")
            || mime == "application/xml"
            || mime.ends_with("+xml");
        if !textual {
            return Err(ToolError::Failed(format!(
                "the page is {mime}, which has no text to read"
            )));
        }
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ToolError::Failed(describe(&e)))?
        {
            let room = self.max_bytes.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                truncated = true;
                break;
            }
        }
        let mut text = if html {
            html2text::from_read(body.as_slice(), TEXT_WIDTH)
                .map_err(|e| ToolError::Failed(format!("unreadable HTML: {e}")))?
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        if let Some((cut, _)) = text.char_indices().nth(self.max_chars) {
            text.truncate(cut);
            truncated = true;
        }
        Ok(Page {
            url: final_url,
            status,
            content_type,
            text,
            truncated,
        })
    }
}

/// A fetch failure in words (reqwest's own message hides the cause of a
/// redirect refusal in its source chain).
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "the fetch timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl Tool for HttpFetch {
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "http_fetch".into(),
            description: Some(format!(
                "Fetches a web page (GET) and returns its text. Only these hosts may be \
                 fetched: {}.",
                self.allowed.0.join(", ")
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "An http or https URL"}
                },
                "required": ["url"],
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move {
            let Arguments { url } = parse_arguments(arguments)?;
            let page = self.fetch(&url).await?;
            serde_json::to_string(&page).map_err(|e| ToolError::Failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::1",
            "fec0::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn hosts_are_allowed_exactly_or_by_domain() {
        let allowed = AllowedHosts(vec!["docs.python.org".into(), "*.example.com".into()]);
        let permits = |url: &str| allowed.permits(&Url::parse(url).unwrap());
        assert!(permits("https://docs.python.org/3/"));
        assert!(permits("http://api.example.com/x"));
        assert!(permits("https://a.b.example.com/"));
        assert!(
            !permits("https://example.com/"),
            "the domain itself is not a subdomain"
        );
        assert!(!permits("https://evilexample.com/"));
        assert!(!permits("https://docs.python.org.evil.net/"));
        assert!(!permits("ftp://docs.python.org/"));
        assert!(!permits("https://user@docs.python.org/"));
        assert!(!permits("file:///etc/passwd"));
    }
}
