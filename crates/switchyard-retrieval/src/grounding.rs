//! Grounded answers: a chat request that names a collection (through an
//! assistant alias or the `retrieval` extension) is answered from that
//! collection's best chunks, with the chunks returned as citations.
//!
//! The steps: form a search query from the conversation (optionally
//! rewritten by a cheap model), embed it through the gateway (so the
//! configured embeddings model, local or remote, and its routing apply),
//! search the tenant's collection, keep the best chunks that fit the
//! answering model's context, and put them, numbered, in a system message
//! that asks the model to cite them.
//!
//! Models are reached through [`GroundingModels`], which the request path
//! implements over the gateway: retrieval never names the gateway, so the
//! gateway builds without the retrieval stack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use minijinja::Environment;
use serde::Serialize;
use switchyard_config::{AssistantConfig, RetrievalConfig};
use switchyard_core::{BackendError, ChatMessage, ChatRequest, Completer, Role, SamplingParams};
use tracing::{Instrument, debug, warn};

use crate::{Collections, Filter, Hit, Ingestor, RetrievalError, SearchMode, SearchQuery};

/// The models grounding calls: the query's embedding and, for follow-up
/// questions, a rewrite (`Completer`). The request path implements it over
/// the gateway it runs on, with that request's context, so routing,
/// resilience and metering apply to these calls as to any other.
pub trait GroundingModels: Completer {
    /// Embeds one text with the embeddings model named `model`.
    fn embed_one<'a>(
        &'a self,
        model: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Vec<f32>, BackendError>>;
}

/// The instructions and sources given to the model, unless an assistant
/// brings its own template.
pub const DEFAULT_TEMPLATE: &str = "\
Answer the user's question using only the numbered sources below. \
Cite the sources you use by their numbers in square brackets, like [1]. \
If the sources do not contain the answer, say that you do not know.
{% for source in sources %}
[{{ source.index }}] {{ source.title }}{% if source.section %} — {{ source.section }}{% endif %}
{{ source.text }}
{% endfor %}";

/// Tokens kept free for the instructions around the sources.
const TEMPLATE_TOKENS: usize = 96;
/// Answer tokens reserved when the request sets no `max_tokens`.
const DEFAULT_ANSWER_TOKENS: usize = 256;
/// Context assumed for models whose window the configuration does not give.
const DEFAULT_CONTEXT_TOKENS: usize = 8_192;
/// Chunk sizes are counted by the embedder's tokenizer; the chat model's
/// may split the same text into more pieces. A quarter more is a safe
/// margin for the tokenizers in use (WordPiece vs byte-level BPE on English).
const TOKENIZER_MARGIN: f64 = 1.25;
/// Characters of an earlier user turn carried into the search query.
const EARLIER_TURN_CHARS: usize = 300;

/// How a request asks to be grounded.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundingSpec {
    /// The caller's collection to search.
    pub collection: String,
    /// Chunks given to the model, at most.
    pub top_k: usize,
    /// Rankings used.
    pub mode: SearchMode,
    /// Restricts the sources.
    pub filter: Filter,
    /// The assistant whose template and budget apply, if any.
    pub assistant: Option<String>,
    /// Model that rewrites follow-up questions, if any.
    pub rewrite_model: Option<String>,
    /// Most tokens the sources may take.
    pub context_tokens: Option<usize>,
}

/// A source given to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Its number in the prompt, from 1.
    pub index: u32,
    /// The chunk.
    pub hit: Hit,
}

/// What grounding did to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounded {
    /// The collection searched.
    pub collection: String,
    /// The sources the model was given, numbered as in the prompt.
    pub sources: Vec<Source>,
    /// The query searched for.
    pub query: String,
    /// How long retrieval took (query rewrite, embedding, search).
    pub elapsed: Duration,
}

/// Why a request could not be grounded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroundingError {
    /// The collection, filter or options are wrong, or the index failed.
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
    /// Embedding the query failed.
    #[error("{}", .0.message)]
    Backend(BackendError),
}

/// Retrieval as the gateway offers it: collections, ingestion, assistants.
pub struct Retrieval {
    collections: Arc<Collections>,
    ingestor: Arc<Ingestor>,
    config: RetrievalConfig,
    templates: Environment<'static>,
    context_windows: HashMap<String, usize>,
}

#[derive(Serialize)]
struct TemplateSource<'a> {
    index: u32,
    title: &'a str,
    section: String,
    text: &'a str,
    document_id: &'a str,
}

impl Retrieval {
    /// Retrieval over `collections`. `context_windows` gives each model's
    /// (or route's) context size in tokens. Fails on a template that does
    /// not compile.
    pub fn new(
        collections: Arc<Collections>,
        ingestor: Arc<Ingestor>,
        config: RetrievalConfig,
        context_windows: HashMap<String, usize>,
    ) -> Result<Self, String> {
        let mut templates = Environment::new();
        templates
            .add_template_owned("", DEFAULT_TEMPLATE.to_owned())
            .map_err(|e| format!("the default retrieval template: {e}"))?;
        for (name, assistant) in &config.assistants {
            if let Some(template) = &assistant.template {
                templates
                    .add_template_owned(name.clone(), template.clone())
                    .map_err(|e| format!("retrieval.assistants.{name}.template: {e}"))?;
            }
        }
        Ok(Self {
            collections,
            ingestor,
            config,
            templates,
            context_windows,
        })
    }

    /// The collections.
    pub fn collections(&self) -> &Arc<Collections> {
        &self.collections
    }

    /// The ingestion jobs.
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.ingestor
    }

    /// The assistant served under a model name.
    pub fn assistant(&self, name: &str) -> Option<&AssistantConfig> {
        self.config.assistants.get(name)
    }

    /// Assistants by name, for the model listing.
    pub fn assistants(&self) -> impl Iterator<Item = (&str, &AssistantConfig)> {
        self.config
            .assistants
            .iter()
            .map(|(name, assistant)| (name.as_str(), assistant))
    }

    /// How an assistant grounds its answers.
    pub fn assistant_spec(&self, name: &str) -> Option<(String, GroundingSpec)> {
        let assistant = self.assistant(name)?;
        let mode = match assistant.mode.as_deref() {
            Some("keyword") => SearchMode::Keyword,
            Some("vector") => SearchMode::Vector,
            _ => SearchMode::Hybrid,
        };
        Some((
            assistant.model.clone(),
            GroundingSpec {
                collection: assistant.collection.clone(),
                top_k: assistant.top_k.unwrap_or(self.config.top_k),
                mode,
                filter: Filter::default(),
                assistant: Some(name.to_owned()),
                rewrite_model: assistant
                    .rewrite_model
                    .clone()
                    .or_else(|| self.config.rewrite_model.clone()),
                context_tokens: assistant.context_tokens,
            },
        ))
    }

    /// A spec from the request's `retrieval` extension.
    pub fn request_spec(
        &self,
        collection: String,
        top_k: Option<usize>,
        mode: Option<&str>,
        filter: Option<serde_json::Value>,
    ) -> Result<GroundingSpec, RetrievalError> {
        let mode = parse_mode(mode)?;
        let filter = match filter {
            Some(value) => serde_json::from_value(value)
                .map_err(|e| RetrievalError::Invalid(format!("retrieval.filter: {e}")))?,
            None => Filter::default(),
        };
        let top_k = top_k.unwrap_or(self.config.top_k);
        if !(1..=50).contains(&top_k) {
            return Err(RetrievalError::Invalid(
                "retrieval.top_k must be between 1 and 50".into(),
            ));
        }
        Ok(GroundingSpec {
            collection,
            top_k,
            mode,
            filter,
            assistant: None,
            rewrite_model: self.config.rewrite_model.clone(),
            context_tokens: None,
        })
    }

    /// Searches a tenant's collection for `text`.
    pub async fn search(
        &self,
        models: &dyn GroundingModels,
        tenant: &str,
        collection: &str,
        mut query: SearchQuery,
    ) -> Result<Vec<Hit>, GroundingError> {
        let collection = self.collections.get(tenant, collection).await?;
        if query.mode != SearchMode::Keyword {
            let vector = models
                .embed_one(&self.config.embedding_model, &query.text)
                .await
                .map_err(GroundingError::Backend)?;
            query.vector = Some(vector);
        }
        Ok(collection.search(query).await?)
    }

    /// Retrieves sources for `request` and puts them in its system message.
    pub async fn ground(
        &self,
        models: &dyn GroundingModels,
        tenant: &str,
        request: &mut ChatRequest,
        spec: &GroundingSpec,
    ) -> Result<Grounded, GroundingError> {
        let span = tracing::debug_span!(
            "retrieve",
            otel.name = format!("retrieve {}", spec.collection),
            switchyard.collection = %spec.collection,
            switchyard.retrieval.sources = tracing::field::Empty,
        );
        let started = Instant::now();
        let grounded = async {
            let mut query = conversation_query(&request.messages);
            if let Some(model) = &spec.rewrite_model
                && request
                    .messages
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .count()
                    > 1
            {
                query = rewrite(models, model, &request.messages)
                    .await
                    .unwrap_or(query);
            }
            let search = SearchQuery {
                text: query.clone(),
                vector: None,
                top_k: (spec.top_k * 3).max(10),
                mode: spec.mode,
                filter: spec.filter.clone(),
            };
            let hits = self
                .search(models, tenant, &spec.collection, search)
                .await?;
            let budget = self.source_budget(request, spec);
            let sources = select_sources(hits, spec.top_k, budget);
            Ok::<_, GroundingError>((query, sources))
        }
        .instrument(span.clone())
        .await;
        let elapsed = started.elapsed();
        switchyard_telemetry::metrics().retrieval_done(elapsed);
        let (query, sources) = grounded?;
        span.record("switchyard.retrieval.sources", sources.len() as i64);
        debug!(collection = %spec.collection, sources = sources.len(), retrieval_ms = elapsed.as_secs_f64() * 1e3, "sources retrieved");
        let instructions = self
            .render(spec.assistant.as_deref(), &sources, &query)
            .map_err(|e| GroundingError::Retrieval(RetrievalError::Invalid(e)))?;
        add_instructions(request, instructions);
        Ok(Grounded {
            collection: spec.collection.clone(),
            sources,
            query,
            elapsed,
        })
    }

    /// Tokens the sources may take: what the model's context leaves after
    /// the conversation, the answer and the instructions.
    fn source_budget(&self, request: &ChatRequest, spec: &GroundingSpec) -> usize {
        let window = self
            .context_windows
            .get(&request.model)
            .copied()
            .unwrap_or(DEFAULT_CONTEXT_TOKENS);
        let conversation: usize = request
            .messages
            .iter()
            .map(|m| m.text().chars().count().div_ceil(4))
            .sum();
        let answer = request
            .max_tokens
            .map_or(DEFAULT_ANSWER_TOKENS, |t| t as usize);
        let left = window.saturating_sub(conversation + answer + TEMPLATE_TOKENS);
        spec.context_tokens.map_or(left, |cap| cap.min(left))
    }

    fn render(
        &self,
        assistant: Option<&str>,
        sources: &[Source],
        question: &str,
    ) -> Result<String, String> {
        let name = assistant
            .filter(|a| self.templates.get_template(a).is_ok())
            .unwrap_or("");
        let template = self
            .templates
            .get_template(name)
            .map_err(|e| e.to_string())?;
        let sources: Vec<TemplateSource<'_>> = sources
            .iter()
            .map(|s| TemplateSource {
                index: s.index,
                title: &s.hit.title,
                section: s
                    .hit
                    .heading_path
                    .iter()
                    .filter(|h| **h != s.hit.title)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" > "),
                text: &s.hit.text,
                document_id: &s.hit.document_id,
            })
            .collect();
        template
            .render(minijinja::context! { sources => minijinja::Value::from(minijinja::value::Serde(&sources)), question => question })
            .map_err(|e| format!("the retrieval template failed: {e}"))
    }
}

/// A follow-up question rewritten as a standalone search query by
/// `model`; `None` when the rewrite fails (the conversation's words are
/// searched instead).
async fn rewrite(
    models: &dyn GroundingModels,
    model: &str,
    messages: &[ChatMessage],
) -> Option<String> {
    let transcript: Vec<String> = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|m| format!("{}: {}", m.role.as_str(), m.text()))
        .collect();
    let mut request = ChatRequest::new(
        model,
        vec![
            ChatMessage::new(
                Role::System,
                "Rewrite the user's last message as one standalone search query that \
                 names its subject. Reply with the query only.",
            ),
            ChatMessage::new(Role::User, transcript.join("\n")),
        ],
    );
    request.max_tokens = Some(48);
    request.sampling = SamplingParams {
        temperature: Some(0.0),
        ..SamplingParams::default()
    };
    match models.complete(request).await {
        Ok(answer) => {
            let query = answer.lines().next().unwrap_or("").trim().to_owned();
            (!query.is_empty()).then_some(query)
        }
        Err(error) => {
            warn!(model, message = %error.message, "query rewrite failed; searching with the conversation's words");
            None
        }
    }
}

fn parse_mode(mode: Option<&str>) -> Result<SearchMode, RetrievalError> {
    match mode {
        None | Some("hybrid") => Ok(SearchMode::Hybrid),
        Some("keyword") => Ok(SearchMode::Keyword),
        Some("vector") => Ok(SearchMode::Vector),
        Some(other) => Err(RetrievalError::Invalid(format!(
            "retrieval.mode must be hybrid, keyword or vector; got `{other}`"
        ))),
    }
}

/// The search query of a conversation: its last user message, preceded by
/// the user turn before it, so that a follow-up ("and on Windows?") keeps
/// the subject it refers to.
pub fn conversation_query(messages: &[ChatMessage]) -> String {
    let users: Vec<String> = messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(ChatMessage::text)
        .collect();
    match users.as_slice() {
        [] => String::new(),
        [only] => only.clone(),
        [.., earlier, last] => {
            let earlier: String = earlier.chars().take(EARLIER_TURN_CHARS).collect();
            format!("{earlier}\n{last}")
        }
    }
}

/// The best chunks that fit `budget` tokens, at most `top_k`, skipping
/// chunks that repeat text already chosen (overlapping neighbours, or the
/// same passage in two documents).
fn select_sources(hits: Vec<Hit>, top_k: usize, budget: usize) -> Vec<Source> {
    let mut chosen: Vec<Source> = Vec::new();
    let mut used = 0usize;
    for hit in hits {
        if chosen.len() == top_k {
            break;
        }
        let duplicate = chosen.iter().any(|s| {
            let same_document_overlap = s.hit.document_id == hit.document_id
                && s.hit.start < hit.end
                && hit.start < s.hit.end
                && overlap(&s.hit, &hit) * 2 > (hit.end - hit.start);
            same_document_overlap || s.hit.text == hit.text
        });
        if duplicate {
            continue;
        }
        let cost = (hit.tokens as f64 * TOKENIZER_MARGIN).ceil() as usize;
        if used + cost > budget {
            continue;
        }
        used += cost;
        let index = u32::try_from(chosen.len() + 1).unwrap_or(u32::MAX);
        chosen.push(Source { index, hit });
    }
    chosen
}

fn overlap(a: &Hit, b: &Hit) -> usize {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}

/// Adds the instructions to the system message, after the caller's own
/// (chat templates of small models take one system message, at the start),
/// or as a new system message when the conversation has none.
fn add_instructions(request: &mut ChatRequest, instructions: String) {
    match request.messages.first_mut() {
        Some(first) if first.role == Role::System => {
            let own = first.text();
            *first = ChatMessage::new(Role::System, format!("{own}\n\n{instructions}"));
        }
        _ => request
            .messages
            .insert(0, ChatMessage::new(Role::System, instructions)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(document: &str, start: usize, end: usize, text: &str, tokens: usize) -> Hit {
        Hit {
            chunk_id: format!("{document}#{start}"),
            document_id: document.into(),
            title: document.into(),
            source: None,
            heading_path: Vec::new(),
            position: 0,
            text: text.into(),
            start,
            end,
            tokens,
            score: 0.0,
            keyword_rank: None,
            vector_rank: None,
            metadata: serde_json::Map::new(),
        }
    }

    #[test]
    fn sources_fit_the_budget_and_skip_repeats() {
        let hits = vec![
            hit("a", 0, 100, "first", 40),
            hit("a", 10, 110, "mostly the same passage", 40),
            hit("b", 0, 100, "first", 40),
            hit("c", 0, 100, "too big", 400),
            hit("d", 0, 100, "fits", 20),
            hit("e", 0, 100, "over the count", 1),
        ];
        let chosen = select_sources(hits, 2, 100);
        let ids: Vec<&str> = chosen.iter().map(|s| s.hit.document_id.as_str()).collect();
        assert_eq!(ids, ["a", "d"]);
        assert_eq!(chosen[1].index, 2);
    }

    #[test]
    fn follow_ups_carry_the_earlier_question() {
        let messages = vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "How do I install Rust?"),
            ChatMessage::new(Role::Assistant, "Use rustup."),
            ChatMessage::new(Role::User, "And on Windows?"),
        ];
        assert_eq!(
            conversation_query(&messages),
            "How do I install Rust?\nAnd on Windows?"
        );
    }

    #[test]
    fn instructions_join_the_callers_system_message() {
        let mut request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::new(Role::System, "be brief"),
                ChatMessage::new(Role::User, "q"),
            ],
        );
        add_instructions(&mut request, "use the sources".into());
        assert_eq!(request.messages.len(), 2);
        assert_eq!(request.messages[0].text(), "be brief\n\nuse the sources");
        let mut request = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "q")]);
        add_instructions(&mut request, "use the sources".into());
        assert_eq!(request.messages[0].role, Role::System);
    }
}
