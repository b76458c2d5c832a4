//! `switchyard ingest COLLECTION PATH...`: walks files and folders and
//! sends every document Switchyard can read to a running server, in
//! batches, following each batch's ingestion job with a progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use switchyard_retrieval::Format;

/// Most bytes of documents in one request (JSON-encoded, below the
/// server's default 4 MiB body limit).
const BATCH_BYTES: usize = 2 << 20;
/// Most documents in one request.
const BATCH_DOCUMENTS: usize = 32;
const POLL: Duration = Duration::from_millis(250);

/// What to ingest, and where.
pub struct IngestOptions {
    pub collection: String,
    pub paths: Vec<PathBuf>,
    pub url: String,
    pub api_key: Option<String>,
}

struct File {
    id: String,
    path: PathBuf,
    format: Format,
}

pub fn run(options: IngestOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(ingest(options))
}

/// Readable files under `paths`; ids are paths relative to the argument
/// they were found under, so re-running the command replaces documents.
fn walk(paths: &[PathBuf]) -> anyhow::Result<(Vec<File>, usize)> {
    let mut found = Vec::new();
    let mut skipped = 0;
    for root in paths {
        let meta =
            std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
        if meta.is_file() {
            let id = root
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            match Format::from_path(root) {
                Some(format) => found.push(File {
                    id,
                    path: root.clone(),
                    format,
                }),
                None => skipped += 1,
            }
            continue;
        }
        // A folder tree, walked by hand: a small stack is all it takes.
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(format) = Format::from_path(&path) {
                    found.push(File {
                        id: relative_id(root, &path),
                        path,
                        format,
                    });
                } else {
                    skipped += 1;
                }
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((found, skipped))
}

fn relative_id(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

async fn ingest(options: IngestOptions) -> anyhow::Result<()> {
    switchyard_adapters::ensure_crypto_provider();
    let (files, skipped) = walk(&options.paths)?;
    if files.is_empty() {
        bail!("no documents found (Switchyard reads .txt, .md, .html and .pdf files)");
    }
    let client = Client::new(&options)?;
    client.ensure_collection(&options.collection).await?;

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} documents  {msg}  [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut chunks = 0usize;
    let mut unchanged = 0usize;
    let mut failures = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for (index, file) in files.iter().enumerate() {
        let bytes = std::fs::read(&file.path)
            .with_context(|| format!("cannot read {}", file.path.display()))?;
        let content = if file.format == Format::Pdf {
            json!({ "content_base64": base64::engine::general_purpose::STANDARD.encode(&bytes) })
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => json!({ "content": text }),
                Err(_) => {
                    failures.push(format!("{}: not UTF-8 text", file.id));
                    bar.inc(1);
                    continue;
                }
            }
        };
        let mut document = json!({
            "id": file.id,
            "format": file.format.as_str(),
            "source": file.path.display().to_string(),
        });
        if let (Some(document), Some(content)) = (document.as_object_mut(), content.as_object()) {
            document.extend(content.clone());
        }
        batch_bytes += document.to_string().len();
        batch.push(document);
        let last = index + 1 == files.len();
        if last || batch.len() >= BATCH_DOCUMENTS || batch_bytes >= BATCH_BYTES {
            let job = client
                .submit(&options.collection, std::mem::take(&mut batch))
                .await?;
            batch_bytes = 0;
            let done = client.follow(&job, &bar, chunks).await?;
            chunks += done["chunks_indexed"].as_u64().unwrap_or(0) as usize;
            unchanged += done["documents_unchanged"].as_u64().unwrap_or(0) as usize;
            for failure in done["failures"].as_array().into_iter().flatten() {
                failures.push(format!(
                    "{}: {}",
                    failure["document_id"].as_str().unwrap_or("?"),
                    failure["error"].as_str().unwrap_or("?")
                ));
            }
            if done["status"] == "failed" {
                bar.abandon();
                bail!(
                    "ingestion failed: {}",
                    done["error"].as_str().unwrap_or("unknown error")
                );
            }
        }
    }
    bar.finish();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} documents into `{}`: {chunks} chunks indexed, {unchanged} unchanged, {} failed, {skipped} files skipped (unknown type)",
        files.len(),
        options.collection,
        failures.len()
    )?;
    for failure in &failures {
        writeln!(out, "  failed: {failure}")?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{} documents failed", failures.len())
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    fn new(options: &IngestOptions) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base: options.url.trim_end_matches('/').to_owned(),
            key: options.api_key.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn ensure_collection(&self, name: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .send(self.request(reqwest::Method::GET, &format!("/v1/collections/{name}")))
            .await?;
        match status {
            200 => Ok(()),
            404 => {
                let create = self
                    .request(reqwest::Method::POST, "/v1/collections")
                    .json(&json!({ "name": name }));
                let (status, body) = self.send(create).await?;
                if status == 201 || status == 409 {
                    Ok(())
                } else {
                    bail!("cannot create the collection: {}", error_message(&body))
                }
            }
            _ => bail!("cannot open the collection: {}", error_message(&body)),
        }
    }

    async fn submit(&self, collection: &str, documents: Vec<Value>) -> anyhow::Result<String> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/collections/{collection}/documents"),
            )
            .json(&json!({ "documents": documents }));
        let (status, body) = self.send(request).await?;
        if status != 202 {
            bail!(
                "the server refused the documents ({status}): {}",
                error_message(&body)
            );
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("the server's answer has no job id")
    }

    /// Polls a job until it ends, moving the bar as documents finish.
    async fn follow(
        &self,
        job: &str,
        bar: &ProgressBar,
        chunks_before: usize,
    ) -> anyhow::Result<Value> {
        let start = bar.position();
        loop {
            let (status, body) = self
                .send(self.request(reqwest::Method::GET, &format!("/v1/ingestion_jobs/{job}")))
                .await?;
            if status != 200 {
                bail!("cannot follow job {job}: {}", error_message(&body));
            }
            bar.set_position(start + body["documents_done"].as_u64().unwrap_or(0));
            let chunks = chunks_before + body["chunks_embedded"].as_u64().unwrap_or(0) as usize;
            bar.set_message(format!("{chunks} chunks"));
            if body["status"] == "succeeded" || body["status"] == "failed" {
                return Ok(body);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or("no details")
        .to_owned()
}
