//! The API's [`Backend`], implemented over the Raft node.

use crate::gossip::{Gossip, Health};
use api::{Backend, BoxFuture, Unavailable};
use model::query::Spec;
use model::reader::Page;
use model::reader::{Consistency, StateReader};
use model::schema::{ApiKey, Collection, Database, Document, Project, Transaction};
use model::DocTarget;
use model::{Envelope, Outcome};
use raft::{RaftNode, Refusal, ReplicationError};
use std::sync::Arc;
use storage_engine::View;

type R<T> = Result<T, model::Error>;

/// A view whose scans (queries, lists) run with this worker thread handed over to blocking
/// work (`block_in_place`): the runtime moves its other tasks — Raft heartbeats, appends — to
/// another thread meanwhile, so a long scan cannot stall them. Point reads run as they are.
struct OffRuntime(View);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl StateReader for OffRuntime {
    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }
    fn project(&self, id: &str) -> R<Option<Project>> {
        self.0.project(id)
    }
    fn list_projects(&self) -> R<Vec<Project>> {
        blocking(|| self.0.list_projects())
    }
    fn key(&self, project: &str, id: &str) -> R<Option<ApiKey>> {
        self.0.key(project, id)
    }
    fn key_by_secret_sha256(&self, project: &str, sha: &str) -> R<Option<ApiKey>> {
        self.0.key_by_secret_sha256(project, sha)
    }
    fn list_keys(&self, project: &str) -> R<Vec<ApiKey>> {
        blocking(|| self.0.list_keys(project))
    }
    fn database(&self, project: &str, id: &str) -> R<Option<Database>> {
        self.0.database(project, id)
    }
    fn list_databases(&self, project: &str) -> R<Vec<Database>> {
        blocking(|| self.0.list_databases(project))
    }
    fn collection(&self, project: &str, db: &str, id: &str) -> R<Option<Collection>> {
        self.0.collection(project, db, id)
    }
    fn list_collections(&self, project: &str, db: &str) -> R<Vec<Collection>> {
        blocking(|| self.0.list_collections(project, db))
    }
    fn document(&self, project: &str, coll: &Collection, id: &str) -> R<Option<Document>> {
        self.0.document(project, coll, id)
    }
    fn find(&self, project: &str, coll: &Collection, spec: &Spec, total: bool) -> R<Page> {
        blocking(|| self.0.find(project, coll, spec, total))
    }
    fn document_staged(
        &self,
        project: &str,
        coll: &Collection,
        id: &str,
        staged: &[DocTarget],
        now: i64,
    ) -> R<Option<Document>> {
        blocking(|| self.0.document_staged(project, coll, id, staged, now))
    }
    fn find_staged(
        &self,
        project: &str,
        coll: &Collection,
        spec: &Spec,
        staged: &[DocTarget],
        now: i64,
    ) -> R<Page> {
        blocking(|| self.0.find_staged(project, coll, spec, staged, now))
    }
    fn transaction(&self, project: &str, id: &str) -> R<Option<Transaction>> {
        self.0.transaction(project, id)
    }
    fn list_transactions(&self, project: &str) -> R<Vec<Transaction>> {
        blocking(|| self.0.list_transactions(project))
    }
    fn transaction_owner(&self, project: &str, id: &str) -> R<Option<String>> {
        blocking(|| self.0.transaction_owner(project, id))
    }
    fn user_transactions(&self, project: &str, user: &str) -> R<Vec<Transaction>> {
        blocking(|| self.0.user_transactions(project, user))
    }
    fn list_platforms(&self, project: &str) -> R<Vec<model::schema::Platform>> {
        blocking(|| self.0.list_platforms(project))
    }
    fn jwt_secret(&self, project: &str) -> R<Option<String>> {
        self.0.jwt_secret(project)
    }
    fn auth_settings(&self, project: &str) -> R<model::auth::AuthSettings> {
        self.0.auth_settings(project)
    }
    fn file_chunks(
        &self,
        project: &str,
        bucket: &str,
        file: &str,
        from: u64,
        limit: usize,
    ) -> R<Vec<(u64, model::storage::ChunkRef)>> {
        blocking(|| self.0.file_chunks(project, bucket, file, from, limit))
    }
    fn storage_key(&self, project: &str) -> R<Option<String>> {
        self.0.storage_key(project)
    }
    fn usage_series(
        &self,
        project: &str,
        scope: &model::usage::Scope,
        metric: model::usage::Metric,
        period: model::usage::Period,
        buckets: &[i64],
    ) -> R<Vec<i64>> {
        blocking(|| self.0.usage_series(project, scope, metric, period, buckets))
    }
    fn usage_storage(&self, project: &str, scope: &model::usage::Scope) -> R<i64> {
        self.0.usage_storage(project, scope)
    }
    fn rows(&self, project: &str, db: &str, coll: &str) -> R<u64> {
        self.0.rows(project, db, coll)
    }
}

pub struct NodeBackend {
    pub node: Arc<RaftNode>,
    pub gossip: Arc<dyn Gossip>,
}

/// An operator request's failure as the client sees it: the command's own failure, a refusal
/// (400), or the cluster being unavailable (503).
fn refusal(e: ReplicationError) -> model::Error {
    match e {
        ReplicationError::Refused(Refusal::Failed(e)) => e,
        ReplicationError::Refused(r) => model::Error::invalid(r.to_string()),
        e => {
            tracing::warn!(error = %e, "operator request failed");
            model::Error::new(
                model::ErrorCode::GeneralUnavailable,
                "The server cannot reach a quorum of the cluster right now. Please try again.",
            )
        }
    }
}

impl Backend for NodeBackend {
    fn write(&self, env: Envelope) -> BoxFuture<'_, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            match self.node.write(env).await {
                Ok(o) => Ok(o),
                // Refused before it reached the log: nothing changed.
                Err(e @ ReplicationError::TooLarge { .. }) => Ok(Outcome::Failed(
                    model::Error::invalid(format!("Invalid request: {e}.")),
                )),
                Err(e) => Err(Unavailable(Box::new(e))),
            }
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
                .map_err(|e| Unavailable(Box::new(e)))?;
            Ok(Arc::new(OffRuntime(view)) as Arc<dyn StateReader>)
        })
    }

    fn cluster_check(
        &self,
        check: Envelope,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>> {
        Box::pin(async move {
            let id = check.request_id;
            let report = self.node.cluster_check(check).await.map_err(refusal)?;
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
            // The data alone (what a backup's digest covers), as this node found it at the
            // check's entry: the same on every replica whose digest agrees with its own.
            let data_digest = self
                .node
                .check_data_digest(id)
                .filter(|(index, _)| Some(*index) == applied)
                .map(|(_, d)| d);
            Ok(serde_json::json!({
                "applied": applied,
                "data_digest": data_digest,
                "digests": digests,
                "errors": errors,
                "consistent": consistent,
            }))
        })
    }

    fn root_key_sha256(&self) -> String {
        self.node.root_key_sha256()
    }

    fn read_within(
        &self,
        max: std::time::Duration,
    ) -> BoxFuture<'_, Result<api::Within, Unavailable>> {
        Box::pin(async move {
            let (view, applied, stale) = self
                .node
                .view_within(max)
                .await
                .map_err(|e| Unavailable(Box::new(e)))?;
            Ok((
                Arc::new(OffRuntime(view)) as Arc<dyn StateReader>,
                applied,
                stale,
            ))
        })
    }

    fn placement(&self) -> BoxFuture<'_, Result<model::schema::Placement, model::Error>> {
        Box::pin(async move {
            self.node.read_barrier().await.map_err(refusal)?;
            Ok(self.node.placement())
        })
    }

    fn set_placement(
        &self,
        policy: model::schema::Placement,
    ) -> BoxFuture<'_, Result<(), model::Error>> {
        Box::pin(async move { self.node.set_placement(policy).await.map_err(refusal) })
    }

    fn set_root_key(&self, sha256: String) -> BoxFuture<'_, Result<(), model::Error>> {
        Box::pin(async move { self.node.set_root_key(sha256).await.map_err(refusal) })
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
                    "region": m.region, "zone": m.zone, "role": m.role, "health": health.as_str(),
                    "applied": m.applied, "lag": m.lag, "rtt_ms": m.rtt_ms,
                    "cert_expires": m.cert_expires,
                })
            })
            .collect();
        serde_json::json!({
            "node": status.id,
            "leader": status.leader,
            "term": status.term,
            "state": status.state,
            "members": members,
            "placement": status.placement,
        })
    }

    fn put_blob(&self, name: String, data: bytes::Bytes) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            self.node
                .put_blob(name, data)
                .await
                .map_err(|e| Unavailable(Box::new(e)))
        })
    }

    fn get_blob(&self, name: String) -> BoxFuture<'_, Result<bytes::Bytes, Unavailable>> {
        Box::pin(async move {
            self.node
                .get_blob(name)
                .await
                .map_err(|e| Unavailable(Box::new(e)))
        })
    }

    fn join_token(
        &self,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>> {
        Box::pin(async move {
            let (token, expires) = self.node.issue_join_token(ttl).await.map_err(refusal)?;
            Ok(serde_json::json!({
                "token": token,
                "expires": model::time::format_ms(expires),
            }))
        })
    }

    fn remove_member(
        &self,
        node_id: u64,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>> {
        Box::pin(async move {
            match self.node.remove_member(node_id).await {
                Ok(_) => Ok(self.cluster_status()),
                Err(e) => Err(refusal(e)),
            }
        })
    }

    fn drill(&self, fault: api::DrillFault) -> serde_json::Value {
        let id = self.node.id;
        match fault {
            api::DrillFault::Crash => {
                tracing::warn!("operator drill: this node kills itself (SIGKILL) in 200 ms");
                // After the answer has left: the drill learns the node took the order.
                std::thread::spawn(|| {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    // SAFETY: kill(2) on our own pid.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                });
                serde_json::json!({ "fault": "crash", "node": id })
            }
            api::DrillFault::Isolate(d) => {
                tracing::warn!(
                    seconds = d.as_secs(),
                    "operator drill: cut off from every peer"
                );
                raft::drill::isolate(d);
                serde_json::json!({ "fault": "isolate", "node": id, "seconds": d.as_secs() })
            }
        }
    }

    fn ready(&self) -> bool {
        self.node.has_leader()
    }

    fn node_health(&self) -> api::NodeHealth {
        let status = self.node.status();
        let host = |addr: &str| {
            // `http://host:port` (the HTTP address is a URL) or `host:port`.
            let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
            let addr = addr.split('/').next().unwrap_or(addr);
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        };
        let mut names: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.id == status.id)
            .flat_map(|m| [host(&m.http), host(&m.grpc)])
            .collect();
        names.dedup();
        let certificate = self
            .node
            .certificate_der()
            .and_then(|der| raft::pki::describe(&der).ok())
            .map(|d| api::Certificate {
                name: d.name,
                subject_cn: d.subject_cn,
                issuer_organisation: d.issuer_organisation,
                not_before: d.not_before,
                not_after: d.not_after,
                signature: d.signature,
                dns_names: d.dns_names,
            });
        api::NodeHealth {
            node: status.id,
            leader: status.leader,
            leader_unconfirmed: self.node.leader_unconfirmed(),
            member: self.node.is_member(),
            apply_backlog: self.node.apply_backlog(),
            clock_offsets: self.node.clock_offsets(),
            names,
            certificate,
        }
    }

    fn probe_local_files(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.node.probe_blob_dir().await.map_err(|e| e.to_string()) })
    }

    fn backup(&self) -> BoxFuture<'_, Result<api::BackupStream, model::Error>> {
        Box::pin(async move { self.node.backup().await.map_err(refusal) })
    }

    fn metrics_text(&self) -> String {
        crate::telemetry::render(&self.node, &*self.gossip)
    }

    fn mail_queue(&self, limit: usize) -> Result<(u64, u64), String> {
        let view = self.node.local_view().map_err(|e| e.to_string())?;
        let mails = view.outbox(limit).map_err(|e| e.to_string())?;
        let failed = mails.iter().filter(|m| m.attempts > 0).count();
        Ok((mails.len() as u64, failed as u64))
    }
}

/// This node's applied state, as realtime payloads read it (no barrier: what was just
/// applied is there).
pub(crate) struct Applied(pub std::sync::Weak<RaftNode>);

impl api::realtime::LocalState for Applied {
    fn team_name(&self, project: &str, team: &str) -> String {
        self.0
            .upgrade()
            .and_then(|n| n.local_view().ok())
            .and_then(|v| {
                v.document(project, model::auth::teams(), team)
                    .ok()
                    .flatten()
            })
            .map(|d| model::auth::Team::from_document(&d).name)
            .unwrap_or_default()
    }

    fn read_rules(
        &self,
        project: &str,
        database: &str,
        collection: &str,
    ) -> Option<api::realtime::ReadRules> {
        let view = self.0.upgrade()?.local_view().ok()?;
        if database == model::storage::DB {
            // A bucket's files: the bucket's rules.
            let bucket = model::storage::bucket_of(collection)?;
            let doc = view
                .document(project, model::storage::buckets(), bucket)
                .ok()??;
            let b = model::storage::Bucket::from_document(&doc);
            return Some(api::realtime::ReadRules {
                enabled: b.enabled,
                permissions: b.permissions,
                document_security: b.file_security,
            });
        }
        let db = view.database(project, database).ok()??;
        let c = view.collection(project, database, collection).ok()??;
        Some(api::realtime::ReadRules {
            enabled: db.enabled && c.enabled,
            permissions: c.permissions,
            document_security: c.document_security,
        })
    }
}
