//! The gRPC services: `spacet.v1.SpaceTService` (booking) and
//! `spacet.v1.RocketService` (rockets), one adapter function per RPC. The HTTP
//! gateway calls the same adapters in-process.

pub mod booking;
pub mod rockets;
