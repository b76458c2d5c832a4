//! Tool calls out of a local model's text.
//!
//! Templates that render tools (Qwen 2.5, Hermes, SmolLM3 and others of the
//! Hermes family) teach the model to answer a call as
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. This parser
//! watches the generated text, holds back anything that may be the start of
//! such a block, and turns each complete block into a tool call. Text that
//! turns out not to be a well-formed call is passed on as text, so nothing
//! the model wrote is lost.

use serde::Deserialize;
use switchyard_core::{FinishReason, StreamEvent, ToolCallDelta};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

#[derive(Deserialize)]
struct CallBody {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

/// Splits generated text into plain text and tool calls.
#[derive(Debug, Default)]
pub(crate) struct ToolCallParser {
    /// Text that may still turn out to open a block.
    held: String,
    /// Inside a block: its text so far.
    call: Option<String>,
    calls: u32,
}

impl ToolCallParser {
    /// Feeds generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let mut rest = text.to_owned();
        loop {
            match &mut self.call {
                Some(body) => {
                    body.push_str(&rest);
                    let Some(end) = body.find(CLOSE) else {
                        return events;
                    };
                    let after = body[end + CLOSE.len()..].to_owned();
                    let inner = body[..end].to_owned();
                    self.call = None;
                    events.push(self.finish_block(&inner));
                    rest = after;
                }
                None => {
                    self.held.push_str(&rest);
                    if let Some(start) = self.held.find(OPEN) {
                        let before = self.held[..start].to_owned();
                        let after = self.held[start + OPEN.len()..].to_owned();
                        self.held.clear();
                        if !before.is_empty() {
                            events.push(StreamEvent::Delta(before));
                        }
                        self.call = Some(String::new());
                        rest = after;
                        continue;
                    }
                    let keep = partial_open_suffix(&self.held);
                    let cut = self.held.len() - keep;
                    if cut > 0 {
                        events.push(StreamEvent::Delta(self.held[..cut].to_owned()));
                        self.held.drain(..cut);
                    }
                    return events;
                }
            }
        }
    }

    /// Generation ended: flushes held text and says why it ended (tool
    /// calls, when the model made any).
    pub fn finish(&mut self, reason: FinishReason) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let mut text = std::mem::take(&mut self.held);
        if let Some(body) = self.call.take() {
            // An unterminated block: the model's own words, passed on.
            text.push_str(OPEN);
            text.push_str(&body);
        }
        if !text.is_empty() {
            events.push(StreamEvent::Delta(text));
        }
        let reason = if self.calls > 0 && reason == FinishReason::Stop {
            FinishReason::ToolCalls
        } else {
            reason
        };
        events.push(StreamEvent::Finish(reason));
        events
    }

    fn finish_block(&mut self, inner: &str) -> StreamEvent {
        match serde_json::from_str::<CallBody>(inner.trim()) {
            Ok(call) => {
                let arguments = match call.arguments {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => "{}".to_owned(),
                    other => other.to_string(),
                };
                let index = self.calls;
                self.calls += 1;
                StreamEvent::ToolCall(ToolCallDelta {
                    index,
                    id: Some(format!("call_{}", uuid::Uuid::new_v4().simple())),
                    name: Some(call.name),
                    arguments,
                })
            }
            Err(_) => StreamEvent::Delta(format!("{OPEN}{inner}{CLOSE}")),
        }
    }
}

/// Length of the longest tail of `text` that begins `<tool_call>`.
fn partial_open_suffix(text: &str) -> usize {
    (1..OPEN.len().min(text.len() + 1))
        .rev()
        .find(|&len| {
            let start = text.len() - len;
            text.is_char_boundary(start) && OPEN.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> Vec<StreamEvent> {
        let mut parser = ToolCallParser::default();
        let mut events: Vec<StreamEvent> = pieces.iter().flat_map(|p| parser.push(p)).collect();
        events.extend(parser.finish(FinishReason::Stop));
        events
    }

    fn text(events: &[StreamEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_text_passes_through() {
        let events = run(&["Hello ", "world <", "b>"]);
        assert_eq!(text(&events), "Hello world <b>");
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish(FinishReason::Stop))
        );
    }

    #[test]
    fn a_call_split_across_tokens_becomes_one_tool_call() {
        let events = run(&[
            "Let me check.<tool",
            "_call>{\"name\": \"weather\", ",
            "\"arguments\": {\"city\": \"Oslo\"}}</tool_",
            "call>",
        ]);
        assert_eq!(text(&events), "Let me check.");
        let calls: Vec<&ToolCallDelta> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name.as_deref(), Some("weather"));
        assert_eq!(calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert!(calls[0].id.as_deref().unwrap().starts_with("call_"));
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish(FinishReason::ToolCalls))
        );
    }

    #[test]
    fn two_calls_get_two_indexes() {
        let events = run(&[
            "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\"}</tool_call>",
        ]);
        let indexes: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(c) => Some(c.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![0, 1]);
    }

    #[test]
    fn malformed_or_unfinished_blocks_stay_text() {
        let events = run(&["<tool_call>not json</tool_call>"]);
        assert_eq!(text(&events), "<tool_call>not json</tool_call>");
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish(FinishReason::Stop))
        );
        let events = run(&["ok <tool_call>{\"name\":"]);
        assert_eq!(text(&events), "ok <tool_call>{\"name\":");
    }

    #[test]
    fn length_finish_is_kept() {
        let mut parser = ToolCallParser::default();
        let events = parser.finish(FinishReason::Length);
        assert_eq!(events, vec![StreamEvent::Finish(FinishReason::Length)]);
    }
}
