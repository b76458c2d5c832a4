//! Who is calling: the master key, an API key (with its tenant and team),
//! or, with authentication off, an anonymous local user.

use std::sync::Arc;

use switchyard_state::records::{ApiKey, Role, Team, Tenant};
use switchyard_state::{SqlStore, TenantScope};

use crate::GovernanceError;
use crate::keys;

/// A key together with the tenant and team it belongs to, as they were
/// when it was last looked up.
#[derive(Debug, Clone)]
pub struct KeyContext {
    /// The key.
    pub key: ApiKey,
    /// Its tenant.
    pub tenant: Tenant,
    /// Its team, if any.
    pub team: Option<Team>,
    /// The client certificate the caller showed instead of the key.
    pub by_certificate: Option<String>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No key presented while authentication is off.
    Anonymous,
    /// The operator's master key: every tenant, every admin route.
    Master,
    /// An API key.
    Key(Arc<KeyContext>),
}

impl Caller {
    /// The tenants this caller may see.
    pub fn scope(&self) -> TenantScope {
        match self {
            Self::Master | Self::Anonymous => TenantScope::All,
            Self::Key(context) => TenantScope::Tenant(context.tenant.id.clone()),
        }
    }

    /// Whether the caller may use the admin API.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Master => true,
            Self::Anonymous => false,
            Self::Key(context) => context.key.role == Role::Admin,
        }
    }

    /// The caller's tenant id.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Self::Key(context) => Some(&context.tenant.id),
            _ => None,
        }
    }

    /// The key's id.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::Key(context) => Some(&context.key.id),
            _ => None,
        }
    }

    /// The key's team id.
    pub fn team_id(&self) -> Option<&str> {
        match self {
            Self::Key(context) => context.team.as_ref().map(|t| t.id.as_str()),
            _ => None,
        }
    }

    /// How the audit trail names the caller.
    pub fn describe(&self) -> String {
        match self {
            Self::Anonymous => "anonymous (authentication off)".to_owned(),
            Self::Master => "master key".to_owned(),
            Self::Key(context) => match &context.by_certificate {
                Some(name) => format!(
                    "key {} ({}) of tenant {}, by client certificate {name}",
                    context.key.id,
                    context.key.role.as_str(),
                    context.tenant.id
                ),
                None => format!(
                    "key {} ({}) of tenant {}",
                    context.key.id,
                    context.key.role.as_str(),
                    context.tenant.id
                ),
            },
        }
    }
}

/// Loads a key, its tenant and team, and checks that all are usable.
pub(crate) async fn load_key(
    store: &SqlStore,
    presented: &keys::PresentedKey<'_>,
    now_ms: i64,
) -> Result<Arc<KeyContext>, GovernanceError> {
    let invalid = || GovernanceError::Unauthenticated("invalid API key".to_owned());
    let key = store
        .key(&TenantScope::All, presented.id)
        .await?
        .ok_or_else(invalid)?;
    if !keys::verify(presented.secret, &key.secret_hash) {
        return Err(invalid());
    }
    let context = with_owners(store, key, None, invalid).await?;
    usable(&context, now_ms)?;
    Ok(Arc::new(context))
}

/// Loads the key a client certificate was given to, its tenant and team;
/// `None` when it was given to no key.
pub(crate) async fn load_certificate_key(
    store: &SqlStore,
    name: &str,
) -> Result<Option<Arc<KeyContext>>, GovernanceError> {
    let Some(key) = store.key_for_client_certificate(name).await? else {
        return Ok(None);
    };
    let gone =
        || GovernanceError::Unauthenticated("this API key's tenant or team is gone".to_owned());
    let context = with_owners(store, key, Some(name.to_owned()), gone).await?;
    Ok(Some(Arc::new(context)))
}

/// `key` with the tenant and team it belongs to; `missing` when either is
/// gone.
async fn with_owners(
    store: &SqlStore,
    key: ApiKey,
    by_certificate: Option<String>,
    missing: impl Fn() -> GovernanceError,
) -> Result<KeyContext, GovernanceError> {
    let scope = TenantScope::Tenant(key.tenant_id.clone());
    let tenant = store
        .tenant(&scope, &key.tenant_id)
        .await?
        .ok_or_else(&missing)?;
    let team = match &key.team_id {
        Some(team_id) => Some(store.team(&scope, team_id).await?.ok_or_else(&missing)?),
        None => None,
    };
    Ok(KeyContext {
        key,
        tenant,
        team,
        by_certificate,
    })
}

/// Refuses revoked or expired keys and keys of disabled tenants or teams.
pub(crate) fn usable(context: &KeyContext, now_ms: i64) -> Result<(), GovernanceError> {
    let refuse = |why: &str| Err(GovernanceError::Unauthenticated(why.to_owned()));
    if context.key.disabled {
        return refuse("this API key has been revoked");
    }
    if context.key.expires_at.is_some_and(|at| at <= now_ms) {
        return refuse("this API key has expired");
    }
    if context.tenant.disabled {
        return refuse("this API key's tenant is disabled");
    }
    if context.team.as_ref().is_some_and(|t| t.disabled) {
        return refuse("this API key's team is disabled");
    }
    Ok(())
}
