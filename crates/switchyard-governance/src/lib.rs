//! Switchyard's governance layer: who is calling, what they may use, how
//! fast and how much, and the record every request leaves.
//!
//! A request passes through [`Governance::authenticate`], then
//! [`Governance::admit`] (models, budgets, concurrency, rate windows),
//! and, once answered, [`Admission::finish`] (real usage reconciled, cost
//! added to spend, soft alerts, ledger row and audit record queued). An
//! admission dropped without finishing (a client that went away) still
//! leaves its record.

pub mod admin;
pub mod alarms;
pub mod anomaly;
mod auth;
mod budget;
mod error;
pub mod feedback;
pub mod jwt;
pub mod keys;
mod ledger;
pub mod limits;
mod owed;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard_core::{Decision, WindowCheck};
use switchyard_state::counters::{
    ConcurrencySlots, MemorySlots, MemorySpend, MemoryWindows, RedisCounters, SpendTotals,
    WindowCounters, WindowDecision,
};
use switchyard_state::records::{AuditRow, Budget, Role, UsageRow};
use switchyard_state::{SpendScope, SqlStore, TenantScope};
pub use switchyard_telemetry::Operation;
use switchyard_telemetry::{RequestRecord, UpstreamClock, metrics};
use tracing::{info, warn};

pub use auth::{Caller, KeyContext};
pub use budget::{Price, PriceTable, Tokens, period_bounds};
pub use error::GovernanceError;
pub use ledger::Ledger;
pub use limits::RateHeaders;
pub use switchyard_state;

use crate::limits::{Counted, LabelledCharge, ScopeLimits};

/// Settings of the governance layer.
#[derive(Debug, Clone)]
pub struct GovernanceSettings {
    /// Whether inference requests need a key.
    pub auth_enabled: bool,
    /// The operator's master key (admin API, every tenant).
    pub master_key: Option<secrecy::SecretString>,
    /// How long a looked-up key is trusted before it is read again (a
    /// revocation reaches other instances within this time).
    pub key_cache_ttl: Duration,
    /// How often the ledger writes its batch.
    pub ledger_flush: Duration,
    /// Keep prompts in the audit trail (masked).
    pub store_prompts: bool,
    /// Keep answers in the audit trail (masked).
    pub store_answers: bool,
    /// Accept bearer JWTs from this issuer.
    pub jwt: Option<jwt::JwtSettings>,
    /// The guardrail policies the configuration defines: the names a
    /// tenant or key may be given.
    pub guardrail_policies: Vec<String>,
}

impl Default for GovernanceSettings {
    fn default() -> Self {
        Self {
            auth_enabled: false,
            master_key: None,
            key_cache_ttl: Duration::from_secs(5),
            ledger_flush: Duration::from_millis(200),
            store_prompts: false,
            store_answers: false,
            jwt: None,
            guardrail_policies: Vec::new(),
        }
    }
}

/// Where the shared counters live.
pub struct Counters {
    windows: Arc<dyn WindowCounters>,
    slots: Arc<dyn ConcurrencySlots>,
    spend: Arc<dyn SpendTotals>,
    /// Costs `spend` could not take when they were made.
    owed: owed::OwedSpend,
}

impl Counters {
    /// In this process.
    pub fn in_memory() -> Self {
        Self {
            windows: Arc::new(MemoryWindows::new()),
            slots: Arc::new(MemorySlots::new()),
            spend: Arc::new(MemorySpend::new()),
            owed: owed::OwedSpend::default(),
        }
    }

    /// In Redis, shared with every instance using `url`.
    pub async fn redis(url: &str) -> Result<Self, GovernanceError> {
        // Slots of a crashed instance free themselves after the longest a
        // request may take.
        let counters =
            RedisCounters::connect(url, "switchyard:", Duration::from_secs(15 * 60)).await?;
        let shared = Arc::new(counters);
        Ok(Self {
            windows: shared.clone(),
            slots: shared.clone(),
            spend: shared,
            owed: owed::OwedSpend::default(),
        })
    }
}

/// What a configuration reload may change in governance: who must
/// authenticate and how, what the audit trail keeps, and what models
/// cost. A request takes the policy in force when it arrives and keeps it
/// to its end (its admission holds it), like the gateway it routes on.
pub struct Policy {
    settings: GovernanceSettings,
    jwt: Option<Arc<jwt::JwtVerifier>>,
    prices: Arc<PriceTable>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("auth_enabled", &self.settings.auth_enabled)
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The settings it holds.
    pub fn settings(&self) -> &GovernanceSettings {
        &self.settings
    }

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }
}

/// The governance layer.
pub struct Governance {
    store: SqlStore,
    counters: Counters,
    key_cache: moka::future::Cache<String, Arc<KeyContext>>,
    ledger: Ledger,
    /// The policy in force, for callers that hold none of their own.
    policy: arc_swap::ArcSwap<Policy>,
    /// Drift and anomaly alarms, once watched for.
    alarms: std::sync::OnceLock<alarms::Alarms>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What admission needs to know of a request.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// `x-request-id`.
    pub request_id: String,
    /// The public model name asked for.
    pub model: String,
    /// Tokens the request is expected to use (prompt estimate plus the
    /// output it allows), charged to token windows until the real usage
    /// is known.
    pub estimated_tokens: u64,
    /// The trace the request belongs to, for its log line.
    pub trace_id: Option<String>,
    /// Whether the gateway serves `model`: only a known name becomes a
    /// metric label (anything else is a client's string).
    pub known_model: bool,
    /// What was asked for.
    pub operation: Operation,
    /// Streamed.
    pub stream: bool,
    /// When the request arrived (before its body was read and its key
    /// checked), so that its latency is the client's; `None`: now.
    pub arrived: Option<Instant>,
    /// The request's time waiting on upstreams: the rest of its time is
    /// the gateway's own overhead.
    pub upstream: UpstreamClock,
    /// The Responses API response it produces, for its ledger row.
    pub response_id: Option<String>,
}

impl Governance {
    /// A governance layer over `store` and `counters`; starts the ledger
    /// writer on the current runtime.
    pub fn new(
        settings: GovernanceSettings,
        store: SqlStore,
        counters: Counters,
    ) -> Result<Arc<Self>, GovernanceError> {
        let ledger = Ledger::start(store.clone(), settings.ledger_flush);
        let key_cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(settings.key_cache_ttl)
            .build();
        let policy = Self::build_policy(None, settings, PriceTable::default())?;
        Ok(Arc::new(Self {
            key_cache,
            store,
            counters,
            ledger,
            policy: arc_swap::ArcSwap::new(policy),
            alarms: std::sync::OnceLock::new(),
        }))
    }

    fn build_policy(
        previous: Option<&Policy>,
        settings: GovernanceSettings,
        prices: PriceTable,
    ) -> Result<Arc<Policy>, GovernanceError> {
        // An unchanged issuer keeps its verifier, and with it the keys it
        // has already read.
        let jwt = match (previous, &settings.jwt) {
            (Some(old), Some(wanted)) if old.settings.jwt.as_ref() == Some(wanted) => {
                old.jwt.clone()
            }
            (_, wanted) => wanted.clone().map(jwt::JwtVerifier::new).transpose()?,
        };
        Ok(Arc::new(Policy {
            settings,
            jwt,
            prices: Arc::new(prices),
        }))
    }

    /// Starts watching every tenant × model for drift and anomalies
    /// (once; later calls change nothing and say so).
    pub fn watch_anomalies(&self, settings: anomaly::AnomalySettings) -> bool {
        let mut started = false;
        self.alarms.get_or_init(|| {
            started = true;
            alarms::Alarms::start(settings, self.store.clone())
        });
        started
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// A policy for new settings and prices, built beside the one in force
    /// (nothing changes until it is installed). `key_cache_ttl` and
    /// `ledger_flush` are fixed when governance starts.
    pub fn make_policy(
        &self,
        settings: GovernanceSettings,
        prices: PriceTable,
    ) -> Result<Arc<Policy>, GovernanceError> {
        Self::build_policy(Some(&self.policy.load()), settings, prices)
    }

    /// Puts `policy` in force for callers that take the current one.
    pub fn install(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// The settings in force.
    pub fn settings(&self) -> GovernanceSettings {
        self.policy.load().settings.clone()
    }

    /// The store (for the admin API and reports).
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The ledger writer.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Replaces the price table of the policy in force (at start-up).
    pub fn set_prices(&self, prices: PriceTable) -> Result<(), GovernanceError> {
        let policy = self.make_policy(self.settings(), prices)?;
        self.install(policy);
        Ok(())
    }

    /// Forgets a cached key so a change to it applies at once here.
    pub async fn forget_key(&self, key_id: &str) {
        self.key_cache.invalidate(key_id).await;
    }

    /// Forgets the cached key a client certificate stood for.
    pub async fn forget_certificate(&self, name: &str) {
        self.key_cache.invalidate(&format!("cert:{name}")).await;
    }

    /// Forgets every cached key (after a tenant or team changed).
    pub fn forget_all_keys(&self) {
        self.key_cache.invalidate_all();
    }

    /// Who presents `token` (a bearer token or `x-api-key` value), under
    /// the policy in force.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, GovernanceError> {
        self.authenticate_under(&self.policy(), token, None).await
    }

    /// Who presents `token`, under `policy`. Without a token, a verified
    /// client certificate (its name, from the TLS handshake) stands for the
    /// key it was given to; a token, when sent, always decides.
    pub async fn authenticate_under(
        &self,
        policy: &Policy,
        token: Option<&str>,
        client_certificate: Option<&str>,
    ) -> Result<Caller, GovernanceError> {
        let settings = &policy.settings;
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            if let Some(name) = client_certificate {
                return self
                    .authenticate_certificate(name, settings.auth_enabled)
                    .await;
            }
            return if settings.auth_enabled {
                Err(GovernanceError::Unauthenticated(
                    "no API key: send Authorization: Bearer <key> or x-api-key: <key>".to_owned(),
                ))
            } else {
                Ok(Caller::Anonymous)
            };
        };
        if let Some(master) = &settings.master_key
            && keys::same_secret(token, secrecy::ExposeSecret::expose_secret(master))
        {
            return Ok(Caller::Master);
        }
        if let Some(verifier) = &policy.jwt
            && jwt::looks_like_jwt(token)
        {
            return self.authenticate_jwt(verifier, token).await;
        }
        let Some(presented) = keys::parse(token) else {
            // With authentication off, a foreign key (e.g. a provider key a
            // client sends out of habit) does not stand in the way.
            return if settings.auth_enabled {
                Err(GovernanceError::Unauthenticated(
                    "invalid API key".to_owned(),
                ))
            } else {
                Ok(Caller::Anonymous)
            };
        };
        let now = now_ms();
        let context = match self.key_cache.get(presented.id).await {
            Some(context) => {
                if !keys::verify(presented.secret, &context.key.secret_hash) {
                    return Err(GovernanceError::Unauthenticated(
                        "invalid API key".to_owned(),
                    ));
                }
                auth::usable(&context, now)?;
                context
            }
            None => {
                let context = auth::load_key(&self.store, &presented, now).await?;
                self.key_cache
                    .insert(presented.id.to_owned(), context.clone())
                    .await;
                context
            }
        };
        Ok(Caller::Key(context))
    }

    /// An admission holding nothing yet.
    fn admission(
        self: &Arc<Self>,
        policy: Arc<Policy>,
        caller: Caller,
        facts: RequestFacts,
    ) -> Admission {
        metrics().request_started();
        let started = facts.arrived.unwrap_or_else(Instant::now);
        Admission {
            governance: self.clone(),
            policy,
            // Time-ordered, so rows append to the primary-key index.
            row_id: uuid::Uuid::now_v7().simple().to_string(),
            facts,
            caller,
            at: now_ms(),
            started,
            decisions: Vec::new(),
            token_charges: Vec::new(),
            slot_keys: Vec::new(),
            budget_keys: Vec::new(),
            rate_headers: RateHeaders::default(),
            first_token: None,
            finished: false,
        }
    }

    /// Records a model call refused before anyone was authenticated (no
    /// key, a wrong, revoked or expired one): the audit trail keeps failed
    /// attempts too.
    pub fn record_refused_authentication(
        self: &Arc<Self>,
        policy: Arc<Policy>,
        facts: RequestFacts,
        error: &GovernanceError,
    ) {
        let mut admission = self.admission(policy, Caller::Anonymous, facts);
        admission.decisions = vec![Decision::AuthenticationRefused {
            allowed: false,
            why: error.to_string(),
        }];
        admission.refuse(error);
    }

    /// The key a verified client certificate was given to. A certificate
    /// given to no key is refused when authentication is on; with it off,
    /// the handshake alone was the gate and the caller is anonymous.
    async fn authenticate_certificate(
        &self,
        name: &str,
        auth_enabled: bool,
    ) -> Result<Caller, GovernanceError> {
        let cache_key = format!("cert:{name}");
        let now = now_ms();
        let context = match self.key_cache.get(&cache_key).await {
            Some(context) => context,
            None => match auth::load_certificate_key(&self.store, name).await? {
                Some(context) => {
                    self.key_cache.insert(cache_key, context.clone()).await;
                    context
                }
                None if auth_enabled => {
                    return Err(GovernanceError::Unauthenticated(format!(
                        "the client certificate {name:?} is not given to any key; send an API key or ask an admin to set client_certificate on one"
                    )));
                }
                None => return Ok(Caller::Anonymous),
            },
        };
        auth::usable(&context, now)?;
        Ok(Caller::Key(context))
    }

    /// A caller from a verified JWT: its tenant (and team) must exist and
    /// be enabled; limits and budgets are the tenant's and team's.
    async fn authenticate_jwt(
        &self,
        verifier: &jwt::JwtVerifier,
        token: &str,
    ) -> Result<Caller, GovernanceError> {
        use sha2::Digest;
        let cache_key = format!(
            "jwt:{}",
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        );
        let now = now_ms();
        if let Some(context) = self.key_cache.get(&cache_key).await {
            auth::usable(&context, now)?;
            return Ok(Caller::Key(context));
        }
        let identity = verifier.verify(token).await?;
        let refuse = |why: String| GovernanceError::Unauthenticated(why);
        let tenant = self
            .store
            .tenant(&TenantScope::All, &identity.tenant)
            .await?
            .ok_or_else(|| {
                refuse(format!(
                    "the token's tenant {:?} does not exist",
                    identity.tenant
                ))
            })?;
        let scope = TenantScope::Tenant(tenant.id.clone());
        let team = match &identity.team {
            Some(team) => Some(self.store.team(&scope, team).await?.ok_or_else(|| {
                refuse(format!("the token's team {team:?} is not in its tenant"))
            })?),
            None => None,
        };
        let role = match identity.role.as_deref() {
            None => Role::Member,
            Some(name) => Role::parse(name).ok_or_else(|| {
                refuse(format!(
                    "the token's role {name:?} is not admin, member or read_only"
                ))
            })?,
        };
        let expires_at = i64::try_from(identity.expires_at)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let key = switchyard_state::records::ApiKey {
            id: format!("jwt:{}", identity.subject),
            tenant_id: tenant.id.clone(),
            team_id: team.as_ref().map(|t| t.id.clone()),
            name: format!("token of {}", identity.subject),
            secret_hash: String::new(),
            role,
            allowed_models: None,
            limits: switchyard_state::records::Limits::default(),
            budget: None,
            metadata: Default::default(),
            expires_at: Some(expires_at),
            disabled: false,
            created_at: now,
            updated_at: now,
            guardrails: Vec::new(),
            client_certificate: None,
        };
        let context = Arc::new(KeyContext {
            key,
            tenant,
            team,
            by_certificate: None,
        });
        auth::usable(&context, now)?;
        self.key_cache.insert(cache_key, context.clone()).await;
        Ok(Caller::Key(context))
    }

    /// Checks that `caller` may send `facts` now, and takes what the
    /// request uses (rate windows, a concurrency slot).
    pub async fn admit(
        self: &Arc<Self>,
        policy: Arc<Policy>,
        caller: &Caller,
        facts: RequestFacts,
    ) -> Result<Admission, GovernanceError> {
        let mut decisions = vec![Decision::Authenticated {
            caller: caller.describe(),
        }];
        let mut admission = self.admission(policy, caller.clone(), facts);
        let at = admission.at;
        let Caller::Key(context) = caller else {
            admission.decisions = decisions;
            return Ok(admission);
        };
        let model = admission.facts.model.clone();
        let refuse =
            |admission: &mut Admission, decisions: Vec<Decision>, error: GovernanceError| {
                admission.decisions = decisions;
                admission.refuse(&error);
                Err(error)
            };

        if context.key.role == Role::ReadOnly {
            decisions.push(Decision::Role {
                allowed: false,
                role: "read_only".into(),
            });
            let error = GovernanceError::Forbidden(
                "this API key is read-only: it may list models but not call them".to_owned(),
            );
            return refuse(&mut admission, decisions, error);
        }
        if let Some(allowed) = &context.key.allowed_models
            && !allowed.iter().any(|m| m == &model)
        {
            decisions.push(Decision::Models {
                allowed: false,
                model: model.clone(),
            });
            let error = GovernanceError::Forbidden(format!(
                "this API key may not use model {model:?}; allowed: {}",
                allowed.join(", ")
            ));
            return refuse(&mut admission, decisions, error);
        }
        decisions.push(Decision::Models {
            allowed: true,
            model: model.clone(),
        });

        // Budgets: refuse once spent. Spend is added as requests finish,
        // so the overshoot is at most what the requests in flight cost.
        let budgets = budgets_of(context);
        for (scope, id, budget) in &budgets {
            let bounds = period_bounds(budget.period, at);
            let key = spend_key(*scope, id, bounds.start);
            let spent = match self.spent(&key, *scope, id, bounds, at).await {
                Ok(spent) => spent,
                Err(error) => return refuse(&mut admission, decisions, error),
            };
            let over = spent >= budget.limit_usd;
            decisions.push(Decision::Budget {
                scope: scope.as_str().into(),
                id: id.clone(),
                spent_usd: spent,
                limit_usd: budget.limit_usd,
                allowed: !over,
            });
            if over {
                let error = GovernanceError::BudgetExceeded {
                    message: format!(
                        "the {} budget of {id} is spent (${spent:.4} of ${:.4}, {:?})",
                        scope.as_str(),
                        budget.limit_usd,
                        budget.period
                    ),
                    retry_after: bounds.remaining(at),
                };
                return refuse(&mut admission, decisions, error);
            }
            admission.budget_keys.push(BudgetKey {
                key,
                scope: *scope,
                id: id.clone(),
                tenant_id: context.tenant.id.clone(),
                budget: budget.clone(),
                period_start: bounds.start,
            });
        }

        let scopes = scopes_of(context);
        let slots = limits::slots(&scopes);
        if !slots.is_empty() {
            let keys: Vec<(String, u64)> = slots.iter().map(|(k, l, _)| (k.clone(), *l)).collect();
            let full = match self.counters.slots.acquire(&admission.row_id, &keys).await {
                Ok(full) => full,
                Err(error) => return refuse(&mut admission, decisions, error.into()),
            };
            if let Some(index) = full {
                let (_, limit, label) = &slots[index];
                decisions.push(Decision::Concurrency {
                    scope: Some(label.clone()),
                    limit: Some(*limit),
                    allowed: false,
                });
                let error = GovernanceError::RateLimited {
                    message: format!("{label} already has {limit} requests in flight"),
                    retry_after: Some(Duration::from_secs(1)),
                    headers: Box::default(),
                };
                return refuse(&mut admission, decisions, error);
            }
            admission.slot_keys = keys.into_iter().map(|(k, _)| k).collect();
            decisions.push(Decision::Concurrency {
                scope: None,
                limit: None,
                allowed: true,
            });
        }

        let charges = limits::charges(&scopes, &model, admission.facts.estimated_tokens);
        if !charges.is_empty() {
            let plain: Vec<_> = charges.iter().map(|c| c.charge.clone()).collect();
            let decision = match self
                .counters
                .windows
                .charge(&admission.row_id, &plain)
                .await
            {
                Ok(decision) => decision,
                Err(error) => return refuse(&mut admission, decisions, error.into()),
            };
            match decision {
                WindowDecision::Admitted(states) => {
                    admission.rate_headers = RateHeaders::from_states(&charges, &states);
                    admission.token_charges = charges
                        .iter()
                        .filter(|c| c.counted == Counted::Tokens)
                        .map(|c| (c.charge.key.clone(), c.charge.amount))
                        .collect();
                    decisions.push(Decision::RateLimits {
                        allowed: true,
                        exceeded: None,
                        windows: windows(&charges, &states),
                    });
                }
                WindowDecision::Refused {
                    index,
                    retry_after,
                    states,
                } => {
                    let charge = &charges[index];
                    decisions.push(Decision::RateLimits {
                        allowed: false,
                        exceeded: Some(charge.scope.clone()),
                        windows: windows(&charges, &states),
                    });
                    let what = match charge.counted {
                        Counted::Requests => "requests",
                        Counted::Tokens => "tokens",
                    };
                    let message = match retry_after {
                        Some(wait) => format!(
                            "rate limit reached for {}: {} {what} per minute; try again in {}",
                            charge.scope,
                            charge.charge.limit,
                            limits::go_duration(wait)
                        ),
                        None => format!(
                            "this request needs about {} tokens, more than the {} tokens per minute {} allows",
                            charge.charge.amount, charge.charge.limit, charge.scope
                        ),
                    };
                    let error = GovernanceError::RateLimited {
                        message,
                        retry_after,
                        headers: Box::new(RateHeaders::from_states(&charges, &states)),
                    };
                    return refuse(&mut admission, decisions, error);
                }
            }
        }
        admission.decisions = decisions;
        Ok(admission)
    }

    /// A scope's spend in the current period: the shared total, seeded
    /// from the ledger the first time it is needed.
    async fn spent(
        &self,
        key: &str,
        scope: SpendScope,
        id: &str,
        bounds: budget::PeriodBounds,
        now: i64,
    ) -> Result<f64, GovernanceError> {
        let keys = [key.to_owned()];
        self.counters.owed.settle(&*self.counters.spend).await;
        if let Some(Some(total)) = self.counters.spend.get(&keys).await?.first() {
            return Ok(*total);
        }
        self.ledger.flush().await;
        let total = self.store.spend_since(scope, id, bounds.start).await?;
        // A total budget has no period end; its counter is re-read from
        // the ledger once a day.
        let ttl =
            bounds.remaining(now).unwrap_or(Duration::from_secs(86_400)) + Duration::from_secs(60);
        self.counters.spend.seed(key, total, ttl).await?;
        let current = self.counters.spend.get(&keys).await?;
        Ok(current.first().copied().flatten().unwrap_or(total))
    }
}

/// The budgets that apply to a key: its own, its team's, its tenant's.
fn budgets_of(context: &KeyContext) -> Vec<(SpendScope, String, Budget)> {
    let mut out = Vec::new();
    if let Some(budget) = &context.key.budget {
        out.push((SpendScope::Key, context.key.id.clone(), budget.clone()));
    }
    if let Some(team) = &context.team
        && let Some(budget) = &team.budget
    {
        out.push((SpendScope::Team, team.id.clone(), budget.clone()));
    }
    if let Some(budget) = &context.tenant.budget {
        out.push((
            SpendScope::Tenant,
            context.tenant.id.clone(),
            budget.clone(),
        ));
    }
    out
}

fn scopes_of(context: &KeyContext) -> Vec<ScopeLimits<'_>> {
    let mut scopes = vec![ScopeLimits {
        kind: "key",
        id: &context.key.id,
        limits: &context.key.limits,
    }];
    if let Some(team) = &context.team {
        scopes.push(ScopeLimits {
            kind: "team",
            id: &team.id,
            limits: &team.limits,
        });
    }
    scopes.push(ScopeLimits {
        kind: "tenant",
        id: &context.tenant.id,
        limits: &context.tenant.limits,
    });
    scopes
}

fn spend_key(scope: SpendScope, id: &str, period_start: i64) -> String {
    format!("spend:{}:{id}:{period_start}", scope.as_str())
}

fn windows(
    charges: &[LabelledCharge],
    states: &[switchyard_state::counters::WindowState],
) -> Vec<WindowCheck> {
    charges
        .iter()
        .zip(states)
        .map(|(c, s)| WindowCheck {
            scope: c.scope.clone(),
            counted: match c.counted {
                Counted::Requests => "requests",
                Counted::Tokens => "tokens",
            },
            limit: s.limit,
            remaining: s.remaining,
        })
        .collect()
}

#[derive(Debug, Clone)]
struct BudgetKey {
    key: String,
    scope: SpendScope,
    id: String,
    tenant_id: String,
    budget: Budget,
    period_start: i64,
}

/// How a request ended, for its ledger row and audit record.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// HTTP status sent (or 499 when the client left).
    pub status: u16,
    /// The deployment that answered.
    pub deployment: Option<String>,
    /// The route taken.
    pub route: Option<String>,
    /// Served from the response cache.
    pub cache_hit: bool,
    /// Real token counts, when the answer reported them.
    pub tokens: Option<Tokens>,
    /// The error, when the request failed.
    pub error: Option<String>,
    /// The prompt (kept masked, when the configuration says so).
    pub prompt: Option<String>,
    /// The answer (kept masked, when the configuration says so).
    pub answer: Option<String>,
    /// Further steps of the decision path (route choice, fallbacks).
    pub decisions: Vec<Decision>,
    /// Time spent retrieving sources for a grounded answer.
    pub retrieval: Option<Duration>,
    /// The answer's length and whether it refused, for drift alarms.
    pub answer_shape: Option<anomaly::AnswerShape>,
}

/// An admitted request: what it holds, until it finishes.
pub struct Admission {
    governance: Arc<Governance>,
    /// The policy the request arrived under: its prices and what its
    /// audit record keeps.
    policy: Arc<Policy>,
    row_id: String,
    facts: RequestFacts,
    caller: Caller,
    at: i64,
    started: Instant,
    decisions: Vec<Decision>,
    token_charges: Vec<(String, u64)>,
    slot_keys: Vec<String>,
    budget_keys: Vec<BudgetKey>,
    rate_headers: RateHeaders,
    first_token: Option<Duration>,
    finished: bool,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("request_id", &self.facts.request_id)
            .field("caller", &self.caller.describe())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The `x-ratelimit-*` values to send.
    pub fn rate_headers(&self) -> &RateHeaders {
        &self.rate_headers
    }

    /// Notes that the first token went out now.
    pub fn first_token(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
    }

    /// Records a request refused at admission (its status from the error).
    fn refuse(&mut self, error: &GovernanceError) {
        self.record(Outcome {
            status: error.status(),
            error: Some(error.to_string()),
            ..Outcome::default()
        });
    }

    /// Records how the request ended: reconciles token windows with the
    /// real usage, adds its cost to spend, raises budget alerts, gives back
    /// its concurrency slots, and queues its ledger row and audit record.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let governance = self.governance.clone();
        let tokens = outcome.tokens.unwrap_or_default();
        let deployment = outcome
            .deployment
            .clone()
            .unwrap_or_else(|| self.facts.model.clone());
        // A tool loop's earlier steps are part of the request's tokens,
        // each priced at the deployment that answered it; the rest are the
        // final answer's.
        let steps: Vec<(&str, Tokens)> = self
            .decisions
            .iter()
            .chain(&outcome.decisions)
            .filter_map(|step| match step {
                Decision::ToolStep {
                    deployment,
                    input_tokens,
                    output_tokens,
                    ..
                } => Some((
                    deployment.as_str(),
                    Tokens {
                        input: *input_tokens,
                        output: *output_tokens,
                        cached: 0,
                    },
                )),
                _ => None,
            })
            .collect();
        let steps_cost: f64 = steps
            .iter()
            .map(|(deployment, used)| self.policy.prices.cost(deployment, *used))
            .sum();
        let answer_tokens = Tokens {
            input: steps.iter().fold(tokens.input, |left, (_, used)| {
                left.saturating_sub(used.input)
            }),
            output: steps.iter().fold(tokens.output, |left, (_, used)| {
                left.saturating_sub(used.output)
            }),
            cached: tokens.cached,
        };
        let answer_cost = if outcome.cache_hit {
            0.0
        } else {
            self.policy.prices.cost(&deployment, answer_tokens)
        };
        // The other model calls the request made (judges, summaries,
        // cascade steps, ensemble members) are its own to pay for too.
        let calls_cost: f64 = self
            .decisions
            .iter()
            .chain(&outcome.decisions)
            .filter_map(|step| match step {
                Decision::Call {
                    deployment,
                    input_tokens,
                    output_tokens,
                    ..
                } => Some(self.policy.prices.cost(
                    deployment,
                    Tokens {
                        input: *input_tokens,
                        output: *output_tokens,
                        cached: 0,
                    },
                )),
                _ => None,
            })
            .sum();
        let cost = answer_cost + steps_cost + calls_cost;
        let latency = self.started.elapsed();
        let settings = &self.policy.settings;
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.extend(outcome.decisions.iter().cloned());
        if outcome.cache_hit {
            decisions.push(Decision::Cache {
                status: "hit".into(),
            });
        }
        if let Some(route) = &outcome.route {
            decisions.push(Decision::Route {
                route: route.clone(),
                deployment: outcome.deployment.clone(),
            });
        }
        if let Some(error) = &outcome.error {
            decisions.push(Decision::Error {
                status: outcome.status,
                message: error.clone(),
            });
        }
        decisions.push(Decision::Usage {
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cost_usd: cost,
        });
        // Routing's steps and errors carry upstream messages, which may
        // quote what the client sent.
        let decisions = decisions
            .into_iter()
            .map(|step| {
                let step =
                    step.masked(|text| switchyard_guardrails::detect::mask(text).into_owned());
                serde_json::to_value(&step).unwrap_or_default()
            })
            .collect();
        let usage = UsageRow {
            id: self.row_id.clone(),
            request_id: self.facts.request_id.clone(),
            at: self.at,
            tenant_id: self.caller.tenant_id().map(str::to_owned),
            team_id: self.caller.team_id().map(str::to_owned),
            key_id: self.caller.key_id().map(str::to_owned),
            model: self.facts.model.clone(),
            deployment: outcome.deployment.clone(),
            route: outcome.route.clone(),
            cache_hit: outcome.cache_hit,
            status: outcome.status,
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cached_tokens: tokens.cached,
            cost,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            ttft_ms: self
                .first_token
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            response_id: self.facts.response_id.clone(),
        };
        let audit = AuditRow {
            id: self.row_id.clone(),
            request_id: self.facts.request_id.clone(),
            at: self.at,
            tenant_id: usage.tenant_id.clone(),
            key_id: usage.key_id.clone(),
            status: outcome.status,
            decisions,
            prompt: outcome
                .prompt
                .as_deref()
                .filter(|_| settings.store_prompts)
                .map(|p| switchyard_guardrails::detect::mask(p).into_owned()),
            answer: outcome
                .answer
                .as_deref()
                .filter(|_| settings.store_answers)
                .map(|a| switchyard_guardrails::detect::mask(a).into_owned()),
        };
        metrics().request_ended();
        metrics().request_done(&RequestRecord {
            operation: self.facts.operation,
            model: self.facts.known_model.then_some(usage.model.as_str()),
            route: usage.route.as_deref(),
            tenant: usage.tenant_id.as_deref(),
            status: usage.status,
            stream: self.facts.stream,
            duration: latency,
            time_to_first_token: self.first_token,
            output_tokens: outcome.tokens.map(|t| t.output),
            cost,
            upstream: self.facts.upstream.waited(),
        });
        info!(
            request_id = %usage.request_id,
            trace_id = self.facts.trace_id.as_deref().unwrap_or("-"),
            tenant = usage.tenant_id.as_deref().unwrap_or("-"),
            key = usage.key_id.as_deref().unwrap_or("-"),
            model = %usage.model,
            route = usage.route.as_deref().unwrap_or("-"),
            cache_hit = usage.cache_hit,
            status = usage.status,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_usd = usage.cost,
            latency_ms = usage.latency_ms,
            ttft_ms = usage.ttft_ms,
            retrieval_ms = outcome.retrieval.map(|d| d.as_secs_f64() * 1e3),
            "request done"
        );
        if let Some(alarms) = governance.alarms.get()
            && self.facts.known_model
            // Refusals at admission and clients that left say nothing
            // about the model.
            && !(400..500).contains(&outcome.status)
        {
            alarms.observe(&anomaly::Observation {
                tenant: usage.tenant_id.as_deref(),
                model: &usage.model,
                at_ms: now_ms(),
                failed: outcome.status >= 500,
                latency,
                tokens: outcome.tokens.map(|t| t.input + t.output),
                cost,
                answer: outcome.answer_shape,
            });
        }
        let slot_keys = std::mem::take(&mut self.slot_keys);
        let token_charges = std::mem::take(&mut self.token_charges);
        let budget_keys = std::mem::take(&mut self.budget_keys);
        let row_id = self.row_id.clone();
        let counted = outcome.tokens.is_some() || outcome.status >= 400;
        let actual = tokens.total();
        let needs_counters = !slot_keys.is_empty()
            || (counted && !token_charges.is_empty())
            || (cost > 0.0 && !budget_keys.is_empty());
        if !needs_counters {
            // Nothing shared to update (no limits, no budget): no task.
            governance.ledger.record(usage, audit);
            return;
        }
        // Spend reaches the shared totals before the ledger row is queued,
        // so the next admission already sees it.
        let settle = async move {
            if !slot_keys.is_empty()
                && let Err(error) = governance.counters.slots.release(&row_id, &slot_keys).await
            {
                warn!(%error, "cannot release concurrency slots; their lease will");
            }
            if counted {
                for (key, charged) in &token_charges {
                    if let Err(error) = governance
                        .counters
                        .windows
                        .adjust(&row_id, key, *charged, actual)
                        .await
                    {
                        warn!(%error, "cannot reconcile a token window");
                    }
                }
            }
            if cost > 0.0 && !budget_keys.is_empty() {
                governance.add_spend(&budget_keys, cost).await;
            }
            governance.ledger.record(usage, audit);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(settle);
            }
            Err(_) => warn!("no runtime to record a request on; its usage row is lost"),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // A request dropped unfinished is one whose client went away.
        self.record(Outcome {
            status: 499,
            error: Some("the client closed the connection".to_owned()),
            ..Outcome::default()
        });
    }
}

impl Governance {
    async fn add_spend(&self, budget_keys: &[BudgetKey], cost: f64) {
        let keys: Vec<String> = budget_keys.iter().map(|b| b.key.clone()).collect();
        self.counters.owed.settle(&*self.counters.spend).await;
        let totals = match self.counters.spend.add(&keys, cost).await {
            Ok(totals) => totals,
            Err(error) => {
                warn!(%error, cost, "cannot add to spend totals; owed until they can be");
                self.counters.owed.owe(&keys, cost);
                return;
            }
        };
        for (budget_key, total) in budget_keys.iter().zip(totals) {
            let Some(total) = total else { continue };
            let before = total - cost;
            for &threshold in &budget_key.budget.alert_at {
                let line = threshold * budget_key.budget.limit_usd;
                if before < line && total >= line {
                    self.raise_alert(budget_key, threshold, total).await;
                }
            }
        }
    }

    async fn raise_alert(&self, budget_key: &BudgetKey, threshold: f64, spent: f64) {
        let alert = switchyard_state::records::BudgetAlert {
            id: uuid::Uuid::new_v4().simple().to_string(),
            at: now_ms(),
            tenant_id: budget_key.tenant_id.clone(),
            scope: budget_key.scope.as_str().to_owned(),
            scope_id: budget_key.id.clone(),
            period_start: budget_key.period_start,
            threshold,
            spent,
            budget_limit: budget_key.budget.limit_usd,
        };
        match self.store.insert_alert(&alert).await {
            Ok(true) => warn!(
                scope = %alert.scope,
                id = %alert.scope_id,
                tenant = %alert.tenant_id,
                threshold,
                spent_usd = spent,
                limit_usd = alert.budget_limit,
                "budget alert: threshold crossed"
            ),
            Ok(false) => {}
            Err(error) => warn!(%error, "cannot record a budget alert"),
        }
    }
}
