//! Renders a conversation into a prompt with the model's own chat template
//! (the Jinja source in the GGUF's `tokenizer.chat_template`), the way
//! Hugging Face's tokenizers do, so that local models see exactly the format
//! they were trained on.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Error as JinjaError, ErrorKind as JinjaErrorKind, context};
use serde::Serialize;
use switchyard_core::{ChatMessage, ToolDefinition};

/// ChatML, for GGUF files that carry no template of their own.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

/// A chat template failed to compile or to render.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

impl From<JinjaError> for TemplateError {
    fn from(error: JinjaError) -> Self {
        // `{:#}` includes the template line that failed.
        TemplateError(format!("{error:#}"))
    }
}

/// A compiled chat template plus the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    supports_tools: bool,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<TemplateToolCall<'a>>,
}

/// Tool calls as Hugging Face templates expect them: arguments as an object.
#[derive(Serialize)]
struct TemplateToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: TemplateFunction<'a>,
}

#[derive(Serialize)]
struct TemplateFunction<'a> {
    name: &'a str,
    arguments: serde_json::Value,
}

/// Tool definitions as Hugging Face templates expect them.
#[derive(Serialize)]
struct TemplateTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a ToolDefinition,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja) with the model's BOS and EOS token text.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these Jinja settings;
        // without them many templates emit stray newlines and indentation.
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        // Templates are written against Python's Jinja and call Python
        // string methods (`.strip()`, `.startswith()`, ...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(JinjaErrorKind::InvalidOperation, message))
            },
        );
        let source = source.into();
        // Templates written for tool use read a `tools` variable; the others
        // would silently drop the definitions.
        let supports_tools = source.contains("tools");
        env.add_template_owned(TEMPLATE_NAME, source)?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            supports_tools,
        })
    }

    /// The ChatML template, used when a model ships none.
    pub fn chatml(bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        Self::new(CHATML, bos_token, eos_token)
    }

    /// Whether the template renders tool definitions.
    pub fn supports_tools(&self) -> bool {
        self.supports_tools
    }

    /// The BOS token's text, as the template sees it.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders the conversation (and the tools, when given) and opens the
    /// assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDefinition],
    ) -> Result<String, TemplateError> {
        let messages: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.as_str(),
                content: m.text(),
                name: m.name.as_deref(),
                tool_call_id: m.tool_call_id.as_deref(),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|call| TemplateToolCall {
                        id: &call.id,
                        kind: "function",
                        function: TemplateFunction {
                            name: &call.name,
                            arguments: serde_json::from_str(&call.arguments).unwrap_or_else(|_| {
                                serde_json::Value::String(call.arguments.clone())
                            }),
                        },
                    })
                    .collect(),
            })
            .collect();
        let tools: Vec<TemplateTool<'_>> = tools
            .iter()
            .map(|function| TemplateTool {
                kind: "function",
                function,
            })
            .collect();
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let prompt = if tools.is_empty() {
            template.render(context! {
                messages => Serde(&messages),
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })?
        } else {
            template.render(context! {
                messages => Serde(&messages),
                tools => Serde(&tools),
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })?
        };
        Ok(prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::Role;

    /// SmolLM2-Instruct's template, as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_adds_default_system_prompt() {
        let template = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let prompt = template
            .render(&[ChatMessage::new(Role::User, "Hi")], &[])
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_bos_work() {
        let source = "{{ bos_token }}{% for m in messages %}[{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let prompt = template
            .render(&[ChatMessage::new(Role::User, "  spaced  ")], &[])
            .unwrap();
        assert_eq!(prompt, "<s>[USER] spaced\n");
    }

    #[test]
    fn raise_exception_surfaces_the_template_message() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let error = template
            .render(&[ChatMessage::new(Role::Assistant, "x")], &[])
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("Conversation must start with user"),
            "{error}"
        );
    }

    /// A Hermes-style template (as Qwen 2.5 ships), cut down to what
    /// matters here: tools in the system turn, calls and results in history.
    const HERMES: &str = "{% if tools %}<|im_start|>system\n<tools>{% for tool in tools %}{{ tool.function | tojson }}{% endfor %}</tools><|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for call in m.tool_calls %}<tool_call>{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";

    #[test]
    fn tool_templates_see_definitions_and_calls() {
        let template = ChatTemplate::new(HERMES, "", "").unwrap();
        assert!(template.supports_tools());
        let tool = ToolDefinition {
            name: "weather".into(),
            description: Some("Weather now".into()),
            parameters: serde_json::json!({"type": "object"}),
        };
        let mut asked = ChatMessage::new(Role::Assistant, "");
        asked.tool_calls = vec![switchyard_core::ToolCall {
            id: "c1".into(),
            name: "weather".into(),
            arguments: "{\"city\":\"Oslo\"}".into(),
        }];
        let prompt = template
            .render(&[ChatMessage::new(Role::User, "Oslo?"), asked], &[tool])
            .unwrap();
        assert!(prompt.contains("<tools>{\"name\": \"weather\""), "{prompt}");
        assert!(
            prompt.contains("<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>"),
            "{prompt}"
        );
        let plain = ChatTemplate::new(SMOLLM2, "", "").unwrap();
        assert!(!plain.supports_tools());
    }

    #[test]
    fn broken_template_is_a_clear_error() {
        let error = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(error.to_string().starts_with("chat template:"), "{error}");
    }
}
