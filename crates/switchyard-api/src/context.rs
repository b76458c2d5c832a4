//! What the orchestration layer may know about a request besides its body:
//! who is calling (for cache namespaces), the headers rules can match on,
//! and what the caller asked of the cache.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use switchyard_orchestration::{CacheMode, CacheStatus, RequestContext, Routed};

/// Credentials are never copied into the context (rules do not need them,
/// and they must not reach logs).
const PRIVATE_HEADERS: [&str; 4] = ["authorization", "x-api-key", "api-key", "cookie"];

/// The context of a request with these headers and body metadata.
pub(crate) fn request_context(
    headers: &HeaderMap,
    metadata: Option<&BTreeMap<String, serde_json::Value>>,
) -> RequestContext {
    // Until tenants exist, the caller is the credential it presented,
    // hashed: two keys never share cache entries.
    let credential = headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .map(HeaderValue::as_bytes);
    let caller = match credential {
        Some(bytes) => hex::encode(&Sha256::digest(bytes)[..12]),
        None => "anonymous".to_owned(),
    };
    let cache = match headers
        .get("x-switchyard-cache")
        .and_then(|v| v.to_str().ok())
    {
        Some("skip" | "no-store") => CacheMode::Skip,
        Some("force") => CacheMode::Force,
        _ => CacheMode::Default,
    };
    RequestContext {
        caller,
        tenant: None,
        headers: headers
            .iter()
            .filter(|(name, _)| !PRIVATE_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        metadata: metadata
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        cache,
        trail: Default::default(),
        upstream: Default::default(),
        embeddings: Default::default(),
    }
}

/// `x-switchyard-route`, `x-switchyard-cache` when the cache was
/// consulted, and the rate-limit headers, for an answer's response.
pub(crate) fn answer_headers<T>(
    routed: &Routed<T>,
    rate_limits: &[(&'static str, String)],
) -> HeaderMap {
    let mut headers = crate::calls::rate_headers(rate_limits);
    if let Ok(value) = HeaderValue::from_str(&routed.label()) {
        headers.insert("x-switchyard-route", value);
    }
    let cache = match routed.cache {
        CacheStatus::Hit => Some("hit"),
        CacheStatus::SemanticHit => Some("semantic-hit"),
        CacheStatus::Miss => Some("miss"),
        CacheStatus::Bypass => None,
    };
    if let Some(cache) = cache {
        headers.insert("x-switchyard-cache", HeaderValue::from_static(cache));
    }
    if let Some(similarity) = routed.similarity
        && let Ok(value) = HeaderValue::from_str(&format!("{similarity:.3}"))
    {
        headers.insert("x-switchyard-cache-similarity", value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_hashed_credentials_and_secrets_stay_out() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        headers.insert("x-tier", HeaderValue::from_static("premium"));
        let a = request_context(&headers, None);
        assert_eq!(a.caller.len(), 24);
        assert!(!a.headers.contains_key("authorization"));
        assert_eq!(a.headers["x-tier"], "premium");
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-2"));
        assert_ne!(request_context(&headers, None).caller, a.caller);
        assert_eq!(request_context(&HeaderMap::new(), None).caller, "anonymous");
    }

    #[test]
    fn cache_wishes_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert("x-switchyard-cache", HeaderValue::from_static("skip"));
        assert_eq!(request_context(&headers, None).cache, CacheMode::Skip);
        headers.insert("x-switchyard-cache", HeaderValue::from_static("force"));
        assert_eq!(request_context(&headers, None).cache, CacheMode::Force);
    }
}
