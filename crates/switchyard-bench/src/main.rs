//! `switchyard-load`: drives an OpenAI-compatible endpoint (Switchyard, or
//! the upstream it fronts) and reports what a client sees: requests per
//! second and latency percentiles (p50, p90, p99, p99.9) of whole answers,
//! or of the time to the first streamed token; or holds many streams open
//! at once, for memory figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;

/// Load generator for OpenAI-compatible chat completions.
#[derive(Parser, Clone)]
#[command(version, about)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    url: String,
    /// Model to ask for.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Requests in flight at once.
    #[arg(long, short, default_value_t = 1)]
    concurrency: usize,
    /// How long to run, in seconds (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stream the answers and measure the time to the first token.
    #[arg(long)]
    stream: bool,
    /// Instead: open this many streams, hold them until each has sent its
    /// first token, report, then keep them open for `--hold` seconds.
    #[arg(long)]
    open_streams: Option<usize>,
    /// Seconds to hold the open streams.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    label: String,
    /// Ask through the Responses API (`/responses`) instead of chat
    /// completions, whole answers only.
    #[arg(long, conflicts_with = "stream")]
    responses: bool,
    /// With `--responses`: `store: false` (nothing kept).
    #[arg(long, requires = "responses")]
    no_store: bool,
}

fn body(args: &Args, stream: bool) -> Vec<u8> {
    if args.responses {
        return serde_json::to_vec(&serde_json::json!({
            "model": args.model,
            "input": "Say hello to the benchmark",
            "max_output_tokens": 16,
            "store": !args.no_store,
        }))
        .unwrap_or_default();
    }
    serde_json::to_vec(&serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
        "max_tokens": 16,
        "stream": stream,
    }))
    .unwrap_or_default()
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")
}

/// Sends one request; returns the latency that counts (whole answer, or the
/// first streamed token).
async fn one(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    stream: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    if !stream {
        response.bytes().await?;
        return Ok(started.elapsed());
    }
    let mut chunks = response.bytes_stream();
    let mut first = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if first.is_none() && chunk.windows(11).any(|w| w == b"\"content\":\"") {
            // The role chunk carries empty content; the first token does not.
            if !chunk.windows(13).any(|w| w == b"\"content\":\"\"}") {
                first = Some(started.elapsed());
            }
        }
    }
    first.context("the stream carried no token")
}

async fn run_load(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .tcp_nodelay(true)
        .build()?;
    let path = if args.responses {
        "responses"
    } else {
        "chat/completions"
    };
    let url = format!("{}/{path}", args.url.trim_end_matches('/'));
    let payload = body(&args, args.stream);
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, payload) = (client.clone(), url.clone(), payload.clone());
        let (recording, stop, errors) = (recording.clone(), stop.clone(), errors.clone());
        let stream = args.stream;
        workers.push(tokio::spawn(async move {
            let mut latencies = histogram()?;
            while !stop.load(Ordering::Relaxed) {
                match one(&client, &url, payload.clone(), stream).await {
                    Ok(latency) if recording.load(Ordering::Relaxed) => {
                        latencies.saturating_record(latency.as_micros() as u64);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = histogram()?;
    for worker in workers {
        total.add(worker.await??)?;
    }
    let what = if args.stream { "ttft" } else { "latency" };
    let line = format!(
        "{label:<22} c={c:<4} req/s {rps:>9.1}  {what} p50 {p50:>7}us p90 {p90:>7}us p99 {p99:>7}us p99.9 {p999:>7}us  errors {errors}\n",
        label = args.label,
        c = args.concurrency,
        rps = total.len() as f64 / elapsed.as_secs_f64(),
        p50 = total.value_at_quantile(0.5),
        p90 = total.value_at_quantile(0.9),
        p99 = total.value_at_quantile(0.99),
        p999 = total.value_at_quantile(0.999),
        errors = errors.load(Ordering::Relaxed),
    );
    tokio::io::stdout().write_all(line.as_bytes()).await?;
    Ok(())
}

async fn run_open_streams(args: Args, count: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(count)
        .build()?;
    let url = format!("{}/chat/completions", args.url.trim_end_matches('/'));
    let payload = body(&args, true);
    let started = Instant::now();
    let opened: Vec<_> = futures::stream::iter(0..count)
        .map(|_| {
            let (client, url, payload) = (client.clone(), url.clone(), payload.clone());
            async move {
                let response = client
                    .post(&url)
                    .body(payload)
                    .header("content-type", "application/json")
                    .send()
                    .await?
                    .error_for_status()?;
                let mut chunks = response.bytes_stream();
                // Wait for the first chunk: the stream is truly open.
                chunks.next().await.context("stream closed at once")??;
                anyhow::Ok(chunks)
            }
        })
        .buffer_unordered(count)
        .collect()
        .await;
    let open = opened.iter().filter(|s| s.is_ok()).count();
    let line = format!(
        "{} streams open after {:.1}s ({} failed); holding for {}s\n",
        open,
        started.elapsed().as_secs_f64(),
        count - open,
        args.hold
    );
    tokio::io::stdout().write_all(line.as_bytes()).await?;
    tokio::io::stdout().flush().await?;
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    drop(opened);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match args.open_streams {
        Some(count) => run_open_streams(args, count).await,
        None => run_load(args).await,
    }
}
