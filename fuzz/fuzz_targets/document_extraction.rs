//! Uploaded documents: HTML, Markdown, plain text and PDF (the first byte
//! picks the format). Extraction returns text or an error, never a panic
//! that escapes it (the PDF reader's own panics are caught inside
//! `extract`, so only the default hook is silenced here, never the check).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_retrieval::{Format, extract};

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic, caught or not; an escaping
        // panic still aborts (the harness catches it and aborts itself).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let Some((&selector, content)) = data.split_first() else {
            return;
        };
        let format = match selector % 4 {
            0 => Format::Html,
            1 => Format::Markdown,
            2 => Format::Text,
            _ => Format::Pdf,
        };
        if let Ok(extracted) = extract(format, content) {
            assert!(!extracted.text.trim().is_empty(), "extracted text is empty");
        }
    }
);
