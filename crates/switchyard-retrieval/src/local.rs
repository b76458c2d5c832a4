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
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

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
use tracing::{debug, info, warn};

use crate::RetrievalError;
use crate::fusion::fuse;
use crate::index::{
    ChunkIndex, DocumentRecord, DocumentSummary, Filter, Hit, IndexStats, SearchMode, SearchQuery,
    WriteBatch,
};
use crate::vectors::{Graph, Point, VectorIndex, normalise};

/// Memory tantivy's writer may buffer before it flushes a segment.
const WRITER_MEMORY: usize = 64 << 20;
/// Candidates each ranking contributes to the fusion, at least.
const MIN_CANDIDATES: usize = 50;
/// Chunks whose graph is built while the index opens (well under a
/// second); larger indexes open at once, searched by exact scan until their
/// graph, built in the background, is ready.
const BUILD_AT_OPEN: usize = 2_000;

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
    /// Shared with the thread that builds the graph after opening.
    vectors: Arc<RwLock<VectorIndex>>,
    next_vector_id: Mutex<u64>,
}

impl LocalIndex {
    /// Opens (or creates) the index in `dir` and builds its vector graph
    /// from the committed chunks (in the background for large indexes).
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
        let chunks = points.len();
        let vectors = if chunks <= BUILD_AT_OPEN {
            Arc::new(RwLock::new(VectorIndex::build(&points)))
        } else {
            let vectors = Arc::new(RwLock::new(VectorIndex::awaiting_graph(&points)));
            build_in_background(dir, points, Arc::downgrade(&vectors));
            vectors
        };
        info!(
            path = %dir.display(),
            chunks,
            open_ms = started.elapsed().as_millis() as u64,
            "index opened"
        );
        Ok(Self {
            index,
            reader,
            fields,
            writer: Mutex::new(None),
            vectors,
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

    fn vector_ranking(
        &self,
        searcher: &Searcher,
        vector: &[f32],
        filter: Option<&dyn Query>,
        limit: usize,
    ) -> Result<Vec<u64>, RetrievalError> {
        let allowed = match filter {
            Some(filter) => {
                let found = searcher.search(filter, &DocSetCollector)?;
                Some(
                    vector_ids(searcher, found)?
                        .into_iter()
                        .collect::<HashSet<u64>>(),
                )
            }
            None => None,
        };
        let mut unit = vector.to_vec();
        normalise(&mut unit);
        let vectors = self.vectors.read().unwrap_or_else(PoisonError::into_inner);
        if vectors.dimensions().is_some_and(|d| d != unit.len()) {
            return Err(RetrievalError::Conflict(format!(
                "the query's embedding has {} dimensions; the collection's have {}",
                unit.len(),
                vectors.dimensions().unwrap_or(0)
            )));
        }
        Ok(vectors
            .search(&unit, limit, allowed.as_ref())
            .into_iter()
            .map(|(id, _)| id)
            .collect())
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

/// Runs the two rankings of a hybrid search side by side: each takes a
/// few milliseconds on a large collection, and the caller waits for both.
/// A scoped thread rather than rayon, whose pool an HNSW build can keep
/// busy for seconds; if no thread can be started they run in turn.
fn both(
    keyword: impl Fn() -> Result<Vec<u64>, RetrievalError> + Sync,
    vector: impl FnOnce() -> Result<Vec<u64>, RetrievalError>,
) -> Result<(Vec<u64>, Vec<u64>), RetrievalError> {
    let keyword = &keyword;
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("keyword-ranking".into())
            .spawn_scoped(scope, keyword);
        let vector = vector();
        let keyword = match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(RetrievalError::Index("the keyword ranking failed".into()))
            }),
            Err(error) => {
                debug!(%error, "no thread for the keyword ranking; ranking in turn");
                keyword()
            }
        };
        Ok((keyword?, vector?))
    })
}

/// Builds the graph of `points` on a thread of its own and installs it in
/// `vectors`, unless the index has been dropped meanwhile.
fn build_in_background(dir: &Path, points: Vec<Point>, vectors: Weak<RwLock<VectorIndex>>) {
    let path = dir.display().to_string();
    let points = Arc::new(points);
    let job = (points.clone(), vectors.clone());
    let spawned = std::thread::Builder::new()
        .name("vector-graph".into())
        .spawn(move || install_graph(&path, &job.0, &job.1));
    if let Err(error) = spawned {
        warn!(%error, "no thread for the vector graph; building it now");
        install_graph(&dir.display().to_string(), &points, &vectors);
    }
}

fn install_graph(path: &str, points: &[Point], vectors: &Weak<RwLock<VectorIndex>>) {
    let started = std::time::Instant::now();
    let graph = Graph::build(points);
    if let Some(vectors) = vectors.upgrade() {
        vectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .install(graph, points);
        info!(
            path,
            chunks = points.len(),
            build_ms = started.elapsed().as_millis() as u64,
            "vector graph ready"
        );
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
        let keyword_wanted = query.mode != SearchMode::Vector && !query.text.trim().is_empty();
        let vector_query = query
            .vector
            .as_deref()
            .filter(|_| query.mode != SearchMode::Keyword);
        let keyword =
            || self.keyword_ranking(&searcher, &query.text, filter.as_deref(), candidates);
        let vector = |v| self.vector_ranking(&searcher, v, filter.as_deref(), candidates);
        let (keyword, vector) = match (keyword_wanted, vector_query) {
            (true, Some(v)) => both(keyword, || vector(v))?,
            (true, None) => (keyword()?, Vec::new()),
            (false, Some(v)) => (Vec::new(), vector(v)?),
            (false, None) => (Vec::new(), Vec::new()),
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
        let awaiting = self
            .vectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .awaiting();
        IndexStats {
            documents,
            chunks: searcher.num_docs(),
            vectors_awaiting_graph: awaiting as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ChunkRecord;

    /// A unit vector along one axis: each topic its own direction.
    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 8];
        v[i] = 1.0;
        v
    }

    fn document(id: &str, team: &str, chunks: &[(&str, usize)]) -> DocumentRecord {
        let mut metadata = serde_json::Map::new();
        metadata.insert("team".into(), team.into());
        DocumentRecord {
            id: id.into(),
            title: format!("{id} title"),
            source: Some(format!("{id}.md")),
            format: "markdown".into(),
            content_hash: format!("hash of {id}"),
            metadata,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(position, (text, direction))| ChunkRecord {
                    position: position as u32,
                    text: (*text).into(),
                    start: position * 100,
                    end: position * 100 + text.len(),
                    heading_path: vec![format!("{id} title"), "Section".into()],
                    tokens: 10,
                    vector: axis(*direction),
                })
                .collect(),
        }
    }

    fn query(text: &str, direction: Option<usize>, mode: SearchMode) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            vector: direction.map(axis),
            top_k: 5,
            mode,
            filter: Filter::default(),
        }
    }

    /// Documents and chunks held.
    fn counts(index: &LocalIndex) -> (u64, u64) {
        let stats = index.stats();
        (stats.documents, stats.chunks)
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.chunk_id.as_str()).collect()
    }

    fn upsert(index: &LocalIndex, documents: Vec<DocumentRecord>) {
        index
            .write(WriteBatch {
                upserts: documents,
                deletes: Vec::new(),
            })
            .unwrap();
    }

    #[test]
    fn written_chunks_are_found_by_words_and_vectors_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(dir.path()).unwrap();
        upsert(
            &index,
            vec![
                document(
                    "refunds",
                    "billing",
                    &[("Refunds reach the card in fourteen days.", 0)],
                ),
                document(
                    "shipping",
                    "logistics",
                    &[
                        ("Parcels leave the warehouse before noon.", 1),
                        ("Couriers deliver on weekdays.", 2),
                    ],
                ),
            ],
        );
        assert_eq!(counts(&index), (2, 3));

        let hits = index
            .search(&query("when do refunds arrive", None, SearchMode::Keyword))
            .unwrap();
        assert_eq!(ids(&hits), ["refunds#0"]);
        let hit = &hits[0];
        assert_eq!(hit.keyword_rank, Some(1));
        assert_eq!(hit.vector_rank, None);
        assert_eq!(hit.metadata["team"], "billing");
        assert_eq!(hit.heading_path, ["refunds title", "Section"]);
        assert_eq!(hit.source.as_deref(), Some("refunds.md"));

        let hits = index
            .search(&query("", Some(2), SearchMode::Vector))
            .unwrap();
        assert_eq!(hits[0].chunk_id, "shipping#1");
        assert_eq!(hits[0].vector_rank, Some(1));

        // Found by both rankings beats found by one.
        let hits = index
            .search(&query("warehouse parcels", Some(1), SearchMode::Hybrid))
            .unwrap();
        assert_eq!(hits[0].chunk_id, "shipping#0");
        assert_eq!(
            (hits[0].keyword_rank, hits[0].vector_rank),
            (Some(1), Some(1))
        );

        drop(index);
        let reopened = LocalIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.stats().chunks, 3);
        let hits = reopened
            .search(&query("", Some(0), SearchMode::Vector))
            .unwrap();
        assert_eq!(hits[0].chunk_id, "refunds#0");
        assert_eq!(
            reopened.content_hash("refunds").unwrap().as_deref(),
            Some("hash of refunds")
        );
    }

    #[test]
    fn replacing_a_document_swaps_its_chunks_and_deleting_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(dir.path()).unwrap();
        upsert(
            &index,
            vec![
                document(
                    "policy",
                    "billing",
                    &[("Refunds take fourteen days.", 0), ("Invoices monthly.", 1)],
                ),
                document("other", "billing", &[("Unrelated text.", 3)]),
            ],
        );
        upsert(
            &index,
            vec![document(
                "policy",
                "billing",
                &[("Refunds now take three days.", 4)],
            )],
        );
        assert_eq!(counts(&index), (2, 2));
        let hits = index
            .search(&query("invoices fourteen", None, SearchMode::Keyword))
            .unwrap();
        assert!(hits.is_empty(), "old chunks are gone: {:?}", ids(&hits));
        // The old vectors are tombstones in the graph: never returned.
        let hits = index
            .search(&query("", Some(1), SearchMode::Vector))
            .unwrap();
        assert_eq!(hits.len(), 2);
        assert!(
            hits.iter().all(|h| h.chunk_id != "policy#1"),
            "{:?}",
            ids(&hits)
        );
        let documents = index.documents().unwrap();
        assert_eq!(documents[1].id, "policy");
        assert_eq!(documents[1].chunks, 1);

        index
            .write(WriteBatch {
                upserts: Vec::new(),
                deletes: vec!["policy".into()],
            })
            .unwrap();
        assert_eq!(index.content_hash("policy").unwrap(), None);
        let hits = index
            .search(&query("refunds days", Some(4), SearchMode::Hybrid))
            .unwrap();
        assert_eq!(ids(&hits), ["other#0"]);
    }

    #[test]
    fn filters_restrict_both_rankings() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(dir.path()).unwrap();
        upsert(
            &index,
            vec![
                document("a", "billing", &[("Refunds in fourteen days.", 0)]),
                document("b", "logistics", &[("Refunds of postage.", 1)]),
                document("c", "logistics", &[("Returns by courier.", 2)]),
            ],
        );
        let mut search = query("refunds", Some(0), SearchMode::Hybrid);
        search
            .filter
            .metadata
            .insert("team".into(), "logistics".into());
        let found = index.search(&search).unwrap();
        assert_eq!(ids(&found), ["b#0", "c#0"]);

        search.filter.document_ids = vec!["c".into()];
        assert_eq!(ids(&index.search(&search).unwrap()), ["c#0"]);

        search.filter = Filter::default();
        search.filter.metadata.insert("team".into(), 1.5.into());
        assert!(matches!(
            index.search(&search),
            Err(RetrievalError::Invalid(_))
        ));
    }

    #[test]
    fn a_large_index_answers_while_its_graph_is_built_and_keeps_writes_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(dir.path()).unwrap();
        // A distinct direction for each chunk, one document per chunk.
        let direction = |i: usize| {
            let mut v = vec![0.0f32; 16];
            let (a, c, k) = (i % 16, (i / 16) % 15, i / 240);
            v[a] = 1.0;
            v[(a + 1 + c) % 16] = 0.2 + 0.1 * k as f32;
            v
        };
        let documents: Vec<DocumentRecord> = (0..BUILD_AT_OPEN + 100)
            .map(|i| {
                let mut d = document(&format!("d{i}"), "t", &[("Filler text.", 0)]);
                d.chunks[0].vector = direction(i);
                d
            })
            .collect();
        let target = documents[1234].chunks[0].vector.clone();
        upsert(&index, documents);
        drop(index);

        let reopened = LocalIndex::open(dir.path()).unwrap();
        let mut search = query("", None, SearchMode::Vector);
        search.vector = Some(target.clone());
        let scanned = reopened.search(&search).unwrap();
        assert_eq!(scanned[0].document_id, "d1234");
        // The only direction with a negative component.
        let mut late_vector = vec![0.0f32; 16];
        late_vector[3] = 1.0;
        late_vector[7] = -1.0;
        let mut late = document("late", "t", &[("Written during the build.", 0)]);
        late.chunks[0].vector = late_vector.clone();
        upsert(&reopened, vec![late]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while reopened.stats().vectors_awaiting_graph > 0 {
            assert!(std::time::Instant::now() < deadline, "the graph never came");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let graphed = reopened.search(&search).unwrap();
        assert_eq!(graphed[0].document_id, "d1234");
        search.vector = Some(late_vector);
        let late = reopened.search(&search).unwrap();
        assert_eq!(
            late[0].document_id, "late",
            "a write during the build is in the graph"
        );
    }

    #[test]
    fn vectors_of_another_length_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(dir.path()).unwrap();
        upsert(&index, vec![document("a", "x", &[("Some text.", 0)])]);
        let mut other = document("b", "x", &[("Other text.", 0)]);
        other.chunks[0].vector = vec![1.0; 3];
        let refused = index.write(WriteBatch {
            upserts: vec![other],
            deletes: Vec::new(),
        });
        assert!(matches!(refused, Err(RetrievalError::Conflict(_))));
        assert_eq!(
            index.stats().chunks,
            1,
            "nothing of the refused batch stays"
        );

        let mut search = query("text", Some(0), SearchMode::Vector);
        search.vector = Some(vec![1.0; 3]);
        assert!(matches!(
            index.search(&search),
            Err(RetrievalError::Conflict(_))
        ));
    }
}
