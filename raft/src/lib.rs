//! Basalt's replication layer: openraft 0.9 over a RocksDB log (fsynced appends), a state
//! machine over the storage engine with RocksDB-checkpoint snapshots, and a tonic gRPC
//! transport for votes, appends, chunked snapshot install, write forwarding and read-index.
//!
//! **Invariant:** only this crate names `openraft`, `tonic` or the wire codec.

// openraft's trait signatures fix `StorageError` (a large type) as the error of storage calls.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod blobs;
pub mod closed;
pub mod codec;
pub mod drill;
pub mod enroll;
mod network;
mod node;
pub mod pki;
pub mod placement;
#[cfg(feature = "fault-points")]
pub mod probe;
pub mod rpc;
mod store;
pub mod tls;

pub mod pb {
    tonic::include_proto!("basalt.raft.Raft");
}

use serde::{Deserialize, Serialize};

pub use node::{
    CheckReport, ClusterStatus, MemberStatus, NodeConfig, RaftNode, RaftTimings, Refusal,
    ReplicationError, StartError, Unavailable, RESTORED,
};

/// What every member knows about another: where to reach it, and its region label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub grpc: String,
    pub http: String,
    pub region: String,
    /// Where it gossips (memberlist, TCP and UDP); empty if it does not.
    pub gossip: String,
}

openraft::declare_raft_types!(
    /// Basalt's Raft types: commands in, outcomes out, u64 node ids.
    pub TypeConfig:
        D = model::Batch,
        R = Vec<model::Outcome>,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
