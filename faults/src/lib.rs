//! Faults done to real Basalt nodes, shared by the `jepsen/` harness and `basalt drill`.
//!
//! - [`net`]: hosts in network namespaces this library creates (a bridge, a veth per host,
//!   addresses it assigns), partitions and packet loss with nftables inside them.
//! - [`node`]: one `basalt serve` process: start, kill -9, SIGSTOP/SIGCONT, restart, and the
//!   clock skew (libfaketime) or disk faults (libfiu) it was started able to suffer.
//! - [`cluster`]: N nodes forming one Raft group, its status, leader and `cluster check`.
//! - [`fault`]: the faults themselves, each with the way to heal it.
//! - [`proxy`]: a user-space TCP proxy per link, for delay and jitter.
//! - [`lazyfs`]: a FUSE file system that holds file data until fsync, for lost writes.

pub mod cluster;
pub mod fault;
pub mod lazyfs;
pub mod net;
pub mod node;
pub mod proxy;

pub use cluster::{Cluster, ClusterOptions};
pub use fault::Fault;
