//! Stored responses (the Responses API's `store`): one row per response,
//! its own items beside it, and a response's history read back through
//! the chain of responses it continues.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use crate::StateError;
use crate::store::{DatabaseKind, ROWS_PER_INSERT, SqlStore, TenantScope, placeholder_rows};

/// A stored response, without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRow {
    /// `resp_…`.
    pub id: String,
    /// Whose it is.
    pub tenant_id: String,
    /// The response it continues.
    pub previous_response_id: Option<String>,
    /// The conversation it was created in; its items are appended there
    /// too, in the same transaction.
    pub conversation_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The model (or route, or assistant) asked for.
    pub model: String,
    /// `completed`, `incomplete` or `failed`.
    pub status: String,
    /// The response object as served, as JSON.
    pub body: String,
}

/// One item of a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// Its place among the response's items (input first, then output).
    pub position: i64,
    /// Whether the model produced it (else it was input).
    pub is_output: bool,
    /// The item as JSON.
    pub item: String,
}

/// A response to store: its row, its items, and the items' own ids (for
/// its conversation).
#[derive(Debug, Clone)]
pub struct NewResponse {
    /// The response.
    pub row: ResponseRow,
    /// Its input items, then its output items.
    pub items: Vec<ItemRow>,
    /// The items' ids, in the same order.
    pub item_ids: Vec<String>,
}

/// A chain longer than this is taken for a corrupt one (a response
/// continues an older one, so chains cannot loop; this bounds the query
/// even so).
const MAX_CHAIN: i64 = 100_000;

fn item_from(row: &AnyRow) -> Result<ItemRow, StateError> {
    Ok(ItemRow {
        position: row.try_get("position")?,
        is_output: row.try_get::<i64, _>("is_output")? != 0,
        item: row.try_get("item")?,
    })
}

impl SqlStore {
    /// Stores a response and its items in one transaction (see
    /// [`SqlStore::insert_responses`]); false when its conversation is no
    /// longer there.
    pub async fn insert_response(
        &self,
        response: &ResponseRow,
        items: &[ItemRow],
        item_ids: &[String],
    ) -> Result<bool, StateError> {
        let batch = [NewResponse {
            row: response.clone(),
            items: items.to_vec(),
            item_ids: item_ids.to_vec(),
        }];
        Ok(self
            .insert_responses(&batch)
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Stores responses with their items in one transaction, each appended
    /// to its conversation when it has one: a response a client was told
    /// about is never found without its items, nor its conversation
    /// without them. One transaction for many responses is what keeps
    /// storing cheap under load (one commit, one sync to disk). For each,
    /// false (nothing stored) when its conversation is no longer there.
    pub async fn insert_responses(&self, batch: &[NewResponse]) -> Result<Vec<bool>, StateError> {
        let mut connection = self.pool.acquire().await?;
        self.insert_responses_on(&mut connection, batch).await
    }

    /// A connection of the store's own for the response writer, which
    /// keeps it (its page cache stays warm). On SQLite its commits are
    /// written to the log without waiting for the disk (`synchronous =
    /// NORMAL`): a killed process loses none of them, a power cut may lose
    /// the last moments, where the ledger's connections wait for the disk.
    pub async fn writer_connection(&self) -> Result<sqlx::pool::PoolConnection<Any>, StateError> {
        let mut connection = self.pool.acquire().await?;
        if self.kind() == DatabaseKind::Sqlite {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *connection)
                .await?;
        }
        Ok(connection)
    }

    /// Gives a writer connection back to the pool as the others are.
    async fn release_writer(&self, mut connection: sqlx::pool::PoolConnection<Any>) {
        if self.kind() == DatabaseKind::Sqlite {
            // A connection that cannot even be reset is closed, not pooled.
            if sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *connection)
                .await
                .is_err()
            {
                let _ = connection.detach();
            }
        }
    }

    /// [`SqlStore::insert_responses`] on `connection`.
    pub async fn insert_responses_on(
        &self,
        connection: &mut sqlx::AnyConnection,
        batch: &[NewResponse],
    ) -> Result<Vec<bool>, StateError> {
        let mut tx = self.begin_write(connection).await?;
        let mut stored = Vec::with_capacity(batch.len());
        for new in batch {
            let response = &new.row;
            if let Some(conversation) = &response.conversation_id {
                let scope = TenantScope::Tenant(response.tenant_id.clone());
                let pairs: Vec<(&str, &str)> = new
                    .item_ids
                    .iter()
                    .map(String::as_str)
                    .zip(new.items.iter().map(|i| i.item.as_str()))
                    .collect();
                let appended =
                    crate::conversations::append_in(&mut tx, &scope, conversation, &pairs).await?;
                if !appended {
                    stored.push(false);
                    continue;
                }
            }
            stored.push(true);
        }
        let kept: Vec<&NewResponse> = batch
            .iter()
            .zip(&stored)
            .filter_map(|(new, ok)| ok.then_some(new))
            .collect();
        for chunk in kept.chunks(ROWS_PER_INSERT) {
            let sql = placeholder_rows(
                self.kind(),
                "INSERT INTO responses (id, tenant_id, previous_response_id, conversation_id, created_at, model, status, body) VALUES",
                8,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for new in chunk {
                let response = &new.row;
                query = query
                    .bind(&response.id)
                    .bind(&response.tenant_id)
                    .bind(response.previous_response_id.as_deref())
                    .bind(response.conversation_id.as_deref())
                    .bind(response.created_at)
                    .bind(&response.model)
                    .bind(&response.status)
                    .bind(&response.body);
            }
            query.execute(&mut *tx).await?;
        }
        let items: Vec<(&str, &ItemRow)> = kept
            .iter()
            .flat_map(|new| {
                new.items
                    .iter()
                    .map(move |item| (new.row.id.as_str(), item))
            })
            .collect();
        for chunk in items.chunks(ROWS_PER_INSERT) {
            let sql = placeholder_rows(
                self.kind(),
                "INSERT INTO response_items (response_id, position, is_output, item) VALUES",
                4,
                chunk.len(),
            );
            let mut query = sqlx::query(&sql);
            for (id, item) in chunk {
                query = query
                    .bind(*id)
                    .bind(item.position)
                    .bind(i64::from(item.is_output))
                    .bind(&item.item);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The response `id` and its own items, if it is in scope.
    pub async fn response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<(ResponseRow, Vec<ItemRow>)>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, previous_response_id, conversation_id, created_at, model, status, body
             FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let response = ResponseRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            previous_response_id: row.try_get("previous_response_id")?,
            conversation_id: row.try_get("conversation_id")?,
            created_at: row.try_get("created_at")?,
            model: row.try_get("model")?,
            status: row.try_get("status")?,
            body: row.try_get("body")?,
        };
        let items = sqlx::query(
            "SELECT position, is_output, item FROM response_items WHERE response_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let items = items.iter().map(item_from).collect::<Result<_, _>>()?;
        Ok(Some((response, items)))
    }

    /// Every item of the conversation that ends with response `id`: the
    /// items of each response of its chain, oldest first. `None` when `id`
    /// is not a response in scope. A response of the chain that was
    /// deleted ends the history there.
    pub async fn response_history(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<Vec<ItemRow>>, StateError> {
        let exists =
            sqlx::query("SELECT 1 FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
                .bind(id)
                .bind(scope.filter())
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "WITH RECURSIVE chain (id, previous_id, depth) AS (
                 SELECT id, previous_response_id, 0 FROM responses
                 WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)
                 UNION ALL
                 SELECT r.id, r.previous_response_id, chain.depth + 1
                 FROM responses r JOIN chain ON r.id = chain.previous_id
                 WHERE ($2 IS NULL OR r.tenant_id = $2) AND chain.depth < $3
             )
             SELECT i.position, i.is_output, i.item
             FROM chain JOIN response_items i ON i.response_id = chain.id
             ORDER BY chain.depth DESC, i.position",
        )
        .bind(id)
        .bind(scope.filter())
        .bind(MAX_CHAIN)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(item_from)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Deletes response `id` and its items; false when it is not in scope.
    pub async fn delete_response(&self, scope: &TenantScope, id: &str) -> Result<bool, StateError> {
        let mut connection = self.pool.acquire().await?;
        let mut tx = self.begin_write(&mut connection).await?;
        let done =
            sqlx::query("DELETE FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
                .bind(id)
                .bind(scope.filter())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 1 {
            // Also without the foreign key's cascade (a SQLite connection
            // opened elsewhere without `foreign_keys`).
            sqlx::query("DELETE FROM response_items WHERE response_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}

/// One response waiting to be written, and who waits for it.
type Pending = (
    NewResponse,
    tokio::sync::oneshot::Sender<Result<bool, String>>,
);

/// Writes responses in groups: whoever is waiting when a write starts goes
/// into the next transaction together, so that under load many responses
/// share one commit, while each caller still returns only once its own
/// response is on disk.
#[derive(Clone)]
pub struct ResponseWriter {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for ResponseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseWriter")
    }
}

/// Most responses written in one transaction.
const MAX_GROUP: usize = 256;

impl ResponseWriter {
    /// A writer to `store`; its task runs on the current tokio runtime.
    pub fn new(store: SqlStore) -> Self {
        let (queue, mut waiting) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            // One connection kept for the writer while it works: its page
            // cache holds the indexes it appends to.
            let mut connection: Option<sqlx::pool::PoolConnection<Any>> = None;
            while let Some(first) = waiting.recv().await {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match waiting.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let (batch, waiters): (Vec<NewResponse>, Vec<_>) = group.into_iter().unzip();
                let written = match connection.as_mut() {
                    Some(kept) => store.insert_responses_on(kept, &batch).await,
                    None => match store.writer_connection().await {
                        Ok(mut fresh) => {
                            let written = store.insert_responses_on(&mut fresh, &batch).await;
                            connection = Some(fresh);
                            written
                        }
                        Err(error) => Err(error),
                    },
                };
                if written.is_err()
                    && let Some(failed) = connection.take()
                {
                    // A connection that failed may be broken: the next group
                    // takes a fresh one.
                    store.release_writer(failed).await;
                }
                match written {
                    Ok(stored) => {
                        for (waiter, ok) in waiters.into_iter().zip(stored) {
                            let _ = waiter.send(Ok(ok));
                        }
                    }
                    Err(error) => {
                        let message = error.to_string();
                        for waiter in waiters {
                            let _ = waiter.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Writes `response` with the next group; true once it is committed,
    /// false when its conversation is no longer there.
    pub async fn write(&self, response: NewResponse) -> Result<bool, StateError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.queue
            .send((response, done))
            .map_err(|_| StateError::Write("the writer has stopped".into()))?;
        wait.await
            .map_err(|_| StateError::Write("the writer has stopped".into()))?
            .map_err(StateError::Write)
    }
}
