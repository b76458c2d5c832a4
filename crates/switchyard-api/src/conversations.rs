//! OpenAI's `/v1/conversations`: create, retrieve, update and delete a
//! conversation; list, add, retrieve and delete its items. Responses
//! created with `conversation` read it as their history and add to it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use switchyard_core::{BackendError, ErrorKind};
use switchyard_pipeline::conversations::Conversation;
use switchyard_protocol::openai_responses::{
    ConversationCreate, ConversationItemsCreate, ConversationObject, ConversationUpdate,
    check_metadata, input_item, new_id, parse_items,
};

use crate::AppState;
use crate::calls::Authenticated;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::responses::{Paging, page};

fn object(conversation: Conversation) -> Json<ConversationObject> {
    Json(ConversationObject {
        id: conversation.id,
        object: "conversation".into(),
        created_at: conversation.created_at,
        metadata: conversation.metadata,
    })
}

/// `POST /v1/conversations`.
pub(crate) async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    OpenAiJson(body): OpenAiJson<ConversationCreate>,
) -> Result<Response, ApiError> {
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let items = parse_items("items", body.items.unwrap_or_default())?;
    let conversation = state
        .pipeline
        .create_conversation(&who.caller, new_id("conv"), metadata, items)
        .await?;
    Ok(object(conversation).into_response())
}

/// `GET /v1/conversations/{id}`.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(object(state.pipeline.conversation(&who.caller, &id).await?).into_response())
}

/// `POST /v1/conversations/{id}`: new metadata.
pub(crate) async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    OpenAiJson(body): OpenAiJson<ConversationUpdate>,
) -> Result<Response, ApiError> {
    check_metadata(&body.metadata)?;
    let conversation = state
        .pipeline
        .update_conversation(&who.caller, &id, body.metadata)
        .await?;
    Ok(object(conversation).into_response())
}

/// `DELETE /v1/conversations/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.pipeline.delete_conversation(&who.caller, &id).await?;
    Ok(
        Json(serde_json::json!({"id": id, "object": "conversation.deleted", "deleted": true}))
            .into_response(),
    )
}

/// `GET /v1/conversations/{id}/items`: newest first unless `order=asc`.
pub(crate) async fn list_items(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let items = state.pipeline.conversation_items(&who.caller, &id).await?;
    Ok(Json(page(items, &paging)?).into_response())
}

/// `POST /v1/conversations/{id}/items`: appends, and lists what was added.
pub(crate) async fn add_items(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    OpenAiJson(body): OpenAiJson<ConversationItemsCreate>,
) -> Result<Response, ApiError> {
    let items = parse_items("items", body.items)?;
    if items.is_empty() {
        return Err(ApiError::invalid_request(
            "`items` must hold at least one item",
            Some("items".into()),
        ));
    }
    state
        .pipeline
        .add_conversation_items(&who.caller, &id, &items)
        .await?;
    let paging = Paging {
        limit: Some(items.len().clamp(1, 100)),
        order: Some("asc".into()),
        after: None,
    };
    Ok(Json(page(items, &paging)?).into_response())
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub(crate) async fn retrieve_item(
    State(state): State<AppState>,
    who: Authenticated,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let items = state.pipeline.conversation_items(&who.caller, &id).await?;
    let item = items
        .iter()
        .find(|item| item.id() == item_id)
        .ok_or_else(|| {
            ApiError::from(
                BackendError::new(
                    ErrorKind::NotFound,
                    format!("no item {item_id:?} in conversation {id:?}"),
                )
                .with_code("not_found"),
            )
        })?;
    Ok(Json(input_item(item)).into_response())
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`: answers with the
/// conversation.
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    who: Authenticated,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state
        .pipeline
        .delete_conversation_item(&who.caller, &id, &item_id)
        .await?;
    Ok(object(state.pipeline.conversation(&who.caller, &id).await?).into_response())
}
