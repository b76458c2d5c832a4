//! Tool calls on a local model whose chat template knows nothing of tools.
//!
//! Such a model (SmolLM2, say) gets the tool definitions in its system
//! message and is asked to answer a call in the Hermes form the engine's
//! [`ToolCallParser`](crate::tools::ToolCallParser) reads:
//!
//! ```text
//! <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>
//! ```
//!
//! Earlier calls and their results are written the same way into the
//! conversation (results as `<tool_response>` user turns), since the
//! template would drop them. A grammar then keeps the call well-formed:
//! from the first token when a call is required (`tool_choice` `required`
//! or a named function), and from the moment the model writes
//! `<tool_call>` when it may choose (`auto`), so free text stays free.

use switchyard_core::{BackendError, ChatMessage, Role, ToolChoice, ToolDefinition};

/// The text that opens a call; also the lazy grammar's trigger.
pub(crate) const CALL_OPEN: &str = "<tool_call>";

/// How a call is kept well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallGrammar {
    /// The answer is one call, from its first token.
    Required(String),
    /// Free text until the model opens a call, then the call's grammar.
    OnOpen(String),
}

/// Writes `tools` into the system message and earlier calls and results
/// into the turns, for a template that renders neither.
pub(crate) fn describe_tools(messages: &mut Vec<ChatMessage>, tools: &[ToolDefinition]) {
    let mut prompt = String::from(
        "You can call functions to answer. Each function is described by a JSON object:\n",
    );
    for tool in tools {
        let description = serde_json::json!({
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        });
        prompt.push_str(&description.to_string());
        prompt.push('\n');
    }
    prompt.push_str(
        "To call a function, answer with only this, and nothing before or after it:\n<tool_call>{\"name\": \"FUNCTION NAME\", \"arguments\": {ARGUMENTS AS JSON}}</tool_call>\nA function's result comes back in <tool_response></tool_response>.",
    );
    for message in messages.iter_mut() {
        match message.role {
            Role::Assistant if !message.tool_calls.is_empty() => {
                let mut text = message.text();
                for call in std::mem::take(&mut message.tool_calls) {
                    // Name first, as the model is asked to write it.
                    let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments)
                    {
                        Ok(arguments) => arguments,
                        Err(_) => serde_json::Value::String(call.arguments),
                    };
                    let name = serde_json::Value::String(call.name);
                    text.push_str(&format!(
                        "{CALL_OPEN}{{\"name\": {name}, \"arguments\": {arguments}}}</tool_call>"
                    ));
                }
                *message = ChatMessage::new(Role::Assistant, text);
            }
            Role::Tool => {
                let text = format!("<tool_response>\n{}\n</tool_response>", message.text());
                *message = ChatMessage::new(Role::User, text);
            }
            _ => {}
        }
    }
    match messages.iter_mut().find(|m| m.role == Role::System) {
        Some(system) => {
            let text = format!("{}\n\n{prompt}", system.text());
            *system = ChatMessage::new(Role::System, text);
        }
        None => messages.insert(0, ChatMessage::new(Role::System, prompt)),
    }
}

/// The grammar of a call of one of `tools` (only the named one when
/// `choice` names it); `None` when `choice` is `none`.
pub(crate) fn call_grammar(
    tools: &[ToolDefinition],
    choice: Option<&ToolChoice>,
) -> Result<Option<CallGrammar>, BackendError> {
    let allowed: Vec<&ToolDefinition> = match choice {
        Some(ToolChoice::None) => return Ok(None),
        Some(ToolChoice::Tool(name)) => tools.iter().filter(|t| &t.name == name).collect(),
        Some(ToolChoice::Auto | ToolChoice::Required) | None => tools.iter().collect(),
    };
    // Written by hand, not built as a `Value`, so that `name` comes before
    // `arguments` (the grammar keeps the schema's property order, and a
    // model writes a call name first).
    let alternatives: Vec<String> = allowed
        .iter()
        .map(|tool| {
            format!(
                r#"{{"type":"object","properties":{{"name":{{"const":{}}},"arguments":{}}},"required":["name","arguments"],"additionalProperties":false}}"#,
                serde_json::Value::String(tool.name.clone()),
                tool.parameters
            )
        })
        .collect();
    let schema = format!(r#"{{"anyOf":[{}]}}"#, alternatives.join(","));
    let body = llama_cpp_2::json_schema_to_grammar(&schema).map_err(|error| {
        BackendError::invalid_request(format!(
            "a tool's parameters cannot be enforced on a local model ({error})"
        ))
        .with_param("tools")
    })?;
    let grammar = format!(
        "root ::= \"{CALL_OPEN}\" call-body \"</tool_call>\"\n{}",
        rename_root(&body, "call-body")
    );
    Ok(Some(match choice {
        Some(ToolChoice::Required | ToolChoice::Tool(_)) => CallGrammar::Required(grammar),
        _ => CallGrammar::OnOpen(grammar),
    }))
}

/// `grammar` with its start rule renamed, so that it can be a part of a
/// larger one.
fn rename_root(grammar: &str, name: &str) -> String {
    grammar
        .lines()
        .map(|line| match line.strip_prefix("root ::=") {
            Some(rest) => format!("{name} ::={rest}"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_core::ToolCall;

    fn tools() -> Vec<ToolDefinition> {
        vec![
            ToolDefinition {
                name: "get_weather".into(),
                description: Some("Current weather of a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}),
            },
            ToolDefinition {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {"zone": {"type": "string"}}}),
            },
        ]
    }

    #[test]
    fn definitions_calls_and_results_are_written_into_the_conversation() {
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }];
        let mut result = ChatMessage::new(Role::Tool, "3 degrees");
        result.tool_call_id = Some("call_1".into());
        let mut messages = vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Weather in Oslo?"),
            call,
            result,
        ];
        describe_tools(&mut messages, &tools());
        let system = messages[0].text();
        assert!(system.starts_with("Be brief.\n\n"), "{system}");
        assert!(system.contains(r#""name":"get_weather""#), "{system}");
        assert!(system.contains("<tool_call>"), "{system}");
        assert_eq!(
            messages[2].text(),
            r#"<tool_call>{"name": "get_weather", "arguments": {"city":"Oslo"}}</tool_call>"#
        );
        assert!(messages[2].tool_calls.is_empty());
        assert_eq!(messages[3].role, Role::User);
        assert_eq!(
            messages[3].text(),
            "<tool_response>\n3 degrees\n</tool_response>"
        );

        let mut without_system = vec![ChatMessage::new(Role::User, "hi")];
        describe_tools(&mut without_system, &tools());
        assert_eq!(without_system[0].role, Role::System);
        assert_eq!(without_system.len(), 2);
    }

    #[test]
    fn required_and_named_choices_constrain_from_the_start_auto_on_open() {
        let tools = tools();
        let Some(CallGrammar::Required(both)) =
            call_grammar(&tools, Some(&ToolChoice::Required)).unwrap()
        else {
            panic!("required is constrained from the first token");
        };
        assert!(
            both.starts_with("root ::= \"<tool_call>\" call-body"),
            "{both}"
        );
        assert!(both.contains("get_weather") && both.contains("get_time"));
        assert_eq!(both.matches("root ::=").count(), 1, "{both}");

        let Some(CallGrammar::Required(named)) =
            call_grammar(&tools, Some(&ToolChoice::Tool("get_time".into()))).unwrap()
        else {
            panic!("a named function is constrained from the first token");
        };
        assert!(named.contains("get_time") && !named.contains("get_weather"));

        assert!(matches!(
            call_grammar(&tools, Some(&ToolChoice::Auto)).unwrap(),
            Some(CallGrammar::OnOpen(_))
        ));
        assert!(matches!(
            call_grammar(&tools, None).unwrap(),
            Some(CallGrammar::OnOpen(_))
        ));
        assert_eq!(call_grammar(&tools, Some(&ToolChoice::None)).unwrap(), None);
    }
}
