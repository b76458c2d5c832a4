//! The decision path of a request: one typed step per thing governance and
//! routing decided, in order. The audit record keeps it as a JSON list,
//! each step an object with its `step` name and fields.

use serde::Serialize;

/// One step of a request's decision path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Decision {
    /// Who the caller was found to be (`key:…`, `master`, `anonymous`).
    #[serde(rename = "authenticate")]
    Authenticated {
        /// The caller.
        #[serde(rename = "as")]
        caller: String,
    },
    /// The presented credential was refused.
    #[serde(rename = "authenticate")]
    AuthenticationRefused {
        /// Always false.
        allowed: bool,
        /// Why.
        why: String,
    },
    /// The key's role was checked.
    Role {
        /// Whether it may call models.
        allowed: bool,
        /// The role.
        role: String,
    },
    /// The key's model allow-list was checked.
    Models {
        /// Whether the model is allowed.
        allowed: bool,
        /// The model asked for.
        model: String,
    },
    /// A budget was checked.
    Budget {
        /// `tenant`, `team` or `key`.
        scope: String,
        /// Its id.
        id: String,
        /// Spent in the current period.
        spent_usd: f64,
        /// The limit.
        limit_usd: f64,
        /// Whether there was budget left.
        allowed: bool,
    },
    /// Concurrency slots were taken (or one was full).
    Concurrency {
        /// The full scope, when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Its limit, when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// Whether a slot was free everywhere.
        allowed: bool,
    },
    /// Rate windows were charged (or one was exceeded).
    RateLimits {
        /// Whether every window had room.
        allowed: bool,
        /// The window exceeded, when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        exceeded: Option<String>,
        /// Each window's state after the check.
        windows: Vec<WindowCheck>,
    },
    /// A routing rule sent the request to another route.
    Rule {
        /// The route whose rule matched.
        from: String,
        /// The route it handed over to.
        to: String,
        /// For a rule by meaning: how close the last user turn came to its
        /// closest example.
        #[serde(skip_serializing_if = "Option::is_none")]
        similarity: Option<f32>,
    },
    /// A deployment was not tried.
    Skipped {
        /// The deployment.
        deployment: String,
        /// Why (its breaker is open).
        why: String,
    },
    /// An attempt failed.
    AttemptFailed {
        /// The deployment.
        deployment: String,
        /// The failure's kind.
        kind: String,
        /// What the backend said (masked in the audit record).
        message: String,
    },
    /// The same deployment was tried again after a wait.
    Retry {
        /// The deployment.
        deployment: String,
        /// The wait, in milliseconds.
        wait_ms: u64,
    },
    /// A transient failure was not retried.
    NoRetry {
        /// The deployment.
        deployment: String,
        /// Why.
        why: String,
    },
    /// A second attempt was started beside a slow first one.
    Hedge {
        /// The deployment of the second attempt.
        deployment: String,
        /// How long the first had run.
        after_ms: u64,
    },
    /// The response cache answered.
    Cache {
        /// `hit`.
        status: String,
    },
    /// The route and deployment that answered.
    Route {
        /// The route.
        route: String,
        /// The deployment.
        deployment: Option<String>,
    },
    /// How the request failed.
    Error {
        /// The status sent.
        status: u16,
        /// What went wrong (masked in the audit record).
        message: String,
    },
    /// A guardrail check fired: which policy and check, what it did, on
    /// which side, what it found and where (never the matched text).
    Guardrail {
        /// The policy.
        policy: String,
        /// The check.
        check: String,
        /// `block`, `mask`, `pseudonymize` or `flag`.
        action: &'static str,
        /// `input` or `output`.
        side: &'static str,
        /// What fired: a data class, `word`, `pattern`, a heuristic, `size`.
        found: String,
        /// The message it was found in (input), from 0.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<usize>,
        /// Where the match starts in that text (bytes).
        start: usize,
        /// Where it ends (bytes, exclusive).
        end: usize,
    },
    /// The Responses API response this request produced, and the stored
    /// response it continued.
    Response {
        /// `resp_…`.
        id: String,
        /// The response whose conversation it continues.
        #[serde(skip_serializing_if = "Option::is_none")]
        previous_response_id: Option<String>,
        /// The conversation it continues and is added to.
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<String>,
        /// Items of history loaded from the store.
        history_items: usize,
        /// Whether the response is kept.
        stored: bool,
    },
    /// A conversation longer than its model's context window was fitted.
    Fit {
        /// `truncate` or `summarize`.
        mode: &'static str,
        /// Messages left out (or summarised), oldest first.
        dropped_messages: usize,
        /// Tokens of the prompt before fitting (counted or estimated).
        prompt_tokens: u64,
        /// Tokens the window leaves for the prompt.
        budget: u64,
        /// `written` or `reused`, when a summary took the turns' place.
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<&'static str>,
    },
    /// A model call the request made besides its answer (a guardrail
    /// judge, a summary, a query rewrite, a cascade step that was not
    /// accepted, an ensemble member), billed with the request.
    Call {
        /// What it was for.
        purpose: &'static str,
        /// The deployment that answered.
        deployment: String,
        /// Prompt tokens.
        input_tokens: u64,
        /// Answer tokens.
        output_tokens: u64,
        /// Its time, in milliseconds.
        latency_ms: u64,
    },
    /// A step of a cascade: its answer accepted (and served) or not.
    CascadeStep {
        /// The deployment.
        deployment: String,
        /// Its place in the cascade, from 0.
        position: usize,
        /// Whether its answer was served.
        accepted: bool,
        /// Why (the check that failed, or `accepted`).
        why: String,
    },
    /// A member of an ensemble: answered in time, or failed.
    EnsembleMember {
        /// The deployment.
        deployment: String,
        /// `answered` or `failed`.
        status: &'static str,
        /// Its time, in milliseconds.
        latency_ms: u64,
    },
    /// The answer a best-of ensemble's judge picked.
    EnsemblePick {
        /// The deployment whose answer was picked.
        deployment: String,
        /// Its number among the answers, from 0.
        answer: usize,
        /// How many answers there were.
        of: usize,
    },
    /// A step of the tool loop whose answer called tools Switchyard ran,
    /// or a code assistant's call before its answer (an attempt whose code
    /// was repaired, the code the explanation is of): its tokens are part
    /// of the request's usage, priced at this deployment.
    ToolStep {
        /// Its number, from 0.
        round: usize,
        /// The deployment that answered.
        deployment: String,
        /// Prompt tokens.
        input_tokens: u64,
        /// Answer tokens.
        output_tokens: u64,
        /// Its time, in milliseconds.
        latency_ms: u64,
    },
    /// A tool Switchyard ran for the model.
    Tool {
        /// The round of the tool loop whose answer called it, from 0.
        round: usize,
        /// The tool.
        tool: String,
        /// Its arguments as the model wrote them (masked in the audit
        /// record).
        arguments: String,
        /// `ok`, `error`, `timeout`, or `blocked` (a guardrail withheld its
        /// result).
        outcome: &'static str,
        /// Its time, in milliseconds.
        duration_ms: u64,
    },
    /// A check a code assistant ran on generated code, in the sandbox.
    Check {
        /// The attempt whose code it checked, from 0.
        attempt: usize,
        /// `syntax`, `tests` or `lint`.
        check: &'static str,
        /// `passed`, `failed` or `skipped`.
        outcome: &'static str,
        /// Its time, in milliseconds.
        duration_ms: u64,
    },
    /// What the request used and cost.
    Usage {
        /// Prompt tokens.
        input_tokens: u64,
        /// Answer tokens.
        output_tokens: u64,
        /// Cost in US dollars.
        cost_usd: f64,
    },
}

/// One rate window as a request left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowCheck {
    /// Whose window (`key …`, `tenant …`, with the model for per-model
    /// limits).
    pub scope: String,
    /// `requests` or `tokens`.
    pub counted: &'static str,
    /// Units per window.
    pub limit: u64,
    /// Units left.
    pub remaining: u64,
}

impl Decision {
    /// The step with the free text it carries (backend and error
    /// messages, which may quote what the client sent) passed through
    /// `mask`.
    pub fn masked(self, mask: impl Fn(&str) -> String) -> Self {
        match self {
            Self::AttemptFailed {
                deployment,
                kind,
                message,
            } => Self::AttemptFailed {
                deployment,
                kind,
                message: mask(&message),
            },
            Self::Error { status, message } => Self::Error {
                status,
                message: mask(&message),
            },
            Self::Tool {
                round,
                tool,
                arguments,
                outcome,
                duration_ms,
            } => Self::Tool {
                round,
                tool,
                arguments: mask(&arguments),
                outcome,
                duration_ms,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_serialise_as_the_audit_record_keeps_them() {
        let value = |d: &Decision| serde_json::to_value(d).unwrap_or_default();
        assert_eq!(
            value(&Decision::Authenticated {
                caller: "master".into()
            }),
            json!({"step": "authenticate", "as": "master"})
        );
        assert_eq!(
            value(&Decision::Concurrency {
                scope: None,
                limit: None,
                allowed: true
            }),
            json!({"step": "concurrency", "allowed": true})
        );
        assert_eq!(
            value(&Decision::AttemptFailed {
                deployment: "a".into(),
                kind: "Overloaded".into(),
                message: "busy".into()
            }),
            json!({"step": "attempt_failed", "deployment": "a", "kind": "Overloaded", "message": "busy"})
        );
        assert_eq!(
            value(&Decision::NoRetry {
                deployment: "a".into(),
                why: "w".into()
            })["step"],
            "no_retry"
        );
    }

    #[test]
    fn masking_touches_only_free_text() {
        let upper = |s: &str| s.to_uppercase();
        let failed = Decision::Error {
            status: 502,
            message: "secret".into(),
        };
        assert_eq!(
            failed.masked(upper),
            Decision::Error {
                status: 502,
                message: "SECRET".into()
            }
        );
        let rule = Decision::Rule {
            from: "a".into(),
            to: "b".into(),
            similarity: None,
        };
        assert_eq!(rule.clone().masked(upper), rule);
    }
}
