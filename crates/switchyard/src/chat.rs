//! `switchyard chat`: a terminal conversation with any OpenAI-compatible
//! server, streamed token by token. It talks through the same `openai`
//! adapter the gateway uses for remote upstreams.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use switchyard_adapters::{Auth, OpenAiAdapter, OpenAiConfig};
use switchyard_core::{ChatBackend, ChatMessage, ChatRequest, Role, StreamEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What `switchyard chat` was asked to do.
pub struct ChatOptions {
    pub model: String,
    pub url: String,
    pub system: Option<String>,
    pub api_key: Option<String>,
}

pub fn run(options: ChatOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(converse(options))
}

fn fresh_history(system: &Option<String>) -> Vec<ChatMessage> {
    system
        .iter()
        .map(|s| ChatMessage::new(Role::System, s.clone()))
        .collect()
}

async fn converse(options: ChatOptions) -> anyhow::Result<()> {
    let mut config = OpenAiConfig::new(options.url.clone(), options.model.clone());
    config.auth = options
        .api_key
        .clone()
        .map_or(Auth::None, |key| Auth::Bearer(key.into()));
    config.timeouts.total = Duration::from_secs(3600);
    let client = OpenAiAdapter::new(config)?;
    let mut history = fresh_history(&options.system);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Chatting with {} at {}. /reset starts over, /exit or Ctrl-D quits.",
        options.model, options.url
    )?;
    loop {
        write!(out, "\n> ")?;
        out.flush()?;
        let Some(line) = lines.next_line().await? else {
            writeln!(out)?;
            return Ok(());
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history = fresh_history(&options.system);
                writeln!(out, "(new conversation)")?;
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new(Role::User, line));
        let request = ChatRequest::new(options.model.clone(), history.clone());
        let mut stream = match client.chat_stream(request).await {
            Ok(stream) => stream,
            Err(error) => {
                history.pop();
                writeln!(out, "error: {error}")?;
                continue;
            }
        };
        let mut answer = String::new();
        let mut failed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(StreamEvent::Delta(text)) => {
                    write!(out, "{text}")?;
                    out.flush()?;
                    answer.push_str(&text);
                }
                Ok(_) => {}
                Err(error) => {
                    writeln!(out, "\nerror: {error}")?;
                    failed = true;
                    break;
                }
            }
        }
        writeln!(out)?;
        if failed {
            history.pop();
        } else {
            history.push(ChatMessage::new(Role::Assistant, answer));
        }
    }
}
