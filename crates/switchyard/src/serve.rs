//! `switchyard serve`: configuration → backends → gateway → HTTP server,
//! and configuration reloads (SIGHUP, or the file changing) while serving.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use futures::future::BoxFuture;
use switchyard_api::ApiConfig;
use switchyard_config::Config;
use switchyard_orchestration::Gateway;
use switchyard_pipeline::{Pipeline, Snapshot};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::assembly::{Reusable, assemble};
use crate::logging::{self, LogFormat};
use switchyard_guardrails::Guardrails;
use switchyard_pipeline::models::CurrentGateway;

/// How often the configuration file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the configuration came from, for error messages.
fn origin(path: Option<&Path>) -> String {
    path.map_or_else(
        || "the built-in default configuration".to_owned(),
        |p| format!("config file {}", p.display()),
    )
}

pub fn run(
    config_path: Option<&Path>,
    listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
) -> anyhow::Result<()> {
    let loaded = match config_path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let mut config = match loaded {
        Ok(config) => config,
        Err(error) => {
            // Logs are set up from the configuration; one that cannot be
            // read is reported in the default format.
            logging::init(log_format.unwrap_or(LogFormat::Text));
            return Err(error.into());
        }
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let format = log_format
        .or(config.telemetry.log_format.map(LogFormat::from))
        .unwrap_or(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(worker_threads(config.worker_threads))
        .thread_name("switchyard-io")
        .build()
        .context("cannot start the async runtime")?;
    let telemetry = {
        let _entered = runtime.enter();
        match logging::init_serving(format, &config.telemetry) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                logging::init(format);
                return Err(error);
            }
        }
    };
    let served = runtime.block_on(serve(config, config_path.map(Path::to_path_buf), listen));
    // Queued spans go out while the runtime (and so the gRPC channel) lives.
    telemetry.shutdown();
    served
}

/// Runtime threads: the configured count, else `TOKIO_WORKER_THREADS`, else
/// one fewer than the cores. Loopback proxying spends most of its time in
/// the kernel; on a 2-core machine a second runtime thread only competes
/// with it (measured with `bench/load.sh`: 1 thread served 32.8k req/s and
/// 2 threads 19.7k).
fn worker_threads(configured: Option<usize>) -> usize {
    configured
        .or_else(|| {
            std::env::var("TOKIO_WORKER_THREADS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &usize| n > 0)
        })
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1)
        })
}

/// Waits for every load; the first failure names its model.
async fn all_loaded(
    loading: Vec<(String, BoxFuture<'static, Result<(), String>>)>,
) -> anyhow::Result<()> {
    for (name, ready) in loading {
        ready
            .await
            .map_err(|error| anyhow!("model `{name}` failed to load: {error}"))?;
    }
    Ok(())
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    listen_override: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let origin = origin(config_path.as_deref());
    let assembled = assemble(&config, &origin, &Reusable::default()).await?;
    let governance = crate::governance::build(&config).await?;
    // Ingestion embeds through whatever gateway is in force when it runs;
    // the pipeline exists only once retrieval does, so it is found through
    // a cell (weakly: the pipeline holds retrieval, which holds this).
    let pipeline_cell: Arc<OnceLock<Weak<Pipeline>>> = Arc::new(OnceLock::new());
    let current_gateway = current_gateway(pipeline_cell.clone());
    let retrieval = crate::retrieval::build(&config, None, &current_gateway)?;
    if let Some(retrieval) = &retrieval {
        crate::retrieval::warm(retrieval.clone());
    }
    let pipeline = Pipeline::new(
        governance.clone(),
        Snapshot {
            gateway: Arc::new(assembled.gateway),
            policy: governance.policy(),
            retrieval,
            guardrails: Arc::new(guardrails(&config, "the configuration")?),
            fitting: Arc::new(crate::context::fitting(&config)),
            keeping: crate::context::keeping(&config),
            tools: Arc::new(switchyard_tools::Toolbox::from_config(&config.tools, None)),
            code_assistants: config.code_assistants.clone(),
        },
    );
    crate::context::purge_in_background(pipeline.clone());
    let _ = pipeline_cell.set(Arc::downgrade(&pipeline));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let limits = listener_limits(&config.listener);
    // TLS files are checked before the address is announced: a bad
    // certificate stops start-up, naming its file.
    let listening = match &config.tls {
        Some(tls) => Listening::Tls(
            switchyard_api::tls::TlsListener::new(listener, tls_files(tls), &limits)
                .map_err(|e| anyhow!("{origin}: tls: {e}"))?,
        ),
        None => Listening::Plain(listener),
    };
    let app = switchyard_api::router(
        pipeline.clone(),
        &ApiConfig {
            max_body_bytes: config.max_body_bytes,
            public_metrics: config.telemetry.public_metrics,
        },
    );
    {
        // The one line a script (or a test) waits for: where to connect.
        let mut out = std::io::stdout().lock();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        writeln!(out, "switchyard listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    info!(%addr, models = config.models.len(), routes = config.routes.len(), "listening");

    // Models load in the background: /healthz answers at once, /readyz once
    // they are loaded. A model that cannot load stops the server.
    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let loading = assembled.loading;
    tokio::spawn(async move {
        match all_loaded(loading).await {
            Ok(()) => info!("all models loaded; ready"),
            Err(error) => {
                let _ = load_failed_tx.send(error);
            }
        }
    });

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    if let Some(path) = config_path {
        tokio::spawn(watch_config(
            path,
            config,
            listen_override,
            assembled.reusable,
            pipeline.clone(),
            current_gateway,
        ));
    }

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
    match listening {
        Listening::Tls(tls) => switchyard_api::serve_tls(tls, app, shutdown, grace, limits).await,
        Listening::Plain(tcp) => switchyard_api::serve(tcp, app, shutdown, grace, limits).await,
    }
    // Every completed request's ledger row reaches the database before exit.
    governance.ledger().close().await;
    if let Some(message) = failure_rx.borrow_and_update().clone() {
        bail!(message);
    }
    info!("stopped");
    Ok(())
}

/// The socket requests arrive on.
enum Listening {
    Plain(TcpListener),
    Tls(switchyard_api::tls::TlsListener),
}

/// What `[listener]` allows a connection.
fn listener_limits(listener: &switchyard_config::ListenerConfig) -> switchyard_api::Limits {
    switchyard_api::Limits {
        max_connections: listener.max_connections,
        header_read_timeout: Duration::from_secs(listener.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(listener.idle_timeout_secs),
        http2_max_streams: listener.http2_max_streams,
        write_timeout: Duration::from_secs(listener.write_timeout_secs),
    }
}

/// Where `[tls]` says the listener's certificates are.
fn tls_files(tls: &switchyard_config::TlsConfig) -> switchyard_api::tls::TlsFiles {
    switchyard_api::tls::TlsFiles {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        client_ca: tls.client_ca.clone(),
        client_certificate_required: tls.client_certificate_required(),
        handshake_timeout: Duration::from_secs(tls.handshake_timeout_secs),
    }
}

/// The file's identity for change detection.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The gateway in force, for work outside requests (ingestion jobs). After
/// the pipeline is gone (shutting down) an empty gateway answers: its
/// calls fail with "not found" instead of keeping old models alive.
fn current_gateway(cell: Arc<OnceLock<Weak<Pipeline>>>) -> CurrentGateway {
    Arc::new(move || match cell.get().and_then(Weak::upgrade) {
        Some(pipeline) => pipeline.snapshot().gateway.clone(),
        None => Arc::new(Gateway::empty()),
    })
}

/// The settings a reload cannot apply, by name: they are read when the
/// server starts.
fn needs_restart(current: &Config, next: &Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if next.listen != current.listen {
        fields.push("listen");
    }
    if next.tls != current.tls {
        fields.push("tls");
    }
    if next.listener != current.listener {
        fields.push("[listener]");
    }
    if next.max_body_bytes != current.max_body_bytes {
        fields.push("max_body_bytes");
    }
    if next.worker_threads != current.worker_threads {
        fields.push("worker_threads");
    }
    if next.shutdown_grace_secs != current.shutdown_grace_secs {
        fields.push("shutdown_grace_secs");
    }
    if next.telemetry != current.telemetry {
        fields.push("[telemetry]");
    }
    fields.extend(crate::governance::needs_restart(current, next));
    if crate::retrieval::needs_restart(&current.retrieval, &next.retrieval) {
        fields.push("retrieval.embedding_model, chunk_tokens and chunk_overlap");
    }
    fields
}

/// Reloads on SIGHUP and when the file changes. A reload builds the new
/// snapshot (gateway, governance policy, retrieval) next to the old one,
/// waits for new local models to load, then puts it in force: requests in
/// flight finish on the snapshot they started on. Settings that only a
/// restart applies are named in a warning. A configuration that fails to
/// load or build is reported and ignored.
async fn watch_config(
    path: PathBuf,
    mut current: Config,
    listen_override: Option<SocketAddr>,
    mut reusable: Reusable,
    pipeline: Arc<Pipeline>,
    current_gateway: CurrentGateway,
) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            warn!(%error, "cannot listen for SIGHUP; reloads follow file changes only");
            None
        }
    };
    let mut last_stamp = stamp(&path);
    let mut ticker = tokio::time::interval(WATCH_INTERVAL);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let reason = tokio::select! {
            () = hup => "SIGHUP",
            _ = ticker.tick() => {
                let now = stamp(&path);
                if now == last_stamp {
                    continue;
                }
                last_stamp = now;
                "file changed"
            }
        };
        let mut next = match Config::load(&path) {
            Ok(config) => config,
            Err(error) => {
                error!(%reason, "configuration not reloaded: {error}");
                continue;
            }
        };
        if let Some(listen) = listen_override {
            next.listen = listen;
        }
        let origin = format!("config file {}", path.display());
        match reload(
            &pipeline,
            &current,
            &next,
            &origin,
            &reusable,
            &current_gateway,
        )
        .await
        {
            Ok(built) => reusable = built,
            Err(error) => {
                error!(%reason, "configuration not reloaded: {error:#}");
                continue;
            }
        }
        let restart = needs_restart(&current, &next);
        if !restart.is_empty() {
            warn!(
                "configuration reloaded, but these settings take effect on restart only: {}",
                restart.join(", ")
            );
        }
        current = next;
        info!(%reason, models = current.models.len(), routes = current.routes.len(), "configuration reloaded");
    }
}

/// Builds `next`'s snapshot and puts it in force; returns what the next
/// reload may reuse. Nothing changes when any part fails to build.
async fn reload(
    pipeline: &Pipeline,
    current: &Config,
    next: &Config,
    origin: &str,
    reusable: &Reusable,
    current_gateway: &CurrentGateway,
) -> anyhow::Result<Reusable> {
    let assembled = assemble(next, origin, reusable).await?;
    all_loaded(assembled.loading).await?;
    let governance = pipeline.governance();
    let policy = governance
        .make_policy(
            crate::governance::settings(next),
            crate::governance::prices(next),
        )
        .map_err(|e| anyhow!("{origin}: field `governance`: {e}"))?;
    let in_force = pipeline.snapshot();
    // Open collections keep the embeddings model and chunking they were
    // opened with: when those change, retrieval stays as it is until a
    // restart (the warning says so).
    let retrieval = if crate::retrieval::needs_restart(&current.retrieval, &next.retrieval) {
        in_force.retrieval.clone()
    } else {
        crate::retrieval::build(next, in_force.retrieval.as_deref(), current_gateway)?
    };
    let guardrails = Arc::new(guardrails(next, origin)?);
    pipeline.replace(Snapshot {
        gateway: Arc::new(assembled.gateway),
        policy,
        retrieval,
        guardrails,
        fitting: Arc::new(crate::context::fitting(next)),
        keeping: crate::context::keeping(next),
        tools: Arc::new(switchyard_tools::Toolbox::from_config(
            &next.tools,
            Some(&in_force.tools),
        )),
        code_assistants: next.code_assistants.clone(),
    });
    Ok(assembled.reusable)
}

/// The compiled `[guardrails]` policies (a pattern that does not compile
/// stops start-up, or the reload, naming its field).
fn guardrails(config: &Config, origin: &str) -> anyhow::Result<Guardrails> {
    Guardrails::from_config(&config.guardrails)
        .map_err(|e| anyhow!("{origin}: field `{}`: {}", e.field, e.message))
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
