//! Tracing, set up once.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber: `level` is an EnvFilter directive.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    // The request span's fields (request_id, method, path) on every
                    // line logged while serving a request.
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
    // A second init (tests start many apps in one process) keeps the first subscriber.
    if result.is_ok() {
        log_panics();
    }
}

/// Installs the global subscriber writing JSON lines to `file` (the test suite's
/// log, which a check greps for personal data). Later calls keep the first.
/// Panics keep Rust's own report on stderr, where the test runner shows it.
pub fn init_json_file(level: &str, file: std::fs::File) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::sync::Mutex::new(file)),
        )
        .try_init();
    let _ = result;
}

/// Routes panics through tracing: one structured line (JSON in production) instead
/// of free text on stderr. The request layers still answer `INTERNAL` to the caller.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        // A request's panic is caught and logged, once, with the request by the
        // API's panic layer.
        if tracing::Span::current()
            .metadata()
            .is_some_and(|m| m.name() == "request")
        {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = %message,
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
            "panic"
        );
    }));
}
