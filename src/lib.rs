//! SpaceT: seats on SpaceT rocket flights from launchpads shared with SpaceX.
//!
//! A library crate with a thin `main`: [`app::App`] builds and runs the service.

pub mod api;
pub mod app;
pub mod auth;
pub mod booking;
pub mod clock;
pub mod config;
pub mod db;
pub mod embedded_pg;
pub mod health;
pub mod healthcheck;
pub mod launchpads;
pub mod metrics;
pub mod outbox;
pub mod proto;
pub mod rockets;
pub mod spacex;
pub mod telemetry;
