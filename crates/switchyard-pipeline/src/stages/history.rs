//! Stage: a Responses API turn's conversation. The stored history it
//! continues (`previous_response_id`'s chain, or a `conversation`'s items,
//! read within the caller's tenant),
//! then this turn's instructions and new input, become the chat request's
//! messages, so that any backend answers with the whole conversation and
//! the client resends nothing.

use switchyard_core::{
    BackendError, ChatMessage, ChatRequest, Decision, ErrorKind, Item, Role, items_to_messages,
};
use switchyard_governance::Governance;
use switchyard_governance::switchyard_state::TenantScope;
use switchyard_orchestration::RequestContext;
use tracing::Instrument;

use crate::PipelineError;

/// What a Responses turn adds to its conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The response this turn produces (`resp_…`).
    pub response_id: String,
    /// A system message for this turn only.
    pub instructions: Option<String>,
    /// The new input items.
    pub input: Vec<Item>,
    /// The stored response this turn continues.
    pub previous_response_id: Option<String>,
    /// The conversation this turn continues and is added to.
    pub conversation_id: Option<String>,
    /// Whether the response is kept.
    pub store: bool,
    /// The request asked for `truncation: "auto"`.
    pub truncation_auto: bool,
}

/// The stored items of the conversation `previous` ends, in `tenant`.
pub async fn stored_history(
    governance: &Governance,
    tenant: &str,
    previous: &str,
) -> Result<Vec<Item>, PipelineError> {
    let scope = TenantScope::Tenant(tenant.to_owned());
    let rows = governance
        .store()
        .response_history(&scope, previous)
        .await
        .map_err(|error| BackendError::internal(format!("cannot read stored responses: {error}")))?
        .ok_or_else(|| {
            BackendError::new(
                ErrorKind::NotFound,
                format!("no response {previous:?} is stored for this caller; it may have been deleted, or stored with store: false"),
            )
            .with_param("previous_response_id")
            .with_code("previous_response_not_found")
        })?;
    rows.iter()
        .map(|row| {
            serde_json::from_str::<Item>(&row.item).map_err(|error| {
                PipelineError::from(BackendError::internal(format!(
                    "a stored item of {previous:?} does not decode: {error}"
                )))
            })
        })
        .collect()
}

/// The items of conversation `id`, in `tenant`.
pub async fn conversation_history(
    governance: &Governance,
    tenant: &str,
    id: &str,
) -> Result<Vec<Item>, PipelineError> {
    let scope = TenantScope::Tenant(tenant.to_owned());
    let rows = governance
        .store()
        .conversation_items(&scope, id)
        .await
        .map_err(|error| BackendError::internal(format!("cannot read conversations: {error}")))?
        .ok_or_else(|| {
            BackendError::new(
                ErrorKind::NotFound,
                format!("no conversation {id:?} is stored for this caller"),
            )
            .with_param("conversation")
            .with_code("conversation_not_found")
        })?;
    rows.iter()
        .map(|row| {
            serde_json::from_str::<Item>(&row.item).map_err(|error| {
                PipelineError::from(BackendError::internal(format!(
                    "a stored item of {id:?} does not decode: {error}"
                )))
            })
        })
        .collect()
}

/// Puts the conversation of `turn` into `request`: instructions first,
/// then the stored history, then the new input. Returns how many stored
/// items were loaded, and notes the step in the decision trail.
pub async fn prepare(
    governance: &Governance,
    tenant: &str,
    turn: &Turn,
    request: &mut ChatRequest,
    context: &RequestContext,
) -> Result<usize, PipelineError> {
    let history = match (&turn.previous_response_id, &turn.conversation_id) {
        (Some(previous), _) => {
            stored_history(governance, tenant, previous)
                .instrument(tracing::debug_span!("history"))
                .await?
        }
        (None, Some(conversation)) => {
            conversation_history(governance, tenant, conversation)
                .instrument(tracing::debug_span!("history"))
                .await?
        }
        (None, None) => Vec::new(),
    };
    let mut messages = Vec::with_capacity(history.len() + turn.input.len() + 1);
    if let Some(instructions) = &turn.instructions {
        messages.push(ChatMessage::new(Role::System, instructions.clone()));
    }
    messages.extend(items_to_messages(&history));
    messages.extend(items_to_messages(&turn.input));
    request.messages = messages;
    context.trail.note(Decision::Response {
        id: turn.response_id.clone(),
        previous_response_id: turn.previous_response_id.clone(),
        conversation: turn.conversation_id.clone(),
        history_items: history.len(),
        stored: turn.store,
    });
    Ok(history.len())
}
