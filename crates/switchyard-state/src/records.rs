//! The objects the store keeps, as the governance layer and the admin API
//! see them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Free-form labels an operator attaches to a tenant, team or key.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything a member may, plus managing its tenant's teams and keys
    /// and reading its usage and audit records.
    Admin,
    /// Calls models and reads its own usage.
    Member,
    /// Lists models and reads its own usage; calls no model.
    ReadOnly,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
            Self::ReadOnly => "read_only",
        }
    }

    /// The role named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            "read_only" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

/// Rates for one model within a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input and output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// Rate limits of a key, team or tenant. Absent fields do not limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input and output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Per public model name, on top of the limits above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelLimits>,
}

/// How long a budget's spend accumulates before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From midnight UTC.
    Daily,
    /// From the first of the month, UTC.
    Monthly,
    /// Never resets.
    Total,
}

/// A spending limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Hard limit in US dollars: once spent, requests are refused.
    pub limit_usd: f64,
    /// The period the limit applies to.
    pub period: BudgetPeriod,
    /// Fractions of the limit (e.g. 0.5, 0.8) that raise a soft alert.
    #[serde(default = "default_alerts")]
    pub alert_at: Vec<f64>,
}

fn default_alerts() -> Vec<f64> {
    vec![0.8]
}

/// An organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// `ten_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// A disabled tenant's keys are refused.
    pub disabled: bool,
    /// Rate limits over all its keys.
    pub limits: Limits,
    /// Spending limit over all its keys.
    pub budget: Option<Budget>,
    /// Operator's labels.
    pub metadata: Metadata,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Guardrail policies every request of its keys runs.
    #[serde(default)]
    pub guardrails: Vec<String>,
}

/// A team within a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Team {
    /// `team_…`.
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// A disabled team's keys are refused.
    pub disabled: bool,
    /// Rate limits over the team's keys.
    pub limits: Limits,
    /// Spending limit over the team's keys.
    pub budget: Option<Budget>,
    /// Operator's labels.
    pub metadata: Metadata,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// An API key as stored: its secret only as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public part of the key (`key_…`), also part of the key itself.
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The team, if the key belongs to one.
    pub team_id: Option<String>,
    /// Display name.
    pub name: String,
    /// SHA-256 of the secret part, hex. Never serialised.
    #[serde(skip_serializing, default)]
    pub secret_hash: String,
    /// What the key may do.
    pub role: Role,
    /// Public model names it may call; `None` allows all.
    pub allowed_models: Option<Vec<String>>,
    /// Its own rate limits.
    pub limits: Limits,
    /// Its own spending limit.
    pub budget: Option<Budget>,
    /// Operator's labels.
    pub metadata: Metadata,
    /// Unix milliseconds after which it is refused.
    pub expires_at: Option<i64>,
    /// Revoked keys are refused.
    pub disabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Guardrail policies its requests run.
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// The client certificate (its DNS name, else its SHA-256 fingerprint)
    /// whose holder is this key over mutual TLS, without sending it.
    #[serde(default)]
    pub client_certificate: Option<String>,
}

/// One request in the usage ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The row's own id (request ids may repeat).
    pub id: String,
    /// `x-request-id`.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    /// Who called, when known.
    pub tenant_id: Option<String>,
    /// The key's team.
    pub team_id: Option<String>,
    /// The key.
    pub key_id: Option<String>,
    /// The public model name asked for.
    pub model: String,
    /// The deployment that answered.
    pub deployment: Option<String>,
    /// The route taken.
    pub route: Option<String>,
    /// Served from the response cache.
    pub cache_hit: bool,
    /// HTTP status (499 when the client went away).
    pub status: u16,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from a provider's prompt cache.
    pub cached_tokens: u64,
    /// US dollars.
    pub cost: f64,
    /// Milliseconds from arrival to the last byte.
    pub latency_ms: u64,
    /// Milliseconds to the first streamed token.
    pub ttft_ms: Option<u64>,
    /// The Responses API response the request produced (its stored
    /// response names the one it continued and its conversation).
    #[serde(default)]
    pub response_id: Option<String>,
}

/// One request's decision path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// The row's own id.
    pub id: String,
    /// `x-request-id`.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at: i64,
    /// Who called, when known.
    pub tenant_id: Option<String>,
    /// The key.
    pub key_id: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// The steps, in order.
    pub decisions: Vec<serde_json::Value>,
    /// The prompt, masked, when the configuration keeps prompts.
    pub prompt: Option<String>,
    /// The answer, masked, when the configuration keeps answers.
    pub answer: Option<String>,
}

/// A soft budget threshold crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlert {
    /// The alert's id.
    pub id: String,
    /// Unix milliseconds when it was crossed.
    pub at: i64,
    /// The tenant the budget belongs to.
    pub tenant_id: String,
    /// `tenant`, `team` or `key`.
    pub scope: String,
    /// The tenant's, team's or key's id.
    pub scope_id: String,
    /// Start of the budget period (Unix milliseconds).
    pub period_start: i64,
    /// The fraction crossed.
    pub threshold: f64,
    /// Spend when it was crossed (US dollars).
    pub spent: f64,
    /// The budget's limit (US dollars).
    pub budget_limit: f64,
}

/// A drift or anomaly alarm: one point of a tenant × model series far
/// outside its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyAlert {
    /// The alert's id.
    pub id: String,
    /// Unix milliseconds when it was raised.
    pub at: i64,
    /// The tenant whose traffic it is about (`None`: requests made
    /// without one).
    pub tenant_id: Option<String>,
    /// The public model name.
    pub model: String,
    /// Which series: `error_rate`, `latency_p50_ms`, `latency_p95_ms`,
    /// `tokens_per_request`, `refusal_rate`, `answer_chars` or
    /// `cost_usd_per_hour`.
    pub signal: String,
    /// The point that was out of bounds.
    pub observed: f64,
    /// The baseline's median.
    pub baseline: f64,
    /// The control limit it crossed.
    pub bound: f64,
    /// How far out it was, in standard deviations of the baseline
    /// (robust: MAD × 1.4826; for rates, the normal deviation with the
    /// same tail probability as the binomial count).
    pub score: f64,
    /// Points in the baseline it was judged against.
    pub points: u32,
    /// Unix milliseconds when it was resolved, if it has been.
    pub resolved_at: Option<i64>,
    /// How: `back_to_baseline` or `new_baseline`.
    pub resolution: Option<String>,
}

/// How usage reports group rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// By tenant.
    Tenant,
    /// By team.
    Team,
    /// By key.
    Key,
    /// By public model name.
    Model,
    /// By UTC day.
    Day,
    /// By route taken.
    Route,
    /// By the deployment that answered.
    Deployment,
}

impl UsageGroup {
    /// The ledger column (or expression) grouped on.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::Tenant => "tenant_id",
            Self::Team => "team_id",
            Self::Key => "key_id",
            Self::Model => "model",
            Self::Route => "route",
            Self::Deployment => "deployment",
            Self::Day => "(at / 86400000)",
        }
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    /// The group's value (a day as `YYYY-MM-DD`).
    pub group: Option<String>,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// US dollars.
    pub cost: f64,
    /// Feedback given on the group's requests.
    pub feedback: u64,
    /// The mean of the scores given, when any were.
    pub mean_score: Option<f64>,
}

/// What a user thought of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRow {
    /// Its own id.
    pub id: String,
    /// Whose request it is about.
    pub tenant_id: String,
    /// The request.
    pub request_id: String,
    /// The Responses API response, when given by it.
    pub response_id: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// A score (the caller's scale, e.g. -1 to 1 or 1 to 5).
    pub score: Option<f64>,
    /// A label (`helpful`, `wrong`...).
    pub label: Option<String>,
    /// A comment, masked.
    pub comment: Option<String>,
}
