//! Logs and trace export: readable text by default, JSON lines for log
//! collectors, and, when an OTLP endpoint is configured, every request's
//! span tree exported to it.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use switchyard_config::{OtlpProtocol, TelemetryConfig};
use tracing_subscriber::filter::{self, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<switchyard_config::LogFormat> for LogFormat {
    fn from(format: switchyard_config::LogFormat) -> Self {
        match format {
            switchyard_config::LogFormat::Text => Self::Text,
            switchyard_config::LogFormat::Json => Self::Json,
        }
    }
}

/// What the log lines show, unless `RUST_LOG` says otherwise (llama.cpp's
/// loader is chatty).
const LOG_FILTER: &str = "info,llama-cpp-2=warn,llama_cpp_2=error";

/// What becomes spans: Switchyard's own spans down to debug (one per step
/// of a request), everything else from info.
const SPAN_FILTER: &str = "info,switchyard=debug,llama_cpp_2=off";

/// The installed trace export, to be flushed before the process exits.
#[must_use = "spans still queued are lost unless `shutdown` is called"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter. Blocks; call
    /// it while the async runtime is still alive (gRPC export runs on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "spans could not all be exported at shutdown");
        }
    }
}

/// Logs only, for the commands that serve nothing.
pub fn init(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(fmt_layer(format))
        .try_init();
}

/// Logs, and the OTLP span export when `telemetry` names an endpoint (or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does). Call within the async runtime: the
/// gRPC exporter binds to it.
pub fn init_serving(format: LogFormat, telemetry: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let endpoint = telemetry.otlp_endpoint.clone().or_else(|| {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
    });
    let Some(endpoint) = endpoint else {
        init(format);
        return Ok(Telemetry { provider: None });
    };
    let provider = tracer_provider(&endpoint, telemetry)?;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        // Source locations and thread ids say nothing an operator needs
        // and double the size of every span.
        .with_location(false)
        .with_threads(false)
        // Busy and idle times cost two clock reads per poll of every span;
        // the span's own start and end say what an operator needs.
        .with_tracked_inactivity(false)
        // Nothing here reads OpenTelemetry's current context (upstream
        // calls take it from the span), so entering a span need not
        // activate it; the crate name of each span is noise.
        .with_context_activation(false)
        .with_target(false)
        // A request whose trace is not sampled keeps its server span (it
        // carries the decision) and builds no others. The filter is a
        // dynamic one: its answer depends on the request, so it must not
        // be cached per callsite.
        .with_filter(
            EnvFilter::new(SPAN_FILTER).and(filter::dynamic_filter_fn(|metadata, _| {
                metadata.name() == "request" || switchyard_telemetry::trace::request_sampled()
            })),
        );
    tracing_subscriber::registry()
        .with(fmt_layer(format))
        .with(spans)
        .try_init()
        .context("cannot install the log and span layers")?;
    switchyard_telemetry::trace::set_export_enabled();
    tracing::info!(%endpoint, protocol = ?telemetry.otlp_protocol, "exporting spans over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(LOG_FILTER));
    // Colours only for a person at a terminal: escape codes in a log file
    // or a collector's pipe are noise, and writing them costs a measurable
    // share of a proxied request's CPU (bench/side_by_side.sh, perf).
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    }
}

fn tracer_provider(
    endpoint: &str,
    telemetry: &TelemetryConfig,
) -> anyhow::Result<SdkTracerProvider> {
    let timeout = Duration::from_secs(10);
    // The HTTP exporter's client is built on the same TLS stack as the
    // adapters', which needs its crypto provider chosen first.
    switchyard_adapters::ensure_crypto_provider();
    let exporter = match telemetry.otlp_protocol {
        OtlpProtocol::Grpc => {
            if endpoint.starts_with("https://") {
                bail!(
                    "OTLP over gRPC is plain-text here; for a TLS collector set otlp_protocol = \"http/protobuf\" (or export through a local collector)"
                );
            }
            let mut headers = http::HeaderMap::new();
            for (name, value) in &telemetry.otlp_headers {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("telemetry.otlp_headers: bad header name {name:?}"))?;
                let value = http::HeaderValue::from_str(value)
                    .with_context(|| format!("telemetry.otlp_headers: bad value for {name}"))?;
                headers.insert(name, value);
            }
            let metadata = MetadataMap::from_headers(headers);
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let protocol = if telemetry.otlp_protocol == OtlpProtocol::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            // The standard variable names the collector; the traces path is
            // added to it, as OpenTelemetry's SDKs do.
            let base = endpoint.trim_end_matches('/');
            let url = if base.ends_with("/v1/traces") {
                base.to_owned()
            } else {
                format!("{base}/v1/traces")
            };
            SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(url)
                .with_timeout(timeout)
                .with_headers(telemetry.otlp_headers.clone().into_iter().collect())
                .build()
        }
    }
    .context("cannot set up the OTLP span exporter")?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(telemetry.export_interval_ms))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            telemetry.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(telemetry.service_name.clone())
                .build(),
        )
        .build())
}
