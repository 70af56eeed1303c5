//! The HTTP server's routes: the grpc-gateway style `/v1` gateway, the rocket
//! routes (`/messages`, `/rockets`), and the probes, metrics and OpenAPI document.

pub mod gateway;
pub mod probes;
pub mod rockets;
