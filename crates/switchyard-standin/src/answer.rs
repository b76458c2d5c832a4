//! The stand-in's scripted answers, independent of any wire format: each
//! provider face reads its request into a [`Prompt`] and writes the
//! [`Answer`] in its own shape.

use switchyard_core::{FinishReason, Usage};

/// What a request asked, reduced to what the script looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prompt {
    /// Text of the last user message.
    pub last_user: String,
    /// When the conversation ends with a tool result: its text.
    pub tool_result: Option<String>,
    /// Images anywhere in the conversation.
    pub images: usize,
    /// Words in every message (the stand-in's token count).
    pub words: u32,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// The tool the request insists on, if any.
    pub forced_tool: Option<String>,
    /// False when the request offered tools but forbade calling them.
    pub tools_allowed: bool,
    /// Token limit.
    pub max_tokens: Option<u32>,
    /// Rounds of tool calls the conversation already holds (assistant
    /// turns that called tools).
    pub tool_rounds: u32,
    /// Scripted calls (name, arguments) and for how many rounds to make
    /// them.
    pub scripted_calls: Vec<(String, String)>,
    /// See `scripted_calls`.
    pub scripted_rounds: u32,
    /// Assistant turns the conversation already holds.
    pub assistant_turns: u32,
}

/// One piece of an answer, streamed as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A word of text (with its trailing space).
    Text(String),
    /// A tool call, its arguments streamed in fragments.
    Call {
        id: String,
        name: String,
        fragments: Vec<String>,
    },
}

/// The scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub pieces: Vec<Piece>,
    pub finish: FinishReason,
    pub usage: Usage,
}

impl Answer {
    /// All the text pieces, joined.
    pub fn text(&self) -> String {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                Piece::Call { .. } => None,
            })
            .collect()
    }

    /// The tool calls: id, name, whole arguments.
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Call {
                    id,
                    name,
                    fragments,
                } => Some((id.clone(), name.clone(), fragments.concat())),
                Piece::Text(_) => None,
            })
            .collect()
    }
}

pub(crate) fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Splits `text` into three fragments on character boundaries.
fn fragments(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    chars
        .chunks(third)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

/// The script.
pub(crate) fn answer(prompt: &Prompt, reply: Option<&str>) -> Answer {
    if !prompt.scripted_calls.is_empty() && prompt.tool_rounds < prompt.scripted_rounds {
        let pieces = prompt
            .scripted_calls
            .iter()
            .enumerate()
            .map(|(index, (name, arguments))| Piece::Call {
                id: format!("call_standin_{}_{index}", prompt.tool_rounds),
                name: name.clone(),
                fragments: fragments(arguments),
            })
            .collect();
        return Answer {
            pieces,
            finish: FinishReason::ToolCalls,
            usage: Usage::new(prompt.words, 1),
        };
    }
    let tool = prompt
        .forced_tool
        .clone()
        .or_else(|| prompt.tools.first().cloned());
    if prompt.tool_result.is_none()
        && prompt.tools_allowed
        && let Some(name) = tool
    {
        let arguments = serde_json::json!({ "query": prompt.last_user }).to_string();
        return Answer {
            pieces: vec![Piece::Call {
                id: format!("call_standin_{}", prompt.words),
                name,
                fragments: fragments(&arguments),
            }],
            finish: FinishReason::ToolCalls,
            usage: Usage::new(prompt.words, 1),
        };
    }
    let text = match (reply, &prompt.tool_result) {
        (Some(reply), _) => reply.to_owned(),
        (None, Some(result)) => format!("tool said: {result}"),
        (None, None) => match prompt.images {
            0 => format!("echo: {}", prompt.last_user),
            1 => format!("echo: {} (1 image)", prompt.last_user),
            n => format!("echo: {} ({n} images)", prompt.last_user),
        },
    };
    let limit = prompt.max_tokens.map_or(usize::MAX, |m| m as usize);
    let all: Vec<&str> = text.split_inclusive(' ').collect();
    let pieces: Vec<Piece> = all
        .iter()
        .take(limit)
        .map(|w| Piece::Text((*w).to_owned()))
        .collect();
    let finish = if pieces.len() < all.len() {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    let completion = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    Answer {
        pieces,
        finish,
        usage: Usage::new(prompt.words, completion),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_calls_tools_and_reads_results() {
        let mut prompt = Prompt {
            last_user: "hello there".into(),
            words: 2,
            tools_allowed: true,
            ..Prompt::default()
        };
        let plain = answer(&prompt, None);
        assert_eq!(plain.text(), "echo: hello there");
        assert_eq!(plain.finish, FinishReason::Stop);

        prompt.tools = vec!["lookup".into()];
        let call = answer(&prompt, None);
        assert_eq!(call.finish, FinishReason::ToolCalls);
        assert_eq!(
            call.calls(),
            vec![(
                "call_standin_2".into(),
                "lookup".into(),
                "{\"query\":\"hello there\"}".into()
            )]
        );

        prompt.tool_result = Some("42".into());
        assert_eq!(answer(&prompt, None).text(), "tool said: 42");
    }

    #[test]
    fn scripted_calls_come_for_their_rounds_then_the_answer() {
        let mut prompt = Prompt {
            last_user: "add".into(),
            words: 1,
            tools_allowed: true,
            scripted_calls: vec![
                ("calculator".into(), "{\"expression\":\"1+1\"}".into()),
                ("clock".into(), "{}".into()),
            ],
            scripted_rounds: 2,
            ..Prompt::default()
        };
        let first = answer(&prompt, None);
        assert_eq!(first.finish, FinishReason::ToolCalls);
        let calls = first.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1, "calculator");
        assert_eq!(calls[0].2, "{\"expression\":\"1+1\"}");
        assert_eq!(calls[1].0, "call_standin_0_1");
        prompt.tool_rounds = 1;
        prompt.tool_result = Some("2 | noon".into());
        assert_eq!(answer(&prompt, None).finish, FinishReason::ToolCalls);
        prompt.tool_rounds = 2;
        assert_eq!(answer(&prompt, None).text(), "tool said: 2 | noon");
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let prompt = Prompt {
            last_user: "one two three four".into(),
            max_tokens: Some(2),
            ..Prompt::default()
        };
        let cut = answer(&prompt, None);
        assert_eq!(cut.text(), "echo: one ");
        assert_eq!(cut.finish, FinishReason::Length);
    }
}
