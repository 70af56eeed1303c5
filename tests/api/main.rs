//! Black-box tests: the real app, real PostgreSQL, real gRPC and HTTP clients.

mod helpers;

mod booking;
mod embedded;
mod foundation;
mod gateway;
mod metrics;
mod outbox;
mod packaging;
mod pubsub_emulator;
mod rockets;
mod spacex;
mod supervision;
