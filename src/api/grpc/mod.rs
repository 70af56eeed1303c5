//! The gRPC services: `spacet.v1.SpaceTService` (booking) and
//! `spacet.v1.RocketService` (rockets). The HTTP gateway calls the same methods
//! in-process.

pub mod booking;
pub mod rockets;
