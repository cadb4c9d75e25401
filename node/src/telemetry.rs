//! `/metrics`: the process-wide Prometheus recorder every crate's `metrics::` calls report to,
//! and the figures read at scrape time (Raft, RocksDB, gossip, the process).

use crate::gossip::{Gossip, Health};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use raft::RaftNode;
use std::sync::OnceLock;

/// Latency buckets, seconds: from half a millisecond (a cached read) to 10 s (a request that
/// waited out a failover).
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Envelopes in one log entry: up to the batcher's 64.
const ENVELOPES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// Bytes of one log entry: 256 B to its 8 MiB bound.
const BYTES: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 8388608.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder, once per process (a second node in the same process, as in the
/// crate's own tests, shares it). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("basalt_raft_batch_envelopes".into()),
                        ENVELOPES,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("basalt_raft_batch_bytes".into()), BYTES)
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe();
                    metrics_process::Collector::default().describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "basalt_http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "basalt_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and route."
    );
    describe_histogram!(
        "basalt_raft_commit_seconds",
        Unit::Seconds,
        "From proposing a log entry to its commit and apply on the leader."
    );
    describe_histogram!(
        "basalt_raft_apply_seconds",
        Unit::Seconds,
        "Applying one log entry to the state."
    );
    describe_histogram!(
        "basalt_raft_read_barrier_seconds",
        Unit::Seconds,
        "Read barriers (a quorum confirms the leader) before linearizable reads."
    );
    describe_histogram!(
        "basalt_raft_batch_envelopes",
        "Writes grouped into one log entry (group commit)."
    );
    describe_histogram!(
        "basalt_raft_batch_bytes",
        Unit::Bytes,
        "Bytes of writes grouped into one log entry."
    );
    describe_counter!(
        "basalt_raft_leader_changes_total",
        "Changes of the leader this node saw (a leader lost included)."
    );
    describe_gauge!("basalt_raft_term", "The current Raft term.");
    describe_gauge!(
        "basalt_raft_leader_id",
        "The leader's node id (0: none known)."
    );
    describe_gauge!("basalt_raft_is_leader", "1 while this node leads.");
    describe_gauge!(
        "basalt_raft_last_log_index",
        "The last entry in this node's log."
    );
    describe_gauge!(
        "basalt_raft_applied_index",
        "The last entry applied to this node's state."
    );
    describe_gauge!(
        "basalt_raft_apply_lag_entries",
        "Entries in this node's log not applied yet."
    );
    describe_gauge!(
        "basalt_raft_replication_lag_entries",
        "On the leader: entries each follower's log trails its own."
    );
    describe_gauge!(
        "basalt_raft_snapshot_index",
        "The last entry the latest snapshot holds."
    );
    describe_gauge!(
        "basalt_raft_purged_index",
        "The last entry removed from the log (held by a snapshot)."
    );
    describe_gauge!(
        "basalt_raft_snapshot_bytes",
        Unit::Bytes,
        "Bytes of this node's snapshot files."
    );
    describe_gauge!(
        "basalt_raft_voters",
        "Voters in the membership this node knows."
    );
    describe_gauge!(
        "basalt_raft_members",
        "Members (voters and learners) in the membership this node knows."
    );
    describe_gauge!(
        "basalt_raft_quorum_ack_age_seconds",
        Unit::Seconds,
        "On the leader: since a quorum last acknowledged it."
    );
    describe_gauge!(
        "basalt_gossip_members",
        "Other members by their gossip health."
    );
    describe_gauge!(
        "basalt_realtime_connections",
        "Realtime connections served now."
    );
    for (name, what) in [
        ("keys", "Estimated keys"),
        ("sst_bytes", "Bytes of SST files"),
        ("live_sst_bytes", "Bytes of live SST files"),
        ("memtable_bytes", "Bytes in memtables"),
        (
            "pending_compaction_bytes",
            "Estimated bytes compaction has to rewrite",
        ),
        ("running_compactions", "Compactions running"),
        ("running_flushes", "Flushes running"),
        ("block_cache_bytes", "Bytes in the block cache"),
        ("block_cache_capacity_bytes", "The block cache's capacity"),
    ] {
        describe_gauge!(
            format!("basalt_rocksdb_{name}"),
            format!("{what}, of the log (db=log) or the state (db=state).")
        );
    }
}

/// Every figure, as Prometheus text: the gauges read now, then whatever the recorder holds.
pub fn render(node: &RaftNode, gossip: &dyn Gossip) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    node.record_metrics();
    let (mut alive, mut suspect, mut dead) = (0, 0, 0);
    for (id, _) in node.peers() {
        match gossip.health(id) {
            Health::Alive => alive += 1,
            Health::Suspect => suspect += 1,
            Health::Dead => dead += 1,
        }
    }
    for (health, n) in [("alive", alive), ("suspect", suspect), ("dead", dead)] {
        metrics::gauge!("basalt_gossip_members", "health" => health).set(n as f64);
    }
    metrics_process::Collector::default().collect();
    handle.render()
}
