//! The HTTP server's routes: the grpc-gateway style `/v1` gateway, the rocket
//! routes (`/messages`, `/rockets`), the live dashboard (`/dashboard`), and the
//! probes, metrics and OpenAPI document.

pub mod dashboard;
pub mod gateway;
pub mod openapi;
pub mod probes;
pub mod rockets;
pub mod rules;
