//! Conversation items: what a stored response keeps of its input and its
//! output, in Switchyard's own form (not any API's), and how a history of
//! them becomes the messages of a chat request for any backend.

use serde::{Deserialize, Serialize};

use crate::chat::{ChatMessage, ContentPart, Role, ToolCall};

/// One item of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A message: instructions, a user's turn or the model's text.
    Message {
        /// The item's id (`msg_…`).
        id: String,
        /// Who wrote it.
        role: Role,
        /// Text and images, in order.
        content: Vec<ContentPart>,
    },
    /// A function call the model made.
    FunctionCall {
        /// The item's id (`fc_…`).
        id: String,
        /// The id its output answers to.
        call_id: String,
        /// The function.
        name: String,
        /// Its arguments as JSON text.
        arguments: String,
    },
    /// What the client's function returned.
    FunctionCallOutput {
        /// The item's id (`fco_…`).
        id: String,
        /// The call it answers.
        call_id: String,
        /// The result, as text.
        output: String,
    },
}

impl Item {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. } => id,
        }
    }
}

/// The chat messages a history of items stands for: function calls join
/// the assistant message before them (or one of their own), function
/// outputs become tool messages.
pub fn items_to_messages(items: &[Item]) -> Vec<ChatMessage> {
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Message { role, content, .. } => messages.push(ChatMessage {
                role: *role,
                content: content.clone(),
                name: None,
                tool_call_id: None,
                tool_calls: Vec::new(),
            }),
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let call = ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => messages.push(ChatMessage {
                        role: Role::Assistant,
                        content: Vec::new(),
                        name: None,
                        tool_call_id: None,
                        tool_calls: vec![call],
                    }),
                }
            }
            Item::FunctionCallOutput {
                call_id, output, ..
            } => messages.push(ChatMessage {
                role: Role::Tool,
                content: vec![ContentPart::Text(output.clone())],
                name: None,
                tool_call_id: Some(call_id.clone()),
                tool_calls: Vec::new(),
            }),
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: &str, role: Role, text: &str) -> Item {
        Item::Message {
            id: id.into(),
            role,
            content: vec![ContentPart::Text(text.into())],
        }
    }

    #[test]
    fn calls_join_the_answer_before_them_and_outputs_become_tool_messages() {
        let items = vec![
            text("m1", Role::User, "weather in Oslo?"),
            text("m2", Role::Assistant, "Let me look."),
            Item::FunctionCall {
                id: "fc1".into(),
                call_id: "call_1".into(),
                name: "weather".into(),
                arguments: "{\"city\":\"Oslo\"}".into(),
            },
            Item::FunctionCall {
                id: "fc2".into(),
                call_id: "call_2".into(),
                name: "time".into(),
                arguments: "{}".into(),
            },
            Item::FunctionCallOutput {
                id: "o1".into(),
                call_id: "call_1".into(),
                output: "rain".into(),
            },
            Item::FunctionCall {
                id: "fc3".into(),
                call_id: "call_3".into(),
                name: "weather".into(),
                arguments: "{}".into(),
            },
        ];
        let messages = items_to_messages(&items);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1].role, Role::Assistant);
        assert_eq!(messages[1].tool_calls.len(), 2);
        assert_eq!(messages[2].role, Role::Tool);
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
        // A call after a tool message opens an assistant message of its own.
        assert_eq!(messages[3].role, Role::Assistant);
        assert!(messages[3].content.is_empty());
        assert_eq!(messages[3].tool_calls[0].id, "call_3");
    }

    #[test]
    fn items_round_trip_through_json() {
        let item = Item::FunctionCallOutput {
            id: "o1".into(),
            call_id: "c".into(),
            output: "42".into(),
        };
        let json = serde_json::to_string(&item).unwrap_or_default();
        assert!(json.contains("\"kind\":\"function_call_output\""));
        assert_eq!(serde_json::from_str::<Item>(&json).ok(), Some(item));
    }
}
