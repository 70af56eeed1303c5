//! Black-box tests: the real app, real PostgreSQL, real gRPC and HTTP clients.

#![allow(dead_code)]

mod helpers;
mod rockets;
