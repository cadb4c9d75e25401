//! The API's [`Backend`], implemented over the Raft node.

use crate::gossip::{Gossip, Health};
use api::{Backend, BoxFuture, Unavailable};
use model::reader::StateReader;
use model::{Command, Outcome};
use raft::{RaftNode, ReplicationError};
use std::sync::Arc;

pub struct NodeBackend {
    pub node: Arc<RaftNode>,
    pub gossip: Arc<dyn Gossip>,
    pub root_key_sha256: String,
}

impl Backend for NodeBackend {
    fn write(&self, cmd: Command) -> BoxFuture<'_, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            self.node
                .write(cmd)
                .await
                .map_err(|e| Unavailable(e.to_string()))
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            self.node
                .read_barrier()
                .await
                .map_err(|e| Unavailable(e.to_string()))
        })
    }

    fn reader(&self) -> &dyn StateReader {
        self.node.engine()
    }

    fn root_key_sha256(&self) -> &str {
        &self.root_key_sha256
    }

    fn cluster_status(&self) -> serde_json::Value {
        let status = self.node.status();
        let members: Vec<serde_json::Value> = status
            .members
            .iter()
            .map(|m| {
                let health = if m.id == status.id {
                    Health::Alive
                } else {
                    self.gossip.health(m.id)
                };
                serde_json::json!({
                    "id": m.id, "http": m.http, "grpc": m.grpc, "gossip": m.gossip,
                    "region": m.region, "role": m.role, "health": health.as_str(),
                    "applied": m.applied,
                })
            })
            .collect();
        serde_json::json!({
            "node": status.id,
            "leader": status.leader,
            "term": status.term,
            "state": status.state,
            "members": members,
        })
    }

    fn remove_member(
        &self,
        node_id: u64,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>> {
        Box::pin(async move {
            match self.node.remove_member(node_id).await {
                Ok(_) => Ok(self.cluster_status()),
                Err(ReplicationError::Refused(m)) => Err(model::Error::invalid(m)),
                Err(e) => Err(model::Error::new(
                    model::ErrorCode::GeneralUnavailable,
                    e.to_string(),
                )),
            }
        })
    }

    fn ready(&self) -> bool {
        self.node.has_leader()
    }
}
