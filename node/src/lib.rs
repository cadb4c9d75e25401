//! The `basalt` node: configuration, the CLI, and the start-up sequence that wires storage,
//! Raft and the HTTP API together.
//!
//! **Invariant:** only this crate names `clap`, `anyhow` or `tracing-subscriber`.

mod backend;
mod backup;
mod bench;
pub mod cli;
mod client;
mod config;
mod drill;
mod gossip;
mod jobs;
pub mod mail;
mod rolling;
mod security;
mod server;
mod telemetry;

pub use config::ServeConfig;
pub use server::{run, NodeHandle};
