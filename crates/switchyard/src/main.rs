//! The `switchyard` command: serve the gateway, manage local models, chat.

mod assembly;
mod backends;
mod chat;
mod context;
mod governance;
mod ingest;
mod logging;
mod models;
mod retrieval;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Each request allocates and frees many small buffers (headers, JSON,
/// labels) across threads; glibc's allocator spent about a fifth of the
/// gateway's CPU on them under load (perf, `bench/load.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard: an LLM-serving gateway.
///
/// One fast binary in front of remote model providers and local GGUF models,
/// speaking OpenAI's API. With no configuration it serves the local model
/// smollm2-135m-instruct on http://127.0.0.1:8080/v1.
#[derive(Parser)]
#[command(name = "switchyard", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr [default: text, or `[telemetry] log_format`].
    #[arg(long, global = true, value_enum, env = "SWITCHYARD_LOG_FORMAT")]
    log_format: Option<logging::LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway's HTTP server.
    ///
    /// Stops on SIGINT or SIGTERM after in-flight requests finish (within the
    /// configured grace period). Log verbosity follows RUST_LOG (e.g.
    /// RUST_LOG=debug).
    Serve {
        /// TOML configuration file; without one the default local model is served.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the configuration (port 0 picks a free port).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
    },
    /// Download and list local models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Chat with a model from the terminal, streaming its answers.
    ///
    /// Type a message and press Enter. /reset starts a new conversation,
    /// /exit (or Ctrl-D) quits.
    Chat {
        /// Model to talk to.
        #[arg(long, short, default_value = switchyard_config::DEFAULT_MODEL)]
        model: String,
        /// Base URL of an OpenAI-compatible API (a Switchyard server by default).
        #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
        url: String,
        /// A system prompt for the conversation.
        #[arg(long)]
        system: Option<String>,
        /// API key, sent as a bearer token.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Load documents into a collection of a running server.
    ///
    /// Walks the files and folders given and sends every .txt, .md, .html
    /// and .pdf file, with a progress bar. Document ids are paths relative
    /// to the argument they were found under: running the command again
    /// replaces changed documents and leaves unchanged ones. The collection
    /// is created when it does not exist.
    Ingest {
        /// The collection to load into.
        collection: String,
        /// Files and folders to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Base URL of the Switchyard server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// API key, sent as a bearer token.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download a model (every catalogue model when no name is given).
    ///
    /// Idempotent: a model already present and verified is not downloaded again.
    Pull {
        /// Catalogue name, e.g. smollm2-135m-instruct.
        name: Option<String>,
    },
    /// List the catalogue and what has been downloaded.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        logging::init(cli.log_format.unwrap_or(logging::LogFormat::Text));
    }
    let result = match cli.command {
        Command::Serve { config, listen } => serve::run(config.as_deref(), listen, cli.log_format),
        Command::Models(ModelsCommand::Pull { name }) => models::pull(name.as_deref()),
        Command::Models(ModelsCommand::List) => models::list(),
        Command::Chat {
            model,
            url,
            system,
            api_key,
        } => chat::run(chat::ChatOptions {
            model,
            url,
            system,
            api_key,
        }),
        Command::Ingest {
            collection,
            paths,
            url,
            api_key,
        } => ingest::run(ingest::IngestOptions {
            collection,
            paths,
            url,
            api_key,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error chain is the user-facing message; no backtrace.
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
