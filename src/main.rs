//! The `spacet` binary: parses the command line, loads settings, runs the app.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use spacet::{app::App, clock::Clock, config::Settings};
use tokio_util::sync::CancellationToken;

/// SpaceT launch-booking service.
///
/// Settings come from built-in defaults, then config/default.yaml (or --config),
/// then environment variables (HTTP_PORT, GRPC_PORT, PG_DSN, ...: see the README).
/// Without PG_DSN an embedded PostgreSQL is started from the system binaries.
#[derive(Parser)]
#[command(name = "spacet", version, about, long_about)]
struct Cli {
    /// YAML settings file (instead of config/default.yaml): ours, or the Go service's
    /// nested one. `-config PATH` and `-config=PATH` work too.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Run one SpaceX sync and exit (exit code 0 when it succeeded or was not needed,
    /// 1 when the circuit breaker held it: see `--confirm`).
    Sync {
        /// Apply it even if the circuit breaker would hold it (too many tickets
        /// cancelled, or every day SpaceX blocks freed): confirms a held sync.
        #[arg(long)]
        confirm: bool,
    },
}

fn main() -> ExitCode {
    // The Go service took `-config=PATH` / `-config PATH`.
    let args = std::env::args().map(|arg| {
        if arg == "-config" {
            "--config".to_string()
        } else if let Some(path) = arg.strip_prefix("-config=") {
            format!("--config={path}")
        } else {
            arg
        }
    });
    let cli = Cli::parse_from(args);
    let settings = match Settings::from_env(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("spacet: {error}");
            return ExitCode::from(2);
        }
    };
    spacet::telemetry::init(&settings.log_level, settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spacet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => spacet::app::migrate_only(settings).await,
            Command::Sync { confirm } => spacet::app::sync_once(settings, confirm).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "spacet failed");
            eprintln!("spacet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings, Clock::system()).await?;
    let token = app.shutdown_token();
    tokio::spawn(shutdown_on_signal(token));
    app.run_until_stopped().await
}

/// Fires the token on SIGTERM or ctrl-c.
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
