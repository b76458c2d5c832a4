//! Collections, documents, ingestion jobs and search:
//!
//! - `POST /v1/collections`, `GET /v1/collections`,
//!   `GET|DELETE /v1/collections/{name}`
//! - `POST /v1/collections/{name}/documents` (JSON, many documents),
//!   `PUT /v1/collections/{name}/documents/{id}` (the file itself, its
//!   format named by `Content-Type`), `GET …/documents`,
//!   `DELETE …/documents/{id}`
//! - `GET /v1/ingestion_jobs/{id}`
//! - `POST /v1/collections/{name}/search`
//!
//! Every call acts within the caller's tenant: another tenant's collections
//! and jobs answer 404, as if they did not exist.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use switchyard_orchestration::RequestContext;
use switchyard_pipeline::Snapshot;
use switchyard_pipeline::models::RequestModels;
use switchyard_retrieval::grounding::{GroundingError, Retrieval};
use switchyard_retrieval::{
    CollectionInfo, DocumentInput, Filter, Format, IndexStats, RetrievalError, SearchMode,
    SearchQuery,
};

use crate::calls::Authenticated;
use crate::error::ApiError;
use crate::extract::{OpenAiJson, read_body};

/// Most chunks one search returns.
const MAX_TOP_K: usize = 100;

impl From<RetrievalError> for ApiError {
    fn from(error: RetrievalError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match &error {
            RetrievalError::Invalid(_) => "invalid_value",
            RetrievalError::NotFound(_) => "not_found",
            RetrievalError::Conflict(_) => "conflict",
            RetrievalError::Unsupported(_) => "unsupported_media_type",
            RetrievalError::Embedding(backend) => return ApiError::from(backend.clone()),
            RetrievalError::Index(_) => "index_error",
        };
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        ApiError {
            status,
            kind,
            ..ApiError::invalid_request(error.to_string(), None)
        }
        .with_code(code)
    }
}

impl From<GroundingError> for ApiError {
    fn from(error: GroundingError) -> Self {
        match error {
            GroundingError::Retrieval(error) => error.into(),
            GroundingError::Backend(error) => error.into(),
        }
    }
}

fn retrieval(snapshot: &Snapshot) -> Result<&Arc<Retrieval>, ApiError> {
    snapshot.retrieval.as_ref().ok_or_else(|| {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            ..ApiError::invalid_request(
                "retrieval is not available: the configured embeddings model is missing",
                None,
            )
        }
        .with_code("retrieval_unavailable")
    })
}

fn collection_json(info: &CollectionInfo, stats: Option<IndexStats>) -> serde_json::Value {
    let mut value = json!({
        "id": info.name,
        "object": "collection",
        "name": info.name,
        "description": info.description,
        "created_at": info.created_at,
        "embedding_model": info.embedding_model,
    });
    if let (Some(stats), Some(object)) = (stats, value.as_object_mut()) {
        object.insert("documents".into(), stats.documents.into());
        object.insert("chunks".into(), stats.chunks.into());
    }
    value
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCollection {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

pub(crate) async fn create(
    who: Authenticated,
    OpenAiJson(body): OpenAiJson<NewCollection>,
) -> Result<Response, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let info = retrieval
        .collections()
        .create(&tenant, &body.name, body.description)
        .await?;
    let stats = IndexStats::default();
    Ok((
        StatusCode::CREATED,
        Json(collection_json(&info, Some(stats))),
    )
        .into_response())
}

pub(crate) async fn list(who: Authenticated) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let infos = retrieval.collections().list(&tenant).await?;
    let data: Vec<_> = infos.iter().map(|i| collection_json(i, None)).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(crate) async fn retrieve(
    who: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let collection = retrieval.collections().get(&tenant, &name).await?;
    let stats = collection.stats().await;
    Ok(Json(collection_json(collection.info(), Some(stats))))
}

pub(crate) async fn delete(
    who: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    retrieval.collections().delete(&tenant, &name).await?;
    Ok(Json(
        json!({ "id": name, "object": "collection.deleted", "deleted": true }),
    ))
}

/// One document of `POST …/documents`: its text as `content`, or its bytes
/// (a PDF) as `content_base64`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonDocument {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    content_base64: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonDocuments {
    documents: Vec<JsonDocument>,
}

fn json_document(index: usize, document: JsonDocument) -> Result<DocumentInput, ApiError> {
    let param = |field: &str| Some(format!("documents[{index}].{field}"));
    let content = match (document.content, document.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                ApiError::invalid_request(
                    format!("`content_base64` is not valid base64: {e}"),
                    param("content_base64"),
                )
            })?,
        _ => {
            return Err(ApiError::invalid_request(
                "give a document's text as `content` or its bytes as `content_base64` (one of them)",
                param("content"),
            ));
        }
    };
    Ok(DocumentInput {
        id: document.id,
        title: document.title,
        format: document.format.unwrap_or(Format::Text),
        content,
        source: document.source,
        metadata: document.metadata,
    })
}

async fn submit(
    who: &Authenticated,
    name: &str,
    documents: Vec<DocumentInput>,
) -> Result<Response, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let collection = retrieval.collections().get(&tenant, name).await?;
    let job = retrieval.ingestor().submit(collection, documents)?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

pub(crate) async fn add_documents(
    who: Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson<JsonDocuments>,
) -> Result<Response, ApiError> {
    let documents = body
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| json_document(i, d))
        .collect::<Result<Vec<_>, _>>()?;
    submit(&who, &name, documents).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadParams {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

pub(crate) async fn upload_document(
    who: Authenticated,
    Path((name, id)): Path<(String, String)>,
    Query(params): Query<UploadParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = Format::from_media_type(media_type) else {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..ApiError::invalid_request(
                format!(
                    "unsupported Content-Type `{media_type}`: send text/plain, text/markdown, text/html or application/pdf"
                ),
                None,
            )
        }
        .with_code("unsupported_media_type"));
    };
    let content = read_body(request, &()).await?.to_vec();
    let document = DocumentInput {
        id,
        title: params.title,
        format,
        content,
        source: params.source,
        metadata: serde_json::Map::new(),
    };
    submit(&who, &name, vec![document]).await
}

pub(crate) async fn list_documents(
    who: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let collection = retrieval.collections().get(&tenant, &name).await?;
    let documents = collection.documents().await?;
    Ok(Json(json!({ "object": "list", "data": documents })))
}

pub(crate) async fn delete_document(
    who: Authenticated,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let collection = retrieval.collections().get(&tenant, &name).await?;
    collection.delete_document(&id).await?;
    Ok(Json(
        json!({ "id": id, "object": "document.deleted", "deleted": true }),
    ))
}

pub(crate) async fn job(who: Authenticated, Path(id): Path<String>) -> Result<Response, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    match retrieval.ingestor().job(&tenant, &id) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(RetrievalError::NotFound(format!("no ingestion job `{id}`")).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchBody {
    query: String,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    filter: Filter,
}

pub(crate) async fn search(
    who: Authenticated,
    Path(name): Path<String>,
    OpenAiJson(body): OpenAiJson<SearchBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let retrieval = retrieval(&who.snapshot)?;
    let tenant = who.tenant();
    let top_k = body.top_k.unwrap_or(10);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::invalid_request(
            format!("`top_k` must be between 1 and {MAX_TOP_K}"),
            Some("top_k".into()),
        ));
    }
    if body.query.trim().is_empty() {
        return Err(ApiError::invalid_request(
            "`query` must not be empty",
            Some("query".into()),
        ));
    }
    let started = Instant::now();
    let query = SearchQuery {
        text: body.query,
        vector: None,
        top_k,
        mode: body.mode.unwrap_or_default(),
        filter: body.filter,
    };
    let hits = retrieval
        .search(
            &RequestModels {
                gateway: &who.snapshot.gateway,
                context: &RequestContext::default(),
                purpose: "search",
            },
            &tenant,
            &name,
            query,
        )
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": hits,
        "search_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}
