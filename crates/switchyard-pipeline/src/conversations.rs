//! Conversations (OpenAI's `/v1/conversations`): ordered items kept per
//! tenant, which responses created with `conversation` read as their
//! history and append their input and output to. Every operation works
//! within the caller's tenant; another tenant's conversation is not found.

use std::collections::BTreeMap;

use switchyard_core::{BackendError, ErrorKind, Item};
use switchyard_governance::Caller;
use switchyard_governance::switchyard_state::{ConversationRow, TenantScope};

use crate::responses::masked;
use crate::stages::DEFAULT_TENANT;
use crate::stages::history::conversation_history;
use crate::{Pipeline, PipelineError};

/// A conversation, without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// `conv_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Up to 16 string pairs.
    pub metadata: BTreeMap<String, String>,
}

fn tenant(caller: &Caller) -> String {
    caller.tenant_id().unwrap_or(DEFAULT_TENANT).to_owned()
}

fn failed(error: impl std::fmt::Display) -> PipelineError {
    BackendError::internal(format!("the conversation store failed: {error}")).into()
}

fn not_found(id: &str) -> PipelineError {
    BackendError::new(
        ErrorKind::NotFound,
        format!("no conversation {id:?} is stored for this caller"),
    )
    .with_code("not_found")
    .into()
}

fn encode(items: &[Item], mask: bool) -> Result<Vec<(String, String)>, PipelineError> {
    items
        .iter()
        .map(|item| {
            let item = if mask { masked(item) } else { item.clone() };
            serde_json::to_string(&item)
                .map(|json| (item.id().to_owned(), json))
                .map_err(failed)
        })
        .collect()
}

fn conversation_from(row: ConversationRow) -> Result<Conversation, PipelineError> {
    Ok(Conversation {
        id: row.id,
        created_at: u64::try_from(row.created_at / 1000).unwrap_or(0),
        metadata: serde_json::from_str(&row.metadata).map_err(failed)?,
    })
}

impl Pipeline {
    /// Creates a conversation with its first items.
    pub async fn create_conversation(
        &self,
        caller: &Caller,
        id: String,
        metadata: BTreeMap<String, String>,
        items: Vec<Item>,
    ) -> Result<Conversation, PipelineError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let row = ConversationRow {
            id,
            tenant_id: tenant(caller),
            created_at: i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
            metadata: serde_json::to_string(&metadata).map_err(failed)?,
        };
        self.governance
            .store()
            .insert_conversation(&row, &encode(&items, self.snapshot().keeping.mask)?)
            .await
            .map_err(failed)?;
        conversation_from(row)
    }

    /// The conversation `id`.
    pub async fn conversation(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Conversation, PipelineError> {
        let row = self
            .governance
            .store()
            .conversation(&TenantScope::Tenant(tenant(caller)), id)
            .await
            .map_err(failed)?
            .ok_or_else(|| not_found(id))?;
        conversation_from(row)
    }

    /// Replaces the metadata of conversation `id`.
    pub async fn update_conversation(
        &self,
        caller: &Caller,
        id: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Conversation, PipelineError> {
        let json = serde_json::to_string(&metadata).map_err(failed)?;
        let updated = self
            .governance
            .store()
            .update_conversation(&TenantScope::Tenant(tenant(caller)), id, &json)
            .await
            .map_err(failed)?;
        if !updated {
            return Err(not_found(id));
        }
        self.conversation(caller, id).await
    }

    /// Deletes conversation `id` and its items (responses created in it
    /// stay, with their own items).
    pub async fn delete_conversation(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(), PipelineError> {
        let deleted = self
            .governance
            .store()
            .delete_conversation(&TenantScope::Tenant(tenant(caller)), id)
            .await
            .map_err(failed)?;
        if deleted { Ok(()) } else { Err(not_found(id)) }
    }

    /// Every item of conversation `id`, oldest first.
    pub async fn conversation_items(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<Item>, PipelineError> {
        conversation_history(&self.governance, &tenant(caller), id)
            .await
            .map_err(|error| match error {
                PipelineError::Backend(e) if e.kind == ErrorKind::NotFound => not_found(id),
                other => other,
            })
    }

    /// Appends `items` to conversation `id`.
    pub async fn add_conversation_items(
        &self,
        caller: &Caller,
        id: &str,
        items: &[Item],
    ) -> Result<(), PipelineError> {
        let appended = self
            .governance
            .store()
            .append_conversation_items(
                &TenantScope::Tenant(tenant(caller)),
                id,
                &encode(items, self.snapshot().keeping.mask)?,
            )
            .await
            .map_err(failed)?;
        if appended { Ok(()) } else { Err(not_found(id)) }
    }

    /// Deletes item `item_id` of conversation `id`.
    pub async fn delete_conversation_item(
        &self,
        caller: &Caller,
        id: &str,
        item_id: &str,
    ) -> Result<(), PipelineError> {
        let deleted = self
            .governance
            .store()
            .delete_conversation_item(&TenantScope::Tenant(tenant(caller)), id, item_id)
            .await
            .map_err(failed)?;
        if deleted {
            Ok(())
        } else {
            Err(BackendError::new(
                ErrorKind::NotFound,
                format!("no item {item_id:?} in conversation {id:?}"),
            )
            .with_code("not_found")
            .into())
        }
    }
}
