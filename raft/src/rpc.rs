//! Messages between nodes. Openraft's own request types travel as they are; errors travel
//! as small enums so every side can tell "not the leader" from "cannot reach a quorum".

use crate::TypeConfig;
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("snapshot segment mismatch")]
    SnapshotMismatch(SnapshotMismatch),
    #[error(transparent)]
    Replication(#[from] crate::ReplicationError),
}

pub type VoteReq = VoteRequest<u64>;
pub type VoteReply = Result<VoteResponse<u64>, RemoteError>;
pub type AppendReq = AppendEntriesRequest<TypeConfig>;
pub type AppendReply = Result<AppendEntriesResponse<u64>, RemoteError>;
pub type SnapshotReq = InstallSnapshotRequest<TypeConfig>;
pub type SnapshotReply = Result<InstallSnapshotResponse<u64>, RemoteError>;
pub type ForwardReq = model::Envelope;
pub type ForwardReply = Result<model::Outcome, RemoteError>;
/// A replica consistency check, by the request id of its `ClusterOp::Check` envelope.
pub type DigestReq = model::RequestId;
/// The applied index the digest was computed at, and the digest.
pub type DigestReply = Result<(u64, String), RemoteError>;
pub type ReadIndexReq = ();
/// The leader's read index: once a follower has applied it, a local read is linearizable.
pub type ReadIndexReply = Result<u64, RemoteError>;
/// A node asking to join: its id and addresses. Any member forwards it to the leader.
pub type JoinReq = (u64, crate::NodeInfo);
/// A liveness probe between members.
pub type PingReq = ();
/// The probed node's id, applied log index, when its certificate expires (Unix seconds;
/// `None` without TLS), and its wall clock when it answered (epoch ms).
pub type PingReply = (u64, Option<u64>, Option<i64>, i64);
/// A node without a certificate asking for one: see `crate::enroll`.
pub type EnrollReq = crate::enroll::Request;
pub type EnrollReply = Result<crate::enroll::Enrolled, RemoteError>;
/// A member renewing its certificate: a signing request for a new key (DER).
pub type RenewReq = Vec<u8>;
/// The new certificate (PEM).
pub type RenewReply = Result<String, RemoteError>;
/// Removing a member by id.
pub type RemoveReq = u64;
/// The voter ids after a membership change.
pub type MembershipReply = Result<Vec<u64>, RemoteError>;

/// A blob for the receiver to store (`crate::blobs`): its name and its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutBlobReq {
    pub name: String,
    pub data: bytes::Bytes,
}
/// Stored (synced), or why not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutBlobReply(pub Result<(), RemoteError>);
/// A blob, by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetBlobReq(pub String);
/// Its bytes, if the receiver holds them whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetBlobReply(pub Result<Option<bytes::Bytes>, RemoteError>);

/// The largest frame a message may be, checked before a byte of it is decoded: a peer (or
/// anyone who reaches the port) cannot make a node read more than this per message.
pub trait Frame {
    const MAX: usize;
}

const SMALL: usize = 64 << 10;
/// An append carries entries of at most `MAX_COMMAND_BYTES` each; a sender whose batch would
/// be larger is told to send fewer (openraft's `PayloadTooLarge`), never one over this.
pub const MAX_APPEND: usize = 64 << 20;
/// A snapshot chunk: openraft's chunk size (`SNAPSHOT_CHUNK`) plus its metadata.
pub const MAX_SNAPSHOT_FRAME: usize = SNAPSHOT_CHUNK as usize + SMALL + (1 << 20);
/// Bytes of snapshot data per chunk.
pub const SNAPSHOT_CHUNK: u64 = 3 << 20;

macro_rules! frames {
    ($($t:ty => $max:expr,)*) => { $(impl Frame for $t { const MAX: usize = $max; })* };
}

frames! {
    VoteReq => SMALL,
    VoteReply => SMALL,
    AppendReq => MAX_APPEND,
    AppendReply => SMALL,
    SnapshotReq => MAX_SNAPSHOT_FRAME,
    SnapshotReply => SMALL,
    ForwardReq => crate::node::MAX_COMMAND_BYTES as usize + SMALL,
    // A bulk write's outcome holds its documents: bounded by what the command could carry,
    // with room for the stored form (ids, timestamps) each document gains.
    ForwardReply => 4 * crate::node::MAX_COMMAND_BYTES as usize,
    DigestReq => SMALL,
    DigestReply => SMALL,
    ReadIndexReq => SMALL,
    ReadIndexReply => SMALL,
    JoinReq => SMALL,
    MembershipReply => SMALL,
    RemoveReq => SMALL,
    PingReply => SMALL,
    EnrollReq => SMALL,
    EnrollReply => SMALL,
    RenewReq => SMALL,
    RenewReply => SMALL,
    PutBlobReq => crate::blobs::MAX_BLOB + SMALL,
    PutBlobReply => SMALL,
    GetBlobReq => SMALL,
    GetBlobReply => crate::blobs::MAX_BLOB + SMALL,
}
