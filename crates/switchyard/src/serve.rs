//! `switchyard serve`: configuration → backends → gateway → HTTP server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use switchyard_adapters::{OpenAiAdapter, OpenAiConfig};
use switchyard_api::ApiConfig;
use switchyard_config::{Config, LocalModelConfig, ModelConfig, OpenAiModelConfig};
use switchyard_core::{ChatBackend, SamplingParams};
use switchyard_engine::{EngineConfig, LocalEngine};
use switchyard_models::ModelStore;
use switchyard_orchestration::Gateway;
use tokio::net::TcpListener;
use tracing::{error, info};

/// Where the configuration came from, for error messages.
fn origin(path: Option<&Path>) -> String {
    path.map_or_else(
        || "the built-in default configuration".to_owned(),
        |p| format!("config file {}", p.display()),
    )
}

pub fn run(config_path: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: Option<&Path>) -> anyhow::Result<()> {
    let origin = origin(config_path);
    let mut gateway = Gateway::new();
    let mut engines = Vec::new();
    for (name, model) in &config.models {
        let backend: Arc<dyn ChatBackend> = match model {
            ModelConfig::Local(local) => {
                let engine = Arc::new(
                    start_local(name, local)
                        .with_context(|| format!("{origin}: field `models.{name}`"))?,
                );
                engines.push((name.clone(), engine.clone()));
                engine
            }
            ModelConfig::Openai(remote) => Arc::new(
                build_openai(name, remote)
                    .with_context(|| format!("{origin}: field `models.{name}`"))?,
            ),
        };
        gateway.add_model(name.clone(), backend);
    }
    let gateway = Arc::new(gateway);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = switchyard_api::router(
        gateway.clone(),
        &ApiConfig {
            max_body_bytes: config.max_body_bytes,
        },
    );
    {
        // The one line a script (or a test) waits for: where to connect.
        let mut out = std::io::stdout().lock();
        writeln!(out, "switchyard listening on http://{addr}")?;
        out.flush()?;
    }
    info!(%addr, models = config.models.len(), "listening");

    // Models load in the background: /healthz answers at once, /readyz once
    // they are loaded. A model that cannot load stops the server.
    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    tokio::spawn(async move {
        for (name, engine) in engines {
            if let Err(error) = engine.wait_ready().await {
                let _ =
                    load_failed_tx.send(anyhow!("local model `{name}` failed to load: {error}"));
                return;
            }
        }
        info!("all models loaded; ready");
    });

    let (failure_tx, mut failure_rx) = tokio::sync::watch::channel(None::<String>);
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            Ok(error) = load_failed_rx => {
                error!("{error:#}");
                let _ = failure_tx.send(Some(format!("{error:#}")));
            }
        }
    };
    switchyard_api::serve(
        listener,
        app,
        shutdown,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await?;
    if let Some(message) = failure_rx.borrow_and_update().clone() {
        bail!(message);
    }
    info!("stopped");
    Ok(())
}

/// Resolves where a local model's file is and starts its engine.
fn start_local(name: &str, local: &LocalModelConfig) -> anyhow::Result<LocalEngine> {
    let mut default_sampling = SamplingParams {
        temperature: local.temperature,
        top_p: local.top_p,
        ..SamplingParams::default()
    };
    let path: PathBuf = match &local.path {
        Some(path) => path.clone(),
        None => {
            let catalog_name = local.catalog.as_deref().unwrap_or(name);
            let store = ModelStore::default_location()?;
            let (entry, path) = store.resolve(catalog_name).with_context(|| {
                "not in the model catalogue; set `path` to a GGUF file or `catalog` to a catalogue name"
            })?;
            if !store.is_present(entry) {
                bail!(
                    "the model `{catalog_name}` is not downloaded yet; run `switchyard models pull {catalog_name}`"
                );
            }
            default_sampling.temperature = default_sampling.temperature.or(entry.temperature);
            default_sampling.top_p = default_sampling.top_p.or(entry.top_p);
            path
        }
    };
    let engine = LocalEngine::start(EngineConfig {
        model_path: path,
        context_length: local.context_length,
        parallel: local.parallel,
        threads: local.threads,
        queue_capacity: local.queue,
        batch_size: local.batch_size,
        gpu_layers: local.gpu_layers,
        default_sampling,
    })?;
    Ok(engine)
}

fn build_openai(name: &str, remote: &OpenAiModelConfig) -> anyhow::Result<OpenAiAdapter> {
    let adapter = OpenAiAdapter::new(OpenAiConfig {
        base_url: remote.base_url.clone(),
        api_key: remote.api_key.clone(),
        upstream_model: remote
            .upstream_model
            .clone()
            .unwrap_or_else(|| name.to_owned()),
        headers: remote
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        connect_timeout: Duration::from_millis(remote.connect_timeout_ms),
        first_byte_timeout: Duration::from_millis(remote.first_byte_timeout_ms),
        total_timeout: Duration::from_millis(remote.total_timeout_ms),
    })?;
    Ok(adapter)
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
