//! The `spacet` binary: parses the command line, loads settings, runs the app.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use spacet::{app::App, clock::Clock, config::Settings};
use tokio_util::sync::CancellationToken;

/// SpaceT launch-booking service.
///
/// Settings come from built-in defaults, then config/default.yaml (or --config),
/// then environment variables (HTTP_PORT, GRPC_PORT, PG_DSN, ...: see
/// docs/configuration.md).
/// Without PG_DSN an embedded PostgreSQL is started from the system binaries.
///
/// Exit codes: 0 success, 1 failure, 2 bad configuration or usage, 3 a sync held
/// by the circuit breaker, 4 a sync another instance was applying.
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
    /// Apply the database migrations and exit. Binds no port: runs beside a
    /// running service (with the embedded database, it uses the service's).
    Migrate,
    /// Run one SpaceX sync and exit: its report as JSON on stdout, logs on stderr.
    /// Binds no port: runs beside a running service.
    ///
    /// Exit codes: 0 applied (or nothing to change), 1 failed (SpaceX or the
    /// database unreachable, ...), 2 bad configuration, 3 held by the circuit
    /// breaker (rerun with --confirm to apply it), 4 another instance was applying a
    /// sync at that moment (try again).
    Sync {
        /// Apply it even if the circuit breaker would hold it (too many tickets
        /// cancelled, or every day SpaceX blocks freed): confirms a held sync.
        #[arg(long)]
        confirm: bool,
    },
    /// Ask the running service's /readiness on HTTP_PORT (exit code 0 when it
    /// answers 200 within 2 s, 1 otherwise): the container image's health check.
    Healthcheck,
    /// Print the OpenAPI document (generated from the protos and merged with
    /// openapi/overlay.json): `spacet openapi > openapi/spacet.json`.
    Openapi,
    /// Print a development token (AUTH_MODE dev: the default with the embedded
    /// database), signed with the key in AUTH_DEV_KEY_FILE (created if missing).
    /// Binds no port.
    Token {
        /// Role the token carries: passenger, agent, admin or telemetry. Repeat the
        /// option, or separate roles with commas, for several.
        #[arg(long = "role", required = true, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<spacet::auth::Role>,
        /// The caller's id (`sub`): a passenger's tickets are owned by it.
        #[arg(long)]
        subject: String,
        /// How long the token is valid (`30m`, `12h`, `7d`; a bare number is seconds).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
}

/// Exit code of a failure.
const EXIT_FAILED: u8 = 1;
/// Exit code of a bad configuration (and of clap's usage errors).
const EXIT_CONFIG: u8 = 2;
/// Exit code of a sync the circuit breaker held.
const EXIT_SYNC_HELD: u8 = 3;
/// Exit code of a sync another instance was applying.
const EXIT_SYNC_BUSY: u8 = 4;

fn parse_role(name: &str) -> Result<spacet::auth::Role, String> {
    spacet::auth::Role::parse(name)
        .ok_or_else(|| format!("{name:?} is not one of passenger, agent, admin, telemetry"))
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    spacet::config::parse_duration(text, std::time::Duration::from_secs(1))
        .ok()
        .filter(|ttl| !ttl.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration such as 30m, 12h or 7d"))
}

/// Prints a development token on stdout (nothing else goes there).
fn print_token(
    settings: &Settings,
    roles: &[spacet::auth::Role],
    subject: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    use spacet::config::AuthMode;
    match settings.auth.require_mode()? {
        AuthMode::Missing => unreachable!("require_mode refuses it"),
        AuthMode::Dev => {}
        AuthMode::Oidc => anyhow::bail!(
            "AUTH_ISSUER is set: tokens come from the issuer, not from `spacet token`"
        ),
        AuthMode::None => {
            anyhow::bail!("AUTH_MODE=none: the service takes no tokens at all")
        }
    }
    anyhow::ensure!(!subject.trim().is_empty(), "--subject must not be empty");
    let key = spacet::auth::dev::DevKey::load_or_create(&settings.auth.dev_key_file)?;
    println!("{}", key.mint(subject.trim(), roles, ttl)?);
    Ok(())
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
    if let Some(Command::Openapi) = cli.command {
        print!("{}", spacet::api::http::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("spacet: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if matches!(
        cli.command,
        None | Some(Command::Serve | Command::Token { .. })
    ) {
        // Before anything starts: a deployment without an issuer never serves, and
        // has no development key to sign with.
        if let Err(error) = settings.auth.require_mode() {
            eprintln!("spacet: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if let Some(Command::Token {
        roles,
        subject,
        ttl,
    }) = &cli.command
    {
        // No logging: the token is the only thing on stdout, for `$(spacet token ...)`.
        return match print_token(&settings, roles, subject, *ttl) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("spacet: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spacet: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the gRPC trace exporter's connection lives on it.
    let telemetry = {
        let _runtime = runtime.enter();
        let options = spacet::telemetry::LogOptions {
            level: settings.log_level.clone(),
            format: settings.log_format,
            service_name: settings.app_name.clone(),
            service_version: settings.app_version.clone(),
            gcp_project: settings.log_gcp_project.clone(),
            // A one-shot command's stdout is its answer (the sync's report).
            to_stderr: !matches!(cli.command, None | Some(Command::Serve)),
        };
        match spacet::telemetry::init_with(&options) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("spacet: {error:#}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate => spacet::app::migrate_only(settings)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Sync { confirm } => {
                use spacet::app::SyncOutcome;
                spacet::app::sync_once(settings, confirm)
                    .await
                    .map(|outcome| match outcome {
                        SyncOutcome::Applied => ExitCode::SUCCESS,
                        SyncOutcome::Held(reason) => {
                            eprintln!(
                                "spacet: sync held: {reason}; `spacet sync --confirm` applies it"
                            );
                            ExitCode::from(EXIT_SYNC_HELD)
                        }
                        SyncOutcome::Busy => {
                            eprintln!(
                                "spacet: another instance is applying a sync right now; try again"
                            );
                            ExitCode::from(EXIT_SYNC_BUSY)
                        }
                    })
            }
            Command::Healthcheck => spacet::healthcheck::run(&settings)
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into),
            Command::Token { .. } | Command::Openapi => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "spacet failed");
            eprintln!("spacet: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    };
    // The spans of the last requests and of the shutdown itself.
    {
        let _runtime = runtime.enter();
        telemetry.shutdown();
    }
    code
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
