//! `search`: the caller's tenant's collections as a tool of the loop. The
//! model asks with a query (and a collection, when the tenant has more
//! than one); passages come back numbered across the request's searches,
//! and the ones it was given become the answer's `citations`, as a grounded
//! request's sources do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use switchyard_core::ToolDefinition;
use switchyard_orchestration::{Gateway, RequestContext};
use switchyard_retrieval::SearchQuery;
use switchyard_retrieval::grounding::{Grounded, Retrieval, Source};
use switchyard_tools::{Tool, ToolError, parse_arguments};

use crate::models::RequestModels;

/// The search tool of one request: its tenant, its gateway (query
/// embeddings are routed and billed with the request) and what it found.
pub(crate) struct SearchTool {
    retrieval: Arc<Retrieval>,
    gateway: Arc<Gateway>,
    context: RequestContext,
    tenant: String,
    /// The tenant's collections when the request began.
    collections: Vec<String>,
    found: Mutex<Found>,
}

/// The passages given to the model so far, numbered from 1.
#[derive(Default)]
struct Found {
    collection: Option<String>,
    sources: Vec<Source>,
    queries: Vec<String>,
    elapsed: Duration,
}

#[derive(Deserialize)]
struct Arguments {
    query: String,
    #[serde(default)]
    collection: Option<String>,
}

impl SearchTool {
    /// The tool for `tenant`, over the collections it has now.
    pub(crate) async fn new(
        retrieval: Arc<Retrieval>,
        gateway: Arc<Gateway>,
        context: RequestContext,
        tenant: &str,
    ) -> Result<Self, switchyard_retrieval::RetrievalError> {
        let collections = retrieval
            .collections()
            .list(tenant)
            .await?
            .into_iter()
            .map(|info| info.name)
            .collect();
        Ok(Self {
            retrieval,
            gateway,
            context,
            tenant: tenant.to_owned(),
            collections,
            found: Mutex::new(Found::default()),
        })
    }

    /// The passages the model was given, as a grounded answer's sources
    /// (under the first collection searched); `None` when it found none.
    pub(crate) fn grounded(&self) -> Option<Grounded> {
        let found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let collection = found.collection.clone()?;
        (!found.sources.is_empty()).then(|| Grounded {
            collection,
            sources: found.sources.clone(),
            query: found.queries.join(" | "),
            elapsed: found.elapsed,
        })
    }

    async fn search(&self, arguments: Arguments) -> Result<String, ToolError> {
        let collection = match (arguments.collection, self.collections.as_slice()) {
            (Some(name), _) => name,
            (None, [only]) => only.clone(),
            (None, []) => {
                return Err(ToolError::Unavailable(
                    "this organisation has no collections to search".into(),
                ));
            }
            (None, names) => {
                return Err(ToolError::Arguments(format!(
                    "name the collection to search: {}",
                    names.join(", ")
                )));
            }
        };
        let spec = self
            .retrieval
            .request_spec(collection.clone(), None, None, None)
            .map_err(|e| ToolError::Arguments(e.to_string()))?;
        let started = Instant::now();
        let models = RequestModels {
            gateway: &self.gateway,
            context: &self.context,
            purpose: "search tool",
        };
        let query = SearchQuery {
            text: arguments.query.clone(),
            vector: None,
            top_k: spec.top_k,
            mode: spec.mode,
            filter: spec.filter,
        };
        let hits = self
            .retrieval
            .search(&models, &self.tenant, &collection, query)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        found.elapsed += started.elapsed();
        found.queries.push(arguments.query);
        if found.collection.is_none() {
            found.collection = Some(collection.clone());
        }
        let mut passages = Vec::with_capacity(hits.len());
        for hit in hits {
            let index = u32::try_from(found.sources.len() + 1).unwrap_or(u32::MAX);
            passages.push(json!({
                "index": index,
                "title": hit.title,
                "section": hit.heading_path.join(" > "),
                "text": hit.text,
            }));
            found.sources.push(Source { index, hit });
        }
        Ok(json!({
            "collection": collection,
            "passages": passages,
            "cite": "Cite the passages you use as [index]."
        })
        .to_string())
    }
}

impl Tool for SearchTool {
    fn definition(&self) -> ToolDefinition {
        let mut collection = json!({"type": "string"});
        if !self.collections.is_empty() {
            collection["enum"] = json!(self.collections);
        }
        ToolDefinition {
            name: "search".into(),
            description: Some(format!(
                "Searches this organisation's documents and returns numbered passages to \
                 answer from; cite them as [index]. Collections: {}.",
                if self.collections.is_empty() {
                    "none yet".to_owned()
                } else {
                    self.collections.join(", ")
                }
            )),
            parameters: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for"},
                    "collection": collection
                },
                "required": ["query"],
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(&'a self, arguments: &'a str) -> BoxFuture<'a, Result<String, ToolError>> {
        Box::pin(async move { self.search(parse_arguments(arguments)?).await })
    }
}
