//! `switchyard-standin`: a stand-in OpenAI-compatible upstream for tests and
//! load benchmarks. See the library docs for the fault-injection headers.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use switchyard_standin::{StandinConfig, spawn};

/// A stand-in upstream that speaks OpenAI's chat completions wire format.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Delay before each response's headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Fixed reply text (default: echo the last user message).
    #[arg(long)]
    reply: Option<String>,
    /// Record requests for `GET /_standin/requests` (grows without bound).
    #[arg(long)]
    record: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let standin = spawn(
        args.listen,
        StandinConfig {
            latency: Duration::from_millis(args.latency_ms),
            token_delay: Duration::from_millis(args.token_delay_ms),
            reply: args.reply,
            record: args.record,
        },
    )
    .await?;
    tracing::info!(base_url = %standin.base_url(), "stand-in upstream listening");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
