//! Black-box tests: the real app, real PostgreSQL, real gRPC and HTTP clients.

mod helpers;

mod auth;
mod booking;
mod challenge;
mod commands;
mod dashboard;
mod database_limits;
mod embedded;
mod foundation;
mod gateway;
mod go_compat;
mod go_config;
mod legacy_events;
mod list_plans;
mod metrics;
mod outbox;
mod packaging;
mod proto_surface;
mod pubsub_emulator;
mod rocket_history;
mod rocket_limits;
mod rockets;
mod server_limits;
mod spacex;
mod spacex_limits;
mod supervision;
mod tracing;
