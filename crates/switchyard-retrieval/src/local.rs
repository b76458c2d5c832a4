//! The local index: tantivy holds every chunk (text, provenance, metadata
//! and embedding) and ranks by BM25; an HNSW graph in memory ranks by
//! vector similarity and is rebuilt from tantivy when the index opens.
//!
//! Tantivy commits are atomic (a new `meta.json` is renamed into place
//! after the segments are synced), so a crash during a write leaves the
//! previous commit: the graph, built only from committed chunks, can never
//! hold a half-written batch.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};

use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};
use tracing::{debug, info};

use crate::RetrievalError;
use crate::fusion::fuse;
use crate::index::{
    ChunkIndex, DocumentRecord, DocumentSummary, Filter, Hit, IndexStats, SearchMode, SearchQuery,
    WriteBatch,
};
use crate::vectors::{VectorIndex, normalise};

/// Memory tantivy's writer may buffer before it flushes a segment.
const WRITER_MEMORY: usize = 64 << 20;
/// Candidates each ranking contributes to the fusion, at least.
const MIN_CANDIDATES: usize = 50;

#[derive(Clone, Copy)]
struct Fields {
    chunk_id: Field,
    document_id: Field,
    vector_id: Field,
    position: Field,
    title: Field,
    headings: Field,
    text: Field,
    start: Field,
    end: Field,
    tokens: Field,
    chunk_count: Field,
    source: Field,
    format: Field,
    content_hash: Field,
    metadata: Field,
    metadata_json: Field,
    vector: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let english = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        chunk_id: builder.add_text_field("chunk_id", STRING | STORED),
        document_id: builder.add_text_field("document_id", STRING | STORED),
        vector_id: builder.add_u64_field("vector_id", INDEXED | STORED | FAST),
        position: builder.add_u64_field("position", INDEXED | STORED),
        title: builder.add_text_field("title", english.clone()),
        headings: builder.add_text_field("headings", english.clone()),
        text: builder.add_text_field("text", english),
        start: builder.add_u64_field("start", STORED),
        end: builder.add_u64_field("end", STORED),
        tokens: builder.add_u64_field("tokens", STORED),
        chunk_count: builder.add_u64_field("chunk_count", STORED),
        source: builder.add_text_field("source", STORED),
        format: builder.add_text_field("format", STORED),
        content_hash: builder.add_text_field("content_hash", STORED),
        // Indexed for filters (exact values), and kept verbatim beside it
        // so that results return the caller's JSON unchanged.
        metadata: builder.add_json_field("metadata", STRING),
        metadata_json: builder.add_text_field("metadata_json", STORED),
        vector: builder.add_bytes_field("vector", STORED),
    };
    (builder.build(), fields)
}

/// A collection's index on local disk.
pub struct LocalIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    writer: Mutex<Option<IndexWriter>>,
    vectors: RwLock<VectorIndex>,
    next_vector_id: Mutex<u64>,
}

impl LocalIndex {
    /// Opens (or creates) the index in `dir` and builds its vector graph
    /// from the committed chunks.
    pub fn open(dir: &Path) -> Result<Self, RetrievalError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir)
            .map_err(|e| RetrievalError::Index(format!("{}: {e}", dir.display())))?;
        let index = Index::open_or_create(directory, schema)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let started = std::time::Instant::now();
        let (points, max_id) = committed_vectors(&reader.searcher(), fields)?;
        let vectors = VectorIndex::build(&points);
        info!(
            path = %dir.display(),
            chunks = points.len(),
            build_ms = started.elapsed().as_millis() as u64,
            "index opened"
        );
        Ok(Self {
            index,
            reader,
            fields,
            writer: Mutex::new(None),
            vectors: RwLock::new(vectors),
            next_vector_id: Mutex::new(max_id.map_or(0, |m| m + 1)),
        })
    }

    fn rebuild_vectors(&self) -> Result<(), RetrievalError> {
        let (points, _) = committed_vectors(&self.reader.searcher(), self.fields)?;
        let rebuilt = VectorIndex::build(&points);
        *self.vectors.write().unwrap_or_else(PoisonError::into_inner) = rebuilt;
        debug!(chunks = points.len(), "vector graph rebuilt");
        Ok(())
    }

    /// Vector ids of a document's chunks in the committed index.
    fn vector_ids_of(
        &self,
        searcher: &Searcher,
        document_id: &str,
    ) -> Result<Vec<u64>, RetrievalError> {
        let term = Term::from_field_text(self.fields.document_id, document_id);
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let found = searcher.search(&query, &DocSetCollector)?;
        vector_ids(searcher, found)
    }

    fn filter_query(&self, filter: &Filter) -> Result<Option<Box<dyn Query>>, RetrievalError> {
        if filter.is_empty() {
            return Ok(None);
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !filter.document_ids.is_empty() {
            let any: Vec<(Occur, Box<dyn Query>)> = filter
                .document_ids
                .iter()
                .map(|id| {
                    let term = Term::from_field_text(self.fields.document_id, id);
                    let query: Box<dyn Query> =
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                    (Occur::Should, query)
                })
                .collect();
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        for (key, value) in &filter.metadata {
            let mut term = Term::from_field_json_path(self.fields.metadata, key, false);
            match value {
                serde_json::Value::String(s) => term.append_type_and_str(s),
                serde_json::Value::Bool(b) => term.append_type_and_fast_value(*b),
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => term.append_type_and_fast_value(i),
                    (None, Some(u)) => term.append_type_and_fast_value(u),
                    _ => {
                        return Err(RetrievalError::Invalid(format!(
                            "filter `metadata.{key}`: only strings, integers and booleans can be matched"
                        )));
                    }
                },
                _ => {
                    return Err(RetrievalError::Invalid(format!(
                        "filter `metadata.{key}`: only strings, integers and booleans can be matched"
                    )));
                }
            }
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        Ok(Some(Box::new(BooleanQuery::new(must))))
    }

    fn keyword_ranking(
        &self,
        searcher: &Searcher,
        text: &str,
        filter: Option<&dyn Query>,
        limit: usize,
    ) -> Result<Vec<u64>, RetrievalError> {
        let fields = self.fields;
        let mut parser = QueryParser::for_index(
            &self.index,
            vec![fields.text, fields.title, fields.headings],
        );
        parser.set_field_boost(fields.title, 2.0);
        parser.set_field_boost(fields.headings, 1.5);
        // Users type questions, not query syntax: every word is a term and
        // any operator characters are taken literally or dropped.
        let (parsed, _) = parser.parse_query_lenient(&plain_words(text));
        let query: Box<dyn Query> = match filter {
            Some(filter) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, parsed),
                (Occur::Must, filter.box_clone()),
            ])),
            None => parsed,
        };
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut ids = Vec::with_capacity(top.len());
        for (_, address) in top {
            if let Some(id) = vector_id(searcher, address)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn hit(&self, searcher: &Searcher, vector_id: u64) -> Result<Option<Hit>, RetrievalError> {
        let term = Term::from_field_u64(self.fields.vector_id, vector_id);
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let Some((_, address)) = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(address)?;
        let f = self.fields;
        let metadata = serde_json::from_str(&text(&doc, f.metadata_json)).unwrap_or_default();
        Ok(Some(Hit {
            chunk_id: text(&doc, f.chunk_id),
            document_id: text(&doc, f.document_id),
            title: text(&doc, f.title),
            source: Some(text(&doc, f.source)).filter(|s| !s.is_empty()),
            heading_path: split_headings(&text(&doc, f.headings)),
            position: u32::try_from(number(&doc, f.position)).unwrap_or(u32::MAX),
            text: text(&doc, f.text),
            start: number(&doc, f.start) as usize,
            end: number(&doc, f.end) as usize,
            tokens: number(&doc, f.tokens) as usize,
            score: 0.0,
            keyword_rank: None,
            vector_rank: None,
            metadata,
        }))
    }

    fn add_document(
        &self,
        writer: &IndexWriter,
        document: DocumentRecord,
        next_id: &mut u64,
        points: &mut Vec<(u64, Vec<f32>)>,
    ) -> Result<(), RetrievalError> {
        let f = self.fields;
        let metadata_json = serde_json::Value::Object(document.metadata.clone());
        let chunk_count = document.chunks.len() as u64;
        for chunk in document.chunks {
            let id = *next_id;
            *next_id += 1;
            let mut vector = chunk.vector;
            normalise(&mut vector);
            let mut doc = TantivyDocument::default();
            doc.add_text(f.chunk_id, format!("{}#{}", document.id, chunk.position));
            doc.add_text(f.document_id, &document.id);
            doc.add_u64(f.vector_id, id);
            doc.add_u64(f.position, u64::from(chunk.position));
            doc.add_text(f.title, &document.title);
            doc.add_text(f.headings, chunk.heading_path.join(HEADING_SEPARATOR));
            doc.add_text(f.text, &chunk.text);
            doc.add_u64(f.start, chunk.start as u64);
            doc.add_u64(f.end, chunk.end as u64);
            doc.add_u64(f.tokens, chunk.tokens as u64);
            doc.add_u64(f.chunk_count, chunk_count);
            doc.add_text(f.source, document.source.as_deref().unwrap_or(""));
            doc.add_text(f.format, &document.format);
            doc.add_text(f.content_hash, &document.content_hash);
            doc.add_field_value(
                f.metadata,
                &tantivy::schema::OwnedValue::from(metadata_json.clone()),
            );
            doc.add_text(f.metadata_json, metadata_json.to_string());
            doc.add_bytes(f.vector, &vector_bytes(&vector));
            writer.add_document(doc)?;
            points.push((id, vector));
        }
        Ok(())
    }
}

const HEADING_SEPARATOR: &str = "\u{1f}";

fn split_headings(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(HEADING_SEPARATOR).map(str::to_owned).collect()
}

/// The query's words, without the characters tantivy's query language
/// gives meaning to.
fn plain_words(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect()
}

fn text(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn number(doc: &TantivyDocument, field: Field) -> u64 {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn vector_id(searcher: &Searcher, address: DocAddress) -> Result<Option<u64>, RetrievalError> {
    let column = searcher
        .segment_reader(address.segment_ord)
        .fast_fields()
        .u64("vector_id")?;
    Ok(column.first(address.doc_id))
}

fn vector_ids(
    searcher: &Searcher,
    addresses: impl IntoIterator<Item = DocAddress>,
) -> Result<Vec<u64>, RetrievalError> {
    let mut ids = Vec::new();
    for address in addresses {
        if let Some(id) = vector_id(searcher, address)? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A chunk's vector id and embedding.
type Point = (u64, Vec<f32>);

/// Every committed chunk's vector id and embedding, and the largest id.
fn committed_vectors(
    searcher: &Searcher,
    fields: Fields,
) -> Result<(Vec<Point>, Option<u64>), RetrievalError> {
    let mut points = Vec::new();
    let mut max_id = None;
    for segment in searcher.segment_readers() {
        let store = segment.get_store_reader(64)?;
        for doc_id in segment.doc_ids_alive() {
            let doc: TantivyDocument = store.get(doc_id)?;
            let id = number(&doc, fields.vector_id);
            let vector = doc
                .get_first(fields.vector)
                .and_then(|v| v.as_bytes())
                .map(vector_from_bytes)
                .unwrap_or_default();
            max_id = max_id.max(Some(id));
            if !vector.is_empty() {
                points.push((id, vector));
            }
        }
    }
    // Deleted chunks may have held the largest ids; they are gone from the
    // graph too, so reusing them is safe.
    Ok((points, max_id))
}

impl ChunkIndex for LocalIndex {
    fn write(&self, batch: WriteBatch) -> Result<(), RetrievalError> {
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.index.writer_with_num_threads(1, WRITER_MEMORY)?);
        }
        let Some(writer) = guard.as_mut() else {
            return Err(RetrievalError::Index("no index writer".into()));
        };
        let dimensions = self
            .vectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .dimensions();
        let mut batch_dimensions = dimensions;
        for chunk in batch.upserts.iter().flat_map(|d| &d.chunks) {
            match batch_dimensions {
                Some(d) if d != chunk.vector.len() => {
                    return Err(RetrievalError::Conflict(format!(
                        "the collection holds vectors of {d} dimensions; this embedder gives {}",
                        chunk.vector.len()
                    )));
                }
                _ => batch_dimensions = Some(chunk.vector.len()),
            }
        }
        let searcher = self.reader.searcher();
        let mut removed = Vec::new();
        for id in batch
            .deletes
            .iter()
            .chain(batch.upserts.iter().map(|d| &d.id))
        {
            removed.extend(self.vector_ids_of(&searcher, id)?);
            writer.delete_term(Term::from_field_text(self.fields.document_id, id));
        }
        let mut next_id = *self
            .next_vector_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut points = Vec::new();
        for document in batch.upserts {
            self.add_document(writer, document, &mut next_id, &mut points)?;
        }
        let committed = writer.commit();
        if let Err(error) = committed {
            // Whatever was added since the last commit must not ride along
            // with the next batch.
            writer.rollback()?;
            return Err(error.into());
        }
        *self
            .next_vector_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = next_id;
        self.reader.reload()?;
        let rebuild = {
            let mut vectors = self.vectors.write().unwrap_or_else(PoisonError::into_inner);
            vectors.remove(&removed);
            vectors.insert(&points);
            vectors.needs_rebuild()
        };
        if rebuild {
            self.rebuild_vectors()?;
        }
        Ok(())
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<Hit>, RetrievalError> {
        let searcher = self.reader.searcher();
        let filter = self.filter_query(&query.filter)?;
        let candidates = (query.top_k * 4).max(MIN_CANDIDATES);
        let keyword = if query.mode == SearchMode::Vector || query.text.trim().is_empty() {
            Vec::new()
        } else {
            self.keyword_ranking(&searcher, &query.text, filter.as_deref(), candidates)?
        };
        let vector = match (&query.vector, query.mode) {
            (Some(vector), SearchMode::Hybrid | SearchMode::Vector) => {
                let allowed = match &filter {
                    Some(filter) => {
                        let found = searcher.search(filter.as_ref(), &DocSetCollector)?;
                        Some(
                            vector_ids(&searcher, found)?
                                .into_iter()
                                .collect::<HashSet<u64>>(),
                        )
                    }
                    None => None,
                };
                let mut unit = vector.clone();
                normalise(&mut unit);
                let vectors = self.vectors.read().unwrap_or_else(PoisonError::into_inner);
                if vectors.dimensions().is_some_and(|d| d != unit.len()) {
                    return Err(RetrievalError::Conflict(format!(
                        "the query's embedding has {} dimensions; the collection's have {}",
                        unit.len(),
                        vectors.dimensions().unwrap_or(0)
                    )));
                }
                vectors
                    .search(&unit, candidates, allowed.as_ref())
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut hits = Vec::with_capacity(query.top_k);
        for fused in fuse(&keyword, &vector) {
            if hits.len() == query.top_k {
                break;
            }
            // A chunk replaced since the graph saw it is no longer stored.
            if let Some(mut hit) = self.hit(&searcher, fused.id)? {
                hit.score = fused.score;
                hit.keyword_rank = fused.keyword_rank;
                hit.vector_rank = fused.vector_rank;
                hits.push(hit);
            }
        }
        Ok(hits)
    }

    fn content_hash(&self, document_id: &str) -> Result<Option<String>, RetrievalError> {
        let searcher = self.reader.searcher();
        let term = Term::from_field_text(self.fields.document_id, document_id);
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let top = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        match top.into_iter().next() {
            Some((_, address)) => {
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok(Some(text(&doc, self.fields.content_hash)))
            }
            None => Ok(None),
        }
    }

    fn documents(&self) -> Result<Vec<DocumentSummary>, RetrievalError> {
        let searcher = self.reader.searcher();
        let first_chunks = TermQuery::new(
            Term::from_field_u64(self.fields.position, 0),
            IndexRecordOption::Basic,
        );
        let f = self.fields;
        let mut documents = Vec::new();
        for address in searcher.search(&first_chunks, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(address)?;
            documents.push(DocumentSummary {
                id: text(&doc, f.document_id),
                title: text(&doc, f.title),
                source: Some(text(&doc, f.source)).filter(|s| !s.is_empty()),
                format: text(&doc, f.format),
                chunks: number(&doc, f.chunk_count),
                content_hash: text(&doc, f.content_hash),
                metadata: serde_json::from_str(&text(&doc, f.metadata_json)).unwrap_or_default(),
            });
        }
        documents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(documents)
    }

    fn stats(&self) -> IndexStats {
        let searcher = self.reader.searcher();
        let first_chunks = TermQuery::new(
            Term::from_field_u64(self.fields.position, 0),
            IndexRecordOption::Basic,
        );
        let documents = first_chunks.count(&searcher).unwrap_or(0) as u64;
        IndexStats {
            documents,
            chunks: searcher.num_docs(),
        }
    }
}
