//! Chunking by tokens with overlap, following the document's structure.
//!
//! text-splitter does the splitting: it prefers the largest semantic unit
//! that fits (sections under headings, then paragraphs, code blocks,
//! sentences, words) and measures with the embedder's own tokenizer, so a
//! chunk never exceeds what the embedder reads. Each chunk keeps character
//! offsets into the extracted text and the path of headings it sits under.

use std::path::Path;

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

use crate::RetrievalError;

/// How big chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSettings {
    /// Most tokens in a chunk.
    pub max_tokens: usize,
    /// Tokens a chunk repeats from the end of the one before it.
    pub overlap_tokens: usize,
}

impl Default for ChunkSettings {
    /// 200 tokens with 40 of overlap: under the 256 that MiniLM reads, and
    /// small enough that a handful fit in a small model's context.
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

/// Counts tokens the way the embedder will.
pub trait TokenCount: Send + Sync {
    /// Tokens in `text`.
    fn count(&self, text: &str) -> usize;
}

/// Four characters to a token: the usual ratio for English text, used when
/// the embedder's tokenizer is not at hand (a remote embeddings API).
#[derive(Debug, Clone, Copy, Default)]
pub struct CharEstimate;

impl TokenCount for CharEstimate {
    fn count(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4)
    }
}

/// A Hugging Face tokenizer (the local embedder's `tokenizer.json`).
pub struct TokenizerCount(tokenizers::Tokenizer);

impl TokenizerCount {
    /// Loads `tokenizer.json`, without the truncation and padding it may
    /// configure: a counter that stops at 128 would let every text fit in
    /// one chunk, and one that pads would count 128 for a short line.
    pub fn load(path: &Path) -> Result<Self, RetrievalError> {
        let mut tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| RetrievalError::Index(format!("{}: {e}", path.display())))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| RetrievalError::Index(format!("{}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        Ok(Self(tokenizer))
    }
}

impl TokenCount for TokenizerCount {
    fn count(&self, text: &str) -> usize {
        self.0
            .encode(text, false)
            .map_or_else(|_| CharEstimate.count(text), |e| e.len())
    }
}

struct Sizer<'a>(&'a dyn TokenCount);

impl ChunkSizer for Sizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Its place in the document, from 0.
    pub position: u32,
    /// The text.
    pub text: String,
    /// Character offset of its first character in the extracted text.
    pub start: usize,
    /// Character offset just past its last character.
    pub end: usize,
    /// The headings it sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Its size in the embedder's tokens.
    pub tokens: usize,
}

/// A Markdown ATX heading and where it starts (in bytes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heading {
    pub offset: usize,
    pub level: usize,
    pub title: String,
}

/// The ATX headings of a Markdown text, outside fenced code blocks.
pub(crate) fn headings(text: &str) -> Vec<Heading> {
    let mut found = Vec::new();
    let mut fence: Option<&str> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) if trimmed.starts_with(marker) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => {
                let level = trimmed.bytes().take_while(|b| *b == b'#').count();
                let rest = &trimmed[level..];
                if (1..=6).contains(&level) && rest.starts_with([' ', '\t']) {
                    let title = rest.trim().trim_end_matches('#').trim();
                    if !title.is_empty() {
                        found.push(Heading {
                            offset,
                            level,
                            title: title.to_owned(),
                        });
                    }
                }
            }
        }
        offset += line.len();
    }
    found
}

/// The headings in force at byte `offset`, outermost first.
fn path_at(headings: &[Heading], offset: usize) -> Vec<String> {
    let mut stack: Vec<&Heading> = Vec::new();
    for heading in headings.iter().take_while(|h| h.offset <= offset) {
        while stack.last().is_some_and(|h| h.level >= heading.level) {
            stack.pop();
        }
        stack.push(heading);
    }
    stack.into_iter().map(|h| h.title.clone()).collect()
}

/// Splits `text` into chunks. `structured` texts (Markdown, HTML turned
/// into Markdown) split at headings first. CPU-bound.
pub fn chunk_text(
    text: &str,
    structured: bool,
    settings: ChunkSettings,
    counter: &dyn TokenCount,
) -> Result<Vec<Chunk>, RetrievalError> {
    let max = settings.max_tokens.max(16);
    let config = ChunkConfig::new(max)
        .with_overlap(settings.overlap_tokens.min(max / 2))
        .map_err(|e| RetrievalError::Invalid(e.to_string()))?
        .with_sizer(Sizer(counter));
    let pieces: Vec<(usize, usize, &str)> = if structured {
        MarkdownSplitter::new(config)
            .chunk_char_indices(text)
            .map(|c| (c.byte_offset, c.char_offset, c.chunk))
            .collect()
    } else {
        TextSplitter::new(config)
            .chunk_char_indices(text)
            .map(|c| (c.byte_offset, c.char_offset, c.chunk))
            .collect()
    };
    let headings = if structured {
        headings(text)
    } else {
        Vec::new()
    };
    let chunks = pieces
        .into_iter()
        .enumerate()
        .map(|(position, (byte_offset, char_offset, piece))| {
            // A chunk that opens a section (after the overlap it repeats)
            // belongs under that section's heading.
            let own_heading = headings
                .iter()
                .filter(|h| h.offset >= byte_offset && h.offset < byte_offset + piece.len() / 2)
                .map(|h| h.offset)
                .next_back();
            Chunk {
                position: u32::try_from(position).unwrap_or(u32::MAX),
                text: piece.to_owned(),
                start: char_offset,
                end: char_offset + piece.chars().count(),
                heading_path: path_at(&headings, own_heading.unwrap_or(byte_offset)),
                tokens: counter.count(piece),
            }
        })
        .collect();
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per whitespace-separated word: easy to reason about.
    struct Words;
    impl TokenCount for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    const DOC: &str = "# Guide\n\nIntro words here.\n\n## Install\n\nRun the installer and \
        follow the prompts until it finishes.\n\n```sh\n# not a heading\ncurl x | sh\n```\n\n\
        ## Usage\n\nStart the program. Then open the browser and visit the page.\n";

    #[test]
    fn headings_skip_code_fences() {
        let titles: Vec<_> = headings(DOC).into_iter().map(|h| h.title).collect();
        assert_eq!(titles, ["Guide", "Install", "Usage"]);
    }

    #[test]
    fn chunks_keep_offsets_heading_paths_and_size_limits() {
        let settings = ChunkSettings {
            max_tokens: 14,
            overlap_tokens: 0,
        };
        let chunks = chunk_text(DOC, true, settings, &Words).unwrap();
        assert!(chunks.len() >= 3, "{chunks:#?}");
        let chars: Vec<char> = DOC.chars().collect();
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.position as usize, i);
            assert!(chunk.tokens <= 14, "{chunk:?}");
            let at_offsets: String = chars[chunk.start..chunk.end].iter().collect();
            assert_eq!(at_offsets, chunk.text);
        }
        let usage = chunks
            .iter()
            .find(|c| c.text.contains("Start the program"))
            .unwrap();
        assert_eq!(usage.heading_path, ["Guide", "Usage"]);
        let fence = chunks.iter().find(|c| c.text.contains("curl")).unwrap();
        assert_eq!(fence.heading_path, ["Guide", "Install"]);
        assert!(
            fence.text.contains("```sh"),
            "a code block stays whole: {fence:?}"
        );
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let text = (0..120)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let settings = ChunkSettings {
            max_tokens: 20,
            overlap_tokens: 5,
        };
        let chunks = chunk_text(&text, false, settings, &Words).unwrap();
        assert!(chunks.len() > 5);
        for pair in chunks.windows(2) {
            assert!(pair[1].start < pair[0].end, "chunks overlap: {pair:?}");
            assert!(pair[1].start > pair[0].start);
        }
        assert_eq!(chunks.last().unwrap().end, text.chars().count());
    }
}
