//! The Responses operation: a chat call whose conversation Switchyard
//! keeps. A turn is answered on the chat path (every backend, routing,
//! governance, grounding and guardrails apply) with its stored history put
//! in front of its input; once the answer is whole, the front door hands
//! it back to [`Pipeline::remember`], which stores the response and its
//! items before the client is told it completed. Stored responses are
//! read, listed and deleted within the caller's tenant only.

use switchyard_core::{BackendError, ChatRequest, ChatResponse, ChatStream, ErrorKind, Item};
use switchyard_governance::Caller;
use switchyard_governance::switchyard_state::{ItemRow, ResponseRow, TenantScope};

use crate::stages::DEFAULT_TENANT;
pub use crate::stages::history::Turn;
use crate::stages::history::{conversation_history, stored_history};
use crate::{Answer, Call, GroundingAsk, Pipeline, PipelineError};

/// What storing a turn's response needs, handed back by the front door
/// with the finished response.
#[derive(Debug)]
pub struct Continuation {
    tenant: String,
    response_id: String,
    previous_response_id: Option<String>,
    conversation_id: Option<String>,
    input: Vec<Item>,
    store: bool,
}

impl Continuation {
    fn new(tenant: String, turn: Turn) -> Self {
        Self {
            tenant,
            response_id: turn.response_id,
            previous_response_id: turn.previous_response_id,
            conversation_id: turn.conversation_id,
            input: turn.input,
            store: turn.store,
        }
    }
}

/// A finished response, as the front door renders it.
#[derive(Debug)]
pub struct Finished {
    /// Unix milliseconds.
    pub created_at: i64,
    /// The model asked for.
    pub model: String,
    /// `completed`, `incomplete` or `failed`.
    pub status: String,
    /// The response object as served (JSON), returned as it is by a
    /// later retrieve.
    pub body: String,
    /// Its output items, kept apart as the conversation's next history.
    pub output: Vec<Item>,
}

/// A stored response: its object (without output) and its own items.
#[derive(Debug)]
pub struct Stored {
    /// The response object as served (JSON).
    pub body: String,
    /// Its input items, then its output items.
    pub items: Vec<(bool, Item)>,
}

fn tenant_of(caller: &Caller) -> TenantScope {
    TenantScope::Tenant(caller.tenant_id().unwrap_or(DEFAULT_TENANT).to_owned())
}

fn store_failed(error: impl std::fmt::Display) -> PipelineError {
    BackendError::internal(format!("the response store failed: {error}")).into()
}

fn not_found(id: &str) -> PipelineError {
    BackendError::new(
        ErrorKind::NotFound,
        format!("no response {id:?} is stored for this caller"),
    )
    .with_code("not_found")
    .into()
}

fn decode(row: &ItemRow) -> Result<(bool, Item), PipelineError> {
    serde_json::from_str::<Item>(&row.item)
        .map(|item| (row.is_output, item))
        .map_err(|error| store_failed(format!("a stored item does not decode: {error}")))
}

impl Pipeline {
    /// A whole answer to a Responses turn.
    pub async fn respond(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
        turn: Turn,
    ) -> Result<(Answer<ChatResponse>, Continuation), PipelineError> {
        let (answer, tenant) = self
            .chat_turn(call, request, grounding, Some(&turn))
            .await?;
        Ok((answer, Continuation::new(tenant, turn)))
    }

    /// A streamed answer to a Responses turn.
    pub async fn respond_stream(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
        turn: Turn,
    ) -> Result<(Answer<ChatStream>, Continuation), PipelineError> {
        let (answer, tenant) = self
            .chat_stream_turn(call, request, grounding, Some(&turn))
            .await?;
        Ok((answer, Continuation::new(tenant, turn)))
    }

    /// Stores a finished response with its input and output items (when
    /// the turn asked to store it), in one transaction, before the client
    /// is told it completed: a response a client saw complete survives a
    /// crash. A chain of turns stores each item once.
    pub async fn remember(
        &self,
        continuation: Continuation,
        finished: Finished,
    ) -> Result<(), PipelineError> {
        if !continuation.store {
            return Ok(());
        }
        let item_ids: Vec<String> = continuation
            .input
            .iter()
            .chain(&finished.output)
            .map(|item| item.id().to_owned())
            .collect();
        let items = continuation
            .input
            .iter()
            .map(|item| (false, item))
            .chain(finished.output.iter().map(|item| (true, item)))
            .enumerate()
            .map(|(position, (is_output, item))| {
                Ok(ItemRow {
                    position: i64::try_from(position).unwrap_or(i64::MAX),
                    is_output,
                    item: serde_json::to_string(item).map_err(store_failed)?,
                })
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        let row = ResponseRow {
            id: continuation.response_id,
            tenant_id: continuation.tenant,
            previous_response_id: continuation.previous_response_id,
            conversation_id: continuation.conversation_id.clone(),
            created_at: finished.created_at,
            model: finished.model,
            status: finished.status,
            body: finished.body,
        };
        let stored = self
            .governance
            .store()
            .insert_response(&row, &items, &item_ids)
            .await
            .map_err(store_failed)?;
        match (stored, continuation.conversation_id) {
            (false, Some(conversation)) => Err(BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "the conversation {conversation:?} was deleted while the response was written"
                ),
            )
            .with_param("conversation")
            .with_code("conversation_not_found")
            .into()),
            _ => Ok(()),
        }
    }

    /// The stored response `id`, if `caller`'s tenant has it.
    pub async fn stored_response(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Stored, PipelineError> {
        let (row, items) = self
            .governance
            .store()
            .response(&tenant_of(caller), id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(id))?;
        Ok(Stored {
            body: row.body,
            items: items.iter().map(decode).collect::<Result<_, _>>()?,
        })
    }

    /// Every item the model was given for response `id`: the stored
    /// history it continued, then its own input.
    pub async fn response_input(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<Item>, PipelineError> {
        let tenant = caller.tenant_id().unwrap_or(DEFAULT_TENANT);
        let (row, items) = self
            .governance
            .store()
            .response(&tenant_of(caller), id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| not_found(id))?;
        let own: Vec<(bool, Item)> = items.iter().map(decode).collect::<Result<_, _>>()?;
        let mut input = match (&row.previous_response_id, &row.conversation_id) {
            // A deleted ancestor leaves the history it began out.
            (Some(previous), _) => match stored_history(&self.governance, tenant, previous).await {
                Ok(history) => history,
                Err(PipelineError::Backend(error)) if error.kind == ErrorKind::NotFound => {
                    Vec::new()
                }
                Err(error) => return Err(error),
            },
            // In a conversation: what it held before this response's items.
            (None, Some(conversation)) => {
                match conversation_history(&self.governance, tenant, conversation).await {
                    Ok(history) => {
                        let first = own.first().map(|(_, item)| item.id().to_owned());
                        history
                            .into_iter()
                            .take_while(|item| Some(item.id()) != first.as_deref())
                            .collect()
                    }
                    Err(PipelineError::Backend(error)) if error.kind == ErrorKind::NotFound => {
                        Vec::new()
                    }
                    Err(error) => return Err(error),
                }
            }
            (None, None) => Vec::new(),
        };
        input.extend(
            own.into_iter()
                .filter(|(is_output, _)| !is_output)
                .map(|(_, item)| item),
        );
        Ok(input)
    }

    /// Deletes the stored response `id`.
    pub async fn delete_response(&self, caller: &Caller, id: &str) -> Result<(), PipelineError> {
        let deleted = self
            .governance
            .store()
            .delete_response(&tenant_of(caller), id)
            .await
            .map_err(store_failed)?;
        if deleted { Ok(()) } else { Err(not_found(id)) }
    }
}
