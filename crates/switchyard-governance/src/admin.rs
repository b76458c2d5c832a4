//! Admin operations on tenants, teams and keys, and the usage, audit and
//! alert reports, each checked against the caller: the master key sees
//! every tenant; a key with the admin role sees its own tenant only, and
//! anything outside it does not exist (404), so ids of other tenants'
//! objects cannot even be confirmed.

use serde::{Deserialize, Deserializer, Serialize};
use switchyard_state::records::{
    AnomalyAlert, ApiKey, AuditRow, Budget, BudgetAlert, Limits, Metadata, Role, Team, Tenant,
    UsageGroup, UsageLine,
};
use switchyard_state::{SpendScope, TenantScope, TimeRange};

use crate::{Caller, Governance, GovernanceError, keys, now_ms};

/// Distinguishes an absent field (leave as is) from `null` (clear it).
fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST /admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Display name.
    pub name: String,
    /// Rate limits over all its keys.
    #[serde(default)]
    pub limits: Limits,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Labels.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `PATCH /admin/tenants/{id}` and `/admin/teams/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// New name.
    pub name: Option<String>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// New limits.
    pub limits: Option<Limits>,
    /// New budget; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    pub budget: Option<Option<Budget>>,
    /// New labels.
    pub metadata: Option<Metadata>,
}

impl GroupPatch {
    /// Checks the patch and writes its fields over a tenant's or team's.
    fn apply(
        self,
        name: &mut String,
        disabled: &mut bool,
        limits: &mut Limits,
        budget: &mut Option<Budget>,
        metadata: &mut Metadata,
    ) -> Result<(), GovernanceError> {
        if let Some(new) = self.name {
            check_name(&new)?;
            *name = new;
        }
        if let Some(new) = self.budget {
            check_budget(new.as_ref())?;
            *budget = new;
        }
        if let Some(new) = self.disabled {
            *disabled = new;
        }
        if let Some(new) = self.limits {
            *limits = new;
        }
        if let Some(new) = self.metadata {
            *metadata = new;
        }
        Ok(())
    }
}

/// `POST /admin/teams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// The tenant (the master key must name it; an admin key's own
    /// tenant is implied).
    pub tenant_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Rate limits over the team's keys.
    #[serde(default)]
    pub limits: Limits,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Labels.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The tenant (the master key must name it; an admin key's own
    /// tenant is implied).
    pub tenant_id: Option<String>,
    /// The team, which must belong to the tenant.
    pub team_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Defaults to member.
    #[serde(default = "member")]
    pub role: Role,
    /// Public model names it may call; absent allows all.
    pub allowed_models: Option<Vec<String>>,
    /// Its rate limits.
    #[serde(default)]
    pub limits: Limits,
    /// Its spending limit.
    pub budget: Option<Budget>,
    /// Labels.
    #[serde(default)]
    pub metadata: Metadata,
    /// Unix milliseconds after which it stops working.
    pub expires_at: Option<i64>,
    /// Or: seconds from now.
    pub expires_in_secs: Option<u64>,
    /// Guardrail policies its requests run (names from the configuration).
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// A client certificate (its DNS name, else its SHA-256 fingerprint)
    /// whose holder is this key over mutual TLS without sending it.
    pub client_certificate: Option<String>,
}

fn member() -> Role {
    Role::Member
}

/// `PATCH /admin/keys/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// New model allow-list; `null` allows all.
    #[serde(default, deserialize_with = "nullable")]
    pub allowed_models: Option<Option<Vec<String>>>,
    /// New limits.
    pub limits: Option<Limits>,
    /// New budget; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    pub budget: Option<Option<Budget>>,
    /// New labels.
    pub metadata: Option<Metadata>,
    /// New expiry; `null` never expires.
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<i64>>,
    /// Disable (revoke) or re-enable.
    pub disabled: Option<bool>,
    /// New guardrail policies (names from the configuration).
    pub guardrails: Option<Vec<String>>,
    /// New client certificate; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    pub client_certificate: Option<Option<String>>,
}

/// A key just made: the record and, once, the key itself.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// The key to give its owner; it is not shown again.
    pub key: String,
    /// The stored record.
    #[serde(flatten)]
    pub record: ApiKey,
}

fn require_admin(caller: &Caller) -> Result<(), GovernanceError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(GovernanceError::Forbidden(
            "the admin API needs the master key or a key with the admin role".to_owned(),
        ))
    }
}

fn require_master(caller: &Caller) -> Result<(), GovernanceError> {
    match caller {
        Caller::Master => Ok(()),
        _ => Err(GovernanceError::Forbidden(
            "only the master key may create or change tenants".to_owned(),
        )),
    }
}

/// The tenant a new team or key goes to: named by the master key, implied
/// for an admin key (which may name only its own).
fn target_tenant(caller: &Caller, named: Option<&str>) -> Result<String, GovernanceError> {
    match (caller, named) {
        (Caller::Master, Some(id)) => Ok(id.to_owned()),
        (Caller::Master, None) => Err(GovernanceError::Invalid(
            "tenant_id is required with the master key".to_owned(),
        )),
        (Caller::Key(context), named) => match named {
            Some(id) if id != context.tenant.id => {
                Err(GovernanceError::NotFound(format!("no tenant {id:?}")))
            }
            _ => Ok(context.tenant.id.clone()),
        },
        (Caller::Anonymous, _) => Err(GovernanceError::Forbidden(
            "the admin API needs the master key or a key with the admin role".to_owned(),
        )),
    }
}

fn check_name(name: &str) -> Result<(), GovernanceError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(GovernanceError::Invalid(
            "name must be 1 to 200 characters".to_owned(),
        ));
    }
    Ok(())
}

fn check_budget(budget: Option<&Budget>) -> Result<(), GovernanceError> {
    if let Some(budget) = budget {
        if !(budget.limit_usd.is_finite() && budget.limit_usd >= 0.0) {
            return Err(GovernanceError::Invalid(
                "budget.limit_usd must be a non-negative number".to_owned(),
            ));
        }
        if budget.alert_at.iter().any(|f| !(0.0..=1.0).contains(f)) {
            return Err(GovernanceError::Invalid(
                "budget.alert_at must hold fractions between 0 and 1".to_owned(),
            ));
        }
    }
    Ok(())
}

fn new_id(prefix: &str) -> Result<String, GovernanceError> {
    keys::new_id(prefix).map_err(|e| GovernanceError::Unavailable(e.to_string()))
}

impl Governance {
    /// Creates a tenant (master key only).
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        input: NewTenant,
    ) -> Result<Tenant, GovernanceError> {
        require_master(caller)?;
        check_name(&input.name)?;
        check_budget(input.budget.as_ref())?;
        let now = now_ms();
        let tenant = Tenant {
            id: new_id("ten_")?,
            name: input.name,
            disabled: false,
            limits: input.limits,
            budget: input.budget,
            metadata: input.metadata,
            created_at: now,
            updated_at: now,
            guardrails: Vec::new(),
        };
        self.store.insert_tenant(&tenant).await?;
        Ok(tenant)
    }

    /// The tenants the caller may see.
    pub async fn list_tenants(&self, caller: &Caller) -> Result<Vec<Tenant>, GovernanceError> {
        require_admin(caller)?;
        Ok(self.store.tenants(&caller.scope()).await?)
    }

    /// One tenant, if the caller may see it.
    pub async fn get_tenant(&self, caller: &Caller, id: &str) -> Result<Tenant, GovernanceError> {
        require_admin(caller)?;
        self.store
            .tenant(&caller.scope(), id)
            .await?
            .ok_or_else(|| GovernanceError::NotFound(format!("no tenant {id:?}")))
    }

    /// Changes a tenant (master key only).
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        id: &str,
        patch: GroupPatch,
    ) -> Result<Tenant, GovernanceError> {
        // An admin key learns nothing about other tenants: 404 first.
        let mut tenant = self.get_tenant(caller, id).await?;
        require_master(caller)?;
        patch.apply(
            &mut tenant.name,
            &mut tenant.disabled,
            &mut tenant.limits,
            &mut tenant.budget,
            &mut tenant.metadata,
        )?;
        tenant.updated_at = now_ms();
        self.store.update_tenant(&caller.scope(), &tenant).await?;
        self.forget_all_keys();
        Ok(tenant)
    }

    /// Sets the guardrail policies every request of a tenant's keys runs:
    /// the master key for any tenant, an admin key for its own (another
    /// tenant's id answers 404).
    pub async fn set_tenant_guardrails(
        &self,
        caller: &Caller,
        id: &str,
        names: Vec<String>,
    ) -> Result<Tenant, GovernanceError> {
        let mut tenant = self.get_tenant(caller, id).await?;
        require_admin(caller)?;
        tenant.guardrails = self.known_policies(names)?;
        tenant.updated_at = now_ms();
        self.store.update_tenant(&caller.scope(), &tenant).await?;
        self.forget_all_keys();
        Ok(tenant)
    }

    /// `names`, each a policy the configuration defines, without repeats.
    fn known_policies(&self, names: Vec<String>) -> Result<Vec<String>, GovernanceError> {
        let policy = self.policy();
        let known = &policy.settings.guardrail_policies;
        let mut kept: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            if !known.contains(&name) {
                return Err(GovernanceError::Invalid(format!(
                    "no guardrail policy named {name:?} (the configuration defines: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            if !kept.contains(&name) {
                kept.push(name);
            }
        }
        Ok(kept)
    }

    /// Creates a team.
    pub async fn create_team(
        &self,
        caller: &Caller,
        input: NewTeam,
    ) -> Result<Team, GovernanceError> {
        require_admin(caller)?;
        check_name(&input.name)?;
        check_budget(input.budget.as_ref())?;
        let tenant_id = target_tenant(caller, input.tenant_id.as_deref())?;
        self.get_tenant(caller, &tenant_id).await?;
        let now = now_ms();
        let team = Team {
            id: new_id("team_")?,
            tenant_id,
            name: input.name,
            disabled: false,
            limits: input.limits,
            budget: input.budget,
            metadata: input.metadata,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_team(&team).await?;
        Ok(team)
    }

    /// The teams the caller may see.
    pub async fn list_teams(&self, caller: &Caller) -> Result<Vec<Team>, GovernanceError> {
        require_admin(caller)?;
        Ok(self.store.teams(&caller.scope()).await?)
    }

    /// One team, if the caller may see it.
    pub async fn get_team(&self, caller: &Caller, id: &str) -> Result<Team, GovernanceError> {
        require_admin(caller)?;
        self.store
            .team(&caller.scope(), id)
            .await?
            .ok_or_else(|| GovernanceError::NotFound(format!("no team {id:?}")))
    }

    /// Changes a team.
    pub async fn update_team(
        &self,
        caller: &Caller,
        id: &str,
        patch: GroupPatch,
    ) -> Result<Team, GovernanceError> {
        let mut team = self.get_team(caller, id).await?;
        patch.apply(
            &mut team.name,
            &mut team.disabled,
            &mut team.limits,
            &mut team.budget,
            &mut team.metadata,
        )?;
        team.updated_at = now_ms();
        self.store.update_team(&caller.scope(), &team).await?;
        self.forget_all_keys();
        Ok(team)
    }

    /// Creates a key and returns it once.
    pub async fn create_key(
        &self,
        caller: &Caller,
        input: NewKey,
    ) -> Result<CreatedKey, GovernanceError> {
        require_admin(caller)?;
        check_name(&input.name)?;
        check_budget(input.budget.as_ref())?;
        let tenant_id = target_tenant(caller, input.tenant_id.as_deref())?;
        let tenant = self.get_tenant(caller, &tenant_id).await?;
        if let Some(team_id) = &input.team_id {
            let team = self
                .store
                .team(&TenantScope::Tenant(tenant.id.clone()), team_id)
                .await?;
            if team.is_none() {
                return Err(GovernanceError::NotFound(format!(
                    "no team {team_id:?} in tenant {}",
                    tenant.id
                )));
            }
        }
        let now = now_ms();
        let expires_at = match (input.expires_at, input.expires_in_secs) {
            (Some(_), Some(_)) => {
                return Err(GovernanceError::Invalid(
                    "set expires_at or expires_in_secs, not both".to_owned(),
                ));
            }
            (Some(at), None) => Some(at),
            (None, Some(secs)) => Some(
                now.saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)),
            ),
            (None, None) => None,
        };
        if let Some(name) = &input.client_certificate {
            self.check_certificate_free(name, None).await?;
        }
        let made = keys::generate().map_err(|e| GovernanceError::Unavailable(e.to_string()))?;
        let record = ApiKey {
            id: made.id.clone(),
            tenant_id: tenant.id,
            team_id: input.team_id,
            name: input.name,
            secret_hash: made.secret_hash.clone(),
            role: input.role,
            allowed_models: input.allowed_models,
            limits: input.limits,
            budget: input.budget,
            metadata: input.metadata,
            expires_at,
            disabled: false,
            created_at: now,
            updated_at: now,
            guardrails: self.known_policies(input.guardrails)?,
            client_certificate: input.client_certificate,
        };
        self.store.insert_key(&record).await?;
        Ok(CreatedKey {
            key: made.secret_text,
            record,
        })
    }

    /// Refuses a certificate name that is malformed or already given to a
    /// key other than `except`. The database's unique index backs this up
    /// against two admins at once.
    async fn check_certificate_free(
        &self,
        name: &str,
        except: Option<&str>,
    ) -> Result<(), GovernanceError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_whitespace) {
            return Err(GovernanceError::Invalid(
                "client_certificate must be the certificate's DNS name or SHA-256 fingerprint: 1 to 255 characters, no spaces".to_owned(),
            ));
        }
        match self.store.key_for_client_certificate(name).await? {
            Some(other) if Some(other.id.as_str()) != except => Err(GovernanceError::Invalid(
                format!("the client certificate {name:?} is already given to another key"),
            )),
            _ => Ok(()),
        }
    }

    /// The keys the caller may see (never their secrets).
    pub async fn list_keys(&self, caller: &Caller) -> Result<Vec<ApiKey>, GovernanceError> {
        require_admin(caller)?;
        Ok(self.store.keys(&caller.scope()).await?)
    }

    /// One key, if the caller may see it.
    pub async fn get_key(&self, caller: &Caller, id: &str) -> Result<ApiKey, GovernanceError> {
        require_admin(caller)?;
        self.store
            .key(&caller.scope(), id)
            .await?
            .ok_or_else(|| GovernanceError::NotFound(format!("no key {id:?}")))
    }

    /// Changes a key; the change applies at once on this instance.
    pub async fn update_key(
        &self,
        caller: &Caller,
        id: &str,
        patch: KeyPatch,
    ) -> Result<ApiKey, GovernanceError> {
        let mut key = self.get_key(caller, id).await?;
        if let Some(name) = patch.name {
            check_name(&name)?;
            key.name = name;
        }
        if let Some(budget) = patch.budget {
            check_budget(budget.as_ref())?;
            key.budget = budget;
        }
        key.role = patch.role.unwrap_or(key.role);
        if let Some(allowed) = patch.allowed_models {
            key.allowed_models = allowed;
        }
        key.limits = patch.limits.unwrap_or(key.limits);
        key.metadata = patch.metadata.unwrap_or(key.metadata);
        if let Some(expires_at) = patch.expires_at {
            key.expires_at = expires_at;
        }
        key.disabled = patch.disabled.unwrap_or(key.disabled);
        if let Some(names) = patch.guardrails {
            key.guardrails = self.known_policies(names)?;
        }
        let mut certificates_changed = Vec::new();
        if let Some(certificate) = patch.client_certificate {
            if let Some(name) = &certificate {
                self.check_certificate_free(name, Some(&key.id)).await?;
            }
            certificates_changed.extend(key.client_certificate.take());
            key.client_certificate = certificate;
        }
        key.updated_at = now_ms();
        self.store.update_key(&caller.scope(), &key).await?;
        self.forget_key(&key.id).await;
        // The cache keeps certificate callers under the certificate's name:
        // a revoked or re-pointed key stops there at once too.
        certificates_changed.extend(key.client_certificate.clone());
        for name in &certificates_changed {
            self.forget_certificate(name).await;
        }
        Ok(key)
    }

    /// Revokes a key.
    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> Result<ApiKey, GovernanceError> {
        self.update_key(
            caller,
            id,
            KeyPatch {
                disabled: Some(true),
                ..KeyPatch::default()
            },
        )
        .await
    }

    /// Requests, tokens and spend, grouped, over what the caller may see
    /// (narrowed to one tenant when the master key names one).
    pub async fn usage_report(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        range: &TimeRange,
        group: UsageGroup,
    ) -> Result<Vec<UsageLine>, GovernanceError> {
        require_admin(caller)?;
        let scope = narrowed(caller, tenant)?;
        self.ledger.flush().await;
        Ok(self.store.usage_report(&scope, range, group).await?)
    }

    /// The calling key's own usage, grouped, and its budget with what the
    /// key spent in the budget's current period. Any key may read its own
    /// (members and read-only keys included); nothing of other keys.
    pub async fn own_usage(
        &self,
        caller: &Caller,
        range: &TimeRange,
        group: UsageGroup,
    ) -> Result<OwnUsage, GovernanceError> {
        let Caller::Key(context) = caller else {
            return Err(GovernanceError::Invalid(
                "this report is an API key's own usage; send the key whose usage you want (the master key reads /admin/usage)"
                    .to_owned(),
            ));
        };
        let key = &context.key;
        self.ledger.flush().await;
        let data = self
            .store
            .key_usage_report(&caller.scope(), &key.id, range, group)
            .await?;
        let budget = match &key.budget {
            Some(budget) => {
                let period = crate::budget::period_bounds(budget.period, now_ms());
                let spent = self
                    .store
                    .spend_since(SpendScope::Key, &key.id, period.start)
                    .await?;
                Some(OwnBudget {
                    limit_usd: budget.limit_usd,
                    period: budget.period,
                    period_start: period.start,
                    spent_usd: spent,
                })
            }
            None => None,
        };
        Ok(OwnUsage {
            object: "usage",
            key_id: key.id.clone(),
            data,
            budget,
        })
    }

    /// Audit records of one request id.
    pub async fn audit_of_request(
        &self,
        caller: &Caller,
        request_id: &str,
    ) -> Result<Vec<AuditRow>, GovernanceError> {
        require_admin(caller)?;
        self.ledger.flush().await;
        Ok(self
            .store
            .audit_of_request(&caller.scope(), request_id)
            .await?)
    }

    /// Audit records in a time range, newest first.
    pub async fn audit_records(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        range: &TimeRange,
        limit: u32,
    ) -> Result<Vec<AuditRow>, GovernanceError> {
        require_admin(caller)?;
        let scope = narrowed(caller, tenant)?;
        self.ledger.flush().await;
        Ok(self.store.audit_records(&scope, range, limit).await?)
    }

    /// Budget alerts and drift and anomaly alarms the caller may see,
    /// newest first (at most 1,000 alarms).
    pub async fn alerts(&self, caller: &Caller) -> Result<Vec<Alert>, GovernanceError> {
        require_admin(caller)?;
        let scope = caller.scope();
        let mut alerts: Vec<Alert> = self
            .store
            .alerts(&scope)
            .await?
            .into_iter()
            .map(Alert::Budget)
            .collect();
        alerts.extend(
            self.store
                .anomalies(&scope, 1000)
                .await?
                .into_iter()
                .map(Alert::Anomaly),
        );
        alerts.sort_by_key(|alert| std::cmp::Reverse(alert.at()));
        Ok(alerts)
    }
}

/// An entry of `/admin/alerts`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// A budget's soft threshold crossed.
    Budget(BudgetAlert),
    /// A tenant × model series far outside its baseline.
    Anomaly(AnomalyAlert),
}

impl Alert {
    /// When it was raised, Unix milliseconds.
    pub fn at(&self) -> i64 {
        match self {
            Self::Budget(alert) => alert.at,
            Self::Anomaly(alert) => alert.at,
        }
    }
}

/// The caller's scope, narrowed to `tenant` when one is named; naming a
/// tenant outside the caller's scope finds nothing.
fn narrowed(caller: &Caller, tenant: Option<&str>) -> Result<TenantScope, GovernanceError> {
    match (caller.scope(), tenant) {
        (scope, None) => Ok(scope),
        (TenantScope::All, Some(id)) => Ok(TenantScope::Tenant(id.to_owned())),
        (TenantScope::Tenant(own), Some(id)) if own == id => Ok(TenantScope::Tenant(own)),
        (TenantScope::Tenant(_), Some(id)) => {
            Err(GovernanceError::NotFound(format!("no tenant {id:?}")))
        }
    }
}

/// A key's report of its own usage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnUsage {
    /// Always `usage`.
    pub object: &'static str,
    /// The key reported on.
    pub key_id: String,
    /// Its usage, grouped as asked.
    pub data: Vec<UsageLine>,
    /// Its own budget, if it has one.
    pub budget: Option<OwnBudget>,
}

/// A key's budget and what it spent in the current period.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnBudget {
    /// The limit in US dollars.
    pub limit_usd: f64,
    /// The period it applies to.
    pub period: switchyard_state::records::BudgetPeriod,
    /// When the current period began (Unix ms).
    pub period_start: i64,
    /// Spent by the key since then.
    pub spent_usd: f64,
}
