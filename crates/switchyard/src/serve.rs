//! `switchyard serve`: configuration → backends → gateway → HTTP server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use switchyard_api::ApiConfig;
use switchyard_config::Config;
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
    let mut loading = Vec::new();
    for (name, model) in &config.models {
        let built = crate::backends::build(name, model)
            .with_context(|| format!("{origin}: field `models.{name}`"))?;
        if let Some(chat) = built.chat {
            gateway.add_chat_model(name.clone(), chat);
        }
        if let Some(embeddings) = built.embeddings {
            gateway.add_embedding_model(name.clone(), embeddings);
        }
        loading.push((name.clone(), built.ready));
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
        for (name, ready) in loading {
            if let Err(error) = ready.await {
                let _ = load_failed_tx.send(anyhow!("model `{name}` failed to load: {error}"));
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
