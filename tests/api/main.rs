//! Black-box tests: the real app, real PostgreSQL, real gRPC and HTTP clients.

#![allow(dead_code)]

mod helpers;

mod booking;
mod foundation;
mod gateway;
mod packaging;
mod rockets;
