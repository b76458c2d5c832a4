//! Rule-based routing: pick a route from the request itself.

use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use switchyard_telemetry::UpstreamClock;

use switchyard_core::{ChatRequest, Decision, Role};

use crate::semantic::{EmbeddingMemo, Similar};

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
    /// Embeddings already computed for this request (the last user turn
    /// routing by meaning embedded), reused by whatever asks again.
    pub embeddings: EmbeddingMemo,
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

/// A rule: when all its conditions hold, `target` serves the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The route (or model) that serves matching requests.
    pub target: String,
    /// What must hold; a rule without conditions matches every request.
    pub conditions: Vec<Condition>,
}

/// One thing a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The conversation's text is longer than this many characters.
    PromptCharsAbove(usize),
    /// The conversation's text is shorter than this many characters.
    PromptCharsBelow(usize),
    /// The last user message contains code (or not).
    HasCode(bool),
    /// The request offers tools (or not).
    HasTools(bool),
    /// The request carries images (or not).
    HasImages(bool),
    /// A request header (lower-case name) is present, with `value` if given.
    Header {
        /// The header's name, lower-case.
        name: String,
        /// The value it must have.
        value: Option<String>,
    },
    /// A key of the request's `metadata` is present, with `value` if given.
    Metadata {
        /// The key.
        key: String,
        /// The value it must have.
        value: Option<String>,
    },
    /// The caller's tenant.
    Tenant(String),
    /// The last user turn is close in meaning to one of the examples; the
    /// gateway weighs it (it needs embeddings), the other conditions of
    /// the rule are checked here.
    SimilarTo(Arc<Similar>),
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
    /// The rule's `similar_to`, when it routes by meaning.
    pub fn similar(&self) -> Option<&Similar> {
        self.conditions.iter().find_map(|c| match c {
            Condition::SimilarTo(similar) => Some(similar.as_ref()),
            _ => None,
        })
    }

    /// Whether every condition holds (a `similar_to` condition is weighed
    /// by the gateway, and counts as holding here).
    pub fn matches(&self, request: &ChatRequest, context: &RequestContext) -> bool {
        self.conditions
            .iter()
            .all(|condition| condition.holds(request, context))
    }
}

impl Condition {
    fn holds(&self, request: &ChatRequest, context: &RequestContext) -> bool {
        let chars = || -> usize {
            request
                .messages
                .iter()
                .map(|m| m.text().chars().count())
                .sum()
        };
        let present_with = |found: Option<&String>, wanted: &Option<String>| match (found, wanted) {
            (None, _) => false,
            (Some(found), Some(wanted)) => found == wanted,
            (Some(_), None) => true,
        };
        match self {
            Condition::PromptCharsAbove(above) => chars() > *above,
            Condition::PromptCharsBelow(below) => chars() < *below,
            Condition::HasCode(want) => {
                let last_user = request
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.text())
                    .unwrap_or_default();
                looks_like_code(&last_user) == *want
            }
            Condition::HasTools(want) => request.tools.is_empty() != *want,
            Condition::HasImages(want) => request.messages.iter().any(|m| m.has_images()) == *want,
            Condition::Header { name, value } => present_with(context.headers.get(name), value),
            Condition::Metadata { key, value } => present_with(context.metadata.get(key), value),
            Condition::Tenant(tenant) => context.tenant.as_ref() == Some(tenant),
            Condition::SimilarTo(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::ChatMessage;

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new("auto", vec![ChatMessage::new(Role::User, text)])
    }

    fn rule(conditions: Vec<Condition>) -> Rule {
        Rule {
            target: "target".into(),
            conditions,
        }
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
        let short = rule(vec![Condition::PromptCharsBelow(20)]);
        assert!(short.matches(&request("hi"), &RequestContext::default()));
        assert!(!short.matches(&request(&"x".repeat(50)), &RequestContext::default()));

        let premium = rule(vec![Condition::Header {
            name: "x-tier".into(),
            value: Some("premium".into()),
        }]);
        let mut context = RequestContext::default();
        assert!(!premium.matches(&request("hi"), &context));
        context.headers.insert("x-tier".into(), "premium".into());
        assert!(premium.matches(&request("hi"), &context));

        let tagged = rule(vec![Condition::Metadata {
            key: "team".into(),
            value: None,
        }]);
        assert!(!tagged.matches(&request("hi"), &context));
        context.metadata.insert("team".into(), "search".into());
        assert!(tagged.matches(&request("hi"), &context));

        let code = rule(vec![
            Condition::HasCode(true),
            Condition::PromptCharsAbove(5),
        ]);
        assert!(code.matches(&request("```\nls -la\n```"), &context));
        assert!(!code.matches(&request("```"), &context));
        assert!(!code.matches(&request("no code in this one"), &context));
    }
}
