//! Background jobs: while this node leads, it proposes the next chunk of every pending job —
//! index builds (`SchemaOp::BuildIndex`) and document rewrites after a column was renamed or
//! deleted (`SchemaOp::Reshape`) — one chunk per log entry, so other writes interleave and no
//! apply grows with the collection. The job's progress is replicated state: a new leader
//! carries on where the old one stopped.

use model::command::{Actor, Envelope, Op};
use model::reader::Consistency;
use raft::RaftNode;
use std::sync::Weak;
use std::time::Duration;

/// How often an idle runner looks for work.
const IDLE: Duration = Duration::from_millis(200);
/// Jobs looked at per pass.
const JOBS_PER_PASS: usize = 16;

/// Runs until the node is gone.
pub async fn run(node: Weak<RaftNode>) {
    let mut busy = false;
    loop {
        if !busy {
            tokio::time::sleep(IDLE).await;
        }
        busy = false;
        let Some(node) = node.upgrade() else { return };
        if !node.is_leader() {
            continue;
        }
        let jobs = match node
            .view(Consistency::Local)
            .await
            .map(|v| v.jobs(JOBS_PER_PASS))
        {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading background jobs");
                continue;
            }
            Err(_) => continue,
        };
        // Each chunk waits for the one before it: one entry in flight per runner.
        for job in jobs {
            let env = Envelope::new(
                job.project.clone(),
                api::new_request_id(),
                Actor::Operator,
                Op::Schema(job.op()),
            );
            match node.write(env).await {
                Ok(_) => busy = true,
                Err(e) => {
                    tracing::debug!(error = %e, ?job, "job chunk not committed; retrying later");
                    busy = false;
                    break;
                }
            }
        }
    }
}
