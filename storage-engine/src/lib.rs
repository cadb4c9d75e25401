//! Basalt's storage engine: RocksDB keyspaces for projects, keys, schema, documents and
//! secondary indexes; a deterministic `apply_entry(Batch)`; views (snapshots at a known applied
//! index) and the query planner and executor that read them; snapshots as RocksDB checkpoints;
//! and the durable Raft log store's disk layer.
//!
//! **Invariant:** only this crate names `rocksdb`. Documents and index entries change only
//! inside `Engine::apply_entry`, one atomic write batch per log entry.

mod apply;
mod cells;
mod engine;
mod exec;
#[cfg(test)]
mod exec_props;
pub mod keys;
mod log;
mod planner;
mod read;
mod snapshot;
mod validate;

pub use engine::{Engine, StorageError, APPLY_SCAN_BUDGET, DEFAULT_SCAN_BUDGET};
pub use exec::TOTAL_CAP;
pub use log::LogDb;
pub use planner::Plan;
pub use read::{Job, View};
pub use snapshot::CheckpointSummary;
