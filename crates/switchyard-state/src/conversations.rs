//! Conversations: an ordered list of items per tenant, appended to by the
//! responses created in them and by the client.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::StateError;
use crate::store::{SqlStore, TenantScope};

/// A stored conversation, without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    /// `conv_…`.
    pub id: String,
    /// Whose it is.
    pub tenant_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// JSON object of string pairs.
    pub metadata: String,
}

/// One item of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationItemRow {
    /// Its place, from 0, in the order items were added.
    pub position: i64,
    /// The item's own id.
    pub item_id: String,
    /// The item as JSON.
    pub item: String,
}

fn conversation_from(row: &AnyRow) -> Result<ConversationRow, StateError> {
    Ok(ConversationRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        created_at: row.try_get("created_at")?,
        metadata: row.try_get("metadata")?,
    })
}

fn item_from(row: &AnyRow) -> Result<ConversationItemRow, StateError> {
    Ok(ConversationItemRow {
        position: row.try_get("position")?,
        item_id: row.try_get("item_id")?,
        item: row.try_get("item")?,
    })
}

/// Appends `items` (id, JSON) to conversation `id` within `tx`; false when
/// the conversation is not in scope.
pub(crate) async fn append_in(
    tx: &mut Transaction<'_, Any>,
    scope: &TenantScope,
    id: &str,
    items: &[(&str, &str)],
) -> Result<bool, StateError> {
    let exists =
        sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
            .bind(id)
            .bind(scope.filter())
            .fetch_optional(&mut **tx)
            .await?;
    if exists.is_none() {
        return Ok(false);
    }
    if items.is_empty() {
        return Ok(true);
    }
    sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let next: i64 = sqlx::query(
        "SELECT COALESCE(MAX(position), -1) + 1 AS next FROM conversation_items WHERE conversation_id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("next")?;
    for (offset, (item_id, item)) in (0..).zip(items.iter().copied()) {
        sqlx::query(
            "INSERT INTO conversation_items (conversation_id, position, item_id, item) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(next + offset)
        .bind(item_id)
        .bind(item)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Two writers appending to one conversation at once may pick the same
/// next position; the loser's transaction fails on the key and is tried
/// again this many times.
const APPEND_ATTEMPTS: usize = 3;

impl SqlStore {
    /// Stores a new conversation with its first items.
    pub async fn insert_conversation(
        &self,
        conversation: &ConversationRow,
        items: &[(String, String)],
    ) -> Result<(), StateError> {
        let mut connection = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut connection).await?;
        sqlx::query(
            "INSERT INTO conversations (id, tenant_id, created_at, updated_at, metadata) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&conversation.id)
        .bind(&conversation.tenant_id)
        .bind(conversation.created_at)
        .bind(conversation.created_at)
        .bind(&conversation.metadata)
        .execute(&mut *tx)
        .await?;
        let scope = TenantScope::Tenant(conversation.tenant_id.clone());
        let items: Vec<(&str, &str)> = items
            .iter()
            .map(|(id, item)| (id.as_str(), item.as_str()))
            .collect();
        append_in(&mut tx, &scope, &conversation.id, &items).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The conversation `id`, if it is in scope.
    pub async fn conversation(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<ConversationRow>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, created_at, metadata FROM conversations
             WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from).transpose()
    }

    /// Replaces a conversation's metadata; false when it is not in scope.
    pub async fn update_conversation(
        &self,
        scope: &TenantScope,
        id: &str,
        metadata: &str,
    ) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE conversations SET metadata = $1 WHERE id = $2 AND ($3 IS NULL OR tenant_id = $3)",
        )
        .bind(metadata)
        .bind(id)
        .bind(scope.filter())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a conversation and its items; false when it is not in scope.
    pub async fn delete_conversation(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<bool, StateError> {
        let mut connection = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut connection).await?;
        let done = sqlx::query(
            "DELETE FROM conversations WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query("DELETE FROM conversation_items WHERE conversation_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every item of conversation `id`, oldest first; `None` when it is not
    /// in scope.
    pub async fn conversation_items(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<Vec<ConversationItemRow>>, StateError> {
        if self.conversation(scope, id).await?.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT position, item_id, item FROM conversation_items
             WHERE conversation_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(item_from)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Appends items (id, JSON) to conversation `id`; false when it is not
    /// in scope.
    pub async fn append_conversation_items(
        &self,
        scope: &TenantScope,
        id: &str,
        items: &[(String, String)],
    ) -> Result<bool, StateError> {
        let items: Vec<(&str, &str)> = items
            .iter()
            .map(|(id, item)| (id.as_str(), item.as_str()))
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut connection = self.pool.acquire().await?;
            let mut tx = self.begin_write(&mut connection).await?;
            let appended = append_in(&mut tx, scope, id, &items).await;
            match appended {
                Ok(found) => {
                    tx.commit().await?;
                    return Ok(found);
                }
                Err(StateError::Database(error)) if attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(%error, "conversation append raced another; trying again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Deletes what is older than `before` (Unix milliseconds): responses
    /// created before it, conversations nothing was added to since, and
    /// summaries written before it, with their items. Returns how many
    /// responses and conversations went.
    pub async fn purge_before(&self, before: i64) -> Result<(u64, u64), StateError> {
        let mut connection = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut connection).await?;
        sqlx::query(
            "DELETE FROM response_items WHERE response_id IN (SELECT id FROM responses WHERE created_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let responses = sqlx::query("DELETE FROM responses WHERE created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM conversation_items WHERE conversation_id IN (SELECT id FROM conversations WHERE updated_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let conversations = sqlx::query("DELETE FROM conversations WHERE updated_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM context_summaries WHERE created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((responses, conversations))
    }

    /// Deletes item `item_id` of conversation `id` (every copy a client
    /// sent); false when either is not there (or not in scope).
    pub async fn delete_conversation_item(
        &self,
        scope: &TenantScope,
        id: &str,
        item_id: &str,
    ) -> Result<bool, StateError> {
        if self.conversation(scope, id).await?.is_none() {
            return Ok(false);
        }
        let done = sqlx::query(
            "DELETE FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
        )
        .bind(id)
        .bind(item_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
