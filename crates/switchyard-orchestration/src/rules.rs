//! Rule-based routing: pick a route from the request itself.

use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use switchyard_telemetry::UpstreamClock;

use switchyard_config::RuleConfig;
use switchyard_core::{ChatRequest, Decision, Role};

/// What routing may look at besides the request body.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Who is calling (a tenant id, or a hash of the presented key); cache
    /// entries never cross callers.
    pub caller: String,
    /// The caller's tenant, once tenants exist.
    pub tenant: Option<String>,
    /// Request headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The request body's `metadata` object.
    pub metadata: BTreeMap<String, String>,
    /// What the caller asked of the cache.
    pub cache: CacheMode,
    /// Where routing notes the steps it took.
    pub trail: Trail,
    /// Time spent waiting on upstreams, so the rest of the request's time
    /// can be reported as the gateway's own.
    pub upstream: UpstreamClock,
}

/// The steps routing took for one request (rules matched, attempts that
/// failed, retries, hedges, deployments skipped), for the audit trail.
/// Shared, so the caller reads it after the call whether it succeeded or
/// failed.
#[derive(Debug, Clone, Default)]
pub struct Trail(Arc<Mutex<Vec<Decision>>>);

impl Trail {
    /// Adds a step.
    pub fn note(&self, step: Decision) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(step);
    }

    /// The steps so far.
    pub fn steps(&self) -> Vec<Decision> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A caller's wish about the response cache (`x-switchyard-cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Cache deterministic requests when the route caches.
    #[default]
    Default,
    /// Neither read nor write the cache.
    Skip,
    /// Cache even a sampled (non-deterministic) request.
    Force,
}

/// A rule: when its conditions hold, `target` serves the request.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub target: String,
    config: RuleConfig,
}

/// Heuristic code detection: a fenced block, or several lines that read
/// like code. Cheap, and good enough to send code to a code model.
pub(crate) fn looks_like_code(text: &str) -> bool {
    if text.contains("```") {
        return true;
    }
    const MARKERS: [&str; 14] = [
        "fn ",
        "def ",
        "class ",
        "function ",
        "#include",
        "import ",
        "public static",
        "=> {",
        "};",
        "println!",
        "console.log",
        "SELECT ",
        "#!/",
        "return ",
    ];
    text.lines()
        .filter(|line| {
            let line = line.trim_start();
            MARKERS.iter().any(|m| line.starts_with(m))
                || line.ends_with('{')
                || line.ends_with(");")
        })
        .count()
        >= 2
}

impl Rule {
    pub fn new(config: RuleConfig) -> Self {
        Self {
            target: config.route.clone(),
            config,
        }
    }

    /// Whether every condition the rule sets holds.
    pub fn matches(&self, request: &ChatRequest, context: &RequestContext) -> bool {
        let c = &self.config;
        let chars = || -> usize {
            request
                .messages
                .iter()
                .map(|m| m.text().chars().count())
                .sum()
        };
        if let Some(above) = c.prompt_chars_above
            && chars() <= above
        {
            return false;
        }
        if let Some(below) = c.prompt_chars_below
            && chars() >= below
        {
            return false;
        }
        if let Some(want) = c.has_code {
            let last_user = request
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.text())
                .unwrap_or_default();
            if looks_like_code(&last_user) != want {
                return false;
            }
        }
        if let Some(want) = c.has_tools
            && request.tools.is_empty() == want
        {
            return false;
        }
        if let Some(want) = c.has_images
            && request.messages.iter().any(|m| m.has_images()) != want
        {
            return false;
        }
        if let Some(header) = &c.header {
            match (
                context.headers.get(&header.to_ascii_lowercase()),
                &c.header_value,
            ) {
                (None, _) => return false,
                (Some(value), Some(wanted)) if value != wanted => return false,
                _ => {}
            }
        }
        if let Some(key) = &c.metadata_key {
            match (context.metadata.get(key), &c.metadata_value) {
                (None, _) => return false,
                (Some(value), Some(wanted)) if value != wanted => return false,
                _ => {}
            }
        }
        if let Some(tenant) = &c.tenant
            && context.tenant.as_ref() != Some(tenant)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::ChatMessage;

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new("auto", vec![ChatMessage::new(Role::User, text)])
    }

    fn rule(config: RuleConfig) -> Rule {
        Rule::new(RuleConfig {
            route: "target".into(),
            ..config
        })
    }

    #[test]
    fn code_is_recognised() {
        assert!(looks_like_code("Fix this:\n```rust\nfn main() {}\n```"));
        assert!(looks_like_code("def add(a, b):\n    return a + b"));
        assert!(!looks_like_code("What is the capital of France?"));
        assert!(!looks_like_code("I like functions of a real variable."));
    }

    #[test]
    fn conditions_combine() {
        let short = rule(RuleConfig {
            prompt_chars_below: Some(20),
            ..RuleConfig::default()
        });
        assert!(short.matches(&request("hi"), &RequestContext::default()));
        assert!(!short.matches(&request(&"x".repeat(50)), &RequestContext::default()));

        let premium = rule(RuleConfig {
            header: Some("X-Tier".into()),
            header_value: Some("premium".into()),
            ..RuleConfig::default()
        });
        let mut context = RequestContext::default();
        assert!(!premium.matches(&request("hi"), &context));
        context.headers.insert("x-tier".into(), "premium".into());
        assert!(premium.matches(&request("hi"), &context));

        let tagged = rule(RuleConfig {
            metadata_key: Some("team".into()),
            ..RuleConfig::default()
        });
        assert!(!tagged.matches(&request("hi"), &context));
        context.metadata.insert("team".into(), "search".into());
        assert!(tagged.matches(&request("hi"), &context));

        let code = rule(RuleConfig {
            has_code: Some(true),
            ..RuleConfig::default()
        });
        assert!(code.matches(&request("```\nls -la\n```"), &context));
    }
}
