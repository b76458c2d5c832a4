//! Text out of documents: plain text and Markdown as they are, HTML through
//! html2text (which keeps headings as Markdown `#` lines, so chunking can
//! follow them), PDF through pdf-extract.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RetrievalError;

/// A document format Switchyard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain UTF-8 text.
    Text,
    /// Markdown (CommonMark).
    Markdown,
    /// An HTML page.
    Html,
    /// A PDF file.
    Pdf,
}

impl Format {
    /// The format's name in the API (`text`, `markdown`, `html`, `pdf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
        }
    }

    /// The format a media type (a `Content-Type` value) names.
    pub fn from_media_type(media_type: &str) -> Option<Format> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Format::Text),
            "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Format::Html),
            "application/pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "txt" | "text" | "rst" => Some(Format::Text),
            "md" | "markdown" | "mdx" => Some(Format::Markdown),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    /// Whether the extracted text has Markdown structure (headings, code
    /// fences) that chunking should follow.
    pub fn is_structured(self) -> bool {
        matches!(self, Format::Markdown | Format::Html)
    }
}

/// A document's text and the title found in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The text that is chunked; chunk offsets count characters in it.
    pub text: String,
    /// The first heading (or, for PDF, the first line), when there is one.
    pub title: Option<String>,
}

/// Extracts the text of a document. CPU-bound: call it off the async
/// runtime's threads.
pub fn extract(format: Format, content: &[u8]) -> Result<Extracted, RetrievalError> {
    let text = match format {
        Format::Text | Format::Markdown => utf8(content)?.to_owned(),
        Format::Html => html2text::from_read(content, HTML_WIDTH)
            .map_err(|e| RetrievalError::Invalid(format!("the HTML could not be read: {e}")))?,
        Format::Pdf => pdf_text(content)?,
    };
    let text = text.replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(RetrievalError::Invalid(
            "the document has no text to index".into(),
        ));
    }
    let title = match format {
        Format::Pdf | Format::Text => first_line(&text),
        Format::Markdown | Format::Html => first_heading(&text).or_else(|| first_line(&text)),
    };
    Ok(Extracted { text, title })
}

fn utf8(content: &[u8]) -> Result<&str, RetrievalError> {
    std::str::from_utf8(content)
        .map_err(|e| RetrievalError::Invalid(format!("the document is not UTF-8 text: {e}")))
}

/// pdf-extract panics on some malformed files; a bad upload must fail its
/// document, not the ingestion thread.
fn pdf_text(content: &[u8]) -> Result<String, RetrievalError> {
    let outcome = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(content));
    match outcome {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(error)) => Err(RetrievalError::Invalid(format!(
            "the PDF could not be read: {error}"
        ))),
        Err(_) => Err(RetrievalError::Invalid(
            "the PDF could not be read: the file is malformed".into(),
        )),
    }
}

const MAX_TITLE_CHARS: usize = 200;

/// Lines are not wrapped: chunk boundaries, not the renderer, decide where text breaks.
const HTML_WIDTH: usize = 100_000;

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.chars().take(MAX_TITLE_CHARS).collect())
}

fn first_heading(text: &str) -> Option<String> {
    crate::chunk::headings(text)
        .into_iter()
        .next()
        .map(|h| h.title.chars().take(MAX_TITLE_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_headings_as_markdown_and_finds_the_title() {
        let html = b"<html><body><h1>Refunds</h1><p>Refunds take <b>5 days</b>.</p>\
                     <h2>Exceptions</h2><p>Gift cards are final.</p></body></html>";
        let extracted = extract(Format::Html, html).unwrap();
        assert_eq!(extracted.title.as_deref(), Some("Refunds"));
        assert!(
            extracted.text.contains("## Exceptions"),
            "{}",
            extracted.text
        );
        assert!(extracted.text.contains("Gift cards are final."));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let error = extract(Format::Text, &[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(matches!(error, RetrievalError::Invalid(ref m) if m.contains("UTF-8")));
        let error = extract(Format::Markdown, b"   \n\n ").unwrap_err();
        assert!(matches!(error, RetrievalError::Invalid(_)));
        let error = extract(Format::Pdf, b"%PDF-1.4 this is not a pdf").unwrap_err();
        assert!(matches!(error, RetrievalError::Invalid(ref m) if m.contains("PDF")));
    }

    #[test]
    fn formats_are_named_by_media_type_and_extension() {
        assert_eq!(
            Format::from_media_type("text/markdown; charset=utf-8"),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::from_media_type("application/pdf"),
            Some(Format::Pdf)
        );
        assert_eq!(Format::from_media_type("image/png"), None);
        assert_eq!(Format::from_path(Path::new("a/b.HTM")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("a/b")), None);
    }
}
