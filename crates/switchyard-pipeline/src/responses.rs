//! The Responses operation: a chat call whose conversation Switchyard
//! keeps. A turn is answered on the chat path (every backend, routing,
//! governance, grounding and guardrails apply) with its stored history put
//! in front of its input; once the answer is whole, the front door hands
//! it back to [`Pipeline::remember`], which stores the response and its
//! items before the client is told it completed. Stored responses are
//! read, listed and deleted within the caller's tenant only.

use switchyard_core::{
    BackendError, ChatRequest, ChatResponse, ChatStream, ContentPart, ErrorKind, Item,
};
use switchyard_governance::Caller;
use switchyard_governance::switchyard_state::{
    ItemRow, NewResponse, ResponseRow, ResponseWriter, TenantScope,
};

use crate::chat::Owner;
use crate::stages::DEFAULT_TENANT;
pub use crate::stages::history::Turn;
use crate::stages::history::{conversation_history, stored_history};
use crate::{Answer, Call, GroundingAsk, Pipeline, PipelineError};

/// What storing a turn's response needs, handed back by the front door
/// with the finished response.
#[derive(Debug)]
pub struct Continuation {
    tenant: String,
    mask: bool,
    response_id: String,
    previous_response_id: Option<String>,
    conversation_id: Option<String>,
    input: Vec<Item>,
    store: bool,
}

impl Continuation {
    fn new(owner: Owner, turn: Turn) -> Self {
        Self {
            tenant: owner.tenant,
            mask: owner.keeping.mask,
            response_id: turn.response_id,
            previous_response_id: turn.previous_response_id,
            conversation_id: turn.conversation_id,
            input: turn.input,
            store: turn.store,
        }
    }
}

/// What is kept of stored responses and conversations (`[conversations]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keeping {
    /// Days they are kept; `None`: until deleted.
    pub retention_days: Option<u32>,
    /// Store items with personal data and secrets masked.
    pub mask: bool,
}

/// `item` with personal data and secrets masked by the audit trail's
/// rules.
pub(crate) fn masked(item: &Item) -> Item {
    let mask = |text: &str| switchyard_guardrails::detect::mask(text).into_owned();
    match item {
        Item::Message { id, role, content } => Item::Message {
            id: id.clone(),
            role: *role,
            content: content
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) => ContentPart::Text(mask(text)),
                    image => image.clone(),
                })
                .collect(),
        },
        Item::FunctionCall {
            id,
            call_id,
            name,
            arguments,
        } => Item::FunctionCall {
            id: id.clone(),
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: mask(arguments),
        },
        Item::FunctionCallOutput {
            id,
            call_id,
            output,
        } => Item::FunctionCallOutput {
            id: id.clone(),
            call_id: call_id.clone(),
            output: mask(output),
        },
    }
}

/// A JSON document with every string in it masked (keys are the API's own
/// and stay), so that masking never breaks the JSON around a value.
fn masked_json(json: &str) -> Result<String, PipelineError> {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let std::borrow::Cow::Owned(masked) = switchyard_guardrails::detect::mask(text) {
                    *text = masked;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(store_failed)?;
    walk(&mut value);
    serde_json::to_string(&value).map_err(store_failed)
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
        let (answer, owner) = self
            .chat_turn(call, request, grounding, Some(&turn))
            .await?;
        Ok((answer, Continuation::new(owner, turn)))
    }

    /// A streamed answer to a Responses turn.
    pub async fn respond_stream(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
        turn: Turn,
    ) -> Result<(Answer<ChatStream>, Continuation), PipelineError> {
        let (answer, owner) = self
            .chat_stream_turn(call, request, grounding, Some(&turn))
            .await?;
        Ok((answer, Continuation::new(owner, turn)))
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
        let mask = continuation.mask;
        let items = continuation
            .input
            .iter()
            .map(|item| (false, item))
            .chain(finished.output.iter().map(|item| (true, item)))
            .enumerate()
            .map(|(position, (is_output, item))| {
                let item = if mask { masked(item) } else { item.clone() };
                Ok(ItemRow {
                    position: i64::try_from(position).unwrap_or(i64::MAX),
                    is_output,
                    item: serde_json::to_string(&item).map_err(store_failed)?,
                })
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        let body = if mask {
            masked_json(&finished.body)?
        } else {
            finished.body
        };
        let row = ResponseRow {
            id: continuation.response_id,
            tenant_id: continuation.tenant,
            previous_response_id: continuation.previous_response_id,
            conversation_id: continuation.conversation_id.clone(),
            created_at: finished.created_at,
            model: finished.model,
            status: finished.status,
            body,
        };
        let writer = self
            .responses
            .get_or_init(|| ResponseWriter::new(self.governance.store().clone()));
        let stored = writer
            .write(NewResponse {
                row,
                items,
                item_ids,
            })
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

    /// Deletes stored responses, conversations and summaries older than
    /// the retention of the snapshot in force (`now` in Unix
    /// milliseconds); nothing without one. Returns how many responses and
    /// conversations went.
    pub async fn purge_expired(&self, now: i64) -> Result<(u64, u64), PipelineError> {
        let Some(days) = self.snapshot().keeping.retention_days else {
            return Ok((0, 0));
        };
        let before = now.saturating_sub(i64::from(days) * 86_400_000);
        self.governance
            .store()
            .purge_before(before)
            .await
            .map_err(store_failed)
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
