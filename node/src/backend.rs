//! The API's [`Backend`], implemented over the Raft node.

use crate::gossip::{Gossip, Health};
use api::{Backend, BoxFuture, Unavailable};
use model::reader::{Consistency, StateReader};
use model::{Envelope, Outcome};
use raft::{RaftNode, ReplicationError};
use std::sync::Arc;

pub struct NodeBackend {
    pub node: Arc<RaftNode>,
    pub gossip: Arc<dyn Gossip>,
    pub root_key_sha256: String,
}

impl Backend for NodeBackend {
    fn write(&self, env: Envelope) -> BoxFuture<'_, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            self.node
                .write(env)
                .await
                .map_err(|e| Unavailable(e.to_string()))
        })
    }

    fn read(
        &self,
        consistency: Consistency,
    ) -> BoxFuture<'_, Result<Arc<dyn StateReader>, Unavailable>> {
        Box::pin(async move {
            let view = self
                .node
                .view(consistency)
                .await
                .map_err(|e| Unavailable(e.to_string()))?;
            Ok(Arc::new(view) as Arc<dyn StateReader>)
        })
    }

    fn cluster_check(
        &self,
        check: Envelope,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>> {
        Box::pin(async move {
            let report = self.node.cluster_check(check).await.map_err(|e| {
                model::Error::new(model::ErrorCode::GeneralUnavailable, e.to_string())
            })?;
            let mut digests = serde_json::Map::new();
            let mut errors = serde_json::Map::new();
            let mut applied = None;
            let mut seen = std::collections::BTreeSet::new();
            for (id, answer) in &report {
                match answer {
                    Ok((index, digest)) => {
                        applied = Some(*index);
                        seen.insert((*index, digest.clone()));
                        digests.insert(id.to_string(), serde_json::json!(digest));
                    }
                    Err(reason) => {
                        digests.insert(id.to_string(), serde_json::Value::Null);
                        errors.insert(id.to_string(), serde_json::json!(reason));
                    }
                }
            }
            // Consistent: every member answered, at one index, with one digest.
            let consistent = errors.is_empty() && seen.len() == 1;
            Ok(serde_json::json!({
                "applied": applied,
                "digests": digests,
                "errors": errors,
                "consistent": consistent,
            }))
        })
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
